"""The data of a zero/few-shot task file (:mod:`lmforge.evaluation.prompt_tasks`): its ``data:``
section, the splits loaded with ``datasets`` (a hub name, or a local file or folder through the
builder of its extension), and the named preprocessings of lm-evaluation-harness's tasks."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import UserError, did_you_mean

Example = dict[str, Any]
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
DATA_KEYS = ("path", "name", "split", "shot_split", "limit", "data_files")


@dataclass(frozen=True)
class TaskData:
    """Where a task's examples come from.

    Args:
        path: A hub dataset name, or a local ``.jsonl``/``.json``/``.csv``/``.parquet``/``.txt``
            file or a folder of them (relative paths: from the task file's folder).
        name: The hub config name (e.g. ``pqa_labeled``).
        split: The split scored (a single local file is split ``train``).
        shot_split: Where few-shot examples come from.
        limit: Score only the first N examples (``None``: all).
        data_files: Local files per split (``{train: a.jsonl, test: b.jsonl}``), instead of ``path``.
    """

    path: str | None = None
    name: str | None = None
    split: str = "test"
    shot_split: str = "train"
    limit: int | None = None
    data_files: tuple[tuple[str, str], ...] = ()


def read_data(spec: Any, where: str) -> TaskData:
    """The ``data:`` section of a task file, checked.

    Args:
        spec: The section as YAML read it.
        where: ``Task file 'x.yaml'``, the start of every refusal.
    """
    if not isinstance(spec, dict):
        raise UserError(f"{where} needs a `data:` mapping with `path` (a hub dataset or a local file) and `split`.")
    for key in spec:
        if key not in DATA_KEYS:
            raise UserError(f"{where} has unknown key 'data.{key}': {did_you_mean(str(key), DATA_KEYS)}")
    for key in ("path", "name", "split", "shot_split"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise UserError(f"{where}: `data.{key}` must be a string, got {spec[key]!r}.")
    limit = spec.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise UserError(f"{where}: `data.limit` must be a whole number of examples of at least 1, got {limit!r}.")
    files = spec.get("data_files") or {}
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise UserError(f"{where}: `data.data_files` must map split names to files, e.g. {{test: test.jsonl}}.")
    if bool(spec.get("path")) == bool(files):
        raise UserError(f"{where}: give exactly one of `data.path` (a hub dataset, a local file or folder) and "
                        "`data.data_files` (local files per split).")
    defaults = TaskData()
    return TaskData(spec.get("path"), spec.get("name"), spec.get("split") or defaults.split,
                    spec.get("shot_split") or defaults.shot_split, limit,
                    tuple((str(k), str(v)) for k, v in files.items()))


def _local(path: str, base: Path) -> Path | None:
    """``path`` as a local file or folder (relative to ``base``), or ``None`` for a hub name."""
    local = Path(path).expanduser()
    local = local if local.is_absolute() else base / local
    looks_local = Path(path).suffix in BUILDERS or path.startswith((".", "/", "~"))
    return local if local.exists() or looks_local else None


def load_splits(data: TaskData, base: Path, where: str, whole_files: bool = False) -> Any:
    """The dataset's splits (a ``datasets.DatasetDict``).

    Args:
        data: The task's data section.
        base: The task file's folder, which relative local paths start from.
        where: ``Task file 'x.yaml'``, the start of every refusal.
        whole_files: A ``.txt`` file is one example (perplexity), not one example per line.
    """
    import datasets

    text = {"sample_by": "document"} if whole_files else {}
    if data.data_files:
        files = {split: _existing(base / f, where, "data.data_files") for split, f in data.data_files}
        builder = _builder(next(iter(files.values())), where)
        return _read_local(lambda: datasets.load_dataset(builder, data_files={s: str(f) for s, f in files.items()},
                                                         **(text if builder == "text" else {})), base, where)
    assert data.path is not None
    local = _local(data.path, base)
    if local is None:
        try:
            return datasets.load_dataset(data.path, data.name)
        except (datasets.exceptions.DatasetNotFoundError, FileNotFoundError) as err:
            raise UserError(f"{where}: `data.path` '{data.path}' is neither a local file nor a dataset the hub "
                            "serves (offline, or a typo?): check the name or give a local file.") from err
        except ValueError as err:  # datasets' answer to a config name it does not have
            raise UserError(f"{where}: `data.name` {data.name!r} is not a config of {data.path} "
                            f"({str(err).splitlines()[0]}): fix `data.name`.") from err
    local = _existing(local, where, "data.path")
    if local.is_dir():
        return _read_local(lambda: datasets.load_dataset(str(local), **text), local, where)
    builder = _builder(local, where)
    return _read_local(lambda: datasets.load_dataset(builder, data_files=str(local),
                                                     **(text if builder == "text" else {})), local, where)


def _read_local(load: Callable[[], Any], path: Path, where: str) -> Any:
    """``load()``, datasets' failure on a local file it cannot read (a header without rows, broken
    JSON) refused with the file's name."""
    import datasets

    try:
        return load()
    except (ValueError, StopIteration, datasets.exceptions.DatasetGenerationError) as err:
        cause = err.__cause__ if err.__cause__ is not None else err
        raise UserError(f"{where}: `data.path` '{path}' could not be read ({type(cause).__name__}: "
                        f"{str(cause).splitlines()[0] if str(cause) else 'no rows'}): check that it holds examples "
                        "in the format its name says.") from err


def _existing(path: Path, where: str, key: str) -> Path:
    if not path.exists():
        raise UserError(f"{where}: `{key}` file '{path}' does not exist: fix the path (relative paths start from "
                        "the task file's folder).")
    if path.is_file() and path.stat().st_size == 0:
        raise UserError(f"{where}: `{key}` file '{path}' is empty: give a file with examples.")
    return path


def _builder(path: Path, where: str) -> str:
    if path.suffix not in BUILDERS:
        raise UserError(f"{where}: '{path}' is not a {'/'.join(BUILDERS)} file: convert it to one of those.")
    return BUILDERS[path.suffix]


def split_of(splits: Any, split: str, data: TaskData, where: str, key: str) -> Any:
    """One split of ``splits``, refused when absent or empty.

    Args:
        splits: The loaded ``DatasetDict``.
        split: Its name.
        data: The task's data section (for the message).
        where: ``Task file 'x.yaml'``.
        key: The task file's key that named the split (``data.split``, ``data.shot_split``).
    """
    source = data.path or "data.data_files"
    if split not in splits:
        raise UserError(f"{where}: `{key}` '{split}' is not a split of {source}: its splits are "
                        f"{', '.join(splits)} (a single local file is split 'train').")
    if len(splits[split]) == 0:
        raise UserError(f"{where}: `{key}` '{split}' of {source} is empty: choose a split with examples.")
    return splits[split]


def _hellaswag_text(text: str) -> str:
    """lm-eval's cleanup of HellaSwag's WikiHow artefacts."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag(example: Example) -> Example:
    """``query``, ``choices`` (cleaned endings) and ``gold`` (the label as a number), as lm-eval."""
    context = example["ctx_a"] + " " + example["ctx_b"].capitalize()
    return {**example, "query": _hellaswag_text(example["activity_label"] + ": " + context),
            "choices": [_hellaswag_text(e) for e in example["endings"]], "gold": int(example["label"])}


def lambada(example: Example) -> Example:
    """``context``: the text up to its last word; ``continuation``: a space and that word (lm-eval
    splits at single spaces)."""
    words = example["text"].split(" ")
    return {**example, "context": " ".join(words[:-1]), "continuation": " " + words[-1]}


def pubmedqa(example: Example) -> Example:
    """``abstract``: the abstract's passages (PubMedQA ``context.contexts``) one per line."""
    return {**example, "abstract": "\n".join(example["context"]["contexts"])}


def medmcqa(example: Example) -> Example:
    """``options`` (``opa``..``opd``) and ``options_block`` (``A. ...`` one per line, as lm-eval's
    prompt lists them); the answer stays ``cop``, its index."""
    options = [example[k] for k in ("opa", "opb", "opc", "opd")]
    block = "".join(f"{letter}. {option}\n" for letter, option in zip("ABCD", options))
    return {**example, "options": options, "options_block": block}


def sciq(example: Example) -> Example:
    """The supporting passage without leading whitespace (lm-eval's ``support.lstrip()``)."""
    return {**example, "support": example["support"].lstrip()}


def arc(example: Example) -> Example:
    """``gold``: the index of ``answerKey`` among ``choices.label``."""
    return {**example, "gold": list(example["choices"]["label"]).index(example["answerKey"])}


PREPROCESSINGS: dict[str, Callable[[Example], Example]] = {
    "arc": arc, "hellaswag": hellaswag, "lambada": lambada, "medmcqa": medmcqa, "pubmedqa": pubmedqa, "sciq": sciq,
}


def preprocessed(name: str | None, example: Example, index: int, split: str, where: str) -> Example:
    """``example`` after the preprocessing ``name`` (``None``: as it is).

    Args:
        name: A key of :data:`PREPROCESSINGS`, or ``None``.
        example: One row of the data.
        index: Its index in ``split`` (for the message).
        split: Its split.
        where: ``Task file 'x.yaml'``.
    """
    if name is None:
        return example
    try:
        return PREPROCESSINGS[name](example)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{where}: `preprocess` {name} cannot read item {index} of split '{split}' ({err!r}); its "
                        f"fields are {', '.join(example)}: choose the preprocessing made for this dataset.") from err
