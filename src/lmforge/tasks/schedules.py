"""Learning-rate schedules, as multipliers of the peak rate for ``LambdaLR``: warmup + cosine
(pretraining's default), warmup + linear decay (fine-tuning's), and warmup-stable-decay (WSD:
a constant peak, then a short linear cooldown)."""

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


def warmup_stable_decay(warmup_steps: int, decay_steps: int, cooldown_steps: int,
                        min_lr_ratio: float) -> Callable[[int], float]:
    """Multiplier of the peak learning rate: linear warmup, the peak held (stable), then a linear
    cooldown over the last ``cooldown_steps`` before ``decay_steps`` to ``min_lr_ratio``
    (warmup-stable-decay: Hu et al. 2024, MiniCPM; Hägele et al. 2024 find a 20% linear
    cooldown matches cosine). The stable phase does not depend on where it ends: the schedule
    with ``decay_steps`` S + D and ``cooldown_steps`` D equals this one up to step S, then decays.

    Args:
        warmup_steps: Steps of linear increase from 0 to the peak.
        decay_steps: Step at which the cooldown reaches ``min_lr_ratio`` (counted from step 0).
        cooldown_steps: Steps of the decay, ending at ``decay_steps``.
        min_lr_ratio: The floor, as a fraction of the peak.
    """
    cooldown_from = max(warmup_steps, decay_steps - cooldown_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if step < cooldown_from:
            return 1.0
        progress = min(1.0, (step - cooldown_from) / max(1, decay_steps - cooldown_from))
        return min_lr_ratio + (1 - min_lr_ratio) * (1 - progress)

    return factor


def schedule_factor(name: str, warmup_steps: int, decay_steps: int, min_lr_ratio: float,
                    cooldown_fraction: float = 0.2, cooldown_steps: int | None = None) -> Callable[[int], float]:
    """The multiplier of the schedule ``name`` (``cosine``, ``linear`` or ``wsd``).

    Args:
        name: The schedule.
        warmup_steps: Steps of linear warmup.
        decay_steps: Step where the decay reaches its floor.
        min_lr_ratio: The floor, as a fraction of the peak.
        cooldown_fraction: WSD: the cooldown's share of ``decay_steps`` when ``cooldown_steps`` is unset.
        cooldown_steps: WSD: steps of the cooldown.
    """
    if name == "linear":
        return warmup_linear(warmup_steps, decay_steps, min_lr_ratio)
    if name == "wsd":
        cooldown = cooldown_steps if cooldown_steps is not None else round(cooldown_fraction * decay_steps)
        return warmup_stable_decay(warmup_steps, decay_steps, cooldown, min_lr_ratio)
    return warmup_cosine(warmup_steps, decay_steps, min_lr_ratio)
