"""Generation with a key/value cache, GPT and Llama: the prompt once, then each new token alone,
with the same logits and tokens as recomputing the whole prefix for every token."""

from __future__ import annotations

import pytest
import torch

from lmforge.models import GPT, GPTConfig, Llama, LlamaConfig
from lmforge.models.layers import KVCache


@pytest.fixture(scope="module")
def gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=97, max_seq_len=24, n_layer=3, n_head=4, d_model=32, dropout=0.0)).eval()


@torch.no_grad()
def test_positions_fed_in_pieces_equal_the_full_pass(gpt: GPT) -> None:
    ids = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(1))
    full = gpt(ids)
    cache = gpt.new_cache()
    pieces = [gpt(ids[:, a:b], cache) for a, b in ((0, 7), (7, 8), (8, 13), (13, 20))]  # prompt, 1, then 5 at once
    assert len(cache) == 20
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("temperature, top_k", [(0.0, None), (0.8, 10)], ids=["greedy", "sampled"])
def test_cached_generation_gives_the_uncached_tokens(gpt: GPT, temperature: float, top_k: int | None) -> None:
    prompt = torch.tensor([[5, 17, 3, 42]])
    # 30 new tokens: past max_seq_len=24, where the window starts to slide and is recomputed whole
    outputs = [gpt.generate(prompt, 30, temperature=temperature, top_k=top_k, use_cache=use_cache,
                            generator=torch.Generator().manual_seed(7)) for use_cache in (True, False)]
    assert outputs[0].shape == (1, 34)
    assert torch.equal(outputs[0], outputs[1])


def test_a_cache_beyond_max_seq_len_is_refused(gpt: GPT) -> None:
    cache = gpt.new_cache()
    gpt(torch.zeros(1, 24, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="25 tokens is longer than max_seq_len=24"):
        gpt(torch.zeros(1, 1, dtype=torch.long), cache)


def test_each_layer_counts_its_own_positions() -> None:
    cache = KVCache(2)
    k = torch.zeros(1, 2, 3, 4)
    cache.extend(0, k, k)
    assert cache.cached(0) == 3 and cache.cached(1) == 0 and len(cache) == 0  # layer 1 not yet extended
    cache.extend(1, k, k)
    assert len(cache) == 3


@pytest.fixture(scope="module", params=[None, 6], ids=["llama", "mistral-window-6"])
def llama(request: pytest.FixtureRequest) -> Llama:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, max_seq_len=24, n_layer=2, n_head=4, n_kv_head=2, d_model=32, d_ff=64,
                         sliding_window=request.param)
    return Llama(config).eval()


@torch.no_grad()
def test_llama_rope_at_position_offsets_equals_the_full_pass(llama: Llama) -> None:
    """Keys are cached rotated; new positions are rotated at their offsets (and, with a sliding
    window, see no further back than it)."""
    ids = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(1))
    full = llama(ids)
    cache = llama.new_cache()
    pieces = [llama(ids[:, a:b], cache) for a, b in ((0, 7), (7, 8), (8, 13), (13, 20))]
    assert cache.self_attn[0][0].shape == (2, 2, 20, 8)  # the n_kv_head heads are cached, not their repeats
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


def test_llama_cached_generation_gives_the_uncached_tokens(llama: Llama) -> None:
    prompt = torch.tensor([[5, 17, 3, 42]])
    outputs = [llama.generate(prompt, 30, temperature=0.0, use_cache=use_cache) for use_cache in (True, False)]
    assert torch.equal(outputs[0], outputs[1])


@pytest.fixture(scope="module", params=["gpt", "llama", "mistral-window-6"])
def decoder(request: pytest.FixtureRequest, gpt: GPT) -> GPT | Llama:
    if request.param == "gpt":
        return gpt
    torch.manual_seed(0)
    window = 6 if request.param.startswith("mistral") else None
    return Llama(LlamaConfig(vocab_size=97, max_seq_len=24, n_layer=2, n_head=4, n_kv_head=2, d_model=32, d_ff=64,
                             sliding_window=window)).eval()


@torch.no_grad()
def test_right_padded_rows_of_different_lengths_equal_each_row_alone(decoder: GPT | Llama) -> None:
    """Batched scoring: contexts of different lengths right-padded in one pass, their cache
    repeated for two continuations each (themselves padded), give every real position the
    logits of that row computed alone."""
    g = torch.Generator().manual_seed(3)
    contexts = [torch.randint(0, 97, (n,), generator=g) for n in (9, 4, 7)]
    continuations = [torch.randint(0, 97, (n,), generator=g) for n in (3, 1, 5, 2, 4, 3)]  # two per context
    pad = lambda rows: torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=0)  # noqa: E731
    mask = lambda rows: pad([torch.ones_like(r) for r in rows])  # noqa: E731
    cache = decoder.new_cache()
    context_logits = decoder(pad(contexts), cache, mask(contexts))
    shared = cache.select(torch.tensor([0, 0, 1, 1, 2, 2]))
    continuation_logits = decoder(pad(continuations), shared, mask(continuations))
    for i, cont in enumerate(continuations):
        ctx = contexts[i // 2]
        alone = decoder(torch.cat([ctx, cont])[None])[0]  # (len, V)
        torch.testing.assert_close(context_logits[i // 2, : len(ctx)], alone[: len(ctx)], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(continuation_logits[i, : len(cont)], alone[len(ctx):], rtol=1e-5, atol=1e-5)
    # one more token for every row after its padded continuation: its real position, the padding unseen
    step = decoder(torch.full((6, 1), 11), shared)
    for i, cont in enumerate(continuations):
        alone = decoder(torch.cat([contexts[i // 2], cont, torch.tensor([11])])[None])[0, -1]
        torch.testing.assert_close(step[i, 0], alone, rtol=1e-5, atol=1e-5)
