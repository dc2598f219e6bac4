"""Streaming: documents tokenized and packed into blocks on the fly, for corpora larger than the disk.

The document stream is split into ``world_size * num_workers`` sub-streams: document ``g``
(counting from 0 in corpus order) belongs to sub-stream ``g % n``, and each sub-stream
packs only its own documents, so no two ranks or workers ever see the same text. Every
block carries the position where the next one starts (document, token offset): from it a
sub-stream resumes by re-reading, but not re-tokenizing, the documents before it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from lmforge.batching import key_batch

Position = tuple[int, int]  # (document index, token offset within it) where the next block starts


class StreamingBlocks(IterableDataset):
    """Blocks of ``block_length`` tokens packed from a document stream, split over ranks and workers.

    Items are dicts ``{"block": ids, "stream": s, "position": (g, offset)}``;
    :func:`collate_stream` turns a list of them into the objective's batch plus the
    position reached.

    Args:
        documents: ``documents(start)`` yields the corpus's documents from index ``start`` on.
        encode_batch: Texts -> token ids (no special tokens).
        eos_id: Appended after each document.
        dtype: Token dtype of the blocks.
        block_length: Tokens per block.
        rank: This process's rank.
        world_size: Number of ranks.
        batch_documents: Documents tokenized per ``encode_batch`` call.
    """

    def __init__(
        self,
        documents: Callable[[int], Iterator[str]],
        encode_batch: Callable[[list[str]], list[list[int]]],
        eos_id: int,
        dtype: np.dtype,
        block_length: int,
        rank: int = 0,
        world_size: int = 1,
        batch_documents: int = 64,
    ):
        self.documents = documents
        self.encode_batch = encode_batch
        self.eos_id = eos_id
        self.dtype = np.dtype(dtype)
        self.block_length = block_length
        self.rank = rank
        self.world_size = world_size
        self.batch_documents = batch_documents
        self.resume_from: dict[int, Position] = {}  # sub-stream -> position, used by the next iteration only
        self.rotation = 0  # the sub-stream DataLoader worker 0 reads (the rest follow in turn): see substream

    def _substream(self) -> tuple[int, int]:
        return substream(self.rank, self.world_size, self.rotation)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        stream, n = self._substream()
        start_doc, skip_tokens = self.resume_from.pop(stream, (stream, 0))
        self.resume_from, self.rotation = {}, 0  # a resume applies to the first iteration only
        # the documents of this sub-stream, tokenized in batches: (index, ids with eos)
        docs = self._tokenized(start_doc, stream, n)
        L = self.block_length
        pending: list[tuple[int, np.ndarray]] = []  # documents not yet fully packed
        head = skip_tokens  # tokens of pending[0] already packed
        available = -head
        for g, ids in docs:
            pending.append((g, ids))
            available += len(ids)
            while available >= L:
                parts, need = [], L
                while need:
                    g0, d = pending[0]
                    take = min(need, len(d) - head)
                    parts.append(d[head : head + take])
                    need -= take
                    head += take
                    if head == len(d):
                        pending.pop(0)
                        head = 0
                available -= L
                nxt = (pending[0][0], head) if pending else (g + n, 0)
                yield {"block": np.concatenate(parts) if len(parts) > 1 else parts[0], "stream": stream,
                       "position": nxt}

    def _tokenized(self, start: int, stream: int, n: int) -> Iterator[tuple[int, np.ndarray]]:
        batch: list[tuple[int, str]] = []
        for g, text in enumerate(self.documents(start), start):
            if g % n != stream:
                continue
            batch.append((g, text))
            if len(batch) == self.batch_documents:
                yield from self._encode(batch)
                batch = []
        if batch:
            yield from self._encode(batch)

    def _encode(self, batch: list[tuple[int, str]]) -> Iterator[tuple[int, np.ndarray]]:
        for (g, _), ids in zip(batch, self.encode_batch([text for _, text in batch])):
            doc = np.empty(len(ids) + 1, dtype=self.dtype)
            doc[:-1] = ids
            doc[-1] = self.eos_id
            yield g, doc


def substream(rank: int, world_size: int, rotation: int = 0) -> tuple[int, int]:
    """``(t, n)``: the sub-stream this process (or DataLoader worker) reads, of ``n`` in all.

    A DataLoader takes its batches from its workers in turn, from worker 0 on. A resumed loader
    must take its first batch from the sub-stream whose turn it was: worker ``w`` reads the
    rank's sub-stream ``(w + rotation) % workers``.

    Args:
        rank: This process's rank.
        world_size: Number of ranks.
        rotation: The rank's sub-stream read by worker 0.
    """
    worker = get_worker_info()
    workers, worker_id = (worker.num_workers, worker.id) if worker is not None else (1, 0)
    return rank * workers + (worker_id + rotation) % workers, world_size * workers


def collate_stream(objective: Callable[[list], dict[str, torch.Tensor]]) -> Callable[[list[dict]], dict]:
    """A collate function: the objective's batch of the blocks, plus ``stream_position``
    (sub-stream, document, offset) of the last block, for :class:`StreamingBlocks` resume. The
    batch's randomness is keyed by the first block's position."""

    def collate(items: list[dict]) -> dict:
        first = items[0]
        key_batch(objective, (first["stream"], *first["position"]))
        batch = objective([item["block"] for item in items])
        last = items[-1]
        batch["stream_position"] = torch.tensor([last["stream"], *last["position"]], dtype=torch.long)
        return batch

    return collate
