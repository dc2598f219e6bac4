"""Sentence pairs for supervised contrastive training: (anchor, positive[, hard negative]) rows."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.data.documents import expand_paths, json_lines, read_text, split_documents
from lmforge.data.source import DataSource
from lmforge.data.corpus import CorpusDataModule
from lmforge.errors import UserError

Row = tuple[str, str, str | None]


def read_pair_rows(path: Path, fields: tuple[str, str, str]) -> list[Row]:
    """Rows of a ``.tsv`` (a header naming the fields, or none: columns in order) or ``.jsonl`` file.

    Args:
        path: The file.
        fields: The names of the anchor, positive and hard-negative fields.
    """
    anchor, positive, negative = fields
    if path.suffix == ".jsonl":
        records = list(json_lines(path))
    elif path.suffix == ".tsv":
        lines = list(csv.reader(read_text(path).splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
        first = 1
        if lines and anchor in lines[0] and positive in lines[0]:
            header, lines, first = lines[0], lines[1:], 2
        else:
            header = [anchor, positive, negative][: max(len(r) for r in lines)] if lines else []
        records = [(number, dict(zip(header, row))) for number, row in enumerate(lines, start=first) if row]
    else:
        raise UserError(f"'{path}' is not a .tsv or .jsonl file of sentence pairs.")
    rows = []
    for number, record in records:
        if not record.get(anchor) or not record.get(positive):
            raise UserError(f"'{path}' line {number} needs non-empty '{anchor}' and '{positive}' fields: fill them "
                            "or remove that line.")
        rows.append((record[anchor], record[positive], record.get(negative) or None))
    return rows


class SentencePairs(CorpusDataModule):
    """(anchor, positive[, hard negative]) sentence pairs for supervised contrastive training
    (e.g. NLI entailment pairs with contradictions as hard negatives, as in SimCSE).

    Args:
        source: ``.tsv`` (with a header naming the fields, or columns in order) or ``.jsonl``
            files, or a hub dataset; the three fields below name the columns (``text_field``
            is not read).
        anchor_field: Field of the anchor sentence.
        positive_field: Field of the positive sentence.
        negative_field: Field of the hard negative (optional in the data).
        **kwargs: Options of :class:`~lmforge.data.corpus.CorpusDataModule`.
    """

    def __init__(
        self,
        source: DataSource = DataSource(),
        anchor_field: str = "anchor",
        positive_field: str = "positive",
        negative_field: str = "negative",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.source = source
        self.fields = (anchor_field, positive_field, negative_field)
        self._rows: list[Row] | None = None

    @property
    def name(self) -> str:
        return str(self.source)

    def rows(self) -> list[Row]:
        if self._rows is None:
            self.source.require("pairs", ".tsv/.jsonl files")
            if self.source.is_local:
                files = expand_paths(self.source.paths, (".tsv", ".jsonl"), "sentence-pair")
                rows = [row for path in files for row in read_pair_rows(path, self.fields)]
            else:
                import datasets

                hub = self.source
                try:
                    ds = datasets.load_dataset(hub.hf_dataset, hub.hf_config, split=hub.hf_split)
                except Exception as err:
                    raise UserError(f"Could not load the Hugging Face dataset '{hub.hf_dataset}': {err}") from err
                a, p, n = self.fields
                rows = [(r[a], r[p], r.get(n)) for r in ds]
            self._rows = rows[: self.max_documents] if self.max_documents else rows
        return self._rows

    uses_shards = False  # pairs are encoded in memory at setup

    def prepare_data(self) -> None:
        """Nothing to prepare: pairs are encoded in memory at setup."""

    def load_documents(self) -> list[str]:
        """Every sentence, for training a tokenizer when none is given."""
        return [text for row in self.rows() for text in row if text]

    def setup(self, stage: str) -> None:
        if self.train_set is not None:
            return
        self._require_objective().bind(self.tokenizer)
        rows = self.rows()
        # split by anchor, so no anchor is seen in training and validation both
        keys = {row[0]: row for row in rows}
        train_keys, val_keys = split_documents(list(keys), self.val_fraction, self.seed)
        if not val_keys:
            train_keys, val_keys = train_keys[:-1], train_keys[-1:]
        train_set, val_set = set(train_keys), set(val_keys)
        self.train_set = self._encode([r for r in rows if r[0] in train_set])
        self.val_set = self._encode([r for r in rows if r[0] in val_set])
        if not self.train_set or not self.val_set:
            raise UserError(f"{self.name} has too few pairs for a training and a validation split: add pairs.")

    def _encode(self, rows: list[Row]) -> list[tuple]:
        limit = self.seq_len - 2
        encode = lambda texts: [np.asarray(ids[:limit]) for ids in self.tokenizer.encode_batch(texts)]  # noqa: E731
        anchors, positives = encode([r[0] for r in rows]), encode([r[1] for r in rows])
        negatives = encode([r[2] for r in rows]) if rows and all(r[2] for r in rows) else [None] * len(rows)
        return list(zip(anchors, positives, negatives))
