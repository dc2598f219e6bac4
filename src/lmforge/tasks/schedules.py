"""Learning-rate schedules, as multipliers of the peak rate for ``LambdaLR``: warmup + cosine
(pretraining's default), warmup + linear decay (fine-tuning's), and warmup-stable-decay (WSD:
a constant peak, then a short linear cooldown); and :class:`StagedSchedule`, which runs one over
the global step from where its training stage began, with the run's own settings on resume."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch


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


class StagedSchedule(torch.optim.lr_scheduler.LambdaLR):
    """``LambdaLR`` over the global step whose multiplier counts from ``start``, the step where the
    training stage began (0, or the step of the checkpoint a new stage resumed: re-warming).

    Restoring a checkpoint keeps its step and the optimizer's moments but not the settings they
    were trained with: the peaks, weight decay, betas ... are this run's (a resumed run may change
    them, e.g. to decay a WSD run from its stable phase), and the rate at the resumed step is
    this run's schedule's. With unchanged settings that is the rate the checkpoint had.

    Args:
        optimizer: The optimizer whose groups' ``lr`` it sets.
        factor_from: ``factor_from(start)``: the multiplier of the steps counted from ``start``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, factor_from: Callable[[int], Callable[[int], float]]):
        self.start = 0
        self._factor_from = factor_from
        self._factor = factor_from(0)
        super().__init__(optimizer, lambda step: self._factor(step - self.start))  # a lambda: saved as None
        # this run's settings of each group, "initial_lr" (the peak) among them
        self._settings = [{k: v for k, v in g.items() if k not in ("params", "lr")} for g in optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().state_dict().items() if k not in ("_factor_from", "_factor", "_settings")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The checkpoint's step (and ``start``: a new stage sets it to the checkpoint's step); the
        optimizer's settings, peaks and rate from this run. A new stage may also set ``reset_state``:
        the optimizer, restored before (by every strategy), drops its moments."""
        state = dict(state_dict)
        if state.pop("reset_state", False):
            self.optimizer.state.clear()  # AdamW and Muon start their moments again at their next step
        super().load_state_dict(state)
        self._factor = self._factor_from(self.start)
        for group, settings in zip(self.optimizer.param_groups, self._settings, strict=True):
            group.update(settings)
        self.base_lrs = [group["initial_lr"] for group in self.optimizer.param_groups]
        for group, base, factor in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas, strict=True):
            group["lr"] = base * factor(self.last_epoch)  # as LambdaLR.step computes it: the same float
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
