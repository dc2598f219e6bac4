"""The interface between a corpus and a task."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class Objective(Protocol):
    """Turns blocks of token ids into a batch; the task owns it, the DataModule applies it."""

    def block_length(self, seq_len: int) -> int:
        """How many consecutive corpus tokens one example consumes at model length ``seq_len``."""
        ...

    def __call__(self, blocks: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Collate blocks (each of ``block_length`` token ids) into a batch of tensors."""
        ...
