"""Next-token prediction: inputs are a block, targets the same block shifted left by one."""

from __future__ import annotations

import numpy as np
import torch

from lmforge.errors import UserError
from lmforge.tokenizer import Tokenizer


class CausalLM:
    """Causal language modelling objective (GPT).

    A block holds ``seq_len + 1`` tokens so that every one of the ``seq_len`` input positions
    has a target; blocks do not overlap, so no token is seen twice per epoch.
    """

    sentences = False

    def bind(self, tokenizer: Tokenizer) -> None:
        """Refuse an encoder's tokenizer: a mask token or T5 sentinels mean it was made for
        another family, whose end-of-document token (if any) a decoder should not learn."""
        foreign = [t for t in ("[MASK]", "<mask>", "<extra_id_0>") if tokenizer.backend.token_to_id(t) is not None]
        if foreign:
            raise UserError(
                f"The tokenizer is an encoder's (special tokens {' '.join(tokenizer.special_tokens()[:8])}; "
                f"{foreign[0]} has no use in a decoder): give a decoder's tokenizer (GPT-2, Llama ...), or train "
                "one with `specials: gpt` (`lmforge tokenizer train --specials gpt`)."
            )
        tokenizer.require(["eos"], "next-token prediction (it ends every document with it)",
                          "train one with `specials: gpt`.")

    def block_length(self, seq_len: int) -> int:
        return seq_len + 1

    def __call__(self, blocks: list[np.ndarray]) -> dict[str, torch.Tensor]:
        ids = torch.from_numpy(np.stack(blocks).astype(np.int64))  # (B, T + 1)
        return {"input_ids": ids[:, :-1], "targets": ids[:, 1:]}
