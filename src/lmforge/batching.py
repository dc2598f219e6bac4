"""The interface between a corpus and a task: the :class:`Objective` protocol, and the
randomness of each batch keyed by its samples (:class:`BatchRNG`).

It sits below ``data/`` (which applies an objective and keys its batches) and
``objectives/`` (which implement it), so that neither imports the other.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import get_worker_info

from lmforge.tokenizer import Tokenizer

IGNORE = -100  # a target (label) that takes no loss: ``cross_entropy``'s default ``ignore_index``


@runtime_checkable
class Objective(Protocol):
    """Turns token ids into batches; the task owns it, the DataModule applies it.

    Most objectives take packed blocks of ``block_length(seq_len)`` tokens. One that sets
    ``sentences`` gets each document as a list of tokenized sentences instead and builds its
    own examples (``build_examples``), e.g. BERT's next-sentence pairs. A batch of packed blocks
    that keeps its documents apart carries ``position_ids`` (:func:`document_positions`).
    """

    sentences: bool

    def bind(self, tokenizer: Tokenizer) -> None:
        """Learn what the objective needs of the tokenizer (special ids, word boundaries)."""
        ...

    def block_length(self, seq_len: int) -> int:
        """How many consecutive corpus tokens one example consumes at model length ``seq_len``."""
        ...

    def build_examples(self, documents: list[list[list[int]]], seq_len: int, seed: int) -> list:
        """Examples from documents given as tokenized sentences (only when ``sentences``)."""
        ...

    def __call__(self, examples: list) -> dict[str, torch.Tensor]:
        """Collate blocks (or the objective's own examples) into a batch of tensors."""
        ...


def document_positions(ends: torch.Tensor) -> torch.Tensor:
    """Each token's position in its document, ``(B, T)``, for rows packed with documents, each
    ending at a token where ``ends`` ``(B, T)`` is true (its end-of-document token): positions
    restart at 0 after every end, and the network keeps each document's attention to itself
    (``position_ids`` of the batch, 0 where a document starts, as ``transformers``' packing
    collators write them). A document cut by the row's start begins at 0 too.

    Args:
        ends: Where a document ends, ``(B, T)`` booleans.
    """
    steps = torch.arange(ends.size(1), device=ends.device).expand_as(ends)  # (B, T)
    starts = torch.ones_like(ends)
    starts[:, 1:] = ends[:, :-1]  # a document starts at the row's start and after every end
    return steps - torch.where(starts, steps, 0).cummax(1).values  # (B, T)


class BatchRNG:
    """The ``torch.Generator`` an objective draws a batch's randomness (masks, spans) from.

    The data module keys every batch before collating it (:meth:`set_key`): by its first
    sample's (epoch, index) when reading shards, by its stream position when streaming. The
    generator is then seeded from ``(seed, key)`` alone, so a batch's masks are the same
    whichever DataLoader worker collates it, with any number of workers, and after a resume
    from a checkpoint. Unkeyed use (an objective called directly) draws from one stream per
    worker process, seeded from ``seed``.

    Args:
        seed: Seed of the draws.
    """

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._keyed: torch.Generator | None = None
        self._stream: torch.Generator | None = None
        self._worker: int | None = None

    def set_key(self, key: tuple[int, ...]) -> None:
        """Draw the next batch (and those after it, until the next key) from ``(seed, key)``."""
        state = np.random.SeedSequence([self.seed, *key]).generate_state(2, np.uint32)
        self._keyed = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def __call__(self) -> torch.Generator:
        """The generator of the current batch."""
        if self._keyed is not None:
            return self._keyed
        worker = get_worker_info()
        worker_id = worker.id if worker is not None else -1
        if self._stream is None or self._worker != worker_id:
            self._stream = torch.Generator().manual_seed(self.seed * 1000 + worker_id + 1)
            self._worker = worker_id
        return self._stream


def key_batch(objective: Objective, key: tuple[int, ...]) -> None:
    """Seed the randomness of ``objective``'s next batch from ``key`` (if it draws any)."""
    rng = getattr(objective, "rng", None)
    if isinstance(rng, BatchRNG):
        rng.set_key(key)
