"""Tests for the GPT-2 style decoder in ``lmforge.models.gpt``."""

from __future__ import annotations

import pytest
import torch

from lmforge.start.hf import ADAPTERS, hf_to_ours
from lmforge.models.gpt import GPT, GPTConfig

TINY = dict(vocab_size=97, max_seq_len=32, n_layer=2, n_head=4, d_model=48)


def tiny_gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**TINY, **overrides}))
    return model.eval()


def hf_gpt2_config(vocab_size=97, n_positions=32, n_embd=48, n_layer=2, n_head=4):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        activation_function="gelu_new",
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
    )


def hf_gpt2_to_lmforge(hf_state: dict[str, torch.Tensor], n_layer: int) -> dict[str, torch.Tensor]:
    """Map a ``GPT2LMHeadModel`` state dict onto ``GPT``'s parameter names (lmforge.convert's table:
    HF's ``Conv1D`` weights are stored ``(in, out)``, ``nn.Linear`` wants ``(out, in)``)."""
    return hf_to_ours(hf_state, ADAPTERS["gpt2"].weight_table(GPTConfig(n_layer=n_layer)), "test")


# --------------------------------------------------------------------------- parity with HF


def test_logits_match_hf_gpt2():
    transformers = pytest.importorskip("transformers")
    hf_cfg = hf_gpt2_config()
    torch.manual_seed(1234)
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    # HF init leaves LayerNorms at (1, 0) and biases at 0: perturb every parameter so a mapping that
    # drops a bias / LayerNorm affine or forgets a transpose cannot go unnoticed.
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))

    ours = GPT(
        GPTConfig(vocab_size=97, max_seq_len=32, n_layer=2, n_head=4, d_model=48, dropout=0.0)
    ).eval()
    mapped = hf_gpt2_to_lmforge(hf.state_dict(), hf_cfg.n_layer)
    result = ours.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # every parameter of ours was overwritten and the tie survived loading
    assert set(mapped) == set(ours.state_dict())
    assert ours.lm_head.weight is ours.wte.weight
    torch.testing.assert_close(ours.wte.weight, hf.transformer.wte.weight)

    ids = torch.randint(0, 97, (3, 32), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = hf(input_ids=ids).logits
        got = ours(ids)
    assert got.shape == expected.shape == (3, 32, 97)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # also shorter-than-max sequences (positions 0..T-1)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids[:, :5]), hf(input_ids=ids[:, :5]).logits, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize(
    "cfg, expected",
    [
        (dict(), 124_439_808),  # GPT-2 small
        (dict(n_layer=24, n_head=16, d_model=1024), 354_823_168),  # GPT-2 medium
    ],
    ids=["small", "medium"],
)
def test_gpt2_preset_param_counts(cfg, expected):
    with torch.device("meta"):
        model = GPT(GPTConfig(**cfg))
    assert model.wte.weight.is_meta
    assert model.num_params() == expected
    assert model.num_params(non_embedding=True) == expected - 1024 * model.config.d_model


@pytest.mark.parametrize(
    "cfg", [dict(), dict(n_layer=24, n_head=16, d_model=1024)], ids=["small", "medium"]
)
def test_param_counts_match_hf(cfg):
    transformers = pytest.importorskip("transformers")
    ours_cfg = GPTConfig(**cfg)
    hf_cfg = hf_gpt2_config(
        vocab_size=ours_cfg.vocab_size,
        n_positions=ours_cfg.max_seq_len,
        n_embd=ours_cfg.d_model,
        n_layer=ours_cfg.n_layer,
        n_head=ours_cfg.n_head,
    )
    with torch.device("meta"):
        ours = GPT(ours_cfg)
        hf = transformers.GPT2LMHeadModel(hf_cfg)
    hf_count = sum(p.numel() for p in hf.parameters())  # parameters() dedups the tied lm_head
    assert ours.num_params() == hf_count


# --------------------------------------------------------------------------- causality


@pytest.mark.parametrize("j", [0, 1, 7, 15, 31])
def test_causal_masking(j):
    model = tiny_gpt()
    g = torch.Generator().manual_seed(j)
    ids = torch.randint(0, 97, (2, 32), generator=g)
    changed = ids.clone()
    changed[:, j] = (ids[:, j] + 1 + torch.randint(0, 96, (2,), generator=g)) % 97
    assert (changed[:, j] != ids[:, j]).all()
    with torch.no_grad():
        a, b = model(ids), model(changed)
    # positions before j see exactly the same inputs
    torch.testing.assert_close(a[:, :j], b[:, :j], rtol=0, atol=0)
    # position j (and later) must actually depend on the changed token
    assert not torch.allclose(a[:, j:], b[:, j:])
    assert not torch.allclose(a[:, j], b[:, j])


# --------------------------------------------------------------------------- weight tying


def test_embeddings_tied():
    model = tiny_gpt()
    assert model.lm_head.weight is model.wte.weight
    # the tie holds through a state-dict round trip into a fresh model
    other = tiny_gpt(seed=1)
    assert not torch.equal(other.wte.weight, model.wte.weight)
    other.load_state_dict(model.state_dict())
    assert other.lm_head.weight is other.wte.weight
    torch.testing.assert_close(other.lm_head.weight, model.wte.weight)
    # tied parameter counted once
    n_unique = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert model.num_params() == n_unique
    assert model.num_params() < sum(p.numel() for _, p in model.state_dict().items())


# --------------------------------------------------------------------------- generate


def test_generate_greedy_deterministic_and_length():
    model = tiny_gpt()
    prompt = torch.tensor([[3, 14, 15, 92, 65]])
    out1 = model.generate(prompt, max_new_tokens=10, temperature=0)
    out2 = model.generate(prompt, max_new_tokens=10, temperature=0)
    assert out1.shape == (1, 15)
    assert torch.equal(out1, out2)
    assert torch.equal(out1[:, :5], prompt)
    # greedy tokens are the argmax of the forward pass at each step
    with torch.no_grad():
        for t in range(5, 15):
            assert out1[0, t].item() == model(out1[:, :t])[0, -1].argmax().item()


def test_generate_stops_at_eos():
    model = tiny_gpt()
    prompt = torch.tensor([[3, 14, 15, 92, 65]])
    first = model.generate(prompt, max_new_tokens=1, temperature=0)[0, -1].item()
    out = model.generate(prompt, max_new_tokens=10, temperature=0, eos_id=first)
    assert out.shape == (1, 6)
    assert out[0, -1].item() == first
    # an eos that is never produced does not stop generation
    full = model.generate(prompt, max_new_tokens=10, temperature=0)
    never = next(i for i in range(97) if i not in full[0, 5:].tolist())
    assert model.generate(prompt, max_new_tokens=10, temperature=0, eos_id=never).shape == (1, 15)


def test_generate_crops_long_context():
    model = tiny_gpt(max_seq_len=8)
    prompt = torch.randint(0, 97, (1, 20), generator=torch.Generator().manual_seed(3))
    with pytest.raises(ValueError):
        model(prompt)
    out = model.generate(prompt, max_new_tokens=5, temperature=0)
    assert out.shape == (1, 25)
    assert torch.equal(out[:, :20], prompt)
    # the first new token is predicted from the last max_seq_len tokens only
    with torch.no_grad():
        assert out[0, 20].item() == model(prompt[:, -8:])[0, -1].argmax().item()
        assert out[0, 24].item() == model(out[:, 16:24])[0, -1].argmax().item()


def test_generate_top_k_1_equals_greedy():
    model = tiny_gpt()
    prompt = torch.tensor([[1, 2, 3]])
    greedy = model.generate(prompt, max_new_tokens=12, temperature=0)
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        sampled = model.generate(prompt, max_new_tokens=12, temperature=1.5, top_k=1, generator=g)
        assert torch.equal(sampled, greedy)


def test_generate_sampling_reproducible_with_generator():
    model = tiny_gpt()
    prompt = torch.tensor([[1, 2, 3]])
    a = model.generate(prompt, 20, temperature=1.0, generator=torch.Generator().manual_seed(0))
    b = model.generate(prompt, 20, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert a.shape == (1, 23)


# --------------------------------------------------------------------------- flops


def test_flops_per_token():
    model = tiny_gpt()
    c = model.config
    n_total = sum(p.numel() for p in model.parameters())
    n_nonemb = n_total - model.wpe.weight.numel()
    # sanity on the hand count for the tiny config: wte + wpe + blocks + ln_f
    block = 4 * 48 + (48 * 144 + 144) + (48 * 48 + 48) + (48 * 192 + 192) + (192 * 48 + 48)
    assert n_total == 97 * 48 + 32 * 48 + 2 * block + 2 * 48
    for seq_len in (1, 16, 32):
        expected = 6 * n_nonemb + 12 * c.n_layer * c.d_model * seq_len
        assert model.flops_per_token(seq_len) == expected


# --------------------------------------------------------------------------- input validation


def test_forward_too_long_raises():
    model = tiny_gpt()
    ids = torch.zeros(1, 33, dtype=torch.long)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(ids)
    # exactly max_seq_len is fine
    assert model(ids[:, :32]).shape == (1, 32, 97)
