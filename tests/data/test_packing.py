"""Tests for packing token documents into fixed-length blocks."""

from __future__ import annotations

import numpy as np
import pytest

from lmforge.data.packing import PackedBlocks, concat_documents, token_dtype


def random_documents(seed: int, n_docs: int, max_len: int, vocab: int) -> list[list[int]]:
    """Documents of varied length (some empty) with ids in ``[0, vocab)``; never the eos id."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n_docs):
        length = 0 if i % 5 == 0 else int(rng.integers(1, max_len + 1))
        docs.append([int(t) for t in rng.integers(1, vocab, size=length)])
    return docs


def manual_stream(docs: list[list[int]], eos_id: int) -> list[int]:
    out: list[int] = []
    for doc in docs:
        out.extend(doc)
        out.append(eos_id)
    return out


@pytest.mark.parametrize(
    ("seed", "n_docs", "max_len", "vocab", "eos_id"),
    [
        (0, 1, 5, 50, 0),
        (1, 40, 30, 1000, 0),
        (2, 200, 100, 60_000, 59_999),
        (3, 25, 12, 200_000, 131_072),  # ids above 65535: needs uint32
    ],
)
def test_concat_documents_matches_manual_concatenation(
    seed: int, n_docs: int, max_len: int, vocab: int, eos_id: int
) -> None:
    docs = random_documents(seed, n_docs, max_len, vocab)
    dtype = token_dtype(vocab)
    stream = concat_documents(docs, eos_id, dtype)
    assert stream.dtype == dtype
    assert stream.tolist() == manual_stream(docs, eos_id)
    assert int((stream == eos_id).sum()) == n_docs + sum(d.count(eos_id) for d in docs)


def test_concat_documents_edge_cases() -> None:
    dtype = np.dtype(np.uint16)
    assert concat_documents([], 7, dtype).tolist() == []
    assert concat_documents([[]], 7, dtype).tolist() == [7]
    assert concat_documents([[], [], []], 7, dtype).tolist() == [7, 7, 7]
    assert concat_documents([[1, 2], [], [3]], 7, dtype).tolist() == [1, 2, 7, 7, 3, 7]


@pytest.mark.parametrize(
    ("stream_len", "block_length"),
    [
        (0, 2),
        (5, 8),  # shorter than one block: no block at all
        (8, 8),  # exactly one block, no remainder
        (100, 7),
        (1000, 2),
        (1001, 10),
        (4096, 512),
    ],
)
def test_packed_blocks_cover_the_stream_in_order(stream_len: int, block_length: int) -> None:
    rng = np.random.default_rng(stream_len * 31 + block_length)
    stream = rng.integers(0, 65_536, size=stream_len).astype(np.uint16)
    original = stream.copy()
    blocks = PackedBlocks(stream, block_length)

    n = len(blocks)
    assert n == stream_len // block_length
    assert blocks.block_length == block_length
    assert all(len(blocks[i]) == block_length for i in range(n))
    joined = np.concatenate([blocks[i] for i in range(n)]) if n else np.empty(0, dtype=stream.dtype)
    # Nothing duplicated or reordered: the blocks are the stream's head, in order.
    assert joined.tolist() == original[: n * block_length].tolist()
    assert blocks.remainder == stream_len % block_length
    assert 0 <= blocks.remainder < block_length
    assert n * block_length + blocks.remainder == stream_len  # only the tail is dropped
    assert blocks.num_tokens == n * block_length
    assert all(blocks[i].dtype == stream.dtype for i in range(n))
    with pytest.raises(IndexError):
        blocks[n]


def test_packed_blocks_from_documents_round_trip() -> None:
    docs = random_documents(seed=7, n_docs=60, max_len=40, vocab=500)
    stream = concat_documents(docs, 0, token_dtype(500))
    blocks = PackedBlocks(stream, 16)
    joined = [t for i in range(len(blocks)) for t in blocks[i].tolist()]
    tail = stream[len(joined) :].tolist()
    assert len(tail) == blocks.remainder
    assert joined + tail == manual_stream(docs, 0)


@pytest.mark.parametrize("block_length", [1, 0, -3])
def test_block_length_below_two_rejected(block_length: int) -> None:
    with pytest.raises(ValueError, match="block_length"):
        PackedBlocks(np.arange(10, dtype=np.uint16), block_length)


@pytest.mark.parametrize(
    ("vocab_size", "expected"),
    [
        (1, np.uint16),
        (50_257, np.uint16),
        (65_535, np.uint16),
        (65_536, np.uint16),  # ids 0..65535 all fit
        (65_537, np.uint32),
        (250_000, np.uint32),
    ],
)
def test_token_dtype(vocab_size: int, expected: type) -> None:
    dtype = token_dtype(vocab_size)
    assert dtype == np.dtype(expected)
    assert np.iinfo(dtype).max >= vocab_size - 1


def test_large_ids_survive_packing_unchanged() -> None:
    vocab = 200_000
    rng = np.random.default_rng(11)
    docs = [[int(t) for t in rng.integers(65_536, vocab, size=n)] for n in (3, 17, 0, 9, 33)]
    eos_id = vocab - 1
    stream = concat_documents(docs, eos_id, token_dtype(vocab))
    assert stream.dtype == np.uint32
    assert int(stream.max()) > 65_535
    expected = manual_stream(docs, eos_id)
    assert stream.tolist() == expected
    blocks = PackedBlocks(stream, 5)
    joined = [t for i in range(len(blocks)) for t in blocks[i].tolist()]
    assert joined == expected[: len(blocks) * 5]
    assert len(joined) + blocks.remainder == len(expected)
