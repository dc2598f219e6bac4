"""The loaders of downstream examples: shuffled by the run's seed, optionally grouped by length,
padded to their longest example."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler


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

