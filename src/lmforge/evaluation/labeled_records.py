"""The records of labelled-data files (``.tsv``, ``.csv``, ``.jsonl``, STS Benchmark), each with
the line it came from so that a refusal can name it, and how label values are read as classes."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lmforge.data.documents import json_lines
from lmforge.errors import UserError

FileFormat = Literal["auto", "tsv", "csv", "jsonl", "sts"]
SUFFIXES = (".tsv", ".csv", ".jsonl")


def read_records(path: str | Path, file_format: FileFormat = "auto", columns: Sequence[str] | None = None,
                 header: bool = True) -> list[dict[str, Any]]:
    """The rows of a ``.tsv``/``.csv`` file with a header line (or named by ``columns``), the objects
    of a ``.jsonl`` file, or the pairs of an STS-Benchmark file (``sts``: no header; tab-separated
    genre, file, year, id, score, sentence 1, sentence 2, extra fields ignored, no quoting) as
    ``sentence1``, ``sentence2`` and ``score``. A table row with more or fewer fields than the
    header (or ``columns``) is refused, naming its line.

    Args:
        path: The file.
        file_format: ``tsv``, ``csv``, ``jsonl`` or ``sts``; ``auto`` goes by the file's suffix.
        columns: The names of a ``.tsv``/``.csv`` file's columns, in order (GLUE's CoLA has no
            header line); ``None``: the header line's names.
        header: Whether the file's first line is a header line; with ``columns`` it is skipped
            (``columns`` rename its columns, e.g. GLUE MRPC's ``#1 String``, which a YAML value
            cannot start with).
    """
    return [record for _, record in numbered_records(path, file_format, columns, header)]


def numbered_records(path: str | Path, file_format: FileFormat = "auto", columns: Sequence[str] | None = None,
                     header: bool = True) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of each record of :func:`read_records`; numbers count from 1,
    the header line included (a quoted ``.csv`` text over several lines: its last).

    Args:
        path: The file.
        file_format: ``tsv``, ``csv``, ``jsonl`` or ``sts``; ``auto`` goes by the file's suffix.
        columns: The names of a ``.tsv``/``.csv`` file's columns; ``None``: the header line's.
        header: Whether the file's first line is a header line (skipped when ``columns`` are given).
    """
    if not header and not columns:
        raise UserError(f"'{path}' has no header line (data.header false): name its columns with data.columns.")
    path = Path(path)
    kind = path.suffix if file_format == "auto" else f".{file_format}"
    if kind not in (*SUFFIXES, ".sts"):
        raise UserError(f"'{path}' is not a .tsv, .csv or .jsonl file: convert it to one of those, or name its "
                        "layout with `data.format` (tsv, csv or jsonl).")
    if not path.is_file():
        raise UserError(f"Labelled data file '{path}' does not exist: check the path.")
    if kind == ".jsonl":
        records = list(json_lines(path))
    else:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as err:
            raise UserError(f"'{path}' is not UTF-8 text (byte {err.start}): convert it to UTF-8.") from err
        records = _sts_records(text, path) if kind == ".sts" else _table_records(text, kind, path, columns, header)
    if not records:
        raise UserError(f"'{path}' holds no examples: it is empty (or has a header line only).")
    return records


def _table_records(text: str, kind: str, path: Path, columns: Sequence[str] | None,
                   header: bool) -> list[tuple[int, dict[str, Any]]]:
    # GLUE-style .tsv files hold quote characters inside texts: no quoting in .tsv
    options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if kind == ".tsv" else {}
    csv.field_size_limit(2**31 - 1)
    reader = csv.DictReader(text.splitlines(), list(columns) if columns else None, **options)
    records = []
    for row in reader:
        # DictReader files surplus fields under None and fills missing ones with None: a row
        # that does not fit its header would otherwise shift texts into the wrong columns silently
        if None in row or None in row.values():
            found = len(reader.fieldnames) + len(row.get(None, ())) - sum(v is None for v in row.values())
            named = "data.columns" if columns else "its header"
            raise UserError(f"'{path}' line {reader.line_num} has {found} {'tab-separated ' * (kind == '.tsv')}fields "
                            f"but {named} has {len(reader.fieldnames)}: fix or remove that line (a tab or line "
                            "break inside a text?), or set data.columns to the file's columns.")
        if any(row.values()) and not (columns and header and reader.line_num == 1):
            records.append((reader.line_num, row))
    return records


def _sts_records(text: str, path: Path) -> list[tuple[int, dict[str, Any]]]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            records.append((number, {"sentence1": fields[5], "sentence2": fields[6], "score": float(fields[4])}))
        except (IndexError, ValueError) as err:
            raise UserError(f"{path}, line {number}: expected 7 tab-separated fields with the score fifth "
                            "(STS-Benchmark layout).") from err
    return records


def check_columns(records: list[dict[str, Any]], fields: Sequence[str], source: str) -> None:
    """One clear error if a field is missing from the data, naming the columns there are."""
    available = list(records[0])
    for field in fields:
        if field not in available:
            raise UserError(f"'{source}' has no column '{field}' (columns: {', '.join(map(str, available))}): "
                            "set the data's source.text_field / text_pair_field / label_field to one of them.")


def is_number(value: Any) -> bool:
    """A number, or a text spelling a finite one (not a truth value)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    try:
        return math.isfinite(float(str(value)))
    except ValueError:
        return False


def is_integer(value: Any) -> bool:
    """An int, or a text spelling one (``"3"``, not ``"3.0"``): what a class id looks like."""
    if isinstance(value, bool) or isinstance(value, float):
        return False
    return isinstance(value, int) or str(value).strip().lstrip("+-").isdigit()


def label_names(values: Sequence[Any]) -> list[str]:
    """The sorted class names of ``values``: numerically when every one is an integer (so
    ``10`` follows ``9``), else as text."""
    names = {class_key(v) for v in values}
    if all(is_integer(v) for v in names):
        return sorted(names, key=lambda v: int(float(v)))
    return sorted(names)


def class_key(value: Any) -> str:
    """How a label is looked up among the class names: ``1``, ``1.0`` in JSON and ``"1"`` agree."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def subsample(n: int, size: int, seed: int, keys: Sequence[str] | None = None) -> list[int]:
    """The indices (in order) of ``size`` of ``n`` examples drawn by ``seed``: stratified when
    ``keys`` (each example's class) are given, each class keeping its share of the examples (the
    largest remainders rounded up) and, when ``size`` allows, at least one example.

    Args:
        n: How many examples there are.
        size: How many to keep (at most ``n``).
        seed: The draw's seed: the same seed keeps the same examples.
        keys: Each example's class, or ``None`` for a plain random draw.
    """
    rng = np.random.default_rng([seed, n, size])  # its own stream, not the training order's
    if keys is None:
        return sorted(int(i) for i in rng.permutation(n)[:size])
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    names = sorted(groups)
    share = {k: size * len(groups[k]) / n for k in names}
    take = {k: min(len(groups[k]), max(int(share[k]), 1 if size >= len(names) else 0)) for k in names}
    while sum(take.values()) > size:  # the floor of one pushed the total over: trim the most over its share
        k = max((k for k in names if take[k] > 1), key=lambda k: take[k] - share[k])
        take[k] -= 1
    while sum(take.values()) < size:  # the largest remainders round up
        k = max((k for k in names if take[k] < len(groups[k])), key=lambda k: share[k] - take[k])
        take[k] += 1
    return sorted(int(i) for k in names for i in rng.choice(groups[k], take[k], replace=False))
