"""The little that lmforge itself needs of torch.distributed (Lightning does the rest)."""

from __future__ import annotations

from typing import Any

import torch


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order: a collective every rank must call; a list of one
    outside a process group."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered
