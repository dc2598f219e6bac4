"""The ELMo biLM in ``lmforge.models.elmo``: directionality, the char CNN, LSTMP layers, the mix."""

from __future__ import annotations

import pytest
import torch

from lmforge.errors import UserError
from lmforge.models.elmo import (
    PAD_CHAR,
    PIECE_START,
    SPECIAL_START,
    TOKEN_END,
    WORD_START,
    Elmo,
    ElmoConfig,
    LSTMLayer,
    ScalarMix,
    char_ids,
)

V = 61
TINY = dict(vocab_size=V, max_seq_len=16, char_dim=8, max_chars=12, filters=[(1, 8), (2, 8), (3, 16)], n_highway=1,
            n_layer=2, hidden_size=24, projection_size=12, dropout=0.0)


def tiny_elmo(seed: int = 0, **overrides) -> Elmo:
    torch.manual_seed(seed)
    net = Elmo(ElmoConfig(**{**TINY, **overrides}))
    if net.config.token_repr == "char_cnn":  # distinct made-up spellings, as a task would fill them
        words = [f"w{i}" * (1 + i % 4) for i in range(V)]
        net.token_chars.copy_(torch.tensor([char_ids(w, net.config.max_chars) for w in words]))
    return net.eval()


# --------------------------------------------------------------------------- directionality


@pytest.mark.parametrize("token_repr", ["char_cnn", "embedding"])
@pytest.mark.parametrize("t", [0, 5, 15])
def test_forward_never_sees_later_tokens_and_backward_never_earlier(token_repr: str, t: int) -> None:
    net = tiny_elmo(token_repr=token_repr)
    g = torch.Generator().manual_seed(t)
    ids = torch.randint(0, V, (3, 16), generator=g)
    changed = ids.clone()
    changed[:, t] = (ids[:, t] + 1 + torch.randint(0, V - 1, (3,), generator=g)) % V
    with torch.no_grad():
        (f_a, b_a), (f_b, b_b) = net(ids), net(changed)
        _, fwd_a, bwd_a = net.encode(ids)
        _, fwd_b, bwd_b = net.encode(changed)
    tight = dict(rtol=0, atol=1e-6)
    # the forward LM before t and the backward LM after t have read exactly the same tokens
    torch.testing.assert_close(f_a[:, :t], f_b[:, :t], **tight)
    torch.testing.assert_close(b_a[:, t + 1 :], b_b[:, t + 1 :], **tight)
    for layer in range(2):
        torch.testing.assert_close(fwd_a[layer][:, :t], fwd_b[layer][:, :t], **tight)
        torch.testing.assert_close(bwd_a[layer][:, t + 1 :], bwd_b[layer][:, t + 1 :], **tight)
    # ... and each does read the changed token: from t on (forward), up to t (backward)
    assert (f_a[:, t:] - f_b[:, t:]).abs().amax(-1).min() > 1e-6
    assert (b_a[:, : t + 1] - b_b[:, : t + 1]).abs().amax(-1).min() > 1e-6


def test_both_directions_share_the_token_representation_and_the_softmax() -> None:
    net = tiny_elmo()
    names = {name.split(".")[0] for name, _ in net.named_parameters()}
    assert names == {"char_cnn", "forward_lm", "backward_lm", "softmax"}
    ids = torch.randint(0, V, (2, 7))
    with torch.no_grad():
        net.softmax.weight.zero_()
        net.softmax.bias.copy_(torch.arange(V, dtype=torch.float))
        forward, backward = net(ids)
    torch.testing.assert_close(forward, backward)  # one softmax scores both
    # the backward LM is the forward architecture run on the reversed sequence
    with torch.no_grad():
        x = net.token_representation(ids)
        expected = [h.flip(1) for h in net.backward_lm(x.flip(1))]
        _, _, backward_layers = net.encode(ids)
    for got, want in zip(backward_layers, expected):
        torch.testing.assert_close(got, want)


def test_residual_connection_from_the_second_layer() -> None:
    net = tiny_elmo(n_layer=3)
    ids = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        x, forward, _ = net.encode(ids)
        layers = net.forward_lm.layers
        torch.testing.assert_close(forward[0], layers[0](x))  # the first layer has no residual
        torch.testing.assert_close(forward[1], layers[1](forward[0]) + forward[0])
        torch.testing.assert_close(forward[2], layers[2](forward[1]) + forward[1])


# --------------------------------------------------------------------------- characters


def test_char_ids_markers_padding_and_truncation() -> None:
    assert char_ids("ab", 6) == [WORD_START, ord("a") + 1, ord("b") + 1, TOKEN_END, PAD_CHAR, PAD_CHAR]
    assert char_ids("ab", 6, continues_word=True)[0] == PIECE_START
    assert char_ids("</s>", 8, special=True)[0] == SPECIAL_START
    assert char_ids("é", 5) == [WORD_START, 0xC3 + 1, 0xA9 + 1, TOKEN_END, PAD_CHAR]  # UTF-8 bytes
    assert char_ids("", 3) == [WORD_START, TOKEN_END, PAD_CHAR]
    long = char_ids("x" * 100, 12)  # longer than max_chars: cut, the end marker kept
    assert long == [WORD_START] + [ord("x") + 1] * 10 + [TOKEN_END]


def test_char_cnn_takes_words_longer_than_max_chars_and_shorter_than_its_widest_filter() -> None:
    net = tiny_elmo()
    max_chars = net.config.max_chars  # 12: at most 10 characters of a token are read
    words = {0: "a", 1: "x" * 100, 2: "x" * 100 + "y", 3: "x" * 9 + "z"}
    with torch.no_grad():
        for token_id, word in words.items():
            net.token_chars[token_id] = torch.tensor(char_ids(word, max_chars))
        reps = net.token_representation(torch.tensor([[0, 1, 2, 3]]))[0]  # (4, P)
        logits = net(torch.tensor([[1, 0, 2, 3]]))
    assert reps.shape == (4, net.config.projection_size) and torch.isfinite(reps).all()
    assert all(torch.isfinite(lg).all() for lg in logits)
    # the two long words agree on their first 10 characters: one representation
    torch.testing.assert_close(reps[1], reps[2])
    assert not torch.allclose(reps[1], reps[3])  # the 10th character counts
    assert not torch.allclose(reps[0], reps[1])


def test_char_cnn_runs_once_per_distinct_token_over_the_characters_it_needs() -> None:
    net = tiny_elmo(max_chars=30)
    with torch.no_grad():
        for token_id, word in {5: "a", 7: "bcd", 9: "x" * 12}.items():
            net.token_chars[token_id] = torch.tensor(char_ids(word, 30))
    shapes = []
    net.char_cnn.register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape)))
    ids = torch.tensor([[5, 5, 7, 5], [7, 9, 9, 5]])
    with torch.no_grad():
        reps = net.token_representation(ids)
        one_by_one = net.char_cnn(net.token_chars[ids.flatten()]).view(2, 4, -1)  # all 30 characters
        short = net.token_representation(torch.tensor([[5, 7]]))
    assert shapes[0] == (3, 14 + 3)  # ids 5, 7, 9; the longest spelling (12 + 2 markers) and one window of padding
    assert shapes[2] == (2, 5 + 3)
    torch.testing.assert_close(reps, one_by_one, rtol=0, atol=1e-6)  # cutting the padding changes nothing
    torch.testing.assert_close(short[0], one_by_one[0, [0, 2]], rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- LSTMP layers


def test_clipped_lstm_is_nn_lstm_when_nothing_is_clipped_and_bounds_when_it_is() -> None:
    torch.manual_seed(0)
    fused = LSTMLayer(6, 10, 4)
    loose = LSTMLayer(6, 10, 4, cell_clip=1e9, proj_clip=1e9)
    tight = LSTMLayer(6, 10, 4, cell_clip=0.05, proj_clip=0.01)
    loose.load_state_dict(fused.state_dict())  # same parameters, same names
    tight.load_state_dict(fused.state_dict())
    x = 3 * torch.randn(2, 7, 6)
    with torch.no_grad():
        out = fused(x)
        torch.testing.assert_close(loose(x), out, rtol=1e-5, atol=1e-6)
        clipped = tight(x)
    assert out.shape == clipped.shape == (2, 7, 4)
    assert clipped.abs().max() <= 0.01 + 1e-7 and out.abs().max() > 0.01
    # gradients flow through the step-by-step path
    loose(x).sum().backward()
    assert loose.weight_hh_l0.grad is not None and loose.weight_hr_l0.grad.abs().sum() > 0


def test_forget_gate_bias_starts_at_one() -> None:
    layer = LSTMLayer(6, 10, 4)
    total = layer.bias_ih_l0 + layer.bias_hh_l0
    torch.testing.assert_close(total[10:20], torch.ones(10))


# --------------------------------------------------------------------------- ELMo embeddings


def test_layer_embeddings_and_scalar_mix() -> None:
    net = tiny_elmo()
    ids = torch.randint(0, V, (2, 5))
    with torch.no_grad():
        layers = net.layer_embeddings(ids)
        x, forward, backward = net.encode(ids)
    P = net.config.projection_size
    assert layers.shape == (3, 2, 5, 2 * P)
    torch.testing.assert_close(layers[0], torch.cat([x, x], -1))  # the token layer, twice
    torch.testing.assert_close(layers[2], torch.cat([forward[1], backward[1]], -1))

    uniform = ScalarMix(3, trainable=False)
    torch.testing.assert_close(uniform(layers), layers.mean(0))
    weighted = ScalarMix(3, trainable=False, weights=[0.0, 0.0, 2.0], gamma=0.5)
    w = torch.softmax(torch.tensor([0.0, 0.0, 2.0]), 0)
    torch.testing.assert_close(weighted(layers), 0.5 * (w[0] * layers[0] + w[1] * layers[1] + w[2] * layers[2]))
    assert not list(uniform.parameters())
    learned = ScalarMix(3)
    learned(layers).sum().backward()
    assert learned.weights.grad is not None and learned.gamma.grad is not None
    with pytest.raises(UserError, match="3 layers but 2 weights"):
        ScalarMix(3, weights=[1.0, 2.0])


# --------------------------------------------------------------------------- config and FLOPs


def test_bad_shapes_are_one_clear_error() -> None:
    with pytest.raises(UserError, match="projection_size=24 must be smaller than hidden_size=24"):
        Elmo(ElmoConfig(**{**TINY, "projection_size": 24}))
    with pytest.raises(UserError, match="max_chars=2 is shorter than the widest filter"):
        Elmo(ElmoConfig(**{**TINY, "max_chars": 2}))
    Elmo(ElmoConfig(**{**TINY, "max_chars": 2, "token_repr": "embedding"}))  # no char CNN, no limit


def test_original_shape_and_flops() -> None:
    with torch.device("meta"):
        net = Elmo(ElmoConfig(vocab_size=793_471))
    c = net.config
    assert sum(n for _, n in c.filters) == 2048 and c.hidden_size == 4096 and c.projection_size == 512
    per_lstm = 4 * 4096 * (512 + 512 + 2) + 4096 * 512  # gates (two biases) and projection
    assert sum(p.numel() for p in net.forward_lm.parameters()) == 2 * per_lstm
    lstm_macs = 2 * (4 * 4096 * 1024 + 4096 * 512)
    assert net.flops_per_token() == 6 * 2 * (lstm_macs + 512 * 793_471)
    assert net.flops_per_token(softmax_size=8192) == 6 * 2 * (lstm_macs + 512 * 8192)
