"""The fused output projection + cross-entropy trains exactly as ``cross_entropy(net(x), y)``:
the same loss and the same gradient of every parameter (the tied embedding included), with
ignored targets and chunks that do not divide the positions; under bf16 autocast close to it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.models import GPT, GPTConfig, Llama, LlamaConfig
from lmforge.models.loss import linear_cross_entropy


def nets() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {"gpt-tied": GPT(GPTConfig(vocab_size=101, max_seq_len=16, n_layer=2, n_head=2, d_model=32)),
            "llama-untied": Llama(LlamaConfig(vocab_size=101, max_seq_len=16, n_layer=2, n_head=4, n_kv_head=2,
                                              d_model=32, d_ff=64, tie_embeddings=False))}


@pytest.mark.parametrize("name", ["gpt-tied", "llama-untied"])
def test_the_fused_loss_and_its_gradients_equal_cross_entropy_of_the_logits(name: str) -> None:
    net = nets()[name]
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 101, (3, 13), generator=g), torch.randint(0, 101, (3, 13), generator=g)
    y[0, 5:] = -100  # padding: no loss
    reference = F.cross_entropy(net(x).flatten(0, 1), y.flatten())
    reference.backward()
    expected = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    fused = linear_cross_entropy(net.hidden_states(x).flatten(0, 1), net.lm_head, y.flatten(), chunk=7)
    fused.backward()
    assert float(fused) == pytest.approx(float(reference), abs=1e-6)
    for n, p in net.named_parameters():
        torch.testing.assert_close(p.grad, expected[n], rtol=1e-5, atol=1e-6, msg=n)
    assert float(net.loss(x, y)) == pytest.approx(float(reference), abs=1e-6)  # what training calls


def test_under_bf16_autocast_it_is_close_to_autocast_cross_entropy() -> None:
    net = nets()["llama-untied"]
    x = torch.randint(0, 101, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = F.cross_entropy(net(x[:, :-1]).flatten(0, 1).float(), x[:, 1:].flatten())
        fused = net.loss(x[:, :-1], x[:, 1:])
    assert fused.dtype == torch.float32 and float(fused) == pytest.approx(float(reference), abs=2e-2)
    fused.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
               for p in net.parameters())
