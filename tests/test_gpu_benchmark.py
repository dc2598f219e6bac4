"""benchmarks/gpu.py: its CPU dry run end to end, until a GPU runs the real thing."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conftest import ROOT
from lmforge.models import GPT, Bert, BertConfig, GPTConfig

SCRIPT = ROOT / "benchmarks" / "gpu.py"
# The dry run's shape, written out here rather than read from the script, so a change there shows
TINY = {"n_layer": 2, "n_head": 2, "d_model": 64, "vocab_size": 512, "seq_len": 64, "micro_batch": 2}


def load_script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The script as a module (registered while the test runs: its dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location("lmforge_gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``python benchmarks/gpu.py --dry_run --lightning --json ...`` in a subprocess, as a user runs it."""
    out = tmp_path_factory.mktemp("gpu-bench") / "result.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, str(SCRIPT), "--dry_run", "--lightning", "--json", str(out)]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("GPT-2 small", "BERT-base", "SmolLM2-135M (Llama)", "MFU (net)", "MFU (run)", "dry run"):
        assert name in result.stdout  # the table was printed
    return json.loads(out.read_text())


def test_help_lists_the_flags(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = load_script(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        gpu.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--dry_run", "--smoke", "--models", "--steps", "--warmup", "--batch_size", "--grad_accum", "--compile",
                 "--lightning", "--peak_flops", "--json", "--sdpa"):
        assert flag in text
    with pytest.raises(SystemExit) as exit_info:
        gpu.parse_args(["--models", "gpt2,t9", "--dry_run"])
    assert exit_info.value.code == 2
    for flag in ("--dry_run", "--smoke"):  # --smoke: the name of every benchmark's smoke run
        _, settings = gpu.parse_args([flag])
        assert (settings.device, settings.precision, settings.compile, settings.dry_run) == ("cpu", "fp32", False, True)


@pytest.mark.slow
def test_dry_run_reports_every_model(dry_run: dict) -> None:
    assert dry_run["dry_run"] is True
    assert set(dry_run["models"]) == {"gpt2", "bert", "smollm2"}
    peak = dry_run["peak_flops"]
    assert peak is not None and math.isfinite(peak) and peak > 0  # the CPU's measured matmul rate
    settings = dry_run["settings"]
    for model in dry_run["models"].values():
        assert model["tokens_per_step"] == TINY["micro_batch"] * TINY["seq_len"] * model["grad_accum"]
        assert set(model["runs"]) == {"raw", "lightning"}
        for run in model["runs"].values():
            assert len(run["tokens_per_sec_rounds"]) == settings["rounds"]
            assert all(math.isfinite(x) and x > 0 for x in run["tokens_per_sec_rounds"])
            assert run["tokens_per_sec"] > 0 and math.isfinite(run["tokens_per_sec"])
            assert math.isclose(run["step_ms"], 1000 * model["tokens_per_step"] / run["tokens_per_sec"])
            assert math.isclose(run["mfu"], run["tokens_per_sec"] * model["flops_per_token"] / peak)
            assert 0 < run["mfu_run"] <= run["mfu"]
            assert run["passed"] is None  # targets are for GPUs, not judged in a dry run
            # random init: the loss of a uniform guess over the vocabulary, through the real loss path
            for loss in (run["loss_first"], run["loss_last"]):
                assert abs(loss - math.log(TINY["vocab_size"])) < 0.5


def shape_of(model: dict) -> dict:
    shape = model["shape"]
    assert {k: shape[k] for k in ("n_layer", "n_head", "d_model", "vocab_size", "seq_len")} == {
        k: TINY[k] for k in ("n_layer", "n_head", "d_model", "vocab_size", "seq_len")
    }
    assert model["micro_batch"] == TINY["micro_batch"]
    return {k: v for k, v in shape.items() if k != "seq_len"}


def test_gpt_flops_are_the_networks(dry_run: dict) -> None:
    model = dry_run["models"]["gpt2"]
    net = GPT(GPTConfig(**shape_of(model)))
    assert model["flops_per_token"] == net.flops_per_token(TINY["seq_len"])
    assert model["flops_per_token_run"] == model["flops_per_token"]  # every position is predicted
    assert model["num_params"] == net.num_params()
    assert model["masked_fraction"] is None
    # no dropout: the Lightning run does the very same steps as the raw loop (clipping, schedule, updates)
    raw, lightning = model["runs"]["raw"], model["runs"]["lightning"]
    assert math.isclose(raw["loss_first"], lightning["loss_first"], rel_tol=1e-6)
    assert math.isclose(raw["loss_last"], lightning["loss_last"], rel_tol=1e-5)
    assert raw["loss_last"] != raw["loss_first"]  # the weights were updated


def test_bert_flops_are_the_networks_less_the_unrun_heads(dry_run: dict) -> None:
    model = dry_run["models"]["bert"]
    net = Bert(BertConfig(**shape_of(model)))
    flops = net.flops_per_token(TINY["seq_len"])
    assert model["flops_per_token"] == flops
    d, v = TINY["d_model"], TINY["vocab_size"]
    fraction = model["masked_fraction"]
    assert 0.08 < fraction < 0.2  # ~15% of the positions between [CLS] and [SEP]
    mlm_head = (d * d + d) + 2 * d + v  # dense, LayerNorm, output bias
    pooler_nsp = (d * d + d) + (2 * d + 2)
    expected = flops - 6 * (1 - fraction) * (mlm_head + v * d) - 6 * pooler_nsp
    assert math.isclose(model["flops_per_token_run"], expected, rel_tol=1e-12)
    assert model["flops_per_token_run"] < flops


def test_llama_flops_are_the_networks_and_it_trains(dry_run: dict) -> None:
    from lmforge.models import Llama, LlamaConfig

    model = dry_run["models"]["smollm2"]
    shape = shape_of(model)
    assert (shape["n_kv_head"], shape["d_ff"], shape["tie_embeddings"]) == (1, 128, True)  # the dry run's GQA shape
    net = Llama(LlamaConfig(**shape))
    assert model["flops_per_token"] == net.flops_per_token(TINY["seq_len"]) == model["flops_per_token_run"]
    assert model["num_params"] == net.num_params()
    raw, lightning = model["runs"]["raw"], model["runs"]["lightning"]
    assert math.isclose(raw["loss_first"], lightning["loss_first"], rel_tol=1e-6)
    assert raw["loss_last"] != raw["loss_first"]
