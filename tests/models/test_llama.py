"""The Llama network: grouped-query attention, rotary embeddings, learning, and its size."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.models import Llama, LlamaConfig, llama
from lmforge.models.llama import RotaryEmbedding, apply_rotary

TINY = dict(vocab_size=64, max_seq_len=16, n_layer=2, n_head=4, n_kv_head=2, d_model=32, d_ff=48)


@pytest.mark.parametrize("window", [None, 4])  # is_causal, and the sliding window's mask
def test_grouped_query_attention_equals_attention_with_the_kv_heads_repeated(window: int | None) -> None:
    torch.manual_seed(0)
    net = Llama(LlamaConfig(**TINY, sliding_window=window)).eval()
    attn = net.blocks[0].attn
    x = torch.randn(2, 10, 32)
    cos, sin = net.rotary(10)
    B, T, C, D = 2, 10, 32, 8
    q = apply_rotary(attn.q(x).view(B, T, 4, D).transpose(1, 2), cos, sin)
    k = apply_rotary(attn.k(x).view(B, T, 2, D).transpose(1, 2), cos, sin)
    v = attn.v(x).view(B, T, 2, D).transpose(1, 2)
    head_kv = [0, 0, 1, 1]  # query heads 0, 1 read kv head 0; 2, 3 read kv head 1
    scores = torch.stack([q[:, h] @ k[:, head_kv[h]].transpose(-1, -2) for h in range(4)], 1) / math.sqrt(D)
    back = torch.arange(T)[:, None] - torch.arange(T)  # how far back each key is from each query
    scores = scores.masked_fill((back < 0) | (back >= (window or T)), float("-inf"))
    y = torch.stack([scores.softmax(-1)[:, h] @ v[:, head_kv[h]] for h in range(4)], 1)  # (B, H, T, D)
    expected = attn.o(y.transpose(1, 2).reshape(B, T, C))
    torch.testing.assert_close(attn(x, cos, sin), expected, rtol=1e-5, atol=1e-5)


def test_copied_kv_heads_give_what_sdpa_grouping_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    net = Llama(LlamaConfig(**TINY, sliding_window=4)).eval()
    ids = torch.randint(0, 64, (2, 10))
    grouped = net(ids)
    monkeypatch.setattr(llama, "sdpa_groups_heads", lambda q, mask: False)  # as on CUDA in fp32
    torch.testing.assert_close(net(ids), grouped, rtol=1e-5, atol=1e-5)


def test_sdpa_groups_heads_only_where_its_kernel_can() -> None:
    mask = torch.ones(4, 4, dtype=torch.bool)
    assert llama.sdpa_groups_heads(torch.empty(1), mask)  # CPU: always
    # other devices (meta stands in for CUDA): the flash kernel only, half precision and no mask
    assert llama.sdpa_groups_heads(torch.empty(1, device="meta", dtype=torch.bfloat16), None)
    assert not llama.sdpa_groups_heads(torch.empty(1, device="meta", dtype=torch.bfloat16), mask)
    assert not llama.sdpa_groups_heads(torch.empty(1, device="meta"), None)


def test_rope_preserves_norms_and_scores_depend_on_relative_position_only() -> None:
    rotary = RotaryEmbedding(16, 64, base=10000.0)
    cos, sin = rotary(64)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(16, generator=g), torch.randn(16, generator=g)

    def at(x: torch.Tensor, pos: int) -> torch.Tensor:
        return apply_rotary(x.view(1, 1, 1, 16), cos[pos:pos + 1], sin[pos:pos + 1]).flatten()

    for pos in (0, 5, 63):
        torch.testing.assert_close(at(q, pos).norm(), q.norm())
    for m, n in ((7, 3), (40, 36), (4, 0)):  # m - n = 4 each time
        torch.testing.assert_close(at(q, m) @ at(k, n), at(q, 4) @ at(k, 0), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(at(q, 9) @ at(k, 3), at(q, 4) @ at(k, 0))


def test_sliding_window_sees_only_the_last_window_tokens() -> None:
    torch.manual_seed(0)
    net = Llama(LlamaConfig(**{**TINY, "n_layer": 1}, sliding_window=4)).eval()
    ids = torch.randint(0, 64, (1, 12))
    other = ids.clone()
    other[0, 0] = (ids[0, 0] + 1) % 64
    with torch.no_grad():
        changed = (net(ids) - net(other)).abs().amax(-1)[0]  # (T,)
    assert (changed[:4] > 0).all() and (changed[4:] == 0).all()  # position 4 and on no longer see token 0


def test_tiny_llama_overfits_a_tiny_batch() -> None:
    torch.manual_seed(0)
    net = Llama(LlamaConfig(**TINY))
    ids = torch.randint(0, 64, (4, 16))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
    for _ in range(150):
        loss = F.cross_entropy(net(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def expected_params(c: LlamaConfig) -> int:
    kv = c.n_kv_head * c.head_dim
    attn = 2 * c.d_model * c.d_model + 2 * c.d_model * kv + (c.d_model + 2 * kv) * c.qkv_bias
    layer = attn + 3 * c.d_model * c.d_ff + 2 * c.d_model + 2 * c.head_dim * c.qk_norm
    return c.vocab_size * c.d_model * (1 if c.tie_embeddings else 2) + c.n_layer * layer + c.d_model


def test_parameter_count_formula() -> None:
    for extra in ({}, {"tie_embeddings": False}, {"qkv_bias": True, "qk_norm": True}):
        c = LlamaConfig(**TINY, **extra)
        assert Llama(c).num_params() == expected_params(c)
    # SmolLM2-135M and Llama-3.2-1B as published
    smol = LlamaConfig(vocab_size=49152, max_seq_len=2048, n_layer=30, n_head=9, n_kv_head=3, d_model=576, d_ff=1536)
    llama32 = LlamaConfig(vocab_size=128256, max_seq_len=2048, n_layer=16, n_head=32, n_kv_head=8, d_model=2048,
                          d_ff=8192)
    assert expected_params(smol) == 134_515_008 and expected_params(llama32) == 1_235_814_400


def test_grow_vocab_keeps_old_rows_and_ties() -> None:
    for tied in (True, False):
        net = Llama(LlamaConfig(**TINY, tie_embeddings=tied))
        old = net.lm_head.weight.detach().clone()
        net.grow_vocab(torch.cat([net.wte.weight.detach(), torch.zeros(3, 32)]))
        assert net.lm_head.weight.shape == (67, 32) and net.config.vocab_size == 67
        torch.testing.assert_close(net.lm_head.weight[:64], old)
        assert (net.lm_head.weight is net.wte.weight) == tied
