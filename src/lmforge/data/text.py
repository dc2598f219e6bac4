"""The text corpus DataModule: documents -> tokenizer -> packed blocks -> objective -> batches.

:class:`CorpusDataModule` does the work; a corpus only says where its documents come from
(:meth:`CorpusDataModule.load_documents`): :class:`TextCorpus` reads local files or a
Hugging Face dataset, :class:`BundledCorpus` the prose inside CPython. It never knows the model family: the
task's objective (``task.objective``) decides how many tokens an example takes and how
blocks become a batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch.utils.data import DataLoader, Dataset

from lmforge.data.augment import Augmentation, apply_augmentations
from lmforge.data.bundled import bundled_documents
from lmforge.data.documents import TxtSplit, iter_hf, read_local, split_documents
from lmforge.data.packing import PackedBlocks, concat_documents, token_dtype
from lmforge.data.sentences import split_sentences
from lmforge.data.tokenizer import Tokenizer, TokenizerSpec, train_tokenizer_cached
from lmforge.errors import UserError
from lmforge.objectives import Objective


class CorpusDataModule(L.LightningDataModule):
    """Base of every corpus: documents -> tokenizer -> packed blocks -> the task's objective.

    A corpus subclass only says where its documents come from (:meth:`load_documents`); it
    takes its own source arguments and passes these on with ``**kwargs``.

    Args:
        max_documents: Use at most this many documents (quick runs), counted after
            ``min_chars`` and ``deduplicate`` have removed theirs.
        deduplicate: Remove exact duplicates (same text, by hash), keeping the first
            occurrence; the number removed is logged.
        min_chars: Drop documents shorter than this many characters (leading and trailing
            whitespace not counted).
        val_fraction: Fraction of documents held out for validation (split by document).
        tokenizer: The tokenizer to load, or how to train one on the training split.
        seq_len: Tokens per example seen by the model.
        batch_size: Examples per batch on each device.
        num_workers: DataLoader worker processes.
        seed: Seed of the validation split and of the shuffling order.
        augment: Text augmentations (``lmforge.data.augment``) applied in order to the training
            documents, once at setup, seeded by ``seed``: static augmentation of the training
            text. Validation documents and the tokenizer's training text stay unchanged.
    """

    def __init__(
        self,
        max_documents: int | None = None,
        deduplicate: bool = False,
        min_chars: int = 0,
        val_fraction: float = 0.05,
        tokenizer: TokenizerSpec = TokenizerSpec(),
        seq_len: int = 256,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 1234,
        augment: list[Augmentation] | None = None,
    ):
        super().__init__()
        if seq_len < 1 or batch_size < 1:
            raise UserError(f"seq_len and batch_size must be positive, got seq_len={seq_len}, batch_size={batch_size}.")
        if not 0.0 < val_fraction < 1.0:
            raise UserError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}.")
        if min_chars < 0:
            raise UserError(f"min_chars must be 0 or more, got {min_chars}.")
        self.max_documents = max_documents
        self.deduplicate = deduplicate
        self.min_chars = min_chars
        self.val_fraction = val_fraction
        self.tokenizer_spec = TokenizerSpec(**tokenizer) if isinstance(tokenizer, dict) else tokenizer
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.augment = list(augment or [])
        self.objective: Objective | None = None
        self._splits: tuple[list[str], list[str]] | None = None
        self._tokenizer: Tokenizer | None = None
        self.train_set: Dataset | None = None  # packed blocks, or an objective's own examples
        self.val_set: Dataset | None = None

    # -- documents --------------------------------------------------------------------------
    def load_documents(self) -> list[str]:
        """All documents of the corpus."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        """How messages refer to the corpus."""
        return type(self).__name__

    def keep_documents(self, documents: Iterable[str]) -> list[str]:
        """The documents that pass ``min_chars`` and ``deduplicate``, in order, at most ``max_documents``.

        Filters come before the ``max_documents`` cut, so that it counts kept documents. The
        input is read lazily and no further than needed: a corpus that streams (FineWeb)
        hands its reader's iterator here. Applying it twice removes nothing more.
        """
        seen: set[bytes] = set()
        short = duplicates = 0
        kept: list[str] = []
        if self.max_documents is not None and self.max_documents <= 0:
            return kept
        for doc in documents:
            if self.min_chars and len(doc.strip()) < self.min_chars:
                short += 1
                continue
            if self.deduplicate:
                key = hashlib.blake2b(doc.encode("utf-8", "surrogatepass"), digest_size=16).digest()
                if key in seen:
                    duplicates += 1
                    continue
                seen.add(key)
            kept.append(doc)
            if len(kept) == self.max_documents:
                break  # before the reader is asked for one more (a stream, a next shard)
        if short or duplicates:
            rank_zero_info(
                f"{self.name}: removed {duplicates} duplicate documents (deduplicate) and {short} "
                f"shorter than {self.min_chars} characters (min_chars); {len(kept)} kept."
            )
        if not kept and short:  # deduplication alone always keeps a first occurrence
            raise UserError(
                f"Corpus {self.name} has no document left after filtering ({short} shorter than "
                f"min_chars={self.min_chars} characters): lower `min_chars`."
            )
        return kept

    def splits(self) -> tuple[list[str], list[str]]:
        """(train, validation) documents, split deterministically by document.

        The loaded documents pass :meth:`keep_documents` (``min_chars``, ``deduplicate``,
        then ``max_documents``) before the split.
        """
        if self._splits is None:
            docs = self.keep_documents(self.load_documents())
            if not docs:
                raise UserError(f"Corpus {self.name} has no text: every document is empty.")
            train, val = split_documents(docs, self.val_fraction, self.seed)
            if not val or not train:
                # few documents: hold out the last one rather than fail; a lone document
                # serves both splits (a smoke run, not a measurement)
                train, val = (docs[:-1], docs[-1:]) if len(docs) > 1 else (docs, docs)
            self._splits = (train, val)
        return self._splits

    # -- tokenizer (known at instantiation: the CLI links vocab_size into the model) -------
    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            spec = self.tokenizer_spec
            if spec.path:
                self._tokenizer = Tokenizer.from_file(spec.path)
            else:
                rank_zero_info(f"Training a {spec.kind} tokenizer ({spec.vocab_size} tokens) on {self.name} ...")
                # ranks other than 0 load what rank 0 trained: training is not deterministic
                self._tokenizer = train_tokenizer_cached(self.splits()[0], spec, wait=rank_zero_only.rank != 0)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value: Tokenizer) -> None:
        self._tokenizer = value

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    # -- Lightning hooks --------------------------------------------------------------------
    def _attach_objective(self) -> None:
        if self.objective is None:
            # the task owns the objective (how blocks become examples); the corpus applies it
            module = self.trainer.lightning_module if self.trainer is not None else None
            self.objective = getattr(module, "objective", None)
            if self.objective is None:
                raise RuntimeError(
                    f"{type(self).__name__} needs an objective: set `.objective` or train a task that defines one."
                )

    def setup(self, stage: str) -> None:
        self._attach_objective()
        if self.train_set is not None:
            return
        tok = self.tokenizer
        self.objective.bind(tok)
        train_docs, val_docs = self.splits()
        if self.augment:
            train_docs = apply_augmentations(train_docs, self.augment, self.seed)
        if self.objective.sentences:
            # sentence-pair objectives (NSP) build their examples from each document's sentences
            self.train_set = self._sentence_examples(train_docs, self.seed)
            self.val_set = self._sentence_examples(val_docs, self.seed + 1)
            unit = "examples built from sentences"
        else:
            block = self.objective.block_length(self.seq_len)
            dtype = token_dtype(tok.vocab_size)
            self.train_set = PackedBlocks(concat_documents(tok.encode_batch(train_docs), tok.eos_id, dtype), block)
            self.val_set = PackedBlocks(concat_documents(tok.encode_batch(val_docs), tok.eos_id, dtype), block)
            unit = f"blocks of {block} tokens"
        for split, ds in (("train", self.train_set), ("validation", self.val_set)):
            if len(ds) == 0:
                raise UserError(
                    f"The {split} split of {self.name} is too short for one example of {self.seq_len} tokens: "
                    "add text or lower `seq_len`."
                )
        rank_zero_info(
            f"{self.name}: {len(train_docs)} train / {len(val_docs)} val documents, "
            f"{len(self.train_set):,} / {len(self.val_set):,} {unit}."
        )
        # the run folder, if the run has one (without a logger, log_dir would be the working folder)
        log_dir = self.trainer.log_dir if self.trainer is not None and self.trainer.loggers else None
        if log_dir and self.trainer.is_global_zero and not self.tokenizer_spec.path:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            tok.save(Path(log_dir) / "tokenizer.json")

    def _sentence_examples(self, docs: list[str], seed: int) -> list:
        sentences = [split_sentences(doc) for doc in docs]
        ids = iter(self.tokenizer.encode_batch([s for doc in sentences for s in doc]))
        tokenized = [[next(ids) for _ in doc] for doc in sentences]
        return self.objective.build_examples(tokenized, self.seq_len, seed)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            collate_fn=self.objective,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)


class TextCorpus(CorpusDataModule):
    """Documents from local files or a Hugging Face dataset.

    Args:
        paths: Local files, folders or glob patterns: ``.txt``, ``.jsonl``, ``.json``,
            ``.parquet`` or ``.csv``, each optionally ``.gz``.
        hf_dataset: A Hugging Face dataset name, read instead of ``paths``.
        hf_config: The dataset configuration (e.g. ``20231101.en`` for Wikipedia).
        hf_split: The dataset split to read.
        streaming: Stream the Hugging Face dataset instead of downloading it whole.
        text_field: Column that holds the text (jsonl/json/parquet/csv and hub datasets).
        txt_split: A ``.txt`` file is one document (``file``) or one per blank-line block
            (``blank_line``).
    """

    def __init__(
        self,
        paths: str | list[str] | None = None,
        hf_dataset: str | None = None,
        hf_config: str | None = None,
        hf_split: str = "train",
        streaming: bool = False,
        text_field: str = "text",
        txt_split: TxtSplit = "file",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.paths = paths
        self.hf_dataset = hf_dataset
        self.hf_config = hf_config
        self.hf_split = hf_split
        self.streaming = streaming
        self.text_field = text_field
        self.txt_split = txt_split

    @property
    def name(self) -> str:
        return self.hf_dataset or str(self.paths)

    def load_documents(self) -> list[str]:
        if self.hf_dataset:
            # read lazily through the shared filters, so that max_documents counts kept documents
            return self.keep_documents(
                iter_hf(self.hf_dataset, self.hf_config, self.hf_split, self.text_field, self.streaming)
            )
        if self.paths is None:
            raise UserError("No corpus given: set `data.paths` to your text files or `data.hf_dataset` to a hub dataset.")
        return read_local(self.paths, self.text_field, self.txt_split)


class BundledCorpus(CorpusDataModule):
    """The default corpus, no download needed: the English prose inside every CPython.

    It is the help text of ``pydoc_data.topics`` plus the standard library's docstrings,
    read with ``ast`` (about 2 MB).
    """

    @property
    def name(self) -> str:
        return "the bundled corpus"

    def load_documents(self) -> list[str]:
        return bundled_documents()
