"""Read documents (strings) from local files or a Hugging Face dataset.

Local formats, chosen by suffix (``.gz`` allowed on top): ``.jsonl``/``.json``/``.parquet``/``.csv``
(a text column, read with ``datasets``); any other file named (or matched by a glob) is plain
text, one document per file or per blank-line-separated block, when it is UTF-8 (WikiText ships
``.raw`` and ``.tokens`` files). A folder is searched for the tabular formats and the plain-text
suffixes ``.txt``, ``.raw`` and ``.tokens``. Every problem a user can cause becomes a
one-sentence :class:`~lmforge.errors.UserError` naming the file and what to do.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import itertools
import json
import numbers
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import UserError

TxtSplit = Literal["file", "blank_line"]
TABULAR = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
# plain text a folder is searched for (WikiText ships .raw and .tokens); a file named
# explicitly is plain text whatever its suffix, unless it is one of the formats below
PLAIN_TEXT = (".txt", ".raw", ".tokens")
# formats that are not plain text (nor read as such), and what to do with each
NOT_TEXT = {
    ".tsv": "holds tab-separated columns: convert it to .csv or .jsonl with a text column",
    ".xml": "is XML: read a MediaWiki dump with lmforge.data.WikipediaCorpus or PubMed XML with "
            "lmforge.data.PubMedCorpus, or extract the text first",
    **dict.fromkeys((".bz2", ".xz", ".zst", ".lz4", ".zip", ".7z", ".tar"),
                    "is an archive or compressed with something other than gzip: extract or decompress it "
                    "(or re-compress it with gzip, .gz)"),
}
READ = "plain UTF-8 text files of any extension, or .jsonl, .json, .parquet or .csv files, each optionally .gz"


def expand_paths(paths: str | list[str], suffixes: tuple[str, ...] | None = None, what: str | None = None) -> list[Path]:
    """Expand files, folders (recursively) and globs, sorted per entry.

    Args:
        paths: Files, folders or glob patterns.
        suffixes: File name endings a folder is searched for, e.g. ``(".xml", ".xml.gz")``;
            ``None``: the text formats :func:`read_local` reads.
        what: What the files are, for messages (e.g. ``PubMed XML``), with ``suffixes``.
    """
    if isinstance(paths, str):
        paths = [paths]
    if suffixes is None:
        accept = lambda q: _last_suffix(q) in (*TABULAR, *PLAIN_TEXT)  # noqa: E731
        nothing = f"holds no {'/'.join(PLAIN_TEXT)}/.jsonl/.json/.parquet/.csv file: point at your text files."
    else:
        accept = lambda q: q.name.lower().endswith(suffixes)  # noqa: E731
        nothing = f"holds no {what or 'matching'} file ({', '.join(suffixes)}): point at your files."
    found: list[Path] = []
    for pattern in paths:
        p = Path(pattern).expanduser()
        if p.is_dir():
            matches = sorted(q for q in p.rglob("*") if q.is_file() and accept(q))
            if not matches:
                raise UserError(f"Folder '{p}' {nothing}")
        elif p.is_file():
            matches = [p]
        else:
            matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True) if Path(m).is_file())
            if not matches:
                raise UserError(f"No file matches '{pattern}': check the path (it is read relative to {Path.cwd()}).")
        found.extend(matches)
    return found


def _last_suffix(path: Path) -> str:
    """The file's format suffix, lowercase: its last one, under a ``.gz`` (``''`` if none)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _format_of(path: Path) -> str | None:
    """How a named file is read: ``json``, ``parquet`` or ``csv`` (by ``datasets``), ``txt``
    (plain text: any suffix but the tabular ones and those of :data:`NOT_TEXT`), or ``None``."""
    suffix = _last_suffix(path)
    if suffix in NOT_TEXT:
        return None
    return TABULAR.get(suffix, "txt")


def read_text(path: Path) -> str:
    """The UTF-8 text of a file (``.gz`` decompressed), refusing binary or undecodable content
    with a message naming the file."""
    raw = path.read_bytes()
    if path.suffix.lower() == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise _unreadable_gzip(path, err) from err
    if b"\x00" in raw[:8192]:
        raise UserError(f"'{path}' looks binary (it contains NUL bytes): give plain UTF-8 text files.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1  # in bytes, from 1
        raise _not_utf8(path, line, column, raw[err.start]) from err


def _unreadable_gzip(path: Path, err: Exception) -> UserError:
    return UserError(f"'{path}' is not a readable gzip file ({err}): re-compress or remove it.")


def _not_utf8(path: Path, line: int, column: int, byte: int) -> UserError:
    return UserError(f"'{path}' is not valid UTF-8 (line {line}, column {column}: byte 0x{byte:02x}): "
                     "convert it, e.g. `iconv -t utf-8`.")


def _raw_lines(path: Path) -> Iterator[bytes]:
    """The lines of a file (``.gz`` decompressed) as bytes, split at ``\\n`` only, read one at a time."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rb") as f:
            yield from f
    except (OSError, EOFError) as err:
        if opener is open:
            raise
        raise _unreadable_gzip(path, err) from err


_JSON_TYPES = {"list": "an array", "str": "a string", "int": "a number", "float": "a number", "bool": "a boolean",
               "NoneType": "null"}


def json_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of each non-blank line of a JSON Lines file (``.gz`` decompressed),
    read one line at a time; numbers count from 1.

    The first line that is not UTF-8, not valid JSON or not a JSON object is refused with a
    sentence naming the file and the line: the one reader of JSON Lines for corpora, labelled
    data and sentence pairs.

    Args:
        path: The file.
    """
    path = Path(path)
    for number, raw in enumerate(_raw_lines(path), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise _not_utf8(path, number, err.start + 1, raw[err.start]) from err
        if number == 1:
            line = line.lstrip("\ufeff")  # a byte-order mark
        if not line.strip():
            continue
        try:
            record = json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as err:
            raise UserError(f"'{path}' line {number} is not valid JSON ({err.msg.removesuffix(' at')} at column "
                            f"{err.colno}): fix or remove that line.") from err
        if not isinstance(record, dict):
            raise UserError(f"'{path}' line {number} is {_JSON_TYPES.get(type(record).__name__, 'not an object')}, "
                            "not a JSON object with named fields: write one object per line, or remove that line.")
        yield number, record


def _is_json_lines(path: Path) -> bool:
    """Whether a ``.json``/``.jsonl`` file is JSON Lines: a ``.jsonl`` one is; a ``.json`` one is
    when its first non-blank line is a JSON object by itself (else it is one JSON document)."""
    if _last_suffix(path) == ".jsonl":
        return True
    for raw in _raw_lines(path):
        if raw.strip():
            try:
                return isinstance(json.loads(raw), dict)
            except ValueError:  # not JSON, or not UTF-8
                return False
    return False


def _check_json(path: Path) -> None:
    """Refuse a ``.json``/``.jsonl`` file that is not valid JSON with a sentence naming the line at
    fault; return if the JSON is valid (``datasets`` failed for another reason)."""
    if _is_json_lines(path):
        for _ in json_lines(path):
            pass
        return
    text = read_text(path)
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"'{path}' is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}): fix it, "
                        "or write one JSON object per line (.jsonl).") from err


def read_txt(path: Path, split: TxtSplit = "file") -> list[str]:
    """Documents of a text file: the whole file, or each block between blank lines."""
    text = read_text(path).replace("\r\n", "\n")
    if split == "file":
        docs = [text.strip()]
    else:
        docs = [block.strip() for block in re.split(r"\n\s*\n", text)]
    return [d for d in docs if d]


def iter_tabular(path: Path, fmt: str, text_field: str) -> Iterator[str]:
    """Documents from a column of a json/jsonl/parquet/csv file, read with ``datasets`` in
    batches (memory does not grow with the file).

    A JSON Lines record without the field is refused, naming its line; empty, blank or
    null texts are skipped.
    """
    import datasets

    try:
        ds = datasets.load_dataset(fmt, data_files=[str(path)], split="train")
    except Exception as err:  # datasets wraps parse errors in several exception types
        if fmt == "json":
            _check_json(path)  # the line at fault, which datasets' message does not name
        raise UserError(f"Could not read {fmt} file {path}: {str(err).splitlines()[0]}") from err
    if text_field not in ds.column_names:
        raise UserError(
            f"Field '{text_field}' is not in {path} (its fields: {', '.join(ds.column_names)}): "
            "set `source.text_field` to the column that holds the text."
        )
    checked = fmt != "json"
    try:
        for batch in ds.select_columns([text_field]).iter(batch_size=1024):
            for text in batch[text_field]:
                if text is None and not checked:  # null, or no such key: only the raw lines tell
                    _check_json_lines(path, text_field)
                    checked = True
                if isinstance(text, str) and text.strip():
                    yield text
    except UnicodeDecodeError as err:  # pyarrow's JSON reader passes invalid UTF-8 through
        if fmt == "json":
            _check_json(path)  # names the line
        raise UserError(f"'{path}': text is not valid UTF-8 ({err.reason}): convert the file to UTF-8.") from err


def _check_json_lines(path: Path, text_field: str) -> None:
    """Refuse a JSON Lines file with a record that lacks ``text_field``, naming the line (a
    single JSON document has no lines to name: nothing is checked)."""
    if not _is_json_lines(path):
        return
    for number, record in json_lines(path):
        if text_field not in record:
            raise UserError(f"'{path}' line {number} has no '{text_field}' field: add it or remove the line.")


def read_local(paths: str | list[str], text_field: str = "text", txt_split: TxtSplit = "file") -> list[str]:
    """All documents of local files: the plain-text files', then the tabular files', each in sorted path order.

    Args:
        paths: Files, folders or glob patterns.
        text_field: Column holding the text in json/jsonl/parquet/csv files.
        txt_split: ``file`` (a plain-text file is one document) or ``blank_line`` (each paragraph block).
    """
    return list(iter_local(paths, text_field, txt_split))


def iter_local(paths: str | list[str], text_field: str = "text", txt_split: TxtSplit = "file") -> Iterator[str]:
    """:func:`read_local`, one document at a time: memory holds one file's text (a tabular
    file is read in batches)."""
    files = expand_paths(paths)
    for f in files:
        if _format_of(f) is None:
            raise UserError(f"'{f}' {NOT_TEXT[_last_suffix(f)]} (a corpus is read from {READ}).")
    tabular = [f for f in files if _format_of(f) != "txt"]
    for f in files:
        if _format_of(f) == "txt":
            yield from read_txt(f, txt_split)
    for fmt in dict.fromkeys(_format_of(f) for f in tabular):
        for f in tabular:
            if _format_of(f) == fmt:
                yield from iter_tabular(f, fmt, text_field)




def iter_hf(name: str, config: str | None = None, split: str = "train", text_field: str = "text",
            streaming: bool = False) -> Iterator[str]:
    """The non-blank texts of a Hugging Face hub dataset, one at a time (nothing is read until asked).

    Args:
        name: Dataset name on the hub, e.g. ``wikimedia/wikipedia``.
        config: Its configuration, e.g. ``20231101.en``.
        split: Which split to read.
        text_field: Column holding the text.
        streaming: Stream instead of downloading the whole dataset first.
    """
    import datasets

    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=streaming)
    except Exception as err:  # offline, unknown name, gated repo, bad config ...
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"Could not load the Hugging Face dataset '{name}' (config {config!r}, split '{split}'): {first}. "
            "Check the name and your network, or download it and point `source.paths` at the local files."
        ) from err
    for row in ds:
        if text_field not in row:
            raise UserError(
                f"Field '{text_field}' is not in dataset '{name}' (its fields: {', '.join(row)}): set `source.text_field`."
            )
        text = row[text_field]
        if isinstance(text, str) and text.strip():
            yield text


def read_hf(
    name: str,
    config: str | None = None,
    split: str = "train",
    text_field: str = "text",
    streaming: bool = False,
    max_documents: int | None = None,
) -> list[str]:
    """Documents of a Hugging Face hub dataset.

    Args:
        name: Dataset name on the hub, e.g. ``wikimedia/wikipedia``.
        config: Its configuration, e.g. ``20231101.en``.
        split: Which split to read.
        text_field: Column holding the text.
        streaming: Stream instead of downloading the whole dataset first.
        max_documents: Stop after this many documents.
    """
    return list(itertools.islice(iter_hf(name, config, split, text_field, streaming), max_documents))


def split_documents(
    documents: list[str], val_fraction: float, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split documents into train and validation sets, by document.

    A document goes to validation iff a SHA-256 hash of the seed and its text,
    read as a number in ``[0, 1)``, falls below ``val_fraction``. Unlike the
    built-in ``hash()``, this is stable across processes and runs, and a
    document's side does not depend on the other documents.

    Args:
        documents: The documents to split. Their relative order is kept.
        val_fraction: Expected fraction of documents sent to validation, in
            ``[0, 1)``.
        seed: Mixed into the hash to draw a different split.

    Returns:
        A ``(train, val)`` tuple of lists whose union is ``documents``.

    Raises:
        ValueError: If ``val_fraction`` is not a number in ``[0, 1)``.
    """
    # The negated comparison also rejects NaN.
    if not isinstance(val_fraction, numbers.Real) or not (0.0 <= val_fraction < 1.0):
        raise ValueError(
            f"val_fraction must be a number in [0, 1), got {val_fraction!r}."
        )
    train: list[str] = []
    val: list[str] = []
    for doc in documents:
        (val if is_validation(doc, val_fraction, seed) else train).append(doc)
    return train, val


def is_validation(document: str, val_fraction: float, seed: int = 0) -> bool:
    """Whether :func:`split_documents` sends ``document`` to validation: decided by the
    document alone, so a stream can be split one document at a time."""
    digest = hashlib.sha256(f"lmforge-split:{seed}:".encode() + document.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction
