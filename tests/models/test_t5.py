"""Tests for the T5 encoder-decoder in ``lmforge.models.t5``."""

from __future__ import annotations

import pytest
import torch

import yaml

from conftest import CONFIGS
from lmforge.start.hf import ADAPTERS, hf_to_ours
from lmforge.models.t5 import T5, T5Cache, T5Config, relative_position_bucket

# n_head * d_kv (48) != d_model (32) and few buckets with a short max distance, so that the
# sequences below reach the log-spaced buckets and the shared last one
V, C, D_KV, D_FF, H, L = 61, 32, 12, 48, 4, 2
TINY = dict(
    vocab_size=V,
    max_seq_len=24,
    d_model=C,
    d_kv=D_KV,
    d_ff=D_FF,
    n_layer=L,
    n_head=H,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    dropout=0.0,
)
V10 = dict(TINY, feed_forward="relu", tie_embeddings=True)  # T5 v1.0
V11 = dict(TINY, feed_forward="gated-gelu", tie_embeddings=False, n_decoder_layer=3)  # T5 v1.1
VARIANTS = {"v1.0-relu-tied": V10, "v1.1-gated-gelu-untied": V11}


def tiny_t5(seed: int = 0, **overrides) -> T5:
    torch.manual_seed(seed)
    return T5(T5Config(**{**V10, **overrides})).eval()


def perturb_(model: torch.nn.Module, scale: float = 0.05, seed: int = 4321) -> None:
    """Init leaves the RMSNorm weights at 1: perturb every parameter so a mapping that drops or
    swaps one (two norms, k and v, the two bias tables) cannot go unnoticed.

    At T5's init the unit-variance token embedding dominates the residual stream, so greedy
    decoding of a tiny model repeats one token; ``scale=1.0`` makes the sublayers matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # tied parameters are yielded (and perturbed) once
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def encoder_batch(B: int = 3, S: int = 24, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and a padding mask: row 1 right-padded after 15 tokens, row 2 after 5."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, V, (B, S), generator=g)
    mask = torch.ones(B, S, dtype=torch.long)
    for row, n in ((1, 15), (2, 5)):
        if row < B:
            mask[row, n:] = 0
            ids[row, n:] = 0
    return ids, mask


def decoder_ids(B: int = 3, T: int = 20, seed: int = 8) -> torch.Tensor:
    ids = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = 0  # the start token is the padding id, as in T5
    return ids


# --------------------------------------------------------------------------- parity with HF


def hf_t5_config(cfg: dict, attn_implementation: str = "eager"):
    from transformers import T5Config as HFT5Config

    return HFT5Config(
        vocab_size=cfg["vocab_size"],
        d_model=cfg["d_model"],
        d_kv=cfg["d_kv"],
        d_ff=cfg["d_ff"],
        num_layers=cfg["n_layer"],
        num_decoder_layers=cfg.get("n_decoder_layer"),
        num_heads=cfg["n_head"],
        relative_attention_num_buckets=cfg["relative_attention_num_buckets"],
        relative_attention_max_distance=cfg["relative_attention_max_distance"],
        dropout_rate=0.0,
        layer_norm_epsilon=1e-6,
        feed_forward_proj=cfg["feed_forward"],
        tie_word_embeddings=cfg["tie_embeddings"],
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        attn_implementation=attn_implementation,
    )


def build_hf_t5(cfg: dict, attn_implementation: str = "eager", seed: int = 1234, scale: float = 0.05):
    """``T5ForConditionalGeneration`` with perturbed weights and, for v1.1, its own output matrix.

    transformers 5 ties ``lm_head`` to the shared embedding whatever the config says (it only
    reads ``tie_word_embeddings=False`` as "do not scale the output"); v1.1 checkpoints and
    transformers 4 have a separate matrix, so give it one.
    """
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    hf = transformers.T5ForConditionalGeneration(hf_t5_config(cfg, attn_implementation)).eval()
    if not cfg["tie_embeddings"] and hf.lm_head.weight is hf.shared.weight:
        hf.lm_head.weight = torch.nn.Parameter(torch.randn_like(hf.shared.weight))
    perturb_(hf, scale)
    # the encoder and decoder inputs stay tied to the shared embedding in HF as in ours
    assert hf.encoder.embed_tokens.weight is hf.shared.weight
    assert hf.decoder.embed_tokens.weight is hf.shared.weight
    assert (hf.lm_head.weight is hf.shared.weight) == cfg["tie_embeddings"]
    return hf


def hf_t5_to_lmforge(sd: dict[str, torch.Tensor], cfg: T5Config) -> dict[str, torch.Tensor]:
    """Map a ``T5ForConditionalGeneration`` state dict onto ``T5``'s parameter names (lmforge.convert's
    table), checking that nothing is left over but HF's aliases of the shared embedding."""
    table = ADAPTERS["t5"].weight_table(cfg)
    read = {name for _, hf, _ in table for name in (hf if isinstance(hf, tuple) else (hf,))}
    aliases = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    if cfg.tie_embeddings:
        aliases.add("lm_head.weight")
    assert set(sd) - read <= aliases
    for alias in aliases & set(sd):
        torch.testing.assert_close(sd[alias], sd["shared.weight"], rtol=0, atol=0)
    return hf_to_ours(sd, table, "test")


def load_from_hf(hf, cfg: dict) -> T5:
    ours = T5(T5Config(**cfg)).eval()
    mapped = hf_t5_to_lmforge(hf.state_dict(), ours.config)
    result = ours.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert set(mapped) == set(ours.state_dict())  # every tensor of ours was overwritten
    # the HF model has no parameter ours lacks (tied ones counted once in both)
    assert ours.num_params() == sum(p.numel() for p in hf.parameters())
    return ours


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_match_hf_t5_for_conditional_generation(variant, attn_implementation):
    cfg = VARIANTS[variant]
    hf = build_hf_t5(cfg, attn_implementation)
    ours = load_from_hf(hf, cfg)
    ids, mask = encoder_batch()
    dec = decoder_ids()
    with torch.no_grad():
        expected_hidden = hf.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        hidden = ours.encode(ids, mask)
        got = ours(ids, dec, mask)
        got_decode = ours.decode(dec, hidden, mask)
    assert hidden.shape == (3, 24, C) and got.shape == expected.shape == (3, 20, V)
    # all positions, padded ones included: both models let them attend to the real tokens only
    torch.testing.assert_close(hidden, expected_hidden, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_decode, got, rtol=0, atol=0)
    # the logits are far from trivially equal: they vary across vocabulary and positions
    assert expected.std() > 0.1

    # no mask, shorter sequences
    with torch.no_grad():
        expected = hf(input_ids=ids[:1, :7], decoder_input_ids=dec[:1, :4]).logits
        torch.testing.assert_close(ours(ids[:1, :7], dec[:1, :4]), expected, rtol=1e-5, atol=1e-5)


def test_relative_position_buckets_match_hf():
    pytest.importorskip("transformers")
    from transformers.models.t5.modeling_t5 import T5Attention as HFT5Attention

    rel = torch.arange(-300, 301)[None, :]
    for num_buckets, max_distance in ((32, 128), (8, 16), (64, 256)):
        for bidirectional in (True, False):
            got = relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
            expected = HFT5Attention._relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
            assert torch.equal(got, expected), (num_buckets, max_distance, bidirectional)
            assert got.min() == 0 and got.max() == num_buckets - 1
    # hand-checked values of T5's defaults: exact buckets for offsets under 8 (16 causal)
    b = relative_position_bucket(torch.tensor([0, -1, 1, -7, 7, -8, -127, -128, -1000, 1000]), True)
    assert b.tolist() == [0, 1, 17, 7, 23, 8, 15, 15, 15, 31]
    c = relative_position_bucket(torch.tensor([0, 5, -1, -15, -16, -127, -128, -1000]), False)
    assert c.tolist() == [0, 0, 1, 15, 16, 31, 31, 31]


def test_greedy_generate_matches_hf_generate():
    hf = build_hf_t5(V10, scale=1.0)
    ours = load_from_hf(hf, V10)
    ids, mask = encoder_batch()
    n = 8
    free = ours.generate(ids, n, decoder_start_id=0, attention_mask=mask)
    eos = int(free[0, 2])  # a token row 0 produces, so that eos handling is exercised
    got = ours.generate(ids, n, decoder_start_id=0, eos_id=eos, attention_mask=mask, pad_id=0)
    expected = hf.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=n,
        do_sample=False,
        decoder_start_token_id=0,
        eos_token_id=eos,
        pad_token_id=0,
    )
    assert torch.equal(got, expected[:, 1:])  # HF's output starts with the start token
    assert len(set(free.flatten().tolist())) > 3  # not a degenerate repetition


# --------------------------------------------------------------------------- parameter counts


def preset(name: str) -> T5Config:
    """The shape of ``configs/t5/<name>.yaml`` (presets are YAML), vocabulary from its tokenizer."""
    config = yaml.safe_load((CONFIGS / "t5" / f"{name}.yaml").read_text())
    shape = config["model"]["init_args"]["config"]
    return T5Config(**shape, vocab_size=config["data"]["init_args"]["tokenizer"]["vocab_size"])


@pytest.mark.parametrize("name, expected", [("small", 60_506_624), ("base", 222_903_552)])
def test_preset_param_counts(name, expected):
    cfg = preset(name)
    assert (cfg.vocab_size, cfg.feed_forward, cfg.tie_embeddings) == (32128, "relu", True)
    with torch.device("meta"):
        model = T5(cfg)
    assert model.shared.weight.is_meta
    assert model.num_params() == expected
    assert model.lm_head is None  # tied: the shared embedding is the output matrix


@pytest.mark.parametrize("name", ["small", "base"])
def test_preset_param_counts_match_hf(name):
    transformers = pytest.importorskip("transformers")
    cfg = preset(name)
    hf_cfg = transformers.T5Config(
        vocab_size=cfg.vocab_size,
        d_model=cfg.d_model,
        d_kv=cfg.d_kv,
        d_ff=cfg.d_ff,
        num_layers=cfg.n_layer,
        num_heads=cfg.n_head,
        feed_forward_proj=cfg.feed_forward,
    )
    with torch.device("meta"):
        ours = T5(cfg)
        hf = transformers.T5ForConditionalGeneration(hf_cfg)
    assert ours.num_params() == sum(p.numel() for p in hf.parameters())  # parameters() dedups ties


def test_untied_adds_the_output_matrix_only():
    tied, untied = tiny_t5(), tiny_t5(tie_embeddings=False)
    assert tied.lm_head is None and untied.lm_head is not None
    assert untied.num_params() == tied.num_params() + V * C
    # the tied output is the shared embedding applied to the hidden state scaled by d_model**-0.5
    h = torch.randn(2, 3, C)
    torch.testing.assert_close(tied.lm_logits(h), h @ tied.shared.weight.T / C**0.5)
    torch.testing.assert_close(untied.lm_logits(h), h @ untied.lm_head.weight.T)


def test_unknown_feed_forward_raises():
    with pytest.raises(ValueError, match="feed_forward"):
        T5Config(feed_forward="swiglu")


# --------------------------------------------------------------------------- causality / cross-attention


@pytest.mark.parametrize("j", [0, 1, 9, 19])
def test_decoder_is_causal(j):
    model = tiny_t5()
    ids, mask = encoder_batch()
    dec = decoder_ids()
    changed = dec.clone()
    changed[:, j] = (dec[:, j] + 1) % V
    with torch.no_grad():
        a, b = model(ids, dec, mask), model(ids, changed, mask)
    torch.testing.assert_close(a[:, :j], b[:, :j], rtol=0, atol=0)
    assert (a[:, j] - b[:, j]).abs().amax(dim=-1).gt(1e-4).all()


def test_decoder_cross_attends_to_encoder():
    model = tiny_t5()
    ids, mask = encoder_batch()
    dec = decoder_ids()
    changed = ids.clone()
    changed[:, 3] = (ids[:, 3] + 1) % V  # a real token in every row
    with torch.no_grad():
        a, b = model(ids, dec, mask), model(changed, dec, mask)
    # every decoder position of every row, the first included, sees the change
    assert (a - b).abs().amax(dim=-1).gt(1e-4).all()


def test_masked_encoder_padding_changes_nothing():
    model = tiny_t5(**V11)
    ids, mask = encoder_batch()
    dec = decoder_ids()
    other = ids.clone()
    other[mask == 0] = torch.randint(2, V, (int((mask == 0).sum()),), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        hidden, hidden_other = model.encode(ids, mask), model.encode(other, mask)
        logits, logits_other = model(ids, dec, mask), model(other, dec, mask)
        # unmasked, the padding ids do matter
        unmasked = model(ids, dec)
    real = mask.bool()
    torch.testing.assert_close(hidden[real], hidden_other[real], rtol=0, atol=1e-6)
    torch.testing.assert_close(logits, logits_other, rtol=0, atol=1e-6)
    assert not torch.allclose(unmasked[2], logits[2], atol=1e-3)
    # a right-padded row gives what the unpadded, shorter input gives (relative positions unchanged)
    with torch.no_grad():
        short = model(ids[2:, :5], dec[2:])
        torch.testing.assert_close(model.encode(ids[2:, :5]), hidden[2:, :5], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(short, logits[2:], rtol=1e-5, atol=1e-5)


def test_encoder_is_bidirectional():
    model = tiny_t5()
    ids, _ = encoder_batch(B=2)
    changed = ids.clone()
    changed[:, -1] = (ids[:, -1] + 1) % V
    with torch.no_grad():
        a, b = model.encode(ids), model.encode(changed)
    assert (a[:, 0] - b[:, 0]).abs().amax(dim=-1).gt(1e-4).all()


# --------------------------------------------------------------------------- KV cache / generate


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_decode_with_cache_equals_without(variant):
    model = tiny_t5(**VARIANTS[variant])
    perturb_(model, scale=1.0)
    # in float64 rounding (which differs between one and many positions per call) cannot hide a bug
    model.double()
    ids, mask = encoder_batch()
    dec = decoder_ids()
    with torch.no_grad():
        hidden = model.encode(ids, mask)
        full = model.decode(dec, hidden, mask)
        for chunks in ([1] * 20, [5, 1, 7, 2, 5]):
            cache = T5Cache(model.config.decoder_layers)
            parts, start = [], 0
            for n in chunks:
                parts.append(model.decode(dec[:, start : start + n], hidden, mask, cache))
                start += n
                assert len(cache) == start
            torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-10, atol=1e-10)
    # cross-attention keys/values were projected once, from the encoder output, and kept
    for layer, (k, v) in enumerate(cache.cross_attn):
        assert k.shape == v.shape == (3, H, 24, D_KV)
    assert cache.self_attn[0][0].shape == (3, H, 20, D_KV)
    with pytest.raises(ValueError, match="T5Cache"):
        model.decode(dec, hidden, mask, T5Cache(7))


def naive_greedy(model: T5, ids, mask, n: int) -> torch.Tensor:
    """Re-run the whole model on the growing decoder input at every step, no cache."""
    dec = torch.zeros(ids.size(0), 1, dtype=torch.long)
    with torch.no_grad():
        for _ in range(n):
            next_id = model(ids, dec, mask)[:, -1].argmax(dim=-1, keepdim=True)
            dec = torch.cat([dec, next_id], dim=1)
    return dec[:, 1:]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_greedy_generate_equals_naive_loop(variant):
    model = tiny_t5(**VARIANTS[variant])
    perturb_(model, scale=1.0)
    ids, mask = encoder_batch()
    got = model.generate(ids, 12, decoder_start_id=0, attention_mask=mask)
    expected = naive_greedy(model, ids, mask, 12)
    assert got.shape == (3, 12)
    assert torch.equal(got, expected)
    assert len(set(got.flatten().tolist())) > 3  # not a degenerate constant sequence


def test_generate_stops_when_every_row_has_eos():
    model = tiny_t5()
    perturb_(model, scale=1.0)
    ids, mask = encoder_batch()
    free = model.generate(ids, 12, decoder_start_id=0, attention_mask=mask)

    def expected_with(eos: int, fill: int) -> torch.Tensor:
        rows, lengths = [], []
        for row in free.tolist():
            n = row.index(eos) + 1 if eos in row else len(row)
            rows.append(row[:n] + [fill] * (len(row) - n))
            lengths.append(n)
        return torch.tensor(rows)[:, : max(lengths)]

    for eos in set(free[:, :6].flatten().tolist()):
        got = model.generate(ids, 12, decoder_start_id=0, eos_id=eos, attention_mask=mask)
        assert torch.equal(got, expected_with(eos, eos))
        got = model.generate(ids, 12, decoder_start_id=0, eos_id=eos, attention_mask=mask, pad_id=0)
        assert torch.equal(got, expected_with(eos, 0))
    # a token every row produces early stops generation early
    common = set(free[0, :4].tolist()).intersection(*(set(r[:4]) for r in free.tolist()))
    for eos in common:
        assert model.generate(ids, 12, decoder_start_id=0, eos_id=eos, attention_mask=mask).size(1) <= 4


def test_generate_sampling():
    model = tiny_t5()
    perturb_(model, scale=1.0)
    ids, mask = encoder_batch()
    greedy = model.generate(ids, 10, decoder_start_id=0, attention_mask=mask)
    for seed in range(2):
        g = torch.Generator().manual_seed(seed)
        top1 = model.generate(ids, 10, 0, attention_mask=mask, temperature=1.5, top_k=1, generator=g)
        assert torch.equal(top1, greedy)
    a = model.generate(ids, 10, 0, attention_mask=mask, temperature=1.0, generator=torch.Generator().manual_seed(0))
    b = model.generate(ids, 10, 0, attention_mask=mask, temperature=1.0, generator=torch.Generator().manual_seed(0))
    c = model.generate(ids, 10, 0, attention_mask=mask, temperature=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (3, 10)
    assert not torch.equal(a, c)


# --------------------------------------------------------------------------- init / training


def test_init_follows_t5():
    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=512, d_model=128, d_kv=32, d_ff=256, n_layer=2, n_head=4, feed_forward="gated-gelu",
        tie_embeddings=False,
    )
    model = T5(cfg)
    d, inner, d_ff = 128, 128, 256
    expected = {
        "shared.weight": 1.0,
        "lm_head.weight": 1.0,
        "encoder.position_bias.buckets.weight": d**-0.5,
        "encoder.blocks.0.attn.q.weight": (d * 32) ** -0.5,
        "encoder.blocks.0.attn.k.weight": d**-0.5,
        "encoder.blocks.0.attn.v.weight": d**-0.5,
        "encoder.blocks.0.attn.o.weight": inner**-0.5,
        "decoder.blocks.1.cross_attn.q.weight": (d * 32) ** -0.5,
        "decoder.blocks.1.cross_attn.o.weight": inner**-0.5,
        "decoder.blocks.1.mlp.fc.weight": d**-0.5,
        "decoder.blocks.1.mlp.up.weight": d**-0.5,
        "decoder.blocks.1.mlp.proj.weight": d_ff**-0.5,
    }
    params = dict(model.named_parameters())
    for name, std in expected.items():
        p = params[name]
        assert abs(p.mean().item()) < 0.1 * std, name
        assert abs(p.std().item() / std - 1) < 0.15, name
    for name, p in params.items():
        if name.endswith("ln_1.weight") or name.endswith("ln_f.weight"):
            assert torch.equal(p, torch.ones_like(p))
    assert not any("bias" in name.split(".")[-1] for name in params)  # no bias terms anywhere


def test_backward_reaches_every_parameter_and_dropout_is_active():
    model = tiny_t5(**{**V11, "dropout": 0.1}).train()
    ids, mask = encoder_batch()
    dec = decoder_ids()
    logits = model(ids, dec, mask)
    assert not torch.equal(logits, model(ids, dec, mask))  # dropout in training
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.roll(dec, -1, 1).reshape(-1))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ids, dec, mask), model(ids, dec, mask), rtol=0, atol=0)


# --------------------------------------------------------------------------- flops


def test_flops_per_token():
    for cfg in (V10, V11):
        model = tiny_t5(**cfg)
        c = model.config
        inner, S = H * D_KV, 24
        n_emb = V * C
        # equal lengths: 6 per non-input-embedding parameter (the output matrix counts once, tied
        # or not) plus attention over S keys in the encoder and 2 S in the decoder
        n_matmul = model.num_params() - (0 if c.tie_embeddings else n_emb)
        expected = 6 * n_matmul + 12 * inner * S * (c.n_layer + 2 * c.decoder_layers)
        assert model.flops_per_token(S) == pytest.approx(expected)
        # a short target: the decoder's work (but for cross-attention keys/values) scales with it
        T = 5
        n_dec = sum(p.numel() for p in model.decoder.parameters())
        n_cross_kv = c.decoder_layers * 2 * C * inner
        n_enc = sum(p.numel() for p in model.encoder.parameters())
        total = 6 * (S * (n_enc + n_cross_kv) + T * (n_dec - n_cross_kv + n_emb))
        total += 12 * inner * (c.n_layer * S * S + c.decoder_layers * (T * T + T * S))
        assert model.flops_per_token(S, target_len=T) == pytest.approx(total / S)
        assert model.flops_per_token(S, target_len=T) < model.flops_per_token(S)
