"""The interface between a corpus and a task."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

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
