"""Replaced-token detection (ELECTRA, Clark et al. 2020): the masking of the generator's input,
and the corrupted input and labels of the discriminator once the generator has sampled.

The masks are masked-LM's (:class:`MaskedLM`), in the proportions of ELECTRA's code: of the
selected tokens 85% become the mask token and 15% stay themselves, none a random token (the
generator supplies the replacements). The generator's samples then take the selected positions;
a token is "replaced" (label 1) where the sample differs from the original, so a sample that
happens to equal the original counts as original (0), as in the paper.
"""

from __future__ import annotations

import torch

from lmforge.batching import IGNORE
from lmforge.objectives.masked_lm import MaskedLM


class ReplacedTokens(MaskedLM):
    """Masking for ELECTRA's generator (a :class:`MaskedLM` of packed blocks, no NSP).

    Args:
        mask_prob: Fraction of (non-special) tokens the generator fills.
        mask_token_prob: Of the selected, the fraction shown to the generator as the mask token
            (the others stay themselves).
        whole_word: Select whole words rather than single pieces.
        seed: Seed of the masks, drawn per batch from (seed, the batch's key): see ``BatchRNG``.
        document_mask: Keep the documents of a packed block apart.
    """

    user = "replaced-token detection (ELECTRA)"

    def __init__(self, mask_prob: float = 0.15, mask_token_prob: float = 0.85, whole_word: bool = False,
                 seed: int = 0, document_mask: bool = False):
        super().__init__(mask_prob=mask_prob, mask_token_prob=mask_token_prob, random_token_prob=0.0,
                         whole_word=whole_word, seed=seed, document_mask=document_mask)


def sample_tokens(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of ``logits`` ``(N, V)``, drawn from their softmax at temperature 1;
    no gradient flows through the draw.

    Args:
        logits: The generator's logits at the masked positions.
        generator: The random stream (``None``: torch's global one, which the training steps keep
            apart and checkpoint: see :mod:`lmforge.tasks.rng`).
    """
    probs = logits.detach().float().softmax(-1)  # (N, V)
    if probs.size(0) == 0:
        return torch.zeros(0, dtype=torch.long, device=logits.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (N,)


def replace_tokens(input_ids: torch.Tensor, labels: torch.Tensor,
                   samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's input and labels: the original tokens with ``samples`` at the masked
    positions, and where that changed a token.

    Args:
        input_ids: The generator's (masked) input ``(B, T)``.
        labels: The original token at the masked positions, ``IGNORE`` elsewhere ``(B, T)``.
        samples: The generator's samples for the masked positions, in row-major order ``(N,)``.

    Returns:
        The corrupted ids ``(B, T)`` and the replaced-token labels ``(B, T)``, 1 where a sample differs
        from the original token.
    """
    masked = labels != IGNORE  # (B, T)
    original = torch.where(masked, labels, input_ids)
    corrupted = original.masked_scatter(masked, samples.to(original.dtype))
    return corrupted, (corrupted != original).long()
