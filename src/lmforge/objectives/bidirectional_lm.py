"""Bidirectional language modelling (ELMo): every input token has a next token for the
forward LM and a previous token for the backward LM."""

from __future__ import annotations

import numpy as np
import torch

from lmforge.tokenizer import Tokenizer


class BidirectionalLM:
    """Bidirectional LM objective (ELMo).

    A block holds ``seq_len + 2`` tokens: the ``seq_len`` inside are the input, and each has
    the token after it as the forward target and the token before it as the backward target
    (``input_ids = block[1:-1]``, ``forward_targets = block[2:]``, ``backward_targets =
    block[:-2]``). Blocks do not overlap; the first and last token of a block are targets only.
    """

    sentences = False

    def bind(self, tokenizer: Tokenizer) -> None:
        pass  # predicting neighbours needs nothing of the tokenizer

    def block_length(self, seq_len: int) -> int:
        return seq_len + 2

    def __call__(self, blocks: list[np.ndarray]) -> dict[str, torch.Tensor]:
        ids = torch.from_numpy(np.stack(blocks).astype(np.int64))  # (B, T + 2)
        return {"input_ids": ids[:, 1:-1], "forward_targets": ids[:, 2:], "backward_targets": ids[:, :-2]}
