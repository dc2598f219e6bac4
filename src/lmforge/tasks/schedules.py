"""Learning-rate schedules, as multipliers of the peak rate for ``LambdaLR``: warmup + cosine
(pretraining) and warmup + linear decay (fine-tuning)."""

from __future__ import annotations

import math
from collections.abc import Callable


def warmup_cosine(warmup_steps: int, decay_steps: int, min_lr_ratio: float) -> Callable[[int], float]:
    """Multiplier of the peak learning rate: linear warmup, cosine decay to a floor, then flat.

    Args:
        warmup_steps: Steps of linear increase from 0 to the peak.
        decay_steps: Step at which the cosine reaches ``min_lr_ratio`` (counted from step 0).
        min_lr_ratio: The floor, as a fraction of the peak.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if step >= decay_steps:
            return min_lr_ratio
        progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def warmup_linear(warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> Callable[[int], float]:
    """Multiplier of the peak learning rate: linear warmup, then linear decay to ``min_lr_ratio``
    at ``total_steps`` (the usual fine-tuning schedule, BERT's and RoBERTa's).

    Args:
        warmup_steps: Steps of linear increase from 0 to the peak.
        total_steps: Step at which the decay reaches ``min_lr_ratio`` (counted from step 0).
        min_lr_ratio: The floor, as a fraction of the peak.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * (1 - progress)

    return factor
