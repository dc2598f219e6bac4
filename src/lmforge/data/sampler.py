"""The training sampler: a shuffled order from (seed, epoch), a disjoint part per rank, resumable
(also on another number of ranks); the keys that seed each batch's data-side randomness; and
the loaders of downstream examples (shuffled by the run's seed, optionally grouped by length)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

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


def run_seed(default: int) -> int:
    """The run's seed (``seed_everything``, which Lightning records in ``PL_GLOBAL_SEED``), else
    ``default``: downstream data orders follow it, so runs with different seeds see their
    examples in different orders, not only different initialisations and dropout."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None and seed.lstrip("-").isdigit() else default


class LengthGroupedSampler(Sampler[int]):
    """A shuffled order in which neighbours have similar lengths, so batches padded to their
    longest example waste little: the shuffled indices are cut into groups of
    ``batch_size * group_batches``, each group sorted longest first (HF's ``group_by_length``).
    Each epoch draws a new order from ``(seed, epoch)``; the batch holding the longest example
    comes first, so running out of memory shows at the first step.

    Args:
        lengths: The length of every example.
        batch_size: Examples per batch.
        seed: Seed of the orders.
        group_batches: Batches per sorted group.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, group_batches: int = 50):
        self.lengths, self.batch_size, self.seed, self.group_batches = list(lengths), batch_size, seed, group_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1  # a loader that never calls set_epoch still sees a new order each epoch
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        size = self.batch_size * self.group_batches
        groups = [sorted(order[i : i + size], key=lambda j: -self.lengths[j]) for i in range(0, len(order), size)]
        batches = [group[i : i + self.batch_size] for group in groups for i in range(0, len(group), self.batch_size)]
        if batches:
            longest = max(range(len(batches)), key=lambda b: self.lengths[batches[b][0]])
            batches[0], batches[longest] = batches[longest], batches[0]
        return iter([i for batch in batches for i in batch])


def example_loader(examples: Sequence[Any], batch_size: int, collate: Callable[[list], Any], shuffle: bool,
                   seed: int, group_by_length: bool = False, num_workers: int = 0) -> DataLoader:
    """The DataLoader of a downstream split: batches padded (by ``collate``) to their longest
    example; training shuffled from ``seed`` and, with ``group_by_length``, in batches of
    similar lengths; evaluation in file order.

    Args:
        examples: The encoded examples; each has ``input_ids``.
        batch_size: Examples per batch.
        collate: Pads a list of examples into a batch.
        shuffle: Shuffle (training).
        seed: Seed of the order (use :func:`run_seed`).
        group_by_length: Group similar lengths into batches (training only).
        num_workers: DataLoader worker processes.
    """
    if shuffle and group_by_length:
        sampler: Sampler | None = LengthGroupedSampler([len(e["input_ids"]) for e in examples], batch_size, seed)
    elif shuffle:
        sampler = RandomSampler(examples, generator=torch.Generator().manual_seed(seed))
    else:
        sampler = None
    return DataLoader(examples, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=num_workers)

