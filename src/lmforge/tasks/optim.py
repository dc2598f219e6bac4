"""AdamW with decoupled weight decay on matrices only, and warmup + cosine decay."""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay the weights of linear layers; never norms, biases or embeddings."""
    embedding_params = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() yields a tied weight once
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and id(p) not in embedding_params else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def warmup_cosine(warmup_steps: int, decay_steps: int, min_lr_ratio: float):
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


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], eps: float
) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)
