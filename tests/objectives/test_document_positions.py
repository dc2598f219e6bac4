"""Document-aware packing on the objective side: the batch's ``position_ids`` restart after every
end-of-document token, which both the prepared and the streaming path put after every document;
the causal target across a boundary takes no loss; the option off changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmforge.batching import IGNORE, document_positions
from lmforge.data import Tokenizer, TokenizerSpec, train_tokenizer
from lmforge.data.packing import PackedBlocks, concat_documents
from lmforge.data.shards import ShardBlocks, write_prepared
from lmforge.data.streaming import StreamingBlocks
from lmforge.objectives import CausalLM, MaskedLM

TEXTS = [f"Document {i} says that {'the river ' * (i % 7 + 1)}runs {'far ' * (i % 3)}away." for i in range(40)]


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Tokenizer]:
    spec = {"gpt": ("byte_level_bpe", 280), "bert": ("wordpiece", 80), "roberta": ("byte_level_bpe", 280)}
    return {family: train_tokenizer(TEXTS, TokenizerSpec(kind=kind, specials=family, vocab_size=size))
            for family, (kind, size) in spec.items()}


def reference_positions(documents: list[list[int]]) -> np.ndarray:
    """Each token's position in its document, for the documents laid out one after the other
    with their end-of-document token (counted from the document, not from any block)."""
    return np.concatenate([np.arange(len(d) + 1) for d in documents])


def row_positions(stream_positions: np.ndarray) -> np.ndarray:
    """A row cut from the stream: the document the row starts inside counts from the row's start."""
    row = stream_positions.copy()
    first_start = np.flatnonzero(row == 0)
    head = first_start[0] if len(first_start) else len(row)
    row[:head] -= row[0]
    return row


def test_document_positions_restart_after_every_end() -> None:
    ends = torch.tensor([[False, False, True, False, True, True, False], [True, False, False, False, False, False, True]])
    assert document_positions(ends).tolist() == [[0, 1, 2, 0, 1, 0, 0], [0, 0, 1, 2, 3, 4, 5]]


def test_causal_batch_restarts_positions_and_ignores_the_cross_boundary_target(tokenizers) -> None:
    tok = tokenizers["gpt"]
    docs = tok.encode_batch(TEXTS[:12])
    stream = concat_documents(docs, tok.eos_id, np.dtype(np.int64))
    seq_len = 37
    blocks = PackedBlocks(stream, seq_len + 1)
    plain, masked = CausalLM(), CausalLM(document_mask=True)
    for objective in (plain, masked):
        objective.bind(tok)
    rows = [blocks[i] for i in range(len(blocks))]
    before, after = plain(rows), masked(rows)
    assert set(before) == {"input_ids", "targets"}  # the option off: the batch of before
    assert torch.equal(after["input_ids"], before["input_ids"])
    ends = before["input_ids"] == tok.eos_id
    assert ends.sum() >= 5  # several boundaries inside the rows
    # the end-of-document token's target, the next document's first token, is ignored; nothing else is
    assert (after["targets"][ends] == IGNORE).all()
    assert torch.equal(after["targets"][~ends], before["targets"][~ends])
    positions = reference_positions(docs)
    for b in range(len(blocks)):
        expected = row_positions(positions[b * (seq_len + 1): b * (seq_len + 1) + seq_len])
        assert after["position_ids"][b].tolist() == expected.tolist()


def test_the_prepared_and_the_streaming_path_end_every_document_with_eos(tokenizers, tmp_path) -> None:
    tok = tokenizers["gpt"]
    docs = tok.encode_batch(TEXTS)
    assert not any(tok.eos_id in d for d in docs)  # an end-of-document id is only ever the data's
    expected = concat_documents(docs, tok.eos_id, np.dtype(np.int64))
    length = 23
    prepared = write_prepared(tmp_path / "prepared", [("train", t) for t in TEXTS] + [("val", "x")], tok.encode_batch,
                              tok.vocab_size, tok.eos_id, tok.fingerprint, meta={})
    shard_blocks = ShardBlocks(prepared.shards["train"], length)
    streamed = StreamingBlocks(lambda start: iter(TEXTS[start:]), tok.encode_batch, tok.eos_id, np.dtype(np.uint16),
                               length)
    for blocks in ([shard_blocks[i] for i in range(len(shard_blocks))], [item["block"] for item in streamed]):
        flat = np.concatenate(blocks).astype(np.int64)
        assert len(flat) == len(expected) // length * length
        assert np.array_equal(flat, expected[: len(flat)])  # so every document ends at an eos, none elsewhere


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_masked_lm_documents_end_at_their_separator(tokenizers, family: str) -> None:
    tok = tokenizers[family]
    docs = tok.encode_batch(TEXTS[:10])
    stream = concat_documents(docs, tok.eos_id, np.dtype(np.int64))
    ends_at = np.flatnonzero(stream == tok.eos_id)
    assert tok.eos_id == tok.role_id("sep")  # the separator ends a packed document of an encoder
    seq_len = int(ends_at[2]) + 3  # the body of the first block ends exactly with a document's eos
    blocks = PackedBlocks(stream, seq_len - 2)
    plain, masked = MaskedLM(seed=3), MaskedLM(seed=3, document_mask=True)
    for objective in (plain, masked):
        objective.bind(tok)
    rows = [blocks[i] for i in range(len(blocks))]
    before, after = plain(rows), masked(rows)
    assert set(before) == {"input_ids", "labels"}
    # the same masks: the option adds the positions and nothing else
    assert torch.equal(after["input_ids"], before["input_ids"]) and torch.equal(after["labels"], before["labels"])
    positions = after["position_ids"][0].tolist()
    # [CLS] joins the first document; each document restarts after its separator
    doc_starts = [0] + [int(e) + 2 for e in ends_at[:2]]
    assert [i for i, p in enumerate(positions) if p == 0] == doc_starts
    # the block's own closing [SEP] follows the third document's [SEP] and joins that document
    assert positions[-1] == positions[-2] + 1 and after["input_ids"][0, -1] == tok.role_id("sep")
    assert positions[1:] != list(range(1, seq_len))


def test_document_mask_is_for_packed_blocks_not_nsp_pairs() -> None:
    with pytest.raises(ValueError, match="nsp"):
        MaskedLM(nsp=True, document_mask=True)
