"""The optimizer choice: Muon trains exactly the hidden matrices, AdamW the rest, as one
optimizer whose state round-trips; ``--model.optimizer.name muon`` trains and resumes bit for bit."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn

from conftest import fit_tiny_gpt
from lmforge.errors import UserError
from lmforge.models import GPT, T5, Bert, BertConfig, Elmo, ElmoConfig, GPTConfig, T5Config
from lmforge.tasks import CausalLMTask
from lmforge.tasks.optim import MuonAdamW, OptimizerConfig, build_optimizer, hidden_matrices

NETWORKS = {
    "gpt": lambda: GPT(GPTConfig(vocab_size=64, max_seq_len=16, n_layer=2, n_head=2, d_model=32)),
    "bert": lambda: Bert(BertConfig(vocab_size=64, max_seq_len=16, n_layer=2, n_head=2, d_model=32)),
    "t5": lambda: T5(T5Config(vocab_size=64, max_seq_len=16, d_model=16, d_kv=8, d_ff=32, n_layer=1, n_head=2,
                              tie_embeddings=False)),
}


def _names(net: nn.Module, params: list[nn.Parameter]) -> set[str]:
    names = {id(p): n for n, p in net.named_parameters()}
    return {names[id(p)] for p in params}


@pytest.mark.parametrize("family", NETWORKS)
def test_muon_and_adamw_groups_hold_every_parameter_once(family: str) -> None:
    net = NETWORKS[family]()
    optimizer = build_optimizer(net, OptimizerConfig(name="muon"))
    assert isinstance(optimizer, MuonAdamW)
    held = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(held) == len({id(p) for p in held}) == len(list(net.parameters()))
    muon = _names(net, [p for g in optimizer.muon.param_groups for p in g["params"]])
    assert muon and all(".blocks." in f".{n}" and n.endswith(".weight") for n in muon)
    assert all(p.ndim == 2 for g in optimizer.muon.param_groups for p in g["params"])
    adamw = _names(net, [p for g in optimizer.adamw.param_groups for p in g["params"]])
    heads = {n for n in adamw if "wte" in n or "shared" in n or "lm_head" in n or "mlm_head" in n}
    assert heads, "embeddings and output heads belong to AdamW"


def test_a_network_without_blocks_is_refused_muon() -> None:
    net = Elmo(ElmoConfig(vocab_size=64, max_seq_len=16, token_repr="embedding", hidden_size=16, projection_size=8,
                          n_layer=1))
    with pytest.raises(UserError, match="optimizer.name=adamw"):
        build_optimizer(net, OptimizerConfig(name="muon"))


@pytest.mark.parametrize("frozen", ["adamw", "muon"])
def test_each_optimizer_moves_only_its_own_parameters(frozen: str) -> None:
    """With one side's learning rate 0 (and no weight decay), only the other side's parameters change."""
    torch.manual_seed(0)
    net = NETWORKS["gpt"]()
    lrs = {"lr": 0.0, "muon_lr": 0.02} if frozen == "adamw" else {"lr": 1e-2, "muon_lr": 0.0}
    optimizer = build_optimizer(net, OptimizerConfig(name="muon", weight_decay=0.0, **lrs))
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    net(torch.randint(0, 64, (2, 16))).logsumexp(-1).mean().backward()
    optimizer.step()
    changed = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    muon = _names(net, hidden_matrices(net))
    assert changed == (muon if frozen == "adamw" else set(before) - muon)


def test_state_dict_round_trips_both_optimizers() -> None:
    torch.manual_seed(0)
    net, x = NETWORKS["gpt"](), torch.randint(0, 64, (2, 16))
    optimizer = build_optimizer(net, OptimizerConfig(name="muon"))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    for _ in range(2):
        net(x).mean().backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    twin = copy.deepcopy(net)
    twin_optimizer = build_optimizer(twin, OptimizerConfig(name="muon"))
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    assert twin_optimizer.muon.param_groups[0]["lr"] == optimizer.muon.param_groups[0]["lr"] == pytest.approx(0.02 / 3)
    for model, opt in ((net, optimizer), (twin, twin_optimizer)):
        model(x).mean().backward()
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), twin.parameters()))


def test_muon_from_the_command_line_trains_and_resumes_bit_for_bit(tmp_path: Path) -> None:
    whole = fit_tiny_gpt(tmp_path / "whole", 6, "--model.optimizer.name", "muon")
    assert len(whole["optimizer_states"][0]["param_groups"]) == 2  # AdamW's (no decay) and Muon's
    assert whole["hyper_parameters"]["optimizer"]["name"] == "muon"
    assert all(math.isfinite(v.float().sum()) for v in whole["state_dict"].values())
    fit_tiny_gpt(tmp_path / "split", 3, "--model.optimizer.name", "muon")
    split = fit_tiny_gpt(tmp_path / "split", 6, "--model.optimizer.name", "muon", "--ckpt_path", "last")
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, split["state_dict"][key]), key


def test_muon_is_refused_under_fsdp() -> None:
    task = CausalLMTask(config=GPTConfig(vocab_size=64, max_seq_len=16, n_layer=1, n_head=2, d_model=16),
                        optimizer=OptimizerConfig(name="muon"))
    task._trainer = SimpleNamespace(strategy=FSDPStrategy())
    with pytest.raises(UserError, match="ddp"):
        task.build_optimizer(task.net)


@pytest.mark.parametrize("values, says", [
    ({"lr": -3e-3}, "optimizer.lr=-0.003 is out of range: give a learning rate >= 0."),
    ({"muon_lr": -0.02}, "optimizer.muon_lr=-0.02 is out of range"),
    ({"lr": float("nan")}, "optimizer.lr=nan is out of range"),
    ({"betas": (0.9, 1.0)}, "optimizer.betas=[0.9, 1.0] is out of range: give two numbers in [0, 1)"),
    ({"betas": (0.9,)}, "optimizer.betas=[0.9] must be two numbers"),
    ({"eps": 0.0}, "optimizer.eps=0.0 is out of range: give a small number > 0"),
    ({"weight_decay": -0.1}, "optimizer.weight_decay=-0.1 is out of range"),
    ({"muon_weight_decay": -1.0}, "optimizer.muon_weight_decay=-1.0 is out of range"),
    ({"muon_momentum": 1.0}, "optimizer.muon_momentum=1.0 is out of range"),
    ({"warmup_steps": -1}, "optimizer.warmup_steps=-1 is out of range"),
    ({"decay_steps": 0}, "optimizer.decay_steps=0 is out of range"),
    ({"min_lr_ratio": 1.5}, "optimizer.min_lr_ratio=1.5 is out of range: give a fraction of the peak in [0, 1]."),
    ({"name": "sgd"}, "optimizer.name='sgd' is unknown: use adamw or muon."),
])
def test_an_out_of_range_optimizer_value_is_one_sentence_naming_its_key(values: dict, says: str) -> None:
    with pytest.raises(UserError) as refused:
        OptimizerConfig(**values)
    assert str(refused.value).startswith(says)


def test_the_edges_of_the_ranges_are_accepted() -> None:
    """lr 0 freezes what it drives (used above for one side of muon); a floor of 0 or 1, no warmup."""
    OptimizerConfig(lr=0.0, muon_lr=0.0, betas=(0.0, 0.999), weight_decay=0.0, warmup_steps=0, min_lr_ratio=0.0)
    OptimizerConfig(min_lr_ratio=1.0, decay_steps=1)


def test_a_negative_lr_is_refused_before_a_tokenizer_or_run_folder_exists(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked right after parsing: no tokenizer trained (an empty cache stays empty), no logs/,
    no event file, exit status 2."""
    from conftest import CONFIGS
    from test_first_hour import files, refused

    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "notes.txt").write_text("kept\n")
    before = files(work)
    line = refused(capsys, "fit", "-c", str(CONFIGS / "gpt" / "tiny.yaml"), "--model.optimizer.lr=-3e-3")
    assert line == "lmforge: error: optimizer.lr=-0.003 is out of range: give a learning rate >= 0."
    assert files(work) == before and not (tmp_path / "cache").exists()
