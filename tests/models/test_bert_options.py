"""The small-budget options of the BERT encoder: pre-LayerNorm blocks with a final norm, linear layers
without biases (cramming, Geiping & Goldstein 2022; export refuses them), an MLM output matrix of
its own (``tie_embeddings=False``; exported as transformers' ``tie_word_embeddings: false``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lmforge.errors import UserError
from lmforge.models.bert import Bert, BertConfig
from lmforge.start.hf import export_hf

TINY = dict(vocab_size=61, max_seq_len=16, n_layer=2, n_head=2, d_model=16, dropout=0.0, nsp_head=False)


def tiny(**options) -> Bert:
    torch.manual_seed(0)
    return Bert(BertConfig(**TINY, **options)).eval()


def test_defaults_keep_bert_as_it_was() -> None:
    """No new parameter and post-LayerNorm blocks by default: BERT/RoBERTa's names and shapes (HF parity)."""
    net = tiny()
    assert not any(name.startswith("ln_f") for name in net.state_dict())
    assert all(block.attn.qkv.bias is not None and block.mlp.fc.bias is not None for block in net.blocks)
    assert type(net.blocks[0]).__name__ == "PostNormBlock"


def test_pre_norm_is_x_plus_branch_of_normed_x_then_a_final_norm() -> None:
    net = tiny(pre_norm=True)
    with torch.no_grad():  # the final norm's affine away from (1, 0): a skipped one would show
        net.ln_f.weight.uniform_(0.5, 1.5)
        net.ln_f.bias.uniform_(-0.5, 0.5)
    seen = {}
    net.blocks[0].register_forward_pre_hook(lambda module, args: seen.update(x=args[0]))
    ids = torch.randint(0, 61, (2, 12))
    out = net.encode(ids)
    x = seen["x"]  # the embeddings, as the first block receives them
    for block in net.blocks:
        x = x + block.attn(block.ln_1(x))
        x = x + block.mlp(block.ln_2(x))
        assert block.mlp.approximate == "none"  # BERT's exact GELU, not GPT-2's tanh
    torch.testing.assert_close(out, net.ln_f(x))
    assert not torch.allclose(out, x)


def test_no_bias_drops_the_linear_biases_of_attention_and_mlp_only() -> None:
    net, plain = tiny(bias=False), tiny()
    for block in net.blocks:
        assert all(m.bias is None for m in (block.attn.qkv, block.attn.proj, block.mlp.fc, block.mlp.proj))
        assert block.ln_1.bias is not None and block.ln_2.bias is not None  # cramming keeps the norms' biases
    c = net.config
    per_block = 3 * c.d_model + c.d_model + c.mlp_width + c.d_model  # qkv, proj, fc, mlp proj
    assert plain.num_params() - net.num_params() == c.n_layer * per_block
    assert net.mlm_head.dense.bias is not None  # the head is not the blocks' business


def test_untied_head_has_its_own_output_matrix_at_the_same_flops() -> None:
    from lmforge.tasks.masked_lm import run_flops_per_token

    tied, untied = tiny(), tiny(tie_embeddings=False)
    assert not hasattr(tied.mlm_head, "decoder")
    decoder = untied.mlm_head.decoder.weight
    assert decoder.shape == untied.wte.weight.shape and decoder.data_ptr() != untied.wte.weight.data_ptr()
    assert untied.num_params() - tied.num_params() == decoder.numel()
    # the output matrix is a matmul, the token embedding a lookup: the same training FLOPs as tied
    assert untied.flops_per_token(16) == tied.flops_per_token(16)
    assert run_flops_per_token(untied, 16, 0.15) == run_flops_per_token(tied, 16, 0.15)
    ids = torch.randint(0, 61, (2, 12))
    before = untied(ids)
    with torch.no_grad():
        decoder[7] += 1.0  # the logits of token 7 read the decoder row, not the embedding
    changed = (untied(ids) - before).abs().amax(dim=(0, 1)) > 0
    assert changed[7] and changed.sum() == 1


def test_untied_head_grows_with_the_vocabulary() -> None:
    net = tiny(tie_embeddings=False)
    old_decoder, old_bias = net.mlm_head.decoder.weight.detach().clone(), net.mlm_head.bias.detach().clone()
    new_rows = torch.randn(3, 16)
    net.grow_vocab(torch.cat([net.wte.weight.detach(), new_rows]))
    assert net.config.vocab_size == 64 and net.mlm_head.decoder.weight.shape == (64, 16)
    torch.testing.assert_close(net.mlm_head.decoder.weight[:61], old_decoder)
    torch.testing.assert_close(net.mlm_head.decoder.weight[61:], new_rows)
    torch.testing.assert_close(net.mlm_head.bias[61:], old_bias.mean().expand(3))
    assert net(torch.randint(0, 64, (1, 8))).shape == (1, 8, 64)


@pytest.mark.parametrize("options", [dict(pre_norm=True), dict(bias=False), dict(pre_norm=True, bias=False),
                                     dict(tie_embeddings=False)])
def test_the_options_train(options: dict) -> None:
    net = tiny(**options).train()
    ids = torch.randint(0, 61, (2, 12))
    loss = F.cross_entropy(net(ids).flatten(0, 1), ids.flatten())
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize(("options", "named"), [(dict(pre_norm=True), "pre_norm: true"),
                                                (dict(bias=False), "bias: false")])
@pytest.mark.parametrize("kind", [None, "bert", "roberta"])
def test_export_refuses_shapes_transformers_lacks(options: dict, named: str, kind: str | None, tmp_path: Path) -> None:
    net = tiny(**options)
    out = tmp_path / "export"
    with pytest.raises(UserError) as refused:
        export_hf(Bert, net.config, net.state_dict(), None, out, kind)
    message = str(refused.value)
    assert named in message and "cannot be exported" in message and message.count(". ") == 0
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("tie", [True, False])
def test_sparse_prediction_equals_dense_with_the_options(tie: bool) -> None:
    """MaskedLMTask projects the masked positions only (cramming's sparse prediction): the same loss."""
    from lmforge.tasks import MaskedLMTask

    torch.manual_seed(0)
    task = MaskedLMTask(config=BertConfig(**TINY, pre_norm=True, bias=False, tie_embeddings=tie))
    ids = torch.randint(0, 61, (3, 12))
    labels = torch.where(torch.rand(3, 12) < 0.3, ids, torch.full_like(ids, -100))
    sparse, _, n = task._mlm({"input_ids": ids, "labels": labels}, task.net.encode(ids))
    dense = F.cross_entropy(task.net(ids).flatten(0, 1), labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(sparse, dense)
    assert n == int((labels != -100).sum()) > 0


def test_the_small_budget_recipe_is_a_one_cycle_triangle_on_the_options() -> None:
    """configs/recipes/encoder-small-budget.yaml: pre-norm, no biases, and its `linear` schedule rises from 0
    to the peak at 3/4 of max_steps, then falls to 0 at the end (cramming's one-cycle triangle)."""
    import yaml

    from conftest import ROOT
    from lmforge.tasks import OptimizerConfig

    recipe = yaml.safe_load((ROOT / "configs" / "recipes" / "encoder-small-budget.yaml").read_text())
    model, steps = recipe["model"]["init_args"], recipe["trainer"]["max_steps"]
    assert model["config"]["pre_norm"] is True and model["config"]["bias"] is False and model["nsp"] is False
    assert model["config"]["tie_embeddings"] is False  # its own MLM output matrix
    factor = OptimizerConfig(**model["optimizer"]).stage_factor("cosine", end=steps)
    curve = [factor(step) for step in range(steps + 1)]
    peak = max(range(steps + 1), key=curve.__getitem__)
    assert abs(peak - 0.75 * steps) <= 1 and curve[peak] == 1.0
    assert curve[0] < 0.01 and curve[steps] == 0.0
    rise, fall = curve[1] - curve[0], curve[peak + 1] - curve[peak + 2]
    assert all(abs((curve[s + 1] - curve[s]) - rise) < 1e-9 for s in range(peak - 1))  # straight lines
    assert all(abs((curve[s] - curve[s + 1]) - fall) < 1e-9 for s in range(peak + 1, steps))
