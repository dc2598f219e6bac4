"""Next-token prediction: inputs are a block, targets the same block shifted left by one."""

from __future__ import annotations

import numpy as np
import torch

from lmforge.tokenizer import Tokenizer


class CausalLM:
    """Causal language modelling objective (GPT).

    A block holds ``seq_len + 1`` tokens so that every one of the ``seq_len`` input positions
    has a target; blocks do not overlap, so no token is seen twice per epoch.
    """

    sentences = False

    def bind(self, tokenizer: Tokenizer) -> None:
        pass  # next-token prediction needs nothing of the tokenizer

    def block_length(self, seq_len: int) -> int:
        return seq_len + 1

    def __call__(self, blocks: list[np.ndarray]) -> dict[str, torch.Tensor]:
        ids = torch.from_numpy(np.stack(blocks).astype(np.int64))  # (B, T + 1)
        return {"input_ids": ids[:, :-1], "targets": ids[:, 1:]}
