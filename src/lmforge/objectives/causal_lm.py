"""Next-token prediction: inputs are a block, targets the same block shifted left by one."""

from __future__ import annotations

import numpy as np
import torch

from lmforge.batching import IGNORE, document_positions
from lmforge.errors import UserError
from lmforge.tokenizer import Tokenizer


class CausalLM:
    """Causal language modelling objective (GPT).

    A block holds ``seq_len + 1`` tokens so that every one of the ``seq_len`` input positions
    has a target; blocks do not overlap, so no token is seen twice per epoch.

    Args:
        document_mask: Keep the documents packed in a block apart: the batch carries
            ``position_ids`` (restarting at 0 after each end-of-document token, which the network
            reads as block-diagonal causal attention), and the target of each end-of-document
            token (the next document's first token) takes no loss.
    """

    sentences = False

    def __init__(self, document_mask: bool = False):
        self.document_mask = document_mask
        self.eos_id: int | None = None

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
        self.eos_id = tokenizer.require(["eos"], "next-token prediction (it ends every document with it)",
                                        "train one with `specials: gpt`.")["eos"]

    def block_length(self, seq_len: int) -> int:
        return seq_len + 1

    def __call__(self, blocks: list[np.ndarray]) -> dict[str, torch.Tensor]:
        ids = torch.from_numpy(np.stack(blocks).astype(np.int64))  # (B, T + 1)
        batch = {"input_ids": ids[:, :-1], "targets": ids[:, 1:]}
        if self.document_mask:
            if self.eos_id is None:
                raise RuntimeError("CausalLM.bind(tokenizer) must be called before document_mask batches.")
            ends = batch["input_ids"] == self.eos_id  # (B, T): the data ends every document with it
            batch["position_ids"] = document_positions(ends)
            batch["targets"] = batch["targets"].masked_fill(ends, IGNORE)  # no next document from this one
        return batch
