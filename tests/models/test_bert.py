"""Tests for the BERT / RoBERTa encoder in ``lmforge.models.bert``."""

from __future__ import annotations

import pytest
import torch

from lmforge.start.hf import ADAPTERS, hf_to_ours
from lmforge.models.bert import Bert, BertConfig

V, T_MAX, C, L, H = 97, 32, 48, 2, 4
TINY = dict(vocab_size=V, max_seq_len=T_MAX, n_layer=L, n_head=H, d_model=C, dropout=0.0)
TINY_ROBERTA = dict(TINY, type_vocab_size=1, position_offset=2, norm_eps=1e-5, nsp_head=False)


def tiny_bert(seed: int = 0, **overrides) -> Bert:
    torch.manual_seed(seed)
    return Bert(BertConfig(**{**TINY, **overrides})).eval()


def perturb_(model: torch.nn.Module, scale: float = 0.05, seed: int = 4321) -> None:
    """HF init leaves LayerNorms at (1, 0) and biases at 0: perturb every parameter so a mapping that
    drops a bias / LayerNorm affine (or swaps two of them) cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # tied parameters are yielded (and perturbed) once
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def hf_bert_config(attn_implementation="eager", **overrides):
    from transformers import BertConfig as HFBertConfig

    kw = dict(
        vocab_size=V,
        max_position_embeddings=T_MAX,
        hidden_size=C,
        num_hidden_layers=L,
        num_attention_heads=H,
        intermediate_size=4 * C,
        type_vocab_size=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        attn_implementation=attn_implementation,
    )
    return HFBertConfig(**{**kw, **overrides})


def hf_roberta_config(attn_implementation="eager", **overrides):
    from transformers import RobertaConfig

    kw = dict(
        vocab_size=V,
        max_position_embeddings=T_MAX + 2,
        hidden_size=C,
        num_hidden_layers=L,
        num_attention_heads=H,
        intermediate_size=4 * C,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        attn_implementation=attn_implementation,
    )
    return RobertaConfig(**{**kw, **overrides})


def hf_bert_to_lmforge(hf_state: dict[str, torch.Tensor], n_layer: int) -> dict[str, torch.Tensor]:
    """Map a ``BertForPreTraining`` state dict onto ``Bert``'s parameter names (lmforge.convert's table)."""
    config = BertConfig(**{**TINY, "n_layer": n_layer})
    return hf_to_ours(hf_state, ADAPTERS["bert"].weight_table(config, set(hf_state)), "test")


def hf_roberta_to_lmforge(hf_state: dict[str, torch.Tensor], n_layer: int) -> dict[str, torch.Tensor]:
    """Map a ``RobertaForMaskedLM`` state dict onto ``Bert``'s parameter names (no pooler / NSP)."""
    config = BertConfig(**{**TINY_ROBERTA, "n_layer": n_layer})
    return hf_to_ours(hf_state, ADAPTERS["roberta"].weight_table(config, set(hf_state)), "test")


def _load_strict(ours: Bert, mapped: dict[str, torch.Tensor]) -> None:
    result = ours.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # every entry of ours was overwritten
    assert set(mapped) == set(ours.state_dict())


# --------------------------------------------------------------------------- parity with HF


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_logits_match_hf_bert_for_pretraining(attn_implementation):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(1234)
    hf = transformers.BertForPreTraining(hf_bert_config(attn_implementation)).eval()
    perturb_(hf)
    ours = Bert(BertConfig(**TINY)).eval()
    _load_strict(ours, hf_bert_to_lmforge(hf.state_dict(), L))
    torch.testing.assert_close(ours.wte.weight, hf.bert.embeddings.word_embeddings.weight)

    B, T = 3, T_MAX
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, V, (B, T), generator=g)
    # segment A then segment B, split at a different point in every row
    token_type_ids = torch.zeros(B, T, dtype=torch.long)
    for b, split in enumerate((5, 16, 27)):
        token_type_ids[b, split:] = 1
    attention_mask = torch.ones(B, T, dtype=torch.long)
    attention_mask[1, 20:] = 0  # right padding in one row
    ids[1, 20:] = 0
    real = attention_mask.bool()

    with torch.no_grad():
        out = hf(input_ids=ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        hidden = ours.encode(ids, attention_mask, token_type_ids)
        got_mlm = ours(ids, attention_mask, token_type_ids)
        got_nsp = ours.nsp_logits(hidden)
    assert got_mlm.shape == out.prediction_logits.shape == (B, T, V)
    assert got_nsp.shape == out.seq_relationship_logits.shape == (B, 2)
    torch.testing.assert_close(got_mlm[real], out.prediction_logits[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_nsp, out.seq_relationship_logits, rtol=1e-5, atol=1e-5)
    # padded query positions see the same (masked) keys in both models, so they match too
    torch.testing.assert_close(got_mlm[~real], out.prediction_logits[~real], rtol=1e-5, atol=1e-5)

    # shorter-than-max input, no mask, no token types (segment 0 everywhere)
    with torch.no_grad():
        out = hf(input_ids=ids[:, :7])
        hidden = ours.encode(ids[:, :7])
        torch.testing.assert_close(ours.mlm_logits(hidden), out.prediction_logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.nsp_logits(hidden), out.seq_relationship_logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_logits_match_hf_roberta_for_masked_lm(attn_implementation):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(4321)
    hf_cfg = hf_roberta_config(attn_implementation)
    hf = transformers.RobertaForMaskedLM(hf_cfg).eval()
    perturb_(hf)
    ours = Bert(BertConfig(**TINY_ROBERTA)).eval()
    assert not hasattr(ours, "pooler") and not hasattr(ours, "nsp")
    _load_strict(ours, hf_roberta_to_lmforge(hf.state_dict(), L))
    assert ours.wpe.weight.shape == (T_MAX + 2, C)

    B, T = 2, T_MAX
    pad = hf_cfg.pad_token_id
    # HF RoBERTa derives positions from the non-pad tokens (cumsum + padding_idx): real tokens must not
    # be the pad id for its positions to be 2..T+1 like ours.
    ids = torch.randint(3, V, (B, T), generator=torch.Generator().manual_seed(11))
    attention_mask = torch.ones(B, T, dtype=torch.long)
    attention_mask[0, 25:] = 0
    ids[0, 25:] = pad
    real = attention_mask.bool()

    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=attention_mask).logits
        got = ours(ids, attention_mask)
    assert got.shape == expected.shape == (B, T, V)
    # padded positions differ by design (HF gives them position padding_idx), so only real ones
    torch.testing.assert_close(got[real], expected[real], rtol=1e-5, atol=1e-5)

    with torch.no_grad():
        torch.testing.assert_close(ours(ids[1:, :9]), hf(input_ids=ids[1:, :9]).logits, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- parameter counts

BERT_BASE = dict()
BERT_LARGE = dict(n_layer=24, n_head=16, d_model=1024)
ROBERTA_BASE = dict(
    vocab_size=50265, max_seq_len=512, position_offset=2, type_vocab_size=1, norm_eps=1e-5, nsp_head=False
)


def test_bert_base_preset_param_count():
    with torch.device("meta"):
        model = Bert(BertConfig())
    assert model.wte.weight.is_meta
    assert model.num_params() == 110_106_428
    assert model.num_params() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("cfg", [BERT_BASE, BERT_LARGE], ids=["base", "large"])
def test_bert_param_counts_match_hf(cfg):
    transformers = pytest.importorskip("transformers")
    ours_cfg = BertConfig(**cfg)
    hf_cfg = transformers.BertConfig(
        vocab_size=ours_cfg.vocab_size,
        max_position_embeddings=ours_cfg.max_seq_len,
        hidden_size=ours_cfg.d_model,
        num_hidden_layers=ours_cfg.n_layer,
        num_attention_heads=ours_cfg.n_head,
        intermediate_size=ours_cfg.mlp_width,
        type_vocab_size=ours_cfg.type_vocab_size,
    )
    with torch.device("meta"):
        ours = Bert(ours_cfg)
        hf = transformers.BertForPreTraining(hf_cfg)
    hf_count = sum(p.numel() for p in hf.parameters())  # parameters() dedups the tied decoder
    assert ours.num_params() == hf_count
    if not cfg:
        assert hf_count == 110_106_428


def test_roberta_base_param_count_matches_hf():
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.RobertaConfig(
        vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5
    )
    with torch.device("meta"):
        ours = Bert(BertConfig(**ROBERTA_BASE))
        hf = transformers.RobertaForMaskedLM(hf_cfg)
    assert ours.wpe.weight.shape == (514, 768)
    assert ours.num_params() == 124_697_433
    assert ours.num_params() == sum(p.numel() for p in hf.parameters())


# --------------------------------------------------------------------------- padding mask


@pytest.mark.parametrize("k", [1, 5, 16])
def test_padding_is_never_attended(k):
    model = tiny_bert()
    B, T = 2, 24
    g = torch.Generator().manual_seed(k)
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[:, T - k :] = 0
    changed = ids.clone()
    changed[:, T - k :] = (ids[:, T - k :] + 1 + torch.randint(0, V - 1, (B, k), generator=g)) % V
    assert (changed[:, T - k :] != ids[:, T - k :]).all()
    with torch.no_grad():
        a, b = model.encode(ids, mask), model.encode(changed, mask)
        # the mask is what hides them: without it the real positions do see the padded tokens
        a_nomask, b_nomask = model.encode(ids), model.encode(changed)
    torch.testing.assert_close(a[:, : T - k], b[:, : T - k], rtol=0, atol=1e-6)
    assert not torch.allclose(a_nomask[:, : T - k], b_nomask[:, : T - k])

    # changing a real token does change the other real positions
    real_changed = ids.clone()
    real_changed[:, 0] = (ids[:, 0] + 1) % V
    with torch.no_grad():
        c = model.encode(real_changed, mask)
    assert not torch.allclose(a[:, 1 : T - k], c[:, 1 : T - k])
    assert not torch.allclose(a[:, T - k - 1], c[:, T - k - 1])


def test_padding_mask_per_row():
    """Each row's mask applies to that row only."""
    model = tiny_bert()
    ids = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, 8:] = 0
    with torch.no_grad():
        batched = model.encode(ids, mask)
        row0 = model.encode(ids[:1, :8])  # the real tokens alone
        row1 = model.encode(ids[1:])
    torch.testing.assert_close(batched[0, :8], row0[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched[1], row1[0], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- MLM head


def test_sparse_mlm_equals_dense():
    model = tiny_bert()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, V, (3, 20), generator=g)
    types = torch.randint(0, 2, (3, 20), generator=g)
    attn = torch.ones(3, 20, dtype=torch.long)
    attn[2, 15:] = 0
    masked = torch.rand(3, 20, generator=g) < 0.15
    masked[0, 0] = masked[2, 14] = True
    with torch.no_grad():
        hidden = model.encode(ids, attn, types)
        sparse = model.mlm_logits(hidden[masked])
        dense = model(ids, attn, types)
    n = int(masked.sum())
    assert sparse.shape == (n, V)
    torch.testing.assert_close(sparse, dense[masked], rtol=1e-6, atol=1e-6)
    # the masked rows are distinct (so a wrong selection would be caught)
    assert not torch.allclose(sparse[0], sparse[-1])


def test_mlm_projection_tied_to_token_embedding():
    model = tiny_bert()
    model.train()  # dropout is 0 anyway
    state = model.state_dict()
    assert not any("decoder" in k for k in state)
    # the only (V, C) tensor in the state dict is the token embedding
    assert [k for k, v in state.items() if v.shape == (V, C)] == ["wte.weight"]
    assert model.num_params() == sum(v.numel() for v in state.values())

    ids = torch.randint(0, V // 2, (2, 10), generator=torch.Generator().manual_seed(5))  # ids < 48 only
    logits = model.mlm_logits(model.encode(ids))
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), ids.reshape(-1))
    loss.backward()
    grad = model.wte.weight.grad
    assert grad is not None
    # rows of ids never seen in the input get gradient only through the output projection
    unseen = sorted(set(range(V)) - set(ids.flatten().tolist()))
    assert set(range(V // 2, V)) <= set(unseen)
    assert grad[unseen].abs().sum(dim=-1).gt(0).all()

    # editing an embedding row moves that vocabulary logit: the projection reads wte.weight itself
    h = torch.randn(4, C, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        before = model.mlm_logits(h)
        model.wte.weight[V - 1].zero_()
        after = model.mlm_logits(h)
    torch.testing.assert_close(after[:, V - 1], model.mlm_head.bias[V - 1].expand(4).detach())
    assert not torch.allclose(before[:, V - 1], after[:, V - 1])
    torch.testing.assert_close(after[:, : V - 1], before[:, : V - 1], rtol=0, atol=0)


# --------------------------------------------------------------------------- bidirectionality


def test_bidirectional_last_token_reaches_first():
    model = tiny_bert()
    ids = torch.randint(0, V, (2, 16), generator=torch.Generator().manual_seed(8))
    changed = ids.clone()
    changed[:, -1] = (ids[:, -1] + 1) % V
    with torch.no_grad():
        a, b = model.encode(ids), model.encode(changed)
    assert not torch.allclose(a[:, 0], b[:, 0])
    assert (a[:, 0] - b[:, 0]).abs().amax(dim=-1).gt(1e-4).all()


# --------------------------------------------------------------------------- segments / positions


def test_token_types_and_position_offset_are_used():
    model = tiny_bert()
    ids = torch.randint(0, V, (1, 8), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        zeros = model.encode(ids, token_type_ids=torch.zeros_like(ids))
        ones = model.encode(ids, token_type_ids=torch.ones_like(ids))
        default = model.encode(ids)
    torch.testing.assert_close(default, zeros, rtol=0, atol=1e-6)
    assert not torch.allclose(zeros, ones)

    # with an offset, position t reads row t + offset of the table
    rob = tiny_bert(**{**TINY_ROBERTA})
    with torch.no_grad():
        base = rob.encode(ids)
        rob.wpe.weight[0:2].add_(1.0)  # rows below the offset are never used
        torch.testing.assert_close(rob.encode(ids), base, rtol=0, atol=0)
        rob.wpe.weight[2].add_(1.0)  # row 2 is position 0
        moved = rob.encode(ids)
    assert not torch.allclose(moved[:, 0], base[:, 0])


# --------------------------------------------------------------------------- input validation


def test_nsp_logits_without_head_raises():
    model = tiny_bert(nsp_head=False)
    assert not hasattr(model, "pooler") and not hasattr(model, "nsp")
    hidden = model.encode(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="NSP"):
        model.nsp_logits(hidden)
    # with the head it works
    assert tiny_bert().nsp_logits(hidden).shape == (1, 2)


@pytest.mark.parametrize("overrides", [{}, TINY_ROBERTA], ids=["bert", "roberta"])
def test_too_long_raises(overrides):
    model = tiny_bert(**overrides)
    ids = torch.zeros(1, T_MAX + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(ids)
    with pytest.raises(ValueError, match="max_seq_len"):
        model.encode(ids)
    # exactly max_seq_len is fine (also with the position offset)
    assert model(ids[:, :T_MAX]).shape == (1, T_MAX, V)
