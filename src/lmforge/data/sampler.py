"""The training sampler: a shuffled order from (seed, epoch), a disjoint part per rank, resumable
(also on another number of ranks); and the keys that seed each batch's data-side randomness."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler

from lmforge.errors import UserError
from lmforge.batching import Objective, key_batch


class ResumableSampler(DistributedSampler):
    """Keys ``(epoch, index)`` of a map-style dataset's items for one rank: deterministic and
    resumable mid-epoch (read the dataset through :class:`Keyed`).

    The order of epoch ``e`` is a permutation drawn from ``seed + e`` alone; rank ``r`` of
    ``n`` takes every ``n``-th item of it from ``r`` (cut to a multiple of ``n``, so ranks
    never share an item). After ``c`` items per rank, the ranks together have read exactly the
    first ``c * n`` items of the epoch's order, whatever ``n`` is: that is the position
    :meth:`state_dict` records, so a run can resume on another number of ranks and still
    read every item of the epoch exactly once. It is a ``DistributedSampler``, so Lightning
    calls :meth:`set_epoch` and leaves it in place under DDP instead of wrapping it.

    After :meth:`load_state_dict` the next iteration over that epoch starts right after the
    recorded position; ``len`` stays the epoch's full length (a learning-rate schedule sized
    from it does not change).

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
        self._resume: tuple[int, int] | None = None  # (epoch, position) for the next iteration
        self.order: list[int] = []  # this rank's indices of the current iteration

    def permutation(self) -> list[int]:
        """The order of the current epoch over all ranks."""
        if not self.shuffle:
            return list(range(len(self.dataset)))
        return torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start = self._resume[1] if self._resume is not None and self._resume[0] == self.epoch else 0
        self._resume = None  # a resume applies to its first iteration only
        rest = self.permutation()[start:]
        rest = rest[: len(rest) - len(rest) % self.num_replicas]
        self.order = rest[self.rank :: self.num_replicas]
        return iter([(self.epoch, i) for i in self.order])

    def state_dict(self, consumed: int) -> dict[str, Any]:
        """The position after ``consumed`` items of every rank in the current epoch, counted
        from the start of the epoch."""
        return {"epoch": self.epoch, "position": consumed * self.num_replicas, "seed": self.seed,
                "num_items": len(self.dataset), "num_replicas": self.num_replicas}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue epoch ``state['epoch']`` after the items it had consumed."""
        for key, now in (("seed", self.seed), ("num_items", len(self.dataset))):
            if state[key] != now:
                what = "seed (`data.seed`)" if key == "seed" else "number of training examples"
                raise UserError(
                    f"The checkpoint's data order was made with {key}={state[key]}, this run has {key}={now}: resume "
                    f"with the same {what} and corpus, or start a new run from its weights (`--model.init_from`)."
                )
        self._resume = (state["epoch"], state["position"])


class Keyed(Dataset):
    """``dataset`` read by keys: item ``(epoch, i)`` (from :class:`ResumableSampler`) or ``i``
    (evaluation) is ``(key, dataset[i])``, the key identifying the sample in the run.

    Args:
        dataset: A map-style dataset.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[tuple[int, int], Any]:
        epoch, index = item if isinstance(item, tuple) else (-1, item)
        return (epoch + 1, index), self.dataset[index]  # evaluation is "epoch" 0: the same every time


def keyed_collate(objective: Objective) -> Callable[[list], dict[str, torch.Tensor]]:
    """A collate function of :class:`Keyed` items: the objective's batch, its randomness seeded
    by the batch's first key, so the batch is the same in any worker and after a resume."""

    def collate(items: list[tuple[tuple[int, int], Any]]) -> dict[str, torch.Tensor]:
        key_batch(objective, items[0][0])
        return objective([example for _, example in items])

    return collate
