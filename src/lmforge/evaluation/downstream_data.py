"""What the downstream data modules (``LabeledText``, ``TaggedText``) share: the run's tokenizer,
handed over or trained on their training texts, and the loaders of their encoded splits."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from lmforge.data.source import DataSource, plain_path
from lmforge.data.tokenizer import TokenizerSpec
from lmforge.errors import UserError
from lmforge.evaluation.labeled_records import subsample
from lmforge.evaluation.loaders import example_loader, run_seed
from lmforge.tokenizer import Tokenizer


class DownstreamData(L.LightningDataModule):
    """Base of the downstream data modules. A subclass sets ``tokenizer_spec``, ``seed``,
    ``batch_size``, ``group_by_length`` and ``num_workers``, fills ``datasets`` (the encoded
    ``train``, ``val``, ``test`` splits) in ``setup``, and gives its training texts
    (:meth:`training_texts`) and ``collate``. Further validation sets scored in the same run
    (``extra_validation``, each named) are the splits ``val/<name>``: each is a further
    validation loader whose batches carry ``set: <name>``, so that the task logs their metrics
    as ``val/<metric>/<name>`` beside the main set's ``val/<metric>``.

    The tokenizer is the task's, handed over by :func:`lmforge.start.connect`; without one (a
    network trained from scratch), the one ``tokenizer_spec`` loads or trains on the training
    texts, with :attr:`added_tokens`. Training batches are shuffled by the run's seed
    (``seed_everything``, else ``seed``), optionally grouped by length; all are padded to their
    longest example.
    """

    unit = "examples"  # what one training item is called in messages

    def __init__(self, source: DataSource, validation: str | None, test: str | None, labels: list[str] | None,
                 val_fraction: float, seed: int, max_documents: int | None, tokenizer: TokenizerSpec | dict,
                 seq_len: int, batch_size: int, group_by_length: bool, num_workers: int, min_seq_len: int = 2,
                 train_size: int | None = None, extra_validation: dict[str, str] | None = None):
        """The settings every downstream data module has, checked (see the subclasses' ``Args:``)."""
        super().__init__()
        if seq_len < min_seq_len or batch_size < 1:
            raise UserError(f"seq_len must be at least {min_seq_len} and batch_size positive, got seq_len={seq_len}, "
                            f"batch_size={batch_size}.")
        if validation is None and not 0.0 < val_fraction < 1.0:
            raise UserError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}.")
        if train_size is not None and train_size < 1:
            raise UserError(f"data.train_size={train_size}: give a positive number of training {self.unit}, or null "
                            "for all.")
        self.train_size = train_size
        self.source = source
        self.validation, self.test = (plain_path(v) if v is not None else None for v in (validation, test))
        bad = [name for name in extra_validation or {} if not name or "/" in name or "." in name]
        if bad or extra_validation and validation is None:
            raise UserError(f"data.extra_validation {extra_validation}: name each further validation set (no '/' or "
                            "'.' in its name) and give the main one as data.validation too.")
        self.extra_validation = {name: plain_path(where) for name, where in (extra_validation or {}).items()}
        self.labels: list[str] | None = list(labels) if labels is not None else None
        self.val_fraction, self.seed, self.max_documents = val_fraction, seed, max_documents
        self.tokenizer_spec = TokenizerSpec(**tokenizer) if isinstance(tokenizer, dict) else tokenizer
        self.seq_len, self.batch_size = seq_len, batch_size
        self.group_by_length, self.num_workers = group_by_length, num_workers
        self._tokenizer: Tokenizer | None = None
        self.datasets: dict[str, Sequence[Any]] = {}

    def subsample_train(self, rows: list, keys: Sequence[str] | None = None) -> list:
        """``train_size`` of the training ``rows`` (all when it is unset), drawn by the run's seed;
        stratified by ``keys`` (each row's class) when given (:func:`labeled_records.subsample`)."""
        if self.train_size is None:
            return rows
        if self.train_size > len(rows):
            raise UserError(f"data.train_size={self.train_size} is more than the {len(rows)} training {self.unit} of "
                            f"'{self.name}': give at most {len(rows)}, or null for all.")
        return [rows[i] for i in subsample(len(rows), self.train_size, run_seed(self.seed), keys)]

    @property
    def name(self) -> str:
        """How messages refer to the data: its local files, or the hub dataset and configuration."""
        return str(self.source.paths) if self.source.is_local else f"{self.source.hf_dataset}/{self.source.hf_config}"

    def training_texts(self) -> Iterable[str]:
        """The texts a tokenizer trained from scratch learns from."""
        raise NotImplementedError

    @property
    def added_tokens(self) -> list[str]:
        """Special tokens the texts are marked with (entity markers), for the run's tokenizer."""
        return []

    @property
    def tokenizer(self) -> Tokenizer:
        """The task's tokenizer; without one, the one ``tokenizer`` loads or trains."""
        if self._tokenizer is None:
            texts = self.training_texts() if not self.tokenizer_spec.path else ()
            tokenizer = self.tokenizer_spec.load_or_train(texts, name=self.name)
            self._tokenizer = tokenizer.with_special_tokens(self.added_tokens)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value: Tokenizer) -> None:
        self._tokenizer = value

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.role_id("pad")
        return pad if pad is not None else 0

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            raise UserError(f"No {split} examples: give `data.{split}` (a file, or a split of the hub dataset) to "
                            f"run `{split}`.")
        return example_loader(self.datasets[split], self.batch_size, self.collate, shuffle, run_seed(self.seed),
                              self.group_by_length, self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """The validation loader; with ``extra_validation`` a list: the main set's first, then
        one per further set, whose batches carry its name (``set``)."""
        main = self._loader("val", shuffle=False)
        if not self.extra_validation:
            return main
        extra = [example_loader(self.datasets[f"val/{name}"], self.batch_size, partial(named, self.collate, name),
                                False, run_seed(self.seed), self.group_by_length, self.num_workers)
                 for name in self.extra_validation]
        return [main, *extra]

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def named(collate: Callable[[list], dict], name: str, examples: list) -> dict:
    """A batch of a further validation set, named (a module-level function: loader workers pickle it).

    Args:
        collate: The data module's collate.
        name: The set's name in ``extra_validation``.
        examples: The batch's examples.
    """
    return {**collate(examples), "set": name}
