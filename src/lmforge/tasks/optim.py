"""The optimizers a task trains with (AdamW, or Muon for the hidden matrices with AdamW for the
rest), chosen by :class:`OptimizerConfig`; the schedules are in :mod:`lmforge.tasks.schedules`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from lmforge.errors import UserError
from lmforge.tasks.schedules import schedule_factor


@dataclasses.dataclass
class OptimizerConfig:
    """AdamW, or Muon with AdamW, with linear warmup then decay to a floor (cosine when
    pretraining, linear when fine-tuning).

    Args:
        name: ``adamw`` for every parameter; ``muon``: Muon for the hidden matrices (the linear
            weights inside the transformer blocks), AdamW for embeddings, output heads, norms and biases.
        lr: Peak learning rate (of AdamW).
        weight_decay: AdamW's decoupled weight decay of matrices (never norms, biases, embeddings).
        betas: AdamW betas.
        eps: AdamW epsilon.
        warmup_steps: Steps of linear warmup.
        decay_steps: Step where the decay reaches its floor; ``None`` means the end of training.
        min_lr_ratio: The floor, as a fraction of the peak learning rates.
        schedule: ``cosine``, ``linear`` or ``wsd`` (warmup-stable-decay: the peak held, then a
            linear cooldown to the floor ending at ``decay_steps``); ``None``: the task's own
            (cosine when pretraining, linear when fine-tuning).
        cooldown_steps: WSD: steps of the cooldown; ``None``: ``cooldown_fraction`` of ``decay_steps``.
        cooldown_fraction: WSD: the cooldown's share of the training steps when ``cooldown_steps`` is unset.
        stage: The training stage, for continual pretraining in stages (Ibrahim et al. 2024): a
            pretraining run resuming (``--ckpt_path``) a checkpoint of a lower stage starts a new
            schedule at its step (re-warm: warmup to ``lr`` over ``warmup_steps``, then decay to the
            floor at ``decay_steps``, a global step as always; the step count goes on) and its
            training data from the start, other data allowed; a checkpoint of this stage resumes as usual.
        reset_state: When a new ``stage`` starts: AdamW's moments (and Muon's momentum) start from
            zero instead of the checkpoint's.
        muon_lr: Peak learning rate of Muon (with ``name: muon``).
        muon_momentum: Muon's momentum.
        muon_nesterov: Nesterov momentum in Muon.
        muon_weight_decay: Muon's decoupled weight decay of the hidden matrices.
    """

    name: Literal["adamw", "muon"] = "adamw"
    lr: float = 6e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_steps: int = 100
    decay_steps: int | None = None
    min_lr_ratio: float = 0.1
    schedule: Literal["cosine", "linear", "wsd"] | None = None
    cooldown_steps: int | None = None
    cooldown_fraction: float = 0.2
    stage: int = 0
    reset_state: bool = False
    # Muon's lr and momentum as in Keller Jordan's Muon (github.com/KellerJordan/Muon, README:
    # lr=0.02, momentum=0.95, Nesterov), the recipe modded-nanogpt's train_gpt.py trains with,
    # where the hidden matrices get no weight decay
    muon_lr: float = 0.02
    muon_momentum: float = 0.95
    muon_nesterov: bool = True
    muon_weight_decay: float = 0.0

    def __post_init__(self) -> None:
        """Refuse a value no optimizer can use (one sentence naming the key), before any run
        folder, tokenizer or data exists, not as a traceback from inside torch's optimizer."""
        problem = self.problem()
        if problem is not None:
            raise UserError(problem)

    def problem(self) -> str | None:
        """What is wrong with these values, as one sentence naming the key; None when nothing is."""
        betas = tuple(self.betas)
        if self.name not in ("adamw", "muon"):
            return f"optimizer.name={self.name!r} is unknown: use adamw or muon."
        if self.schedule not in (None, "cosine", "linear", "wsd"):
            return f"optimizer.schedule={self.schedule!r} is unknown: use cosine, linear or wsd."
        if len(betas) != 2:
            return f"optimizer.betas={list(betas)} must be two numbers, e.g. [0.9, 0.95]."
        # (key, value, allowed, the rule as said to the user); lr 0 is allowed: it freezes the
        # parameters it drives (e.g. AdamW's side of muon, or a network whose head has head_lr)
        rules = [
            ("lr", self.lr, self.lr >= 0, "a learning rate >= 0"),
            ("muon_lr", self.muon_lr, self.muon_lr >= 0, "a learning rate >= 0"),
            ("betas", list(betas), all(0 <= b < 1 for b in betas), "two numbers in [0, 1), e.g. [0.9, 0.95]"),
            ("eps", self.eps, self.eps > 0, "a small number > 0, e.g. 1e-8"),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0, "a number >= 0"),
            ("muon_weight_decay", self.muon_weight_decay, self.muon_weight_decay >= 0, "a number >= 0"),
            ("muon_momentum", self.muon_momentum, 0 <= self.muon_momentum < 1, "a number in [0, 1)"),
            ("warmup_steps", self.warmup_steps, self.warmup_steps >= 0, "a number of steps >= 0"),
            ("decay_steps", self.decay_steps, self.decay_steps is None or self.decay_steps > 0,
             "a number of steps > 0, or null for the end of training"),
            ("min_lr_ratio", self.min_lr_ratio, 0 <= self.min_lr_ratio <= 1, "a fraction of the peak in [0, 1]"),
            ("cooldown_steps", self.cooldown_steps, self.cooldown_steps is None or self.cooldown_steps > 0,
             "a number of steps > 0, or null for cooldown_fraction of the training"),
            ("cooldown_fraction", self.cooldown_fraction, 0 < self.cooldown_fraction <= 1, "a fraction in (0, 1]"),
            ("stage", self.stage, self.stage >= 0, "a stage number >= 0"),
        ]
        for key, value, allowed, rule in rules:
            numbers = value if isinstance(value, list) else [value]
            if not allowed or not all(v is None or math.isfinite(v) for v in numbers):
                return f"optimizer.{key}={value} is out of range: give {rule}."
        return None

    def stage_factor(self, default: str, end: int, start: int = 0) -> Callable[[int], float]:
        """The schedule's multiplier of the steps counted from ``start``, the global step where this
        stage began (0 for the first), reaching its floor at global step ``end``; a new stage that
        leaves no room for its warmup is refused.

        Args:
            default: The task's schedule when ``schedule`` is unset.
            end: Global step where the decay reaches its floor (``decay_steps``, or the end of training).
            start: Global step where this stage's schedule begins.
        """
        if start > 0:
            ends = f"optimizer.decay_steps={end}" if self.decay_steps else f"the end of training (step {end})"
            if end <= start:
                raise UserError(f"Stage {self.stage} starts at the checkpoint's step {start} but decays to its floor "
                                f"at {ends}: give a later one (trainer.max_steps counts on from {start}).")
            if start + self.warmup_steps > end:
                raise UserError(f"optimizer.warmup_steps={self.warmup_steps}: stage {self.stage} would warm up from "
                                f"the checkpoint's step {start} to {start + self.warmup_steps}, past {ends}: give "
                                "fewer warmup steps or a later end.")
        return schedule_factor(self.schedule or default, self.warmup_steps, end - start, self.min_lr_ratio,
                               self.cooldown_fraction, self.cooldown_steps)


def hidden_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The weights of the linear layers inside the network's transformer blocks (every network
    keeps them in a ``blocks`` list): what Muon trains. Embeddings, output heads (tied or not)
    and everything outside the blocks are not hidden matrices."""
    found: dict[int, nn.Parameter] = {}
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] != "blocks":
            continue
        for layer in module.modules():
            if isinstance(layer, nn.Linear) and layer.weight.requires_grad:
                found[id(layer.weight)] = layer.weight
    embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    return [p for key, p in found.items() if key not in embeddings]


def param_groups(model: nn.Module, weight_decay: float, exclude: list[nn.Parameter] = ()) -> list[dict]:
    """AdamW's groups: decay the weights of linear layers; never norms, biases or embeddings.
    Parameters in ``exclude`` (another optimizer's) are left out."""
    embedding_params = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    skip = {id(p) for p in exclude}
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() yields a tied weight once
        if not p.requires_grad or id(p) in skip:
            continue
        (decay if p.ndim >= 2 and id(p) not in embedding_params else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class MuonAdamW(torch.optim.Optimizer):
    """One optimizer for Lightning and the schedule: Muon steps its groups, AdamW the others.

    Its ``param_groups`` are the two optimizers' groups (the same dicts: a schedule that sets
    ``lr`` sets theirs) and both keep their state in its ``state``, so ``state_dict`` and
    ``load_state_dict`` are the standard ones and round-trip both.

    Args:
        muon_groups: Parameter groups of 2-D matrices, with Muon's settings.
        adamw_groups: Parameter groups of everything else, with AdamW's settings.
    """

    def __init__(self, muon_groups: list[dict[str, Any]], adamw_groups: list[dict[str, Any]]):
        self.muon = torch.optim.Muon(muon_groups)
        self.adamw = torch.optim.AdamW(adamw_groups)
        super().__init__(self.adamw.param_groups + self.muon.param_groups, {})  # AdamW's first: its lr is "lr"
        self._share()

    def _share(self) -> None:
        """Point both optimizers at this one's groups and state (again after loading a state)."""
        n = len(self.adamw.param_groups)
        self.adamw.param_groups, self.muon.param_groups = self.param_groups[:n], self.param_groups[n:]
        self.muon.state = self.adamw.state = self.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._share()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss


def build_optimizer(model: nn.Module | None, config: OptimizerConfig,
                    extra_groups: list[dict[str, Any]] = ()) -> torch.optim.Optimizer:
    """The optimizer ``config`` names over ``model``'s parameters and ``extra_groups`` (AdamW
    groups, e.g. a fine-tuning head with its own ``lr``); empty groups are dropped."""
    o = config
    muon = hidden_matrices(model) if model is not None and o.name == "muon" else []
    groups = param_groups(model, o.weight_decay, exclude=muon) if model is not None else []
    groups = [g for g in [*groups, *extra_groups] if g["params"]]
    adamw = [{"lr": o.lr, "betas": tuple(o.betas), "eps": o.eps, **g} for g in groups]
    if model is not None and o.name == "muon" and not muon:
        raise UserError(f"optimizer.name=muon: the {type(model).__name__} network has no transformer blocks whose "
                        "matrices Muon could train; use optimizer.name=adamw.")
    if not muon:  # adamw, or a frozen network (a probe): Muon has nothing to train
        return torch.optim.AdamW(adamw, lr=o.lr, betas=tuple(o.betas), eps=o.eps)
    muon_group = {"params": muon, "lr": o.muon_lr, "momentum": o.muon_momentum, "nesterov": o.muon_nesterov,
                  "weight_decay": o.muon_weight_decay}
    return MuonAdamW([muon_group], adamw)
