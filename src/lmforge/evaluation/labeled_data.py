"""Labelled texts for downstream evaluation: single sentences or sentence pairs with a class
or a score, from local ``.tsv``/``.csv``/``.jsonl`` files or a Hugging Face dataset.

The DataModule never knows the model family. It takes the tokenizer of the task it feeds
(the pretrained model's) and frames every example with that tokenizer's own template when it
has one (BERT ``[CLS] a [SEP] b [SEP]`` with token types 0/1, RoBERTa ``<s> a </s></s> b </s>``,
T5 ``a </s> b </s>``); a tokenizer without one (GPT, ELMo, a T5 trained here) gets
``<eos> a <eos> b <eos>``: each text between end-of-document tokens, as documents sat in the
pretraining stream, so a causal model's last token has read everything.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tokenizers
import torch
from jsonargparse.typing import Path_fr

from lmforge.data.documents import json_lines
from lmforge.data.source import DataSource
from lmforge.data.tokenizer import TokenizerSpec
from lmforge.errors import UserError
from lmforge.evaluation.downstream_data import DownstreamData

TaskType = Literal["auto", "classification", "regression", "multilabel"]
FileFormat = Literal["auto", "tsv", "csv", "jsonl", "sts"]
Example = dict[str, Any]  # input_ids, token_type_ids (np arrays), label (int, float or multi-hot array)

SUFFIXES = (".tsv", ".csv", ".jsonl")


def read_records(path: str | Path, file_format: FileFormat = "auto") -> list[dict[str, Any]]:
    """The rows of a ``.tsv``/``.csv`` file with a header line, the objects of a ``.jsonl`` file,
    or the pairs of an STS-Benchmark file (``sts``: no header; tab-separated genre, file, year,
    id, score, sentence 1, sentence 2, extra fields ignored, no quoting) as ``sentence1``,
    ``sentence2`` and ``score``.

    Args:
        path: The file.
        file_format: ``tsv``, ``csv``, ``jsonl`` or ``sts``; ``auto`` goes by the file's suffix.
    """
    path = Path(path)
    kind = path.suffix if file_format == "auto" else f".{file_format}"
    if kind not in (*SUFFIXES, ".sts"):
        raise UserError(f"'{path}' is not a .tsv, .csv or .jsonl file: convert it to one of those, or name its "
                        "layout with `data.format` (tsv, csv or jsonl).")
    if not path.is_file():
        raise UserError(f"Labelled data file '{path}' does not exist: check the path.")
    if kind == ".jsonl":
        records = [record for _, record in json_lines(path)]
    else:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as err:
            raise UserError(f"'{path}' is not UTF-8 text (byte {err.start}): convert it to UTF-8.") from err
        if kind == ".sts":
            records = _sts_records(text, path)
        else:
            # GLUE-style .tsv files hold quote characters inside texts: no quoting in .tsv
            options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if kind == ".tsv" else {}
            csv.field_size_limit(2**31 - 1)
            records = [row for row in csv.DictReader(text.splitlines(), **options) if any(row.values())]
    if not records:
        raise UserError(f"'{path}' holds no examples: it is empty (or has a header line only).")
    return records


def _sts_records(text: str, path: Path) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            records.append({"sentence1": fields[5], "sentence2": fields[6], "score": float(fields[4])})
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


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    try:
        return math.isfinite(float(str(value)))
    except ValueError:
        return False


def _is_integer(value: Any) -> bool:
    """An int, or a text spelling one (``"3"``, not ``"3.0"``): what a class id looks like."""
    if isinstance(value, bool) or isinstance(value, float):
        return False
    return isinstance(value, int) or str(value).strip().lstrip("+-").isdigit()


def label_names(values: Sequence[Any]) -> list[str]:
    """The sorted class names of ``values``: numerically when every one is an integer (so
    ``10`` follows ``9``), else as text."""
    names = {class_key(v) for v in values}
    if all(_is_integer(v) for v in names):
        return sorted(names, key=lambda v: int(float(v)))
    return sorted(names)


def class_key(value: Any) -> str:
    """How a label is looked up among the class names: ``1``, ``1.0`` in JSON and ``"1"`` agree."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def truncate_pair(first: list[int], second: list[int] | None, budget: int) -> tuple[list[int], list[int] | None]:
    """Cut the longer text one token at a time until both fit in ``budget`` tokens (longest first)."""
    a, b = len(first), len(second) if second is not None else 0
    while a + b > budget:
        if a >= b:
            a -= 1
        else:
            b -= 1
    return first[:a], (second[:b] if second is not None else None)


class LabeledText(DownstreamData):
    """Sentence or sentence-pair classification/regression data for fine-tuning a pretrained model.

    Sources: a local file of training examples (``.tsv``, ``.csv`` or ``.jsonl``; ``.tsv`` and
    ``.csv`` need a header naming the columns) with a ``validation`` file, or a Hugging Face
    dataset (e.g. ``glue`` with ``hf_config: sst2``) whose ``hf_split`` trains, with a
    ``validation`` split; without ``validation``, ``val_fraction`` of the training examples is
    held out, shuffled by ``seed``. A relative path written in a config file is looked up next
    to that file first, then in the working directory. Texts are tokenized with the task's
    tokenizer (the pretrained model's), cut to ``seq_len`` tokens and padded per batch.

    Labels: with ``task_type: classification`` every distinct training label is a class; the
    class list (``labels``) is sorted (numerically if all are integers) unless given, and a
    validation or test label outside it is an error. With ``regression`` labels are numbers.
    With ``multilabel`` each example has a list of labels (a JSON list, or a text split at
    ``label_separator``), possibly empty. ``auto`` picks multilabel when the training labels
    are lists, regression when every one is a number and some is not an integer,
    classification otherwise.

    Relation classification marks the two entities in each text (``markers``, e.g.
    ``<< subject >>`` and ``[[ object ]]``, the SciERC/ChemProt layout); the markers become
    special tokens of the run's tokenizer (never split; the model's embeddings grow for them),
    and each batch carries ``entity_positions``, the positions of the two opening markers,
    for ``entity_start`` pooling.

    Args:
        source: The training examples: a local file (or files), or a hub dataset and its
            training split (``hf_split``); ``text_field`` is the column of the (first) text.
        validation: The validation examples: a file when ``source`` is local, a split name
            (e.g. ``validation``) when it is a hub dataset; ``None`` holds out ``val_fraction``
            of the training examples.
        test: The test examples for ``lmforge test``, as ``validation`` (GLUE test labels are
            hidden: leave it unset there).
        format: The files' layout: ``tsv``, ``csv``, ``jsonl`` or ``sts`` (STS Benchmark: the
            columns are ``sentence1``, ``sentence2``, ``score``); ``auto`` goes by the suffix
            (SciBERT's ``.txt`` files hold JSON lines: set ``jsonl``).
        text_pair_field: Column of the second text of sentence-pair tasks; ``None`` for single texts.
        label_field: Column of the label.
        task_type: ``classification``, ``regression``, ``multilabel`` or ``auto`` (see above).
        label_separator: Multi-label: what separates the labels in a text field (``.tsv``/``.csv``).
        markers: The entity markers ``[open 1, close 1, open 2, close 2]`` in the texts, added
            to the tokenizer as special tokens; ``None`` for texts without them.
        labels: The class names in id order; ``None`` takes the sorted training labels.
        val_fraction: Fraction of the training examples held out when there is no ``validation``.
        seed: Seed of that held-out split. The training order follows the run's
            ``seed_everything`` (so seeds vary it), or this seed when there is none.
        max_documents: Use at most this many examples of each split (quick runs).
        tokenizer: Only when the task brings no tokenizer (a model trained from scratch): the
            tokenizer to load, or how to train one on the training texts.
        seq_len: Longest input in tokens, special tokens included; longer texts are cut (the
            longer of a pair first).
        batch_size: Examples per batch on each device.
        group_by_length: Batch training examples of similar length together (each batch is
            padded to its longest example either way).
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        source: DataSource = DataSource(),
        validation: Path_fr | str | None = None,
        test: Path_fr | str | None = None,
        format: FileFormat = "auto",
        text_pair_field: str | None = None,
        label_field: str = "label",
        task_type: TaskType = "auto",
        label_separator: str = ",",
        markers: list[str] | None = None,
        labels: list[str] | None = None,
        val_fraction: float = 0.1,
        seed: int = 1234,
        max_documents: int | None = None,
        tokenizer: TokenizerSpec = TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=2048, lowercase=True),
        seq_len: int = 128,
        batch_size: int = 32,
        group_by_length: bool = False,
        num_workers: int = 0,
    ):
        super().__init__(source, validation, test, labels, val_fraction, seed, max_documents, tokenizer, seq_len,
                         batch_size, group_by_length, num_workers)
        if task_type not in ("auto", "classification", "regression", "multilabel"):
            raise UserError(f"task_type={task_type!r}: use classification, regression, multilabel or auto.")
        if markers is not None and (len(markers) != 4 or len(set(markers)) != 4 or not all(m.strip() for m in markers)):
            raise UserError(f"markers={markers}: give four distinct markers, [open 1, close 1, open 2, close 2], "
                            "e.g. ['<<', '>>', '[[', ']]'].")
        self.format = format
        self.text_pair_field, self.label_field = text_pair_field, label_field
        self.requested_task_type = task_type
        self.label_separator = label_separator
        self.markers = list(markers) if markers is not None else None
        self._raw: dict[str, list[tuple[str, str | None, Any]]] | None = None
        self.task_type: Literal["classification", "regression", "multilabel"] | None = None

    # -- reading ------------------------------------------------------------------------------
    def _rows(self, records: list[dict[str, Any]], source: str) -> list[tuple[str, str | None, Any]]:
        text_field = self.source.text_field
        fields = [text_field, self.label_field] + ([self.text_pair_field] if self.text_pair_field else [])
        check_columns(records, fields, source)
        rows = []
        for number, r in enumerate(records, start=1):
            text, label = r[text_field], r[self.label_field]
            pair = str(r[self.text_pair_field] or "") if self.text_pair_field else None
            if label is None or label == "" and self.requested_task_type != "multilabel":
                raise UserError(f"'{source}', example {number}: the label ('{self.label_field}') is empty; "
                                "fill it or remove the example.")
            rows.append((str(text or ""), pair, label))
        return rows

    def _read(self, where: str | list[str]) -> list[tuple[str, str | None, Any]]:
        """The examples of one split: ``where`` names files when the source is local, a split of
        the hub dataset otherwise."""
        if self.source.is_local:
            files = [where] if isinstance(where, str) else where
            rows = [row for file in files for row in self._rows(read_records(file, self.format), file)]
        else:
            rows = self._read_hub(where)
        return rows[: self.max_documents] if self.max_documents else rows

    def _read_hub(self, split: str) -> list[tuple[str, str | None, Any]]:
        import datasets

        try:
            ds = datasets.load_dataset(self.source.hf_dataset, self.source.hf_config, split=split)
        except Exception as err:  # datasets raises many types for a wrong name, split or no network
            raise UserError(f"Could not load split '{split}' of the Hugging Face dataset '{self.name}': {err}") from err
        feature = ds.features.get(self.label_field)
        # a ClassLabel, or a list of them (multi-label): keep the dataset's own class order
        names = getattr(feature, "names", None) or getattr(getattr(feature, "feature", None), "names", None)
        if names and self.labels is None:
            self.labels = list(names)
        records = [dict(r) for r in ds]
        if not records:
            raise UserError(f"Split '{split}' of '{self.name}' holds no examples: choose another split.")
        if names:
            # ClassLabel ids become their names; -1 marks a hidden label (GLUE test sets)
            if any(r[self.label_field] == -1 or r[self.label_field] == [-1] for r in records):
                raise UserError(f"Split '{split}' of '{self.name}' has hidden labels (-1): evaluate on a split "
                                "with labels, e.g. set `test` to null.")
            for r in records:
                value = r[self.label_field]
                r[self.label_field] = [names[v] for v in value] if isinstance(value, list) else names[value]
        return self._rows(records, f"{self.name}:{split}")

    def _hold_out(self, train: list[tuple[str, str | None, Any]]) -> tuple[list, list]:
        """(train, validation): ``val_fraction`` of the training examples, drawn by ``seed``, held out."""
        order = np.random.default_rng(self.seed).permutation(len(train))
        n_val = max(1, round(len(train) * self.val_fraction))
        if n_val >= len(train):
            raise UserError(f"'{self.name}' has {len(train)} examples, too few to hold out "
                            f"val_fraction={self.val_fraction} for validation: add examples or give `validation`.")
        return [train[i] for i in sorted(order[n_val:])], [train[i] for i in sorted(order[:n_val])]

    def raw(self) -> dict[str, list[tuple[str, str | None, Any]]]:
        """``(text, pair text or None, label)`` of every example, by split (train, val[, test])."""
        if self._raw is None:
            self.source.require("labelled data", "a .tsv, .csv or .jsonl file")
            train = self._read(self.source.paths if self.source.is_local else self.source.hf_split)
            if self.validation is not None:
                raw = {"train": train, "val": self._read(self.validation)}
            else:
                raw = dict(zip(("train", "val"), self._hold_out(train)))
            if self.test is not None:
                raw["test"] = self._read(self.test)
            self._settle_labels(raw["train"])
            self._raw = raw
        return self._raw

    def _settle_labels(self, train: list[tuple[str, str | None, Any]]) -> None:
        values = [label for _, _, label in train]
        task_type = self.requested_task_type
        if task_type == "auto":
            numbers = self.labels is None and all(_is_number(v) for v in values)
            if all(isinstance(v, list) for v in values):
                task_type = "multilabel"
            else:
                task_type = "regression" if numbers and not all(_is_integer(v) for v in values) else "classification"
        if task_type == "regression":
            bad = next((v for v in values if not _is_number(v)), None)
            if bad is not None:
                raise UserError(f"Label {bad!r} of '{self.name}' is not a number, but task_type is regression: "
                                "set task_type to classification.")
        elif self.labels is None:
            if task_type == "multilabel":
                values = [name for v in values for name in self._label_list(v)]
            self.labels = label_names(values)
        self.task_type = task_type

    def _label_list(self, value: Any) -> list[Any]:
        """The labels of a multi-label example: a JSON list, or a text split at ``label_separator``."""
        if isinstance(value, list):
            return value
        return [part.strip() for part in str(value).split(self.label_separator) if part.strip()]

    @property
    def num_labels(self) -> int:
        """Classes of a classification or multi-label task; 1 (the score) for regression."""
        self.raw()
        return 1 if self.task_type == "regression" else len(self.labels)

    # -- tokenizer ----------------------------------------------------------------------------
    @property
    def added_tokens(self) -> list[str]:
        """The entity markers, special tokens of the run's tokenizer."""
        return list(self.markers or [])

    def training_texts(self) -> Iterable[str]:
        return (t for a, b, _ in self.raw()["train"] for t in (a, b) if t)

    # -- encoding -----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.datasets:
            return
        self.datasets = {split: self.encode(rows, split) for split, rows in self.raw().items()}

    def encode(self, rows: list[tuple[str, str | None, Any]], split: str = "train") -> list[Example]:
        """Token ids, token type ids and label ids (or scores) of ``(text, pair, label)`` rows."""
        pair = self.text_pair_field is not None
        backend = self.tokenizer.backend
        if backend.num_special_tokens_to_add(pair) > 0:  # the tokenizer's own template
            template = tokenizers.Tokenizer.from_str(backend.to_str())  # a copy: the task's stays as it is
            template.enable_truncation(self.seq_len, strategy="longest_first")
            template.no_padding()
            inputs = [(a, b or "") if pair else a for a, b, _ in rows]
            inputs_ids = [(e.ids, e.type_ids) for e in template.encode_batch(inputs, add_special_tokens=True)]
        else:
            firsts = self.tokenizer.encode_batch([a for a, _, _ in rows])
            seconds = self.tokenizer.encode_batch([b or "" for _, b, _ in rows]) if pair else [None] * len(rows)
            inputs_ids = [self.frame(a, b) for a, b in zip(firsts, seconds)]
        examples = [
            {"input_ids": np.asarray(ids, dtype=np.int64), "token_type_ids": np.asarray(types, dtype=np.int64),
             "label": self._label(label, split)}
            for (ids, types), (_, _, label) in zip(inputs_ids, rows)
        ]
        if self.markers:
            self._locate_entities(examples, split)
        return examples

    def _locate_entities(self, examples: list[Example], split: str) -> None:
        """Each example's ``entity_positions``: where its two opening markers are. One cut off by
        ``seq_len`` falls back to the first token, and the number of such examples is reported."""
        opening = [self.tokenizer.backend.token_to_id(self.markers[0]), self.tokenizer.backend.token_to_id(self.markers[2])]
        if None in opening:
            raise UserError(f"The tokenizer lacks the markers {self.markers}: hand the data to the task with "
                            "`lmforge.start.connect`, which adds them.")
        missing = 0
        for e in examples:
            positions = []
            for marker in opening:
                found = np.flatnonzero(e["input_ids"] == marker)
                positions.append(int(found[0]) if found.size else 0)
                missing += not found.size
            e["entity_positions"] = np.asarray(positions, dtype=np.int64)
        if missing:
            warnings.warn(f"{missing} entity markers of the {split} examples of '{self.name}' were cut off at "
                          f"seq_len={self.seq_len}; those entities are read at the first token: raise data.seq_len.",
                          stacklevel=2)

    def frame(self, first: list[int], second: list[int] | None = None) -> tuple[list[int], list[int]]:
        """Ids and token types of ``<eos> a <eos> [b <eos>]``, the texts cut (longest first) to
        fit ``seq_len``: the framing for tokenizers without a template of their own."""
        eos = self.tokenizer.eos_id
        pair = second is not None
        first, second = truncate_pair(first, second, self.seq_len - (3 if pair else 2))
        ids = [eos, *first, eos] + ([*second, eos] if pair else [])
        types = [0] * (len(first) + 2) + ([1] * (len(second) + 1) if pair else [])
        return ids, types

    def _label(self, value: Any, split: str) -> int | float | np.ndarray:
        if self.task_type == "regression":
            return float(value)
        ids = self._label_ids
        keys = [class_key(v) for v in self._label_list(value)] if self.task_type == "multilabel" else [class_key(value)]
        for key in keys:
            if key not in ids:
                raise UserError(f"{split} label {key!r} of '{self.name}' is not among the training labels "
                                f"{self.labels}: fix the example or list every class in `data.labels`.")
        if self.task_type != "multilabel":
            return ids[keys[0]]
        hot = np.zeros(len(ids), dtype=np.float32)
        hot[[ids[k] for k in keys]] = 1.0
        return hot

    @property
    def _label_ids(self) -> dict[str, int]:
        return {class_key(name): i for i, name in enumerate(self.labels or [])}

    def collate(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        """Pad to the longest example of the batch; ``attention_mask`` is 1 on real tokens."""
        longest = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), longest), self.pad_id, dtype=torch.long)
        types = torch.zeros(len(examples), longest, dtype=torch.long)
        mask = torch.zeros(len(examples), longest, dtype=torch.long)
        for row, e in enumerate(examples):
            n = len(e["input_ids"])
            ids[row, :n] = torch.from_numpy(e["input_ids"])
            types[row, :n] = torch.from_numpy(e["token_type_ids"])
            mask[row, :n] = 1
        if self.task_type == "multilabel":
            labels = torch.from_numpy(np.stack([e["label"] for e in examples]))  # (B, num_labels), multi-hot
        else:
            dtype = torch.float32 if self.task_type == "regression" else torch.long
            labels = torch.tensor([e["label"] for e in examples], dtype=dtype)
        batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": labels}
        if "entity_positions" in examples[0]:
            batch["entity_positions"] = torch.from_numpy(np.stack([e["entity_positions"] for e in examples]))  # (B, 2)
        return batch

