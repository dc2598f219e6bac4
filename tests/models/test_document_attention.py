"""Document-aware packing in the networks: a block packed with several documents, with the
batch's ``position_ids``, gives every token what the token's document alone gives it (the same
per-token loss within 1e-5), for GPT, Llama (also with a sliding window) and BERT/RoBERTa; without
``position_ids`` nothing changes and no mask is built."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmforge.batching import IGNORE
from lmforge.data import TokenizerSpec, train_tokenizer
from lmforge.data.packing import PackedBlocks, concat_documents
from lmforge.models import GPT, Bert, BertConfig, GPTConfig, Llama, LlamaConfig
from lmforge.models.layers import document_mask
from lmforge.objectives import CausalLM, MaskedLM

EOS, VOCAB, SEQ_LEN = 1, 48, 40
DECODERS = {
    "gpt": lambda: GPT(GPTConfig(vocab_size=VOCAB, max_seq_len=64, n_layer=2, n_head=2, d_model=32)),
    "llama": lambda: Llama(LlamaConfig(vocab_size=VOCAB, max_seq_len=64, n_layer=2, n_head=4, n_kv_head=2,
                                       d_model=32, d_ff=64, rope_base=100.0)),
    "llama-window": lambda: Llama(LlamaConfig(vocab_size=VOCAB, max_seq_len=64, n_layer=2, n_head=4, n_kv_head=2,
                                              d_model=32, d_ff=64, sliding_window=5, qk_norm=True,
                                              tie_embeddings=False)),
}
TEXTS = [f"Text {i} tells how {'the old boat ' * (i % 5 + 1)}sailed {'very ' * (i % 4)}far." for i in range(24)]


def causal_batch() -> dict[str, torch.Tensor]:
    """Two rows of documents of 2 to 13 tokens packed with an end-of-document token after each,
    the first row starting inside a document, through the objective with the option on."""
    g = torch.Generator().manual_seed(0)
    docs = [torch.randint(2, VOCAB, (int(torch.randint(2, 14, (1,), generator=g)),), generator=g).tolist()
            for _ in range(16)]
    stream = concat_documents(docs, EOS, np.dtype(np.int64))[3:]
    objective = CausalLM(document_mask=True)
    objective.eos_id = EOS  # what bind learns from a tokenizer
    return objective([stream[:SEQ_LEN + 1], stream[SEQ_LEN + 1: 2 * SEQ_LEN + 2]])


def segments(position_ids: torch.Tensor) -> list[tuple[int, int, int]]:
    """``(row, start, end)`` of every document of every row."""
    out = []
    for b, row in enumerate(position_ids.tolist()):
        starts = [i for i, p in enumerate(row) if p == 0] + [len(row)]
        out += [(b, s, e) for s, e in zip(starts, starts[1:])]
    return out


def per_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), ignore_index=IGNORE,
                           reduction="none").view(targets.shape)


@pytest.mark.parametrize("name", DECODERS)
def test_a_packed_decoder_block_scores_each_document_as_alone(name: str) -> None:
    torch.manual_seed(0)
    net = DECODERS[name]().eval()
    batch = causal_batch()
    ids, targets, positions = batch["input_ids"], batch["targets"], batch["position_ids"]
    docs = segments(positions)
    assert len(docs) >= 6 and all(positions[b, s:e].tolist() == list(range(e - s)) for b, s, e in docs)
    with torch.no_grad():
        packed = net(ids, position_ids=positions)  # (B, T, V)
        loss = per_token_loss(packed, targets)
        leaky = net(ids)  # the same rows without the option: documents see each other
        for b, s, e in docs:
            alone = net(ids[b:b + 1, s:e])[0]  # the document on its own, positions from 0
            torch.testing.assert_close(packed[b, s:e], alone, atol=1e-5, rtol=0)
            torch.testing.assert_close(loss[b, s:e], per_token_loss(alone, targets[b, s:e]), atol=1e-5, rtol=0)
        later = [(b, s, e) for b, s, e in docs if s > 0]
        assert max((leaky[b, s:e] - packed[b, s:e]).abs().max() for b, s, e in later) > 1e-3
        # the target of each end-of-document token, the next document's first token, takes no loss
        ends = ids == EOS
        assert ends.sum() >= 5 and (targets[ends] == IGNORE).all() and (loss[ends] == 0).all()
        fused = net.loss(ids, targets, positions)  # what training calls
        torch.testing.assert_close(fused, loss[targets != IGNORE].mean(), atol=1e-5, rtol=0)


def test_llama_rotates_each_token_by_its_position_in_its_document(monkeypatch: pytest.MonkeyPatch) -> None:
    # RoPE's scores depend on the distance of query and key only, which a restart within one
    # document keeps: the outputs cannot show it, the angles the blocks receive can
    net = DECODERS["llama"]().eval()
    batch = causal_batch()
    seen = []
    block = type(net.blocks[0])
    forward = block.forward
    monkeypatch.setattr(block, "forward", lambda self, x, cos, *a: seen.append(cos) or forward(self, x, cos, *a))
    with torch.no_grad():
        net(batch["input_ids"], position_ids=batch["position_ids"])
    torch.testing.assert_close(seen[0][:, 0], net.rotary.cos[batch["position_ids"]])  # (B, T, D)


@pytest.mark.parametrize("name", DECODERS)
def test_one_document_per_row_is_the_plain_causal_forward(name: str) -> None:
    torch.manual_seed(1)
    net = DECODERS[name]().eval()
    ids = torch.randint(2, VOCAB, (2, SEQ_LEN))
    with torch.no_grad():
        plain = net(ids)
        whole = net(ids, position_ids=torch.arange(SEQ_LEN).expand(2, SEQ_LEN))
    torch.testing.assert_close(whole, plain, atol=1e-5, rtol=0)


def test_without_position_ids_no_mask_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a document mask was built with the option off")

    monkeypatch.setattr("lmforge.models.layers.document_mask", refuse)
    monkeypatch.setattr("lmforge.models.bert.document_mask", refuse)
    ids = torch.randint(2, VOCAB, (2, 16))
    for make in DECODERS.values():
        net = make()
        net(ids)
        net.loss(ids, ids)
        net.generate(ids[:1, :4], 3)
    Bert(BertConfig(vocab_size=VOCAB, max_seq_len=32, n_layer=1, n_head=2, d_model=16)).encode(ids)


def test_position_ids_take_no_cache() -> None:
    net = DECODERS["gpt"]()
    with pytest.raises(ValueError, match="cache"):
        net(torch.ones(1, 4, dtype=torch.long), net.new_cache(), position_ids=torch.arange(4)[None])


def test_document_mask_is_block_diagonal() -> None:
    positions = torch.tensor([[0, 1, 2, 0, 1]])
    same = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 1, 1]]).bool()
    assert torch.equal(document_mask(positions, causal=False)[0, 0], same)
    assert torch.equal(document_mask(positions, causal=True)[0, 0], same & torch.ones(5, 5).tril().bool())
    windowed = document_mask(positions, causal=True, window=2)[0, 0]
    assert windowed[2].tolist() == [False, True, True, False, False]


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_a_packed_encoder_block_predicts_each_masked_token_as_its_document_alone(family: str) -> None:
    kind, size = ("wordpiece", 80) if family == "bert" else ("byte_level_bpe", 280)
    tok = train_tokenizer(TEXTS, TokenizerSpec(kind=kind, specials=family, vocab_size=size))
    shape = {} if family == "bert" else {"position_offset": 2, "type_vocab_size": 1, "norm_eps": 1e-5}
    torch.manual_seed(2)
    net = Bert(BertConfig(vocab_size=tok.vocab_size, max_seq_len=64, n_layer=2, n_head=2, d_model=32,
                          dropout=0.0, nsp_head=False, **shape)).eval()
    stream = concat_documents(tok.encode_batch(TEXTS), tok.eos_id, np.dtype(np.int64))
    blocks = PackedBlocks(stream[5:], SEQ_LEN - 2)
    objective = MaskedLM(mask_prob=0.3, seed=4, document_mask=True)
    objective.bind(tok)
    batch = objective([blocks[0], blocks[1]])
    ids, labels, positions = batch["input_ids"], batch["labels"], batch["position_ids"]
    docs = segments(positions)
    assert len(docs) >= 4
    with torch.no_grad():
        hidden = net.encode(ids, position_ids=positions)  # (B, T, C)
        leaky = net.encode(ids)
        for b, s, e in docs:
            alone = net.encode(ids[b:b + 1, s:e])[0]  # the same tokens, the same masks, alone
            torch.testing.assert_close(hidden[b, s:e], alone, atol=1e-5, rtol=0)
            chosen = labels[b, s:e] != IGNORE
            packed_loss = per_token_loss(net.mlm_logits(hidden[b, s:e][chosen]), labels[b, s:e][chosen])
            alone_loss = per_token_loss(net.mlm_logits(alone[chosen]), labels[b, s:e][chosen])
            torch.testing.assert_close(packed_loss, alone_loss, atol=1e-5, rtol=0)
        assert (labels != IGNORE).sum() >= 10
        assert (leaky - hidden).abs().max() > 1e-3  # without the option the documents see each other
