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

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tokenizers
import torch
from jsonargparse.typing import Path_fr

from lmforge.data.source import DataSource
from lmforge.data.tokenizer import TokenizerSpec
from lmforge.errors import UserError
from lmforge.evaluation.downstream_data import DownstreamData
from lmforge.evaluation.labeled_records import (  # noqa: F401 (read_records: this module's API too)
    FileFormat, check_columns, class_key, is_integer, is_number, label_names, numbered_records, read_records,
)

TaskType = Literal["auto", "classification", "regression", "multilabel"]
Row = tuple[str, str | None, Any]  # text, pair text or None, label
Example = dict[str, Any]  # input_ids, token_type_ids (np arrays), label (int, float or multi-hot array)


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
    ``.csv`` have a header naming the columns, or ``columns`` names them) with a ``validation``
    file, or a Hugging Face dataset (e.g. ``nyu-mll/glue`` with ``hf_config: sst2``) whose
    ``hf_split`` trains, with a ``validation`` split (``extra_validation``: more sets scored in
    the same run, e.g. MNLI's mismatched one); without ``validation``, ``val_fraction`` of the training examples is
    held out, shuffled by ``seed``. A relative path written in a config file is looked up next
    to that file first, then in the working directory. Texts are tokenized with the task's
    tokenizer (the pretrained model's), cut to ``seq_len`` tokens and padded per batch.

    Labels: with ``task_type: classification`` every distinct training label is a class; the
    class list (``labels``) is sorted (numerically if all are integers) unless given, and a
    validation or test label outside it is an error. With ``regression`` labels are numbers.
    With ``multilabel`` each example has a list of labels (a JSON list, or a text split at
    ``label_separator``), possibly empty. ``auto`` picks multilabel when the training labels
    are lists, regression when every one is a number and some is not an integer,
    classification otherwise. A hub dataset's class labels (``ClassLabel``) keep its own class
    names, or ``labels`` renames its classes in id order (``['0', '1']``: GLUE's file names).

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
        extra_validation: Further validation sets scored in the same run, by name, as
            ``validation`` (files, or hub split names), e.g. ``{mismatched: MNLI/dev_mismatched.tsv}``:
            their metrics are logged as ``val/<metric>/<name>`` (``val/acc/mismatched``); checkpoints
            follow the main set's.
        test: The test examples for ``lmforge test``, as ``validation`` (GLUE test labels are
            hidden: leave it unset there).
        format: The files' layout: ``tsv``, ``csv``, ``jsonl`` or ``sts`` (STS Benchmark: the
            columns are ``sentence1``, ``sentence2``, ``score``); ``auto`` goes by the suffix
            (SciBERT's ``.txt`` files hold JSON lines: set ``jsonl``).
        columns: The names of the ``.tsv``/``.csv`` files' columns, in order: for files without a
            header line (``header: false``; GLUE's CoLA: ``[source, label, original_label,
            sentence]``), or renaming the header's (GLUE MRPC's ``#1 String``: a YAML value cannot
            start with ``#``); ``None``: the header's names. A line with another number of fields
            than the header (or ``columns``) is refused.
        header: Whether the ``.tsv``/``.csv`` files' first line is a header line.
        text_pair_field: Column of the second text of sentence-pair tasks; ``None`` for single texts.
        label_field: Column of the label.
        task_type: ``classification``, ``regression``, ``multilabel`` or ``auto`` (see above).
        label_separator: Multi-label: what separates the labels in a text field (``.tsv``/``.csv``).
        markers: The entity markers ``[open 1, close 1, open 2, close 2]`` in the texts, added
            to the tokenizer as special tokens; ``None`` for texts without them.
        labels: The class names in id order; ``None`` takes the sorted training labels (a hub
            dataset's class labels: its own names).
        val_fraction: Fraction of the training examples held out when there is no ``validation``.
        seed: Seed of that held-out split. The training order follows the run's
            ``seed_everything`` (so seeds vary it), or this seed when there is none.
        max_documents: Use at most this many examples of each split (quick runs).
        train_size: Train on this many of the training examples (a learning curve's point), drawn by
            the run's ``seed_everything`` (else ``seed``), stratified for classification: each
            class keeps its share, and at least one example when ``train_size`` allows. The
            classes are still those of the whole split. More than the split holds is refused.
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
        extra_validation: dict[str, str] | None = None,
        test: Path_fr | str | None = None,
        format: FileFormat = "auto",
        columns: list[str] | None = None,
        header: bool = True,
        text_pair_field: str | None = None,
        label_field: str = "label",
        task_type: TaskType = "auto",
        label_separator: str = ",",
        markers: list[str] | None = None,
        labels: list[str] | None = None,
        val_fraction: float = 0.1,
        seed: int = 1234,
        max_documents: int | None = None,
        train_size: int | None = None,
        tokenizer: TokenizerSpec = TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=2048, lowercase=True),
        seq_len: int = 128,
        batch_size: int = 32,
        group_by_length: bool = False,
        num_workers: int = 0,
    ):
        super().__init__(source, validation, test, labels, val_fraction, seed, max_documents, tokenizer, seq_len,
                         batch_size, group_by_length, num_workers, train_size=train_size,
                         extra_validation=extra_validation)
        if task_type not in ("auto", "classification", "regression", "multilabel"):
            raise UserError(f"task_type={task_type!r}: use classification, regression, multilabel or auto.")
        if markers is not None and (len(markers) != 4 or len(set(markers)) != 4 or not all(m.strip() for m in markers)):
            raise UserError(f"markers={markers}: give four distinct markers, [open 1, close 1, open 2, close 2], "
                            "e.g. ['<<', '>>', '[[', ']]'].")
        self.format, self.columns, self.header = format, list(columns) if columns else None, header
        self.text_pair_field, self.label_field = text_pair_field, label_field
        self.requested_task_type = task_type
        self.label_separator = label_separator
        self.markers = list(markers) if markers is not None else None
        self._raw: dict[str, list[Row]] | None = None
        self.task_type: Literal["classification", "regression", "multilabel"] | None = None

    # -- reading ------------------------------------------------------------------------------
    def _rows(self, records: list[tuple[int, dict[str, Any]]], source: str, unit: str = "line",
              header: bool = True) -> tuple[list[Row], list[str]]:
        """The examples of one file (or hub split), and where each is (``'train.jsonl' line 7``).

        ``header``: the records share their fields (a table's header, a dataset's columns), so
        a missing one is named once for the whole source, not for a line."""
        fields = {self.source.text_field: "data.source.text_field", self.label_field: "data.label_field"}
        if self.text_pair_field:
            fields[self.text_pair_field] = "data.text_pair_field"
        if header:
            check_columns([records[0][1]], list(fields), source)
        rows, places = [], []
        for number, r in records:
            place = f"'{source}' {unit} {number}"
            absent = next((f for f in fields if f not in r), None)
            if absent is not None:
                raise UserError(f"{place} has no '{absent}' field (its fields: {', '.join(map(str, r))}): set "
                                f"{fields[absent]} to the field that holds it, or add it to that {unit}.")
            text, label = str(r[self.source.text_field] or ""), r[self.label_field]
            pair = str(r[self.text_pair_field] or "") if self.text_pair_field else None
            if label is None or label == "" and self.requested_task_type != "multilabel":
                raise UserError(f"{place}: the label ('{self.label_field}') is empty; fill it or remove that {unit}.")
            lacking = [m for m in self.markers or [] if m not in text and m not in (pair or "")]
            if lacking:
                raise UserError(f"{place} lacks the entity marker{'s' * (len(lacking) > 1)} {' '.join(lacking)} "
                                f"(data.markers: {' '.join(self.markers)}): mark both entities of that {unit}, or "
                                "remove it.")
            rows.append((text, pair, label))
            places.append(place)
        return rows, places

    def _read(self, where: str | list[str]) -> tuple[list[Row], list[str]]:
        """The examples of one split and where each is: ``where`` names files when the source is
        local, a split of the hub dataset otherwise."""
        if self.source.is_local:
            rows, places = [], []
            for file in [where] if isinstance(where, str) else where:
                jsonl = self.format == "jsonl" or self.format == "auto" and Path(file).suffix == ".jsonl"
                records = numbered_records(file, self.format, self.columns, self.header)
                more, there = self._rows(records, file, header=not jsonl)
                rows, places = rows + more, places + there
        else:
            rows, places = self._read_hub(where)
        n = self.max_documents or len(rows)
        return rows[:n], places[:n]

    def _read_hub(self, split: str) -> tuple[list[Row], list[str]]:
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
        elif names and len(self.labels) != len(names):
            raise UserError(f"data.labels {self.labels} renames the {len(names)} classes of '{self.name}' "
                            f"({', '.join(names)}) in id order: give {len(names)} names, or null.")
        names = self.labels if names else None
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
        return self._rows(list(enumerate(records, start=1)), f"{self.name}:{split}", unit="example")

    def _hold_out(self, n: int) -> tuple[list[int], list[int]]:
        """The indices (train, validation) of ``n`` training examples with ``val_fraction`` of them,
        drawn by ``seed``, held out."""
        order = np.random.default_rng(self.seed).permutation(n)
        n_val = max(1, round(n * self.val_fraction))
        if n_val >= n:
            raise UserError(f"'{self.name}' has {n} examples, too few to hold out "
                            f"val_fraction={self.val_fraction} for validation: add examples or give `validation`.")
        return sorted(order[n_val:]), sorted(order[:n_val])

    def raw(self) -> dict[str, list[Row]]:
        """``(text, pair text or None, label)`` of every example, by split (train, val[, test]),
        every label checked against the task type and the classes."""
        if self._raw is None:
            self.source.require("labelled data", "a .tsv, .csv or .jsonl file")
            rows, places = self._read(self.source.paths if self.source.is_local else self.source.hf_split)
            splits = {"train": (rows, places)}
            if self.validation is not None:
                splits["val"] = self._read(self.validation)
            else:
                splits = {split: ([rows[i] for i in kept], [places[i] for i in kept])
                          for split, kept in zip(("train", "val"), self._hold_out(len(rows)))}
            for name, where in self.extra_validation.items():
                splits[f"val/{name}"] = self._read(where)
            if self.test is not None:
                splits["test"] = self._read(self.test)
            given = self.labels is not None
            self._settle_labels([label for _, _, label in splits["train"][0]])
            for rows, places in splits.values():
                self._check_labels(rows, places, "data.labels" if given else "the training labels")
            self._raw = {split: rows for split, (rows, _) in splits.items()}
            train = self._raw["train"]
            keys = [class_key(label) for _, _, label in train] if self.task_type == "classification" else None
            self._raw["train"] = self.subsample_train(train, keys)  # stratified by class for classification
        return self._raw

    def _settle_labels(self, values: list[Any]) -> None:
        task_type = self.requested_task_type
        if task_type == "auto":
            numbers = self.labels is None and all(is_number(v) for v in values)
            if all(isinstance(v, list) for v in values):
                task_type = "multilabel"
            else:
                task_type = "regression" if numbers and not all(is_integer(v) for v in values) else "classification"
        self.task_type = task_type
        if task_type != "regression" and self.labels is None:
            if task_type == "multilabel":
                values = [name for v in values for name in self._label_list(v)]
            self.labels = label_names([v for v in values if not isinstance(v, (list, dict))])

    def _check_labels(self, rows: list[Row], places: list[str], classes: str) -> None:
        """Refuse the first label that does not fit the task type or is not a class, naming its line."""
        ids = self._label_ids
        for (_, _, value), place in zip(rows, places):
            if isinstance(value, dict) or isinstance(value, list) and self.task_type != "multilabel":
                hint = "set data.task_type multilabel for lists of labels, or " if isinstance(value, list) else ""
                raise UserError(f"{place} has the label {value!r}, not one {self.task_type} label: {hint}give one "
                                "label there.")
            if self.task_type == "regression":
                if not is_number(value):
                    raise UserError(f"{place} has the label {value!r}, not a number, but data.task_type is regression: "
                                    "fix that label, or set data.task_type classification.")
                continue
            keys = [class_key(v) for v in self._label_list(value)] if self.task_type == "multilabel" else [class_key(value)]
            unknown = next((k for k in keys if k not in ids), None)
            if unknown is not None:
                raise UserError(f"{place} has the label {unknown!r}, not among {classes} ({', '.join(self.labels)}): "
                                "fix that label, or list every class in data.labels.")

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

    def encode(self, rows: list[Row], split: str = "train") -> list[Example]:
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
             "label": self._label(label)}
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

    def _label(self, value: Any) -> int | float | np.ndarray:
        """The label id, score or multi-hot vector of a label that :meth:`raw` checked."""
        if self.task_type == "regression":
            return float(value)
        if self.task_type != "multilabel":
            return self._label_ids[class_key(value)]
        hot = np.zeros(len(self.labels), dtype=np.float32)
        hot[[self._label_ids[class_key(v)] for v in self._label_list(value)]] = 1.0
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

