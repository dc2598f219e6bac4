"""Pack tokenized documents into fixed-length blocks: no padding, nothing duplicated."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id of the vocabulary."""
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def concat_documents(docs: list[list[int]], eos_id: int, dtype: np.dtype) -> np.ndarray:
    """One flat token stream: each document followed by the end-of-document token."""
    lengths = np.fromiter((len(d) + 1 for d in docs), dtype=np.int64, count=len(docs))
    stream = np.empty(int(lengths.sum()), dtype=dtype)
    pos = 0
    for doc, n in zip(docs, lengths):
        stream[pos : pos + n - 1] = doc
        stream[pos + n - 1] = eos_id
        pos += n
    return stream


class PackedBlocks(Dataset):
    """Consecutive, non-overlapping blocks of ``block_length`` tokens of a token stream.

    Block ``i`` is ``stream[i * L : (i + 1) * L]``; the final ``len(stream) % L`` tokens, too
    few for a block, are left out (``remainder`` says how many).

    Args:
        stream: The flat token stream.
        block_length: Tokens per block.
    """

    def __init__(self, stream: np.ndarray, block_length: int):
        if block_length < 2:
            raise ValueError(f"block_length must be at least 2, got {block_length}.")
        self.block_length = block_length
        n_blocks = len(stream) // block_length
        self.remainder = len(stream) - n_blocks * block_length
        self.blocks = stream[: n_blocks * block_length].reshape(n_blocks, block_length)  # a view, no copy

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.blocks[index]

    @property
    def num_tokens(self) -> int:
        return self.blocks.size


def epoch_generator(seed: int) -> torch.Generator:
    """A generator for deterministic shuffling from the seed alone."""
    return torch.Generator().manual_seed(seed)
