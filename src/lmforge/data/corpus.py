"""The corpus DataModule: documents -> tokenizer -> packed blocks -> objective -> batches.

:class:`CorpusDataModule` does the work; a corpus (:mod:`lmforge.data.corpora`) only says
where its documents come from (:meth:`CorpusDataModule.load_documents`). It never knows the
model family: the task's objective, handed over to it (``data.objective``), decides how many
tokens an example takes and how blocks become a batch. The steps live in their own modules:
which documents and where each goes (:mod:`~lmforge.data.selection`), the cache key
(:mod:`~lmforge.data.fingerprint`), token shards (:mod:`~lmforge.data.prepare`), mid-epoch
resume (:mod:`~lmforge.data.resume`) and sentence examples (:mod:`~lmforge.data.sentences`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

import lmforge.data.selection as selection
from lmforge.batching import Objective
from lmforge.cache import cache_dir
from lmforge.data.augment import Augmentation
from lmforge.data.fingerprint import corpus_fingerprint
from lmforge.data.packing import PackedBlocks, concat_documents, token_dtype
from lmforge.data.prepare import prepare_shards, size_hint
from lmforge.data.resume import DataPosition, identity
from lmforge.data.sampler import Keyed, keyed_collate
from lmforge.data.sentences import sentence_examples
from lmforge.data.shards import PreparedCorpus, ShardBlocks
from lmforge.data.source import DataSource
from lmforge.data.streaming import StreamingBlocks, collate_stream
from lmforge.data.tokenizer import TokenizerSpec
from lmforge.errors import UserError
from lmforge.tokenizer import Tokenizer


class CorpusDataModule(L.LightningDataModule):
    """Base of every corpus: documents -> tokenizer -> token shards (or a stream) -> the task's objective.

    A corpus subclass only says where its documents come from (:meth:`load_documents`); it
    takes its own source arguments and passes these on with ``**kwargs``.

    Packed-block objectives (GPT, BERT/RoBERTa MLM, T5, ELMo) read the corpus from token
    shards prepared once per corpus and tokenizer (:meth:`prepare`, ``lmforge prepare``)
    through memory maps, in an order from (seed, epoch) that resumes mid-epoch; with
    ``streaming`` they tokenize and pack as they read instead. Sentence objectives (NSP,
    contrastive) build their examples in memory.

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
            documents, once when the corpus is prepared, seeded by ``seed``: static augmentation
            of the training text. Validation documents and the tokenizer's training text stay unchanged.
        streaming: Tokenize and pack documents on the fly as they are read (hub datasets in
            streaming mode), split across ranks and workers, instead of preparing token shards
            first: for corpora larger than the disk. An epoch is one pass over the stream, so
            set ``trainer.max_steps``. A tokenizer to train learns from the first
            ``stream_tokenizer_documents`` training documents.
        stream_val_documents: With ``streaming``, validate on this many held-out documents
            (the first the split sends to validation).
        stream_tokenizer_documents: With ``streaming``, how many training documents train the tokenizer.
        cache_dir: Where prepared token shards go (default: ``$LMFORGE_CACHE_DIR/shards``,
            else ``~/.cache/lmforge/shards``).
    """

    uses_shards: ClassVar[bool] = True  # whether block objectives read this corpus from token shards
    source: DataSource | None = None  # where the text comes from, for corpora read from files or the hub

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
        streaming: bool = False,
        stream_val_documents: int = 500,
        stream_tokenizer_documents: int = 20000,
        cache_dir: str | None = None,
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
        self.streaming = streaming
        self.stream_val_documents = stream_val_documents
        self.stream_tokenizer_documents = stream_tokenizer_documents
        self.cache_dir = cache_dir
        self.objective: Objective | None = None
        self._splits: tuple[list[str], list[str]] | None = None
        self._tokenizer: Tokenizer | None = None
        self._prepared: PreparedCorpus | None = None  # what prepare() gave, for setup() after prepare_data()
        self.train_set: Dataset | None = None  # blocks (shards, a stream) or an objective's own examples
        self.val_set: Dataset | None = None
        self.position = DataPosition()

    # -- documents (lmforge.data.selection) ---------------------------------------------------
    def load_documents(self) -> Iterable[str]:
        """All documents of the corpus, as a list or read lazily (a generator)."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        """How messages refer to the corpus."""
        return type(self).__name__

    def keep_documents(self, documents: Iterable[str]) -> list[str]:
        """The documents that pass ``min_chars`` and ``deduplicate``, in order, at most ``max_documents``."""
        return list(self._kept(documents))

    def _kept(self, documents: Iterable[str]) -> Iterator[str]:
        return selection.kept_documents(documents, self.name, self.min_chars, self.deduplicate, self.max_documents)

    def documents(self) -> Iterator[str]:
        """The kept documents (:meth:`keep_documents`), read lazily: memory does not grow with the corpus."""
        return self._kept(self.load_documents())

    def labelled_documents(self) -> Iterator[tuple[str, str]]:
        """``(split, text)`` of every kept document, lazily, in corpus order; split is ``train`` or ``val``."""
        return selection.labelled(self.documents(), self.val_fraction, self.seed)

    def train_documents(self, start: int = 0) -> Iterator[str]:
        """The training documents from index ``start`` on (those before are read, not returned)."""
        return itertools.islice((doc for split, doc in self.labelled_documents() if split == "train"), start, None)

    def splits(self) -> tuple[list[str], list[str]]:
        """(train, validation) documents, split deterministically by document, after the filters."""
        if self._splits is None:
            self._splits = selection.collect_splits(self.labelled_documents(), self.name)
        return self._splits

    def _augmented(self, labelled: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
        return selection.augmented(labelled, self.augment, self.seed)

    # -- tokenizer (known at instantiation: the CLI links vocab_size into the model) -------
    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer handed over (the setter), else the one ``tokenizer_spec`` loads or trains."""
        if self._tokenizer is None:
            spec = self.tokenizer_spec
            # the training documents, read lazily and only to train (the first ones only when streaming)
            limit = self.stream_tokenizer_documents if self.streaming else None
            key = None if spec.path else f"{self.fingerprint()}:{limit}"
            self._tokenizer = spec.load_or_train(self._tokenizer_texts(limit), corpus_key=key, name=self.name)
        return self._tokenizer

    def _tokenizer_texts(self, limit: int | None) -> Iterator[str]:
        count = 0
        for doc in itertools.islice(self.train_documents(), limit):
            count += 1
            yield doc
        if not count:  # every document went to validation (a tiny corpus): as splits() does
            yield from self.splits()[0]

    @tokenizer.setter
    def tokenizer(self, value: Tokenizer) -> None:
        self._tokenizer = value

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    # -- prepared token shards (lmforge.data.fingerprint, lmforge.data.prepare) ---------------
    def fingerprint(self) -> str:
        """A hash of everything that decides the prepared documents (:mod:`lmforge.data.fingerprint`)."""
        return corpus_fingerprint(self, CorpusDataModule)

    def fingerprint_extra(self) -> Any:
        """Anything else that changes the documents (a corpus overrides it, e.g. with a version)."""
        return None

    def prepared_folder(self) -> Path:
        root = Path(self.cache_dir).expanduser() if self.cache_dir else cache_dir() / "shards"
        return root / f"{self.fingerprint()}-{self.tokenizer.fingerprint}"

    def prepare(self, progress: bool = True, timeout: float = 24 * 3600) -> PreparedCorpus:
        """The corpus as token shards: tokenized now, or reused from an earlier prepare (of this
        module: opened once). Rank 0 writes; other ranks wait for it
        (:func:`~lmforge.data.prepare.prepare_shards`)."""
        tok = self.tokenizer
        folder = self.prepared_folder()
        if self._prepared is None or self._prepared.folder != folder or not (folder / "meta.json").is_file():
            local = self.source.paths if self.source is not None and self.source.is_local else None
            self._prepared = prepare_shards(folder, self._augmented(self.labelled_documents()), tok, self.name,
                                            size_hint(local, self.max_documents), progress, timeout)
        return self._prepared

    # -- Lightning hooks --------------------------------------------------------------------
    def _require_objective(self) -> Objective:
        """The objective handed over by the task's side (:func:`lmforge.start.connect`): the task
        owns how blocks become examples, the corpus applies it."""
        if self.objective is None:
            raise UserError(f"{type(self).__name__} has no objective to build batches with: hand it the task's with "
                            "`lmforge.start.connect(task, data)` before `trainer.fit` (the lmforge command does).")
        return self.objective

    def prepare_data(self) -> None:
        """Prepare the token shards once per node, before every rank's :meth:`setup`."""
        if not self._require_objective().sentences and not self.streaming:
            self.prepare()

    def setup(self, stage: str) -> None:
        self._require_objective()
        if self.train_set is not None:
            return
        tok = self.tokenizer
        self.objective.bind(tok)
        if self.objective.sentences:
            # sentence-pair objectives (NSP) build their examples from each document's sentences
            train_docs, val_docs = self.splits()
            if self.augment:
                train_docs = [d for _, d in self._augmented(("train", d) for d in train_docs)]
            self.train_set = sentence_examples(train_docs, tok, self.objective, self.seq_len, self.seed)
            self.val_set = sentence_examples(val_docs, tok, self.objective, self.seq_len, self.seed + 1)
            unit = "examples built from sentences"
            counts = f"{len(train_docs)} train / {len(val_docs)} val documents, "
        else:
            block = self.objective.block_length(self.seq_len)
            unit = f"blocks of {block} tokens"
            self.train_set, self.val_set = self.train_blocks(block), self.val_blocks(block)
            if self.streaming:
                counts = f"streaming; {self._val_documents} val documents, "
            else:
                prepared = self.prepare()
                n_docs = [sum(len(s.doc_ends) for s in prepared.shards[k]) for k in ("train", "val")]
                counts = f"{n_docs[0]} train / {n_docs[1]} val documents, "
        for split, ds in (("train", self.train_set), ("validation", self.val_set)):
            if not isinstance(ds, StreamingBlocks) and len(ds) == 0:
                raise UserError(
                    f"The {split} split of {self.name} is too short for one example of {self.seq_len} tokens: "
                    "add text or lower `seq_len`."
                )
        world = self.trainer.world_size if self.trainer is not None else 1
        if stage == "fit" and not isinstance(self.train_set, StreamingBlocks) and len(self.train_set) < self.batch_size * world:
            # (training drops an incomplete last batch: there would be no step at all)
            raise UserError(
                f"The train split of {self.name} has {len(self.train_set)} examples, fewer than one batch of "
                f"{self.batch_size}{f' on each of {world} processes' if world > 1 else ''}: lower `data.batch_size` "
                "or add text."
            )
        sizes = f"{len(self.val_set):,} val" if self.streaming else f"{len(self.train_set):,} / {len(self.val_set):,}"
        rank_zero_info(f"{self.name}: {counts}{sizes} {unit}.")

        save_run_tokenizer(self.trainer, tok, self.tokenizer_spec)

    def train_blocks(self, block: int) -> Dataset:
        """The training blocks of ``block`` tokens: from the prepared shards, or a stream split over
        this run's ranks (a mixture reads each of its corpora through this too).

        Args:
            block: Tokens per block (the objective's block length).
        """
        tok = self.tokenizer
        if not self.streaming:
            return ShardBlocks(self.prepare().shards["train"], block)
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        return StreamingBlocks(self._stream_documents, tok.encode_batch, tok.eos_id, token_dtype(tok.vocab_size),
                               block, rank, world)

    def val_blocks(self, block: int) -> Dataset:
        """The validation blocks of ``block`` tokens: from the prepared shards, or, when streaming, the
        first ``stream_val_documents`` held-out documents packed in memory.

        Args:
            block: Tokens per block.
        """
        tok = self.tokenizer
        if not self.streaming:
            return ShardBlocks(self.prepare().shards["val"], block)
        docs = [d for s, d in itertools.islice(((s, d) for s, d in self.labelled_documents() if s == "val"),
                                               self.stream_val_documents)]
        self._val_documents = len(docs)
        return PackedBlocks(concat_documents(tok.encode_batch(docs), tok.eos_id, token_dtype(tok.vocab_size)), block)

    def _stream_documents(self, start: int) -> Iterator[str]:
        return self.train_documents(start) if not self.augment else itertools.islice(
            (d for s, d in self._augmented(self.labelled_documents()) if s == "train"), start, None)

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        options: dict[str, Any] = {}
        if isinstance(dataset, StreamingBlocks):
            self.position.resume_stream(dataset, self.trainer.global_rank if self.trainer else 0)
            collate = collate_stream(self.objective)
        else:
            if train:
                rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
                options.update(sampler=self.position.sampler_for(len(dataset), world, rank, self.seed), drop_last=True)
            # each batch's masks or spans are seeded by its samples' keys: the same with any
            # number of workers, and after a resume
            dataset, collate = Keyed(dataset), keyed_collate(self.objective)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **options,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def sample_ids(self, batch_idx: int) -> list[int] | None:
        """The indices (blocks, or examples) of training batch ``batch_idx`` of the current epoch on
        this rank, for messages about a batch; ``None`` when streaming."""
        return self.position.sample_ids(batch_idx, self.batch_size)

    # -- exact mid-epoch resume (lmforge.data.resume) -------------------------------------------
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.position.track(batch)

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with the checkpoint (:func:`lmforge.data.resume.identity`)."""
        blocks = None if isinstance(self.train_set, StreamingBlocks) else self.train_set
        return identity(type(self).__name__, self.seq_len, self.seed, blocks)

    def state_dict(self) -> dict[str, Any]:
        """Where the training data stands, and :meth:`identity`: saved in every checkpoint."""
        if self.trainer is None:
            return {}
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return self.position.state_dict(self.identity(), done, self.batch_size,
                                        isinstance(self.train_set, StreamingBlocks), self._streams())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.position.load_state_dict(state_dict, self.identity(), self._streams(),
                                      self.trainer.world_size if self.trainer else 1)

    def _streams(self) -> int:
        """Sub-streams a stream is read as: one per worker (or the main process) of every rank."""
        return (self.trainer.world_size if self.trainer else 1) * max(1, self.num_workers)


def save_run_tokenizer(trainer: L.Trainer | None, tokenizer: Tokenizer, spec: TokenizerSpec) -> None:
    """Save a trained tokenizer into the run folder as ``tokenizer.json``, if the run has one
    (without a logger, ``log_dir`` would be the working folder); a resumed run's is already
    there (another tokenizer is refused: it is never overwritten).

    Args:
        trainer: The run's trainer, if any.
        tokenizer: The run's tokenizer.
        spec: How it was made (one loaded from ``spec.path`` is not copied).
    """
    log_dir = trainer.log_dir if trainer is not None and trainer.loggers else None
    if log_dir and trainer.is_global_zero and not spec.path:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        if not (Path(log_dir) / "tokenizer.json").exists():
            tokenizer.save(Path(log_dir) / "tokenizer.json")
