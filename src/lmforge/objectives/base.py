"""The interface between a corpus and a task."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch.utils.data import get_worker_info

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer


@runtime_checkable
class Objective(Protocol):
    """Turns token ids into batches; the task owns it, the DataModule applies it.

    Most objectives take packed blocks of ``block_length(seq_len)`` tokens. One that sets
    ``sentences`` gets each document as a list of tokenized sentences instead and builds its
    own examples (``build_examples``), e.g. BERT's next-sentence pairs.
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


class WorkerGenerator:
    """A ``torch.Generator`` per DataLoader worker, all derived from one seed.

    Objectives draw their randomness (masks, spans) while collating, which happens inside
    the DataLoader's worker processes: each worker gets its own stream so two workers never
    draw the same masks, and a run is reproducible for a given seed and number of workers.

    Args:
        seed: Seed of the streams.
    """

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._worker: int | None = None

    def __call__(self) -> torch.Generator:
        """The generator of the calling process (the main process counts as worker -1)."""
        worker = get_worker_info()
        worker_id = worker.id if worker is not None else -1
        if self._generator is None or self._worker != worker_id:
            self._generator = torch.Generator().manual_seed(self.seed * 1000 + worker_id + 1)
            self._worker = worker_id
        return self._generator
