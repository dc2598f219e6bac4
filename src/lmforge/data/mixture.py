"""A weighted mixture of corpora: domain text with a share of general text replayed, validated
source by source.

:class:`CorpusMixture` trains on several corpora at once, each with its own source and reading
settings, sampled by weight (:mod:`lmforge.data.blend`), and validates on each of them apart
(``val/loss/<source>``) and on corpora it never trains on (``validate_on``): the forgetting
monitor of continued pretraining.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from functools import partial
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from lmforge.batching import Objective
from lmforge.data.blend import Blend, MixtureBlocks, MixtureSampler, MixtureStream
from lmforge.data.corpus import CorpusDataModule, save_run_tokenizer
from lmforge.data.resume import DataPosition, identity
from lmforge.data.sampler import Keyed, keyed_collate
from lmforge.data.streaming import collate_stream
from lmforge.data.tokenizer import TokenizerSpec
from lmforge.errors import UserError, did_you_mean
from lmforge.tokenizer import Tokenizer


class CorpusMixture(L.LightningDataModule):
    """Several corpora trained on together, sampled by weight, each validated apart.

    Each source is any corpus (``class_path`` and its ``init_args``) with its own source and
    reading settings (filters, ``max_documents``, ``val_fraction``, its ``seed`` of the split);
    the tokenizer, sequence length, batch size, workers and the choice of prepared shards or
    streaming are the mixture's, the same for all. Training examples are drawn by ``weights``:
    every example is a block of the same number of tokens, so the weights are shares of the
    training tokens. The draw is deterministic from ``seed`` and resumes exactly from a
    checkpoint; ranks and workers never share an example. TensorBoard gets each source's
    tokens so far (``data/tokens/<source>``) and passes over it (``data/epoch/<source>``).

    Validation scores every source's validation split apart (``val/loss/<source>``, and
    ``val/bpb/<source>`` for decoders), then the corpora of ``validate_on``, never trained on
    (e.g. general text during a domain run: forgetting). ``val/loss``, which checkpoints
    monitor, is the mean of the training sources' losses weighted by ``weights``.

    One epoch of the mixture lasts until its first source ends (``on_exhausted: stop``, and the
    run ends there) or until every source has been read once (``repeat``: a shorter one starts
    a new pass, in a new order, when it ends).

    Args:
        sources: The training corpora by name (a name is what the logs call it: no ``/``).
        weights: Each source's sampling weight, by name (any positive numbers; normalised).
        validate_on: Corpora validated but never trained on, by name: their validation split
            (the documents their ``val_fraction`` and ``seed`` hold out) is scored.
        on_exhausted: What a source that has given all its training blocks does: ``repeat``
            (read again, in a new order) or ``stop`` (the run ends).
        tokenizer: The tokenizer to load, or how to train one on the sources' training documents
            (taken in turn from each source).
        seq_len: Tokens per example seen by the model.
        batch_size: Examples per batch on each device.
        num_workers: DataLoader worker processes.
        seed: Seed of the draw of sources and of each source's order.
        streaming: Tokenize and pack every source on the fly as it is read, instead of
            preparing token shards (see :class:`~lmforge.data.corpus.CorpusDataModule`); set
            ``trainer.max_steps``.
        cache_dir: Where the sources' prepared token shards go (default: each source's own).
    """

    uses_shards = True  # prepared, unless streaming: ``lmforge prepare`` prepares every corpus

    def __init__(
        self,
        sources: dict[str, CorpusDataModule],
        weights: dict[str, float],
        validate_on: dict[str, CorpusDataModule] | None = None,
        on_exhausted: Literal["repeat", "stop"] = "repeat",
        tokenizer: TokenizerSpec = TokenizerSpec(),
        seq_len: int = 256,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 1234,
        streaming: bool = False,
        cache_dir: str | None = None,
    ):
        super().__init__()
        validate_on = dict(validate_on or {})
        self._check(sources, weights, validate_on, on_exhausted)
        if seq_len < 1 or batch_size < 1:
            raise UserError(f"seq_len and batch_size must be positive, got seq_len={seq_len}, batch_size={batch_size}.")
        self.names = list(sources)
        self.sources = [sources[name] for name in self.names]
        self.weights = [float(weights[name]) for name in self.names]
        self.validate_on = validate_on
        self.on_exhausted = on_exhausted
        self.tokenizer_spec = TokenizerSpec(**tokenizer) if isinstance(tokenizer, dict) else tokenizer
        self.seq_len, self.batch_size, self.num_workers, self.seed = seq_len, batch_size, num_workers, seed
        self.streaming = streaming
        for corpus in self.corpora():  # the mixture's settings, the same for all
            corpus.seq_len, corpus.batch_size, corpus.num_workers, corpus.streaming = (
                seq_len, batch_size, num_workers, streaming)
            corpus.cache_dir = cache_dir or corpus.cache_dir
        self.objective: Objective | None = None
        self._tokenizer: Tokenizer | None = None
        self.blend = Blend(self.weights, seed)
        self.train_set: Dataset | None = None
        self.val_sets: list[tuple[str, float, Dataset]] = []  # (name, weight in val/loss, blocks)
        self.position = DataPosition()
        self._logged_step = -1

    @staticmethod
    def _check(sources: dict[str, Any], weights: dict[str, float], validate_on: dict[str, Any],
               on_exhausted: str) -> None:
        """Refuse a mixture that cannot be drawn, in one sentence naming the key, before anything is read."""
        if not sources:
            raise UserError("data.sources is empty: name at least one corpus to train on, e.g. "
                            "`sources: {pubmed: {class_path: lmforge.data.PubMedCorpus, ...}}`.")
        for name in [*sources, *validate_on]:
            if not name or "/" in name:
                raise UserError(f"Source name {name!r} cannot name a TensorBoard tag: use a name without '/'.")
        both = sorted(set(sources) & set(validate_on))
        if both:
            raise UserError(f"{both[0]!r} is both in data.sources and data.validate_on: a corpus trained on is "
                            "validated already; keep it in one of them.")
        for name in weights:
            if name not in sources:
                raise UserError(f"data.weights names {name!r}, which is not a source: "
                                f"{did_you_mean(name, sources, 'the sources are ' + ', '.join(sources) + '.')}")
        missing = [name for name in sources if name not in weights]
        if missing:
            raise UserError(f"data.weights gives no weight to source {missing[0]!r}: give every source a weight.")
        bad = {name: w for name, w in weights.items() if not (isinstance(w, (int, float)) and w >= 0)}
        if bad or sum(weights.values()) <= 0:
            raise UserError(f"data.weights {dict(weights)}: the weights must be numbers >= 0 that sum to a positive "
                            "number, e.g. {pubmed: 0.9, books: 0.1}.")
        zero = [name for name, w in weights.items() if w == 0]
        if zero:
            raise UserError(f"data.weights gives source {zero[0]!r} weight 0: move it to data.validate_on to validate "
                            "on it without training on it.")
        if on_exhausted not in ("repeat", "stop"):
            raise UserError(f"data.on_exhausted={on_exhausted!r} is unknown: use repeat or stop.")

    def corpora(self) -> Iterator[CorpusDataModule]:
        """Every corpus of the mixture: the training sources, then those only validated on."""
        yield from self.sources
        yield from self.validate_on.values()

    @property
    def name(self) -> str:
        """How messages refer to the mixture."""
        return "the mixture (" + ", ".join(f"{n} {w / sum(self.weights):.0%}"
                                            for n, w in zip(self.names, self.weights)) + ")"

    # -- tokenizer (handed over; else loaded or trained on every source's training documents) ---
    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer handed over (the setter), else the one ``tokenizer_spec`` loads or trains."""
        if self._tokenizer is None:
            limit = self.sources[0].stream_tokenizer_documents if self.streaming else None
            key = None if self.tokenizer_spec.path else ":".join(
                [c.fingerprint() for c in self.sources] + [str(limit)])
            self._tokenizer = self.tokenizer_spec.load_or_train(self._tokenizer_texts(limit), key, self.name)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value: Tokenizer) -> None:
        self._tokenizer = value
        for corpus in self.corpora():
            corpus.tokenizer = value

    def _tokenizer_texts(self, limit: int | None) -> Iterator[str]:
        """The sources' training documents, one of each in turn, ``limit`` in all."""
        turns = itertools.zip_longest(*(c.train_documents() for c in self.sources))
        return itertools.islice((doc for turn in turns for doc in turn if doc is not None), limit)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    # -- Lightning hooks ------------------------------------------------------------------------
    def _require_objective(self) -> Objective:
        if self.objective is None:
            raise UserError("CorpusMixture has no objective to build batches with: hand it the task's with "
                            "`lmforge.start.connect(task, data)` before `trainer.fit` (the lmforge command does).")
        if self.objective.sentences:
            raise UserError("A corpus mixture samples packed blocks of tokens; this task's objective builds examples "
                            "from sentence pairs: train it on one corpus.")
        for corpus in self.corpora():
            corpus.objective = self.objective
        return self.objective

    def prepare_data(self) -> None:
        """Prepare every corpus's token shards once per node (not when streaming)."""
        self._require_objective()
        self.tokenizer  # noqa: B018 (trained once, here, before the sources prepare with it)
        if not self.streaming:
            for corpus in self.corpora():
                corpus.prepare()

    def setup(self, stage: str) -> None:
        objective = self._require_objective()
        if self.train_set is not None:
            return
        tok = self.tokenizer
        objective.bind(tok)
        block = objective.block_length(self.seq_len)
        for corpus in self.corpora():  # (a stream splits over the run's ranks: its corpora must know them)
            corpus.trainer = self.trainer
        train = [corpus.train_blocks(block) for corpus in self.sources]
        weights = np.asarray(self.weights) / sum(self.weights)
        self.val_sets = [(name, float(w), corpus.val_blocks(block))
                         for name, w, corpus in zip(self.names, weights, self.sources)]
        self.val_sets += [(name, 0.0, corpus.val_blocks(block)) for name, corpus in self.validate_on.items()]
        for name, _, blocks in self.val_sets:
            if len(blocks) == 0:
                raise UserError(f"The validation split of source {name!r} is too short for one example of "
                                f"{self.seq_len} tokens: add text, raise its `val_fraction` or lower `seq_len`.")
        if self.streaming:
            self.train_set = MixtureStream(train, self.blend, repeat=self.on_exhausted == "repeat")
            sizes = "streaming"
        else:
            for name, blocks in zip(self.names, train):
                if len(blocks) == 0:
                    raise UserError(f"The train split of source {name!r} is too short for one example of "
                                    f"{self.seq_len} tokens: add text or lower `seq_len`.")
            lengths = [len(blocks) for blocks in train]
            epoch = (self.blend.first_exhausted(lengths) if self.on_exhausted == "stop" else
                     int(max(n / w for n, w in zip(lengths, weights))))
            self.train_set = MixtureBlocks(train, self.blend, self.seed, epoch)
            world = self.trainer.world_size if self.trainer is not None else 1
            if stage == "fit" and epoch < self.batch_size * world:
                raise UserError(f"{self.name} gives {epoch} examples before a source runs out, fewer than one batch "
                                f"of {self.batch_size}: lower `data.batch_size`, add text or use `on_exhausted: repeat`.")
            sizes = ", ".join(f"{n}: {len(b):,}" for n, b in zip(self.names, train)) + f" train blocks; epoch {epoch:,}"
        if stage == "fit" and self.on_exhausted == "stop" and self.trainer is not None:
            self.trainer.fit_loop.max_epochs = 1  # the epoch ends where the first source does: so does the run
        val = ", ".join(f"{n}: {len(b):,}" for n, _, b in self.val_sets)
        rank_zero_info(f"{self.name}: {sizes}; validation blocks {val} ({block} tokens each).")
        save_run_tokenizer(self.trainer, tok, self.tokenizer_spec)

    def train_dataloader(self) -> DataLoader:
        if isinstance(self.train_set, MixtureStream):
            self.position.resume_stream(self.train_set, self.trainer.global_rank if self.trainer else 0)
            dataset, collate, options = self.train_set, collate_stream(self.objective), {}
        else:
            rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
            sampler = self.position.sampler_for(len(self.train_set), world, rank, self.seed, MixtureSampler)
            dataset, collate = Keyed(self.train_set), keyed_collate(self.objective)
            options = {"sampler": sampler, "drop_last": True}
        return DataLoader(dataset, batch_size=self.batch_size, collate_fn=partial(_with_start, collate),
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0, **options)

    def val_dataloader(self) -> list[DataLoader]:
        """One loader per source, then per corpus of ``validate_on``; their batches carry the set's
        name and its weight in ``val/loss`` (``set``, ``set_weight``)."""
        collate = keyed_collate(self.objective)
        return [DataLoader(Keyed(blocks), batch_size=self.batch_size, num_workers=self.num_workers,
                           collate_fn=partial(_named, collate, name, weight), persistent_workers=self.num_workers > 0)
                for name, weight, blocks in self.val_sets]

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()

    def sample_ids(self, batch_idx: int) -> list[int] | None:
        """The mixture positions of training batch ``batch_idx`` of the current epoch on this rank,
        for messages about a batch; ``None`` when streaming."""
        return self.position.sample_ids(batch_idx, self.batch_size)

    # -- per-source tokens in TensorBoard; exact resume ------------------------------------------
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        start = batch.pop("mixture_start", None)
        batch = self.position.track(batch)
        if start is not None and self.trainer is not None and self.trainer.training:
            self._log_tokens(int(start))
        return batch

    def _log_tokens(self, start: int) -> None:
        """Log each source's tokens and passes so far, every ``log_every_n_steps`` steps: the examples
        before this batch's first on rank 0, and this step's of every rank (approximately when
        streaming with several workers, whose sub-streams may stand a batch apart)."""
        trainer = self.trainer
        step = trainer.global_step
        if not trainer.is_global_zero or step == self._logged_step or step % max(1, trainer.log_every_n_steps):
            return
        self._logged_step = step
        streams = trainer.world_size * (max(1, self.num_workers) if self.streaming else 1)
        counts = self.blend.counts(start + self.batch_size * streams)
        block = self.objective.block_length(self.seq_len)
        metrics = {f"data/tokens/{n}": float(c * block) for n, c in zip(self.names, counts)}
        if isinstance(self.train_set, MixtureBlocks):
            metrics.update({f"data/epoch/{n}": c / len(b) for n, c, b in zip(self.names, counts, self.train_set.sources)})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with the checkpoint: the sources, their weights and, when
        prepared, a digest of the examples of the mixture's first epoch."""
        blocks = self.train_set if isinstance(self.train_set, MixtureBlocks) else None
        ident = identity(type(self).__name__, self.seq_len, self.seed, blocks)
        ident["weights"] = dict(zip(self.names, self.weights))
        return ident

    def state_dict(self) -> dict[str, Any]:
        """Where the training data stands, and :meth:`identity`: saved in every checkpoint."""
        if self.trainer is None:
            return {}
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        streams = self.trainer.world_size * max(1, self.num_workers)
        return self.position.state_dict(self.identity(), done, self.batch_size, self.streaming, streams)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        world = self.trainer.world_size if self.trainer else 1
        self.position.load_state_dict(state_dict, self.identity(), world * max(1, self.num_workers), world)


def _with_start(collate: Any, items: list) -> dict:
    """The batch, with the mixture position of its first example (``mixture_start``), for the token counts."""
    batch = collate(items)
    first = items[0]
    batch["mixture_start"] = torch.tensor(first[0][1] if isinstance(first, tuple) else first["index"])
    return batch


def _named(collate: Any, name: str, weight: float, items: list) -> dict:
    """A validation batch of set ``name``, with its weight in ``val/loss`` (module level: workers pickle it)."""
    return {**collate(items), "set": name, "set_weight": weight}
