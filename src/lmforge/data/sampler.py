"""The training sampler: a shuffled order from (seed, epoch), a disjoint part per rank, resumable."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DistributedSampler

from lmforge.errors import UserError


class ResumableSampler(DistributedSampler):
    """Indices of a map-style dataset for one rank: deterministic and resumable mid-epoch.

    The order of epoch ``e`` is a permutation drawn from ``seed + e`` alone; rank ``r`` of
    ``n`` takes every ``n``-th index from ``r`` (the permutation is first cut to a multiple
    of ``n``, so ranks never share an index). It is a ``DistributedSampler``, so Lightning
    calls :meth:`set_epoch` and leaves it in place under DDP instead of wrapping it.

    :meth:`state_dict` records how far the epoch went; after :meth:`load_state_dict` the
    next iteration over that epoch starts with exactly the next index, and ``len`` stays
    the epoch's full length (a learning-rate schedule sized from it does not change).

    Args:
        num_items: Length of the dataset.
        num_replicas: Number of ranks.
        rank: This rank.
        shuffle: Shuffle (training) or keep order.
        seed: Seed of the permutations.
    """

    def __init__(self, num_items: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0):
        super().__init__(range(num_items), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=True)
        self._resume_epoch: int | None = None
        self._resume_skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        if self._resume_epoch == self.epoch:
            indices = indices[self._resume_skip :]
        self._resume_epoch, self._resume_skip = None, 0  # a resume applies to its first iteration only
        return iter(indices)

    def state_dict(self, consumed: int) -> dict[str, Any]:
        """The position after ``consumed`` indices of this rank in the current epoch."""
        return {"epoch": self.epoch, "consumed": consumed, "seed": self.seed, "num_replicas": self.num_replicas,
                "num_items": len(self.dataset)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue epoch ``state['epoch']`` after the indices it had consumed."""
        for key, now in (("seed", self.seed), ("num_replicas", self.num_replicas), ("num_items", len(self.dataset))):
            if state[key] != now:
                raise UserError(
                    f"The checkpoint's data order was made with {key}={state[key]}, this run has {key}={now}: resume "
                    "with the same data seed, number of devices and corpus, or start a new run from its weights."
                )
        self._resume_epoch, self._resume_skip = state["epoch"], state["consumed"]
