"""Every benchmark script's ``--smoke`` run, end to end, so a change that breaks a benchmark fails here.

Each script runs as a user runs it -- ``python benchmarks/<script>.py --smoke`` in a subprocess
from the repository root -- at tiny shapes on the stand-ins of ``benchmarks/standins.py``: no
network, no GPU, no ``../shared`` data. The speeds and scores they print mean nothing at that size
and are not checked; that the run finishes, prints its report, and keeps the invariants a real run
shows whatever the model (same losses, same embeddings, no padding in the shards) is.
``benchmarks/gpu.py``'s smoke run (``--dry_run``) is tested in ``test_gpu_benchmark.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # each one is a subprocess of tens of seconds on 2 CPU cores


def smoke(script: str, *args: str) -> tuple[str, dict[str, Any]]:
    """Run ``benchmarks/<script> [args] --smoke``; its stdout and the JSON object of its last line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *args, "--smoke"]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(cmd[1:])} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    assert "SMOKE RUN" in result.stdout  # says its figures are not meaningful
    lines = result.stdout.strip().splitlines()
    return result.stdout, json.loads(lines[-1]) if lines[-1].startswith("{") else {}


def test_throughput() -> None:
    out, summary = smoke("throughput.py")
    assert summary["smoke"] is True and summary["families"] == ["gpt", "bert", "t5", "elmo"]
    for name in summary["families"]:
        family = summary[name]
        assert len(family["tokens_per_sec"]) == 3  # (a), (b) and (c) all ran
        assert all(run["median"] > 0 for run in family["tokens_per_sec"].values())
        assert all(target["met"] is None for target in family["targets"].values())  # not judged
        # (b) is the same model, batches and updates as (a) in a hand-written loop
        assert family["loss_max_abs_diff_a_b"] < 1e-4, name
    for title in ("GPT causal LM", "BERT masked LM", "T5 span corruption", "ELMo bidirectional LM"):
        assert title in out


def test_prepare() -> None:
    out, _ = smoke("prepare.py")
    for line in ("1. speed: lmforge prepare", "2. peak memory", "3. data wait, tiny GPT"):
        assert line in out
    assert out.count("not judged (smoke)") == 3


def test_real_weights() -> None:
    pytest.importorskip("sentence_transformers")  # the reference it compares against (not in the test extra)
    _, summary = smoke("real_weights.py")
    embeddings, cpt = summary["embeddings"], summary["continued_pretraining"]
    assert embeddings["sentences"] == 80
    assert embeddings["cosine_min"] > 0.999  # lmforge predict embeds as sentence-transformers does
    assert cpt["shard_tokens"] == cpt["expected_tokens"] and cpt["pad_ids_in_shards"] == 0
    assert cpt["as_saved_pad_ids"] > 0  # the folder's saved padding, which lmforge does not apply
    assert cpt["fit_prepared_again"] is False and cpt["train_loss_last"] is not None


def test_simcse_sts() -> None:
    out, summary = smoke("simcse_sts.py")
    assert summary["passed"] is None  # not judged
    assert set(summary["sts_spearman_x100"]) == {"random_init_mean", "mlm_mean", "mlm_cls", "simcse_mean"}
    assert summary["mlm"]["steps"] == 4 and summary["simcse"]["steps"] == 2
    assert "| encoder" in out


def test_dapt_ohsumed() -> None:
    _, summary = smoke("dapt_ohsumed.py")
    assert set(summary["ohsumed"]) == {"random init", "general", "general+domain"}
    assert set(summary["sst2"]) == {"random init", "general"}
    assert "val/acc mean" in summary["sst2"]["general"]


def test_downstream_parity() -> None:
    pytest.importorskip("seqeval")  # the reference's entity F1 (not in the test extra)
    out, summary = smoke("downstream.py", "parity")
    tasks = ("jnlpba", "sciie-ner", "sciie-rel", "citation", "ohsumed")
    for task in tasks:
        assert f"| {task} |" in out
        assert len(summary["results"][task]["lmforge"]) == len(summary["results"][task]["reference"]) == 1
        assert summary["results"][task]["reference"][0]["order"] == "lmforge"  # the same batches on both sides


def test_downstream_helps() -> None:
    # an entity task and the relation task (entity_start pooling): the starts, and continued pretraining
    out, summary = smoke("downstream.py", "helps", "--tasks", "jnlpba,sciie-rel")
    assert "| task | metric | MiniLM | random init | MiniLM + MLM on OHSUMED |" in out
    for task in ("jnlpba", "sciie-rel"):
        assert len(summary["results"][task]["MiniLM + MLM on OHSUMED"]) == 1
    assert summary["results"]["mlm_checkpoint"].endswith("last.ckpt")
