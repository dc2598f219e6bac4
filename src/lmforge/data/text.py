"""The text corpus DataModule: documents -> tokenizer -> packed blocks -> objective -> batches.

:class:`CorpusDataModule` does the work; a corpus only says where its documents come from
(:meth:`CorpusDataModule.load_documents`): :class:`TextCorpus` reads local files or a
Hugging Face dataset, :class:`BundledCorpus` the prose inside CPython. It never knows the model family: the
task's objective, handed over to it (``data.objective``), decides how many tokens an example takes and how
blocks become a batch.
"""

from __future__ import annotations

import glob
import hashlib
import inspect
import itertools
import json
import pickle
import shutil
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch.utils.data import DataLoader, Dataset

from lmforge.data.augment import Augmentation, apply_augmentations
from lmforge.data.bundled import bundled_documents
from lmforge.cache import cache_dir
from lmforge.data.documents import TxtSplit, is_validation, iter_hf, iter_local
from lmforge.data.packing import PackedBlocks, concat_documents, token_dtype
from lmforge.data.sampler import Keyed, ResumableSampler, keyed_collate
from lmforge.data.shards import PreparedCorpus, ShardBlocks, write_prepared
from lmforge.data.streaming import StreamingBlocks, collate_stream
from lmforge.data.sentences import split_sentences
from lmforge.data.tokenizer import TokenizerSpec
from lmforge.tokenizer import Tokenizer
from lmforge.distributed import gather_objects
from lmforge.errors import UserError
from lmforge.batching import Objective


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
        self.train_set: Dataset | None = None  # blocks (shards, a stream) or an objective's own examples
        self.val_set: Dataset | None = None
        self._sampler: ResumableSampler | None = None
        self._resume: dict[str, Any] = {}
        self._stream_positions: dict[int, tuple[int, int]] = {}
        self._first_batch = (-1, 0)  # (epoch, batch) where the sampler's iteration began on resume

    # -- documents --------------------------------------------------------------------------
    def load_documents(self) -> Iterable[str]:
        """All documents of the corpus, as a list or read lazily (a generator)."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        """How messages refer to the corpus."""
        return type(self).__name__

    def keep_documents(self, documents: Iterable[str]) -> list[str]:
        """The documents that pass ``min_chars`` and ``deduplicate``, in order, at most ``max_documents``.

        Filters come before the ``max_documents`` cut, so that it counts kept documents. The
        input is read lazily and no further than needed (:meth:`documents` is the lazy form).
        """
        return list(self._filtered(documents))

    def _filtered(self, documents: Iterable[str]) -> Iterator[str]:
        """:meth:`keep_documents`, one document at a time (see :meth:`documents`)."""
        seen: set[bytes] = set()
        short = duplicates = kept = 0
        if self.max_documents is not None and self.max_documents <= 0:
            return
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
            kept += 1
            yield doc
            if kept == self.max_documents:
                break  # before the reader is asked for one more (a stream, a next shard)
        if short or duplicates:
            rank_zero_info(
                f"{self.name}: removed {duplicates} duplicate documents (deduplicate) and {short} "
                f"shorter than {self.min_chars} characters (min_chars); {kept} kept."
            )
        if not kept and short:  # deduplication alone always keeps a first occurrence
            raise UserError(
                f"Corpus {self.name} has no document left after filtering ({short} shorter than "
                f"min_chars={self.min_chars} characters): lower `min_chars`."
            )

    def documents(self) -> Iterator[str]:
        """The kept documents (:meth:`keep_documents`), read lazily: memory does not grow with the corpus."""
        return self._filtered(self.load_documents())

    def labelled_documents(self) -> Iterator[tuple[str, str]]:
        """``(split, text)`` of every kept document, lazily, in corpus order; split is
        ``train`` or ``val``, decided per document (:func:`~lmforge.data.documents.is_validation`)."""
        for doc in self.documents():
            yield ("val" if is_validation(doc, self.val_fraction, self.seed) else "train"), doc

    def train_documents(self, start: int = 0) -> Iterator[str]:
        """The training documents from index ``start`` on (those before are read, not returned)."""
        docs = (doc for split, doc in self.labelled_documents() if split == "train")
        return itertools.islice(docs, start, None)

    def splits(self) -> tuple[list[str], list[str]]:
        """(train, validation) documents, split deterministically by document.

        The loaded documents pass :meth:`keep_documents` (``min_chars``, ``deduplicate``,
        then ``max_documents``) before the split.
        """
        if self._splits is None:
            train: list[str] = []
            val: list[str] = []
            for split, doc in self.labelled_documents():
                (train if split == "train" else val).append(doc)
            if not train and not val:
                raise UserError(f"Corpus {self.name} has no text: every document is empty.")
            if not val or not train:
                # few documents: hold out the last one rather than fail; a lone document
                # serves both splits (a smoke run, not a measurement)
                docs = train or val
                train, val = (docs[:-1], docs[-1:]) if len(docs) > 1 else (docs, docs)
            self._splits = (train, val)
        return self._splits

    def _augmented(self, labelled: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
        """Apply ``augment`` to the training documents, :data:`AUGMENT_CHUNK` at a time."""
        if not self.augment:
            yield from labelled
            return
        chunk: list[tuple[str, str]] = []
        chunks = itertools.count()
        for item in itertools.chain(labelled, [None]):
            if item is not None:
                chunk.append(item)
            if chunk and (item is None or len(chunk) == AUGMENT_CHUNK):
                train = iter(apply_augmentations([d for s, d in chunk if s == "train"], self.augment, self.seed,
                                                 next(chunks)))
                yield from ((s, next(train) if s == "train" else d) for s, d in chunk)
                chunk = []

    # -- tokenizer (known at instantiation: the CLI links vocab_size into the model) -------
    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            spec = self.tokenizer_spec
            # the training documents, read lazily and only to train (the first ones only when streaming)
            limit = self.stream_tokenizer_documents if self.streaming else None
            if not spec.path:
                rank_zero_info(f"Training a {spec.kind} tokenizer ({spec.vocab_size} tokens) on {self.name} ...")
            key = None if spec.path else f"{self.fingerprint()}:{limit}"
            self._tokenizer = spec.load_or_train(self._tokenizer_texts(limit), corpus_key=key)
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

    # -- prepared token shards ----------------------------------------------------------------
    def fingerprint(self) -> str:
        """A hash of everything that decides the prepared documents: the corpus class (and
        the source code of a subclass written outside lmforge, so editing it prepares again),
        its source arguments (with size and modification time of local files), the filters,
        the split and the augmentations."""
        params: dict[str, Any] = {}
        for cls in type(self).__mro__:
            if cls is CorpusDataModule:
                break
            if "__init__" not in vars(cls):
                continue
            for name in inspect.signature(cls.__init__).parameters:
                if name not in ("self", "args", "kwargs") and hasattr(self, name):
                    params[name] = getattr(self, name)
        key = {
            "corpus": f"{type(self).__module__}.{type(self).__qualname__}",
            "source": params,
            "files": [_file_stats(v) for v in params.values() if isinstance(v, (str, list))],
            "options": [self.max_documents, self.deduplicate, self.min_chars, self.val_fraction, self.seed,
                        [repr(a) for a in self.augment]],
            "extra": self.fingerprint_extra(),
        }
        code = _user_code(type(self))
        if code:  # (not in lmforge's own corpora's keys: their caches stay valid)
            key["code"] = code
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=repr).encode()).hexdigest()[:16]

    def fingerprint_extra(self) -> Any:
        """Anything else that changes the documents (a corpus overrides it, e.g. with a version)."""
        return None

    def prepared_folder(self) -> Path:
        root = Path(self.cache_dir).expanduser() if self.cache_dir else cache_dir() / "shards"
        return root / f"{self.fingerprint()}-{self.tokenizer.fingerprint}"

    def prepare(self, progress: bool = True, timeout: float = 24 * 3600) -> PreparedCorpus:
        """The corpus as token shards: tokenized now, or reused from an earlier prepare.

        Rank 0 writes; other ranks wait for it. See :mod:`lmforge.data.shards`.
        """
        tok = self.tokenizer
        folder = self.prepared_folder()
        if not (folder / "meta.json").is_file() and rank_zero_only.rank != 0:
            deadline = time.monotonic() + timeout
            while not (folder / "meta.json").is_file():
                if time.monotonic() > deadline:
                    raise UserError(f"Waited {timeout:.0f} s for rank 0 to prepare '{folder}': run `lmforge prepare` "
                                    "first, on a file system every node shares.")
                time.sleep(1)
        if (folder / "meta.json").is_file():
            return PreparedCorpus.open(folder, tok.fingerprint)
        rank_zero_info(f"Preparing {self.name} into token shards at {folder} ...")
        meta = {"corpus": self.name, "fingerprint": folder.name.split("-")[0]}
        with PrepareProgress(self.size_hint(), enabled=progress and rank_zero_only.rank == 0) as bar:
            prepared = write_prepared(folder, self._augmented(self.labelled_documents()), tok.encode_batch,
                                      tok.vocab_size, tok.eos_id, tok.fingerprint, meta, on_progress=bar.update)
        if not any(s["documents"] for split in prepared.meta["splits"].values() for s in split):
            shutil.rmtree(folder, ignore_errors=True)
            raise UserError(f"Corpus {self.name} has no text: every document is empty.")
        m = prepared.meta
        rank_zero_info(
            f"Prepared {self.name}: {m['characters'] / 1e6:.1f} M characters -> {prepared.num_tokens('train'):,} train / "
            f"{prepared.num_tokens('val'):,} val tokens ({m['dtype']}) in {m['seconds']:.1f} s."
        )
        return prepared

    def size_hint(self) -> int | None:
        """Bytes of text to read, when known (uncompressed local ``paths``), for the progress bar's ETA."""
        paths = getattr(self, "paths", None)
        if not paths or getattr(self, "hf_dataset", None) or self.max_documents is not None:
            return None
        stats = _file_stats(paths)
        if not stats or any(not name.lower().endswith((".txt", ".jsonl", ".csv")) for name, _, _ in stats):
            return None
        return sum(size for _, size, _ in stats)

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
            self.train_set = self._sentence_examples(train_docs, self.seed)
            self.val_set = self._sentence_examples(val_docs, self.seed + 1)
            unit = "examples built from sentences"
            counts = f"{len(train_docs)} train / {len(val_docs)} val documents, "
        else:
            block = self.objective.block_length(self.seq_len)
            unit = f"blocks of {block} tokens"
            if self.streaming:
                rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
                self.train_set = StreamingBlocks(self._stream_documents, tok.encode_batch, tok.eos_id,
                                                 token_dtype(tok.vocab_size), block, rank, world)
                val_docs = [d for s, d in itertools.islice(
                    ((s, d) for s, d in self.labelled_documents() if s == "val"), self.stream_val_documents)]
                stream = concat_documents(tok.encode_batch(val_docs), tok.eos_id, token_dtype(tok.vocab_size))
                self.val_set = PackedBlocks(stream, block)
                counts = f"streaming; {len(val_docs)} val documents, "
            else:
                prepared = self.prepare()
                self.train_set = ShardBlocks(prepared.shards["train"], block)
                self.val_set = ShardBlocks(prepared.shards["val"], block)
                n_docs = [sum(len(s.doc_ends) for s in prepared.shards[k]) for k in ("train", "val")]
                counts = f"{n_docs[0]} train / {n_docs[1]} val documents, "
        for split, ds in (("train", self.train_set), ("validation", self.val_set)):
            if not isinstance(ds, StreamingBlocks) and len(ds) == 0:
                raise UserError(
                    f"The {split} split of {self.name} is too short for one example of {self.seq_len} tokens: "
                    "add text or lower `seq_len`."
                )
        sizes = f"{len(self.val_set):,} val" if self.streaming else f"{len(self.train_set):,} / {len(self.val_set):,}"
        rank_zero_info(f"{self.name}: {counts}{sizes} {unit}.")
        # the run folder, if the run has one (without a logger, log_dir would be the working folder)
        log_dir = self.trainer.log_dir if self.trainer is not None and self.trainer.loggers else None
        if log_dir and self.trainer.is_global_zero and not self.tokenizer_spec.path:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            tok.save(Path(log_dir) / "tokenizer.json")

    def _stream_documents(self, start: int) -> Iterator[str]:
        return self.train_documents(start) if not self.augment else itertools.islice(
            (d for s, d in self._augmented(self.labelled_documents()) if s == "train"), start, None)

    def _sentence_examples(self, docs: list[str], seed: int) -> list:
        sentences = [split_sentences(doc) for doc in docs]
        ids = iter(self.tokenizer.encode_batch([s for doc in sentences for s in doc]))
        tokenized = [[next(ids) for _ in doc] for doc in sentences]
        return self.objective.build_examples(tokenized, self.seq_len, seed)

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        options: dict[str, Any] = {}
        if isinstance(dataset, StreamingBlocks):
            dataset.resume_from = self._resume.pop("stream", {})
            collate = collate_stream(self.objective)
        else:
            if train:
                rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
                self._sampler = ResumableSampler(len(dataset), world, rank, shuffle=True, seed=self.seed)
                if "sampler" in self._resume:
                    self._sampler.load_state_dict(self._resume.pop("sampler"))
                options.update(sampler=self._sampler, drop_last=True)
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
        if self._sampler is None:
            return None
        first = self._first_batch if self._first_batch[0] == self._sampler.epoch else (self._sampler.epoch, 0)
        start = (batch_idx - first[1]) * self.batch_size  # the iteration began at batch first[1] (a resume)
        return self._sampler.order[start : start + self.batch_size]

    # -- exact mid-epoch resume (through Lightning's checkpoint) -------------------------------
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict) and "stream_position" in batch:
            stream, doc, offset = batch.pop("stream_position").tolist()
            self._stream_positions[stream] = (doc, offset)
        return batch

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with the checkpoint: the corpus, the sequence length,
        the seed of split and order and, unless streaming, a digest of the training examples (their number and a sample
        of their tokens; the paths do not count, so a moved corpus still resumes)."""
        identity: dict[str, Any] = {"corpus": type(self).__name__, "seq_len": self.seq_len, "seed": self.seed}
        if self.train_set is not None and not isinstance(self.train_set, StreamingBlocks):
            identity["examples"] = _digest(self.train_set)
        return identity

    def state_dict(self) -> dict[str, Any]:
        """Where the training data stands: the sampler's epoch and position, or each
        sub-stream's position; and :meth:`identity`. Saved in every checkpoint."""
        trainer = self.trainer
        if trainer is None:
            return {}
        state: dict[str, Any] = {"identity": self.identity()}
        if self._sampler is not None:
            done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
            state.update(sampler=self._sampler.state_dict(done * self.batch_size), batches=done)
        elif isinstance(self.train_set, StreamingBlocks):
            # every rank saves, rank 0 writes: gather the sub-streams of all ranks
            positions = {k: v for part in gather_objects(dict(self._stream_positions)) for k, v in part.items()}
            state.update(stream=positions, streams=trainer.world_size * max(1, self.num_workers))
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved, now = state_dict.get("identity", {}), self.identity()
        for key, value in saved.items():
            if key in now and now[key] != value:
                differs = (f"{key} {value}, this run has {now[key]}" if key != "examples" else
                           "training examples (their number or their tokens) than this run's")
                raise UserError(
                    f"The checkpoint was trained on other data ({differs}): resume with the same data settings "
                    "and corpus, or start a new run from its weights with `--model.init_from`."
                )
        # Lightning cannot see that the data module resumes the loader itself
        warnings.filterwarnings("ignore", message=".*ended before the epoch ended and your dataloader is not resumable")
        if "stream" in state_dict:
            streams = self.trainer.world_size * max(1, self.num_workers) if self.trainer else max(1, self.num_workers)
            if state_dict["streams"] != streams:
                raise UserError(
                    f"The checkpoint streamed its data as {state_dict['streams']} sub-streams (devices x num_workers), "
                    f"this run as {streams}: resume with the same number of devices and `num_workers`."
                )
            self._resume["stream"] = {int(k): tuple(v) for k, v in state_dict["stream"].items()}
            self._stream_positions = dict(self._resume["stream"])
        elif "sampler" in state_dict:
            sampler = state_dict["sampler"]
            self._resume["sampler"] = sampler
            self._first_batch = (sampler["epoch"], state_dict.get("batches", 0))
            world = self.trainer.world_size if self.trainer else 1
            if sampler.get("num_replicas", world) != world:
                rank_zero_info(f"Resuming on {world} processes a run of {sampler['num_replicas']}: the data continues "
                               "where it stopped, each example of the epoch read once.")

AUGMENT_CHUNK = 1024  # training documents augmented together (one seeded draw per chunk)


def _file_stats(value: str | list) -> list:
    """(path, size, mtime) of the local files a source argument names, if any."""
    stats = []
    for entry in [value] if isinstance(value, str) else value:
        if not isinstance(entry, str):
            continue
        p = Path(entry).expanduser()
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else \
            [p] if p.is_file() else sorted(Path(m) for m in glob.glob(str(p), recursive=True))
        for f in files:
            st = f.stat()
            stats.append((str(f), st.st_size, st.st_mtime_ns))
    return stats


class PrepareProgress:
    """A rich progress bar for :meth:`CorpusDataModule.prepare`: MB read, MB/s, and ETA when the size is known.

    Args:
        total_bytes: Bytes to read, if known.
        enabled: Show it (rank 0 only).
    """

    def __init__(self, total_bytes: int | None, enabled: bool = True):
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.progress = Progress(TextColumn("tokenizing"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[docs]:,} documents"),
                                 disable=not enabled)
        self.task = self.progress.add_task("prepare", total=total_bytes, docs=0)

    def __enter__(self) -> PrepareProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def update(self, chars: int, docs: int) -> None:
        self.progress.update(self.task, completed=chars, docs=docs)


class TextCorpus(CorpusDataModule):
    """Documents from local files or a Hugging Face dataset.

    Args:
        paths: Local files, folders or glob patterns: ``.txt``, ``.jsonl``, ``.json``,
            ``.parquet`` or ``.csv``, each optionally ``.gz``.
        hf_dataset: A Hugging Face dataset name, read instead of ``paths``.
        hf_config: The dataset configuration (e.g. ``20231101.en`` for Wikipedia).
        hf_split: The dataset split to read.
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
        text_field: str = "text",
        txt_split: TxtSplit = "file",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.paths = paths
        self.hf_dataset = hf_dataset
        self.hf_config = hf_config
        self.hf_split = hf_split
        self.text_field = text_field
        self.txt_split = txt_split

    @property
    def name(self) -> str:
        return self.hf_dataset or str(self.paths)

    def load_documents(self) -> Iterator[str]:
        """The documents, read lazily (filters and ``max_documents`` apply downstream)."""
        if self.hf_dataset:
            return iter_hf(self.hf_dataset, self.hf_config, self.hf_split, self.text_field, self.streaming)
        if self.paths is None:
            raise UserError("No corpus given: set `data.paths` to your text files or `data.hf_dataset` to a hub dataset.")
        return iter_local(self.paths, self.text_field, self.txt_split)


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

    def fingerprint_extra(self) -> str:
        return sys.version  # the bundled text is this Python's


def _user_code(cls: type) -> list[str]:
    """Digests of the source of ``cls`` and of its bases written outside lmforge (a project's
    own corpus class): what lmforge's version does not already pin."""
    digests = []
    for base in cls.__mro__:
        if base.__module__.split(".")[0] in ("lmforge", "lightning", "builtins", "typing"):
            continue
        try:
            source = inspect.getsource(base)
        except (OSError, TypeError):  # defined interactively: nothing to read
            source = base.__qualname__
        digests.append(hashlib.sha256(source.encode()).hexdigest()[:16])
    return digests


def _digest(dataset: Dataset) -> str:
    """A short hash of a dataset's length and of 16 of its items, spread over it."""
    h = hashlib.sha256(str(len(dataset)).encode())
    for i in sorted({int(j) for j in np.linspace(0, len(dataset) - 1, 16)} if len(dataset) else set()):
        item = dataset[i]
        h.update(np.ascontiguousarray(item).tobytes() if isinstance(item, np.ndarray) else pickle.dumps(item))
    return h.hexdigest()[:16]
