"""Sampling several corpora by weight: which source every example of a mixture comes from.

:class:`Blend` assigns the mixture's examples, numbered ``k = 0, 1, 2, ...`` across the whole run,
to sources. The examples are dealt in chunks: chunk ``m`` holds each source's share of
``chunk`` examples (counts carried from chunk to chunk, so that after any whole chunk every
source's count is within one example of its weight's share), in an order drawn from
``(seed, m)``. Example ``k`` is then the ``j``-th of its source, found without reading
anything before it, so the mixture is deterministic from the seed, and a run resumes (on any
number of ranks) by its position ``k`` alone. A source's ``j``-th example is block
``order[j % n]`` of its pass ``j // n`` (``n`` blocks), the order of each pass a permutation
drawn from ``(seed, source, pass)``: :class:`MixtureBlocks` for prepared shards,
:class:`MixtureStream` for streams, which read their blocks in order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset, IterableDataset

from lmforge.data.sampler import ResumableSampler
from lmforge.data.streaming import StreamingBlocks, substream


class Blend:
    """Which source each example ``k`` of a weighted mixture comes from, and the how-manieth of it.

    Args:
        weights: The sources' sampling weights (positive; normalised here).
        seed: Seed of the order within each chunk.
        chunk: Examples per chunk (raised so that every source has at least two per chunk).
    """

    def __init__(self, weights: Sequence[float], seed: int, chunk: int = 256):
        w = np.asarray(weights, dtype=np.float64)
        self.weights = w / w.sum()
        self.seed = seed
        self.chunk = max(chunk, math.ceil(2 / self.weights.min()))
        self._bases = [np.zeros(len(w), dtype=np.int64)]  # examples of each source before chunk m
        self._cached: tuple[int, np.ndarray, np.ndarray] | None = None

    def _counts_of_chunk(self, m: int) -> np.ndarray:
        """Each source's examples in chunk ``m``: its share, the rounding carried over (largest remainder)."""
        while len(self._bases) <= m + 1:
            done = self._bases[-1]
            due = self.weights * self.chunk * len(self._bases) - done  # > w * chunk - 1 >= 1
            counts = np.floor(due).astype(np.int64)
            short = self.chunk - int(counts.sum())
            counts[np.argsort(-(due - counts), kind="stable")[:short]] += 1
            self._bases.append(done + counts)
        return self._bases[m + 1] - self._bases[m]

    def _chunk(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk ``m``'s source of each example and its index among that source's examples of the chunk."""
        if self._cached is None or self._cached[0] != m:
            counts = self._counts_of_chunk(m)
            sources = np.repeat(np.arange(len(counts)), counts)
            np.random.default_rng([self.seed, m]).shuffle(sources)
            within = np.empty_like(sources)
            for s in range(len(counts)):
                at = sources == s
                within[at] = np.arange(int(at.sum()))
            self._cached = (m, sources, within)
        return self._cached[1], self._cached[2]

    def locate(self, k: int) -> tuple[int, int]:
        """``(source, j)``: example ``k`` of the mixture is the ``j``-th example of ``source``.

        Args:
            k: The example's position in the mixture, counted over the whole run.
        """
        m, r = divmod(k, self.chunk)
        sources, within = self._chunk(m)
        s = int(sources[r])
        return s, int(self._bases[m][s] + within[r])

    def counts(self, n: int) -> np.ndarray:
        """How many of the first ``n`` examples each source gave.

        Args:
            n: Examples of the mixture.
        """
        m, r = divmod(n, self.chunk)
        self._counts_of_chunk(m)
        sources, _ = self._chunk(m)
        return self._bases[m] + np.bincount(sources[:r], minlength=len(self.weights))

    def first_exhausted(self, sizes: Sequence[int]) -> int:
        """The number of examples the mixture gives before a source has given all its ``sizes``
        once: the largest ``n`` with ``counts(n) <= sizes``.

        Args:
            sizes: Examples of each source.
        """
        sizes_ = np.asarray(sizes)
        lo, hi = 0, int(min(sizes_ / self.weights)) + self.chunk + 1  # counts(hi) exceeds some size
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if np.all(self.counts(mid) <= sizes_) else (lo, mid)
        return lo


class MixtureBlocks(Dataset):
    """The mixture's training blocks from prepared sources, read by their position ``k`` in the run.

    ``len`` is one mixture epoch (``epoch_length``); items may be asked for at any ``k``, also beyond
    it: the sampler (:class:`MixtureSampler`) numbers every epoch's items after the previous one's.

    Args:
        sources: Each source's blocks (map-style).
        blend: The mixture's :class:`Blend`.
        seed: Seed of each source's order in each of its passes.
        epoch_length: Examples in one epoch of the mixture.
    """

    def __init__(self, sources: Sequence[Dataset], blend: Blend, seed: int, epoch_length: int):
        self.sources = list(sources)
        self.blend = blend
        self.seed = seed
        self.epoch_length = epoch_length
        self._orders: dict[int, tuple[int, np.ndarray]] = {}  # source -> (pass, order)

    def __len__(self) -> int:
        return self.epoch_length

    def order(self, s: int, passes: int) -> np.ndarray:
        """The order in which source ``s`` gives its blocks in pass ``passes``.

        Args:
            s: The source's index.
            passes: Which pass over the source (0 the first).
        """
        if self._orders.get(s, (None,))[0] != passes:
            order = np.random.default_rng([self.seed, s, passes]).permutation(len(self.sources[s]))
            self._orders[s] = (passes, order)
        return self._orders[s][1]

    def __getitem__(self, k: int) -> np.ndarray:
        s, j = self.blend.locate(int(k))
        passes, i = divmod(j, len(self.sources[s]))
        return self.sources[s][int(self.order(s, passes)[i])]


class MixtureSampler(ResumableSampler):
    """A :class:`~lmforge.data.sampler.ResumableSampler` of the mixture's positions: epoch ``e`` is
    positions ``e * n`` to ``(e + 1) * n - 1`` in order (the mixture is shuffled already), every
    rank taking every ``world``-th of them, resumable at any position."""

    def permutation(self) -> list[int]:
        n = len(self.dataset)
        return list(range(self.epoch * n, (self.epoch + 1) * n))


class MixtureStream(IterableDataset):
    """The mixture's training blocks from streamed sources.

    Sub-stream ``t`` of ``n`` (ranks x workers) takes the mixture's positions ``t, t + n, ...``, and
    each one's block from sub-stream ``t`` of that source's stream
    (:class:`~lmforge.data.streaming.StreamingBlocks`): no two sub-streams share a document. An item's
    ``position`` is where its sub-stream goes on: the next mixture position, then each source's
    (pass, document, offset).

    Args:
        sources: Each source's stream of blocks.
        blend: The mixture's :class:`Blend`.
        repeat: A source that runs out starts again (else the mixture's stream ends there).
    """

    def __init__(self, sources: Sequence[StreamingBlocks], blend: Blend, repeat: bool = True):
        self.sources = list(sources)
        self.blend = blend
        self.repeat = repeat
        self.resume_from: dict[int, tuple[int, ...]] = {}  # sub-stream -> position, for the next iteration
        self.rotation = 0  # the sub-stream worker 0 reads (:func:`~lmforge.data.streaming.substream`)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rotation = self.rotation
        t, n = substream(self.sources[0].rank, self.sources[0].world_size, rotation)
        saved = self.resume_from.pop(t, None)
        self.resume_from, self.rotation = {}, 0  # a resume applies to the first iteration only
        k = saved[0] if saved else t
        state = [list(saved[1 + 3 * s : 4 + 3 * s]) if saved else [0, t, 0] for s in range(len(self.sources))]
        streams: list[Iterator[dict[str, Any]] | None] = [None] * len(self.sources)
        while True:
            s, _ = self.blend.locate(k)
            item = None
            while item is None:
                if streams[s] is None:
                    self.sources[s].resume_from, self.sources[s].rotation = {t: (state[s][1], state[s][2])}, rotation
                    streams[s] = iter(self.sources[s])
                item = next(streams[s], None)
                if item is None:  # the source ran out on this sub-stream
                    if not self.repeat or state[s][1:] == [t, 0]:  # (an empty sub-stream would never give one)
                        return
                    state[s], streams[s] = [state[s][0] + 1, t, 0], None
            state[s][1:] = item["position"]
            yield {"block": item["block"], "stream": t, "index": k,
                   "position": (k + n, *(v for st in state for v in st))}
            k += n
