"""Real DDP: two gloo processes on the CPU, launched by Lightning from the console script,
checked against one process with twice the batch.

Every run carries ``ddp_probe.DdpProbe`` (tests/ddp_probe.py), which records per rank each
step's loss, sample ids and input ids, and the weights at the start and the end of training.

* GPT: 2 ranks x batch b and 1 process x batch 2b (same seed, same data) take the same steps:
  the mean of the ranks' losses is the one process's loss, the ranks read disjoint halves of the
  one process's batches, and the weights end equal (DDP averages the gradients).
* BERT through configs/trainer/ddp.yaml (static graph, ``nsp: false`` leaves heads unused): 2
  ranks train; each reads its own samples.
* A checkpoint written under 2-rank DDP continues on 1 process (batch 2b), and a 1-process
  checkpoint continues under 2-rank DDP (batch b), each exactly as the uninterrupted run.

The one-process runs run in this process (the ``lmforge`` CLI's ``main``); the DDP runs are the
console script in a subprocess, as a user starts them.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, ROOT
from lmforge.cli import main

pytestmark = pytest.mark.slow  # each DDP run starts two processes: tens of seconds

GPT_TINY = str(CONFIGS / "gpt" / "tiny.yaml")
BERT_TINY = str(CONFIGS / "bert" / "tiny.yaml")
B = 4  # batch per rank under DDP; the one-process runs take 2 * B
STEPS = 5  # steps of every GPT run
SAVED_AT = 3  # the step of best.ckpt (the one validation), where the cross resumes start
RUN_ARGS = [
    f"--trainer.max_steps={STEPS}", f"--trainer.val_check_interval={SAVED_AT}", "--trainer.limit_val_batches=1",
    "--trainer.num_sanity_val_steps=0", "--trainer.log_every_n_steps=1",
    "--model.init_args.config.dropout=0.0",
    # the schedule must not depend on max_steps: every run, resumed or not, takes the same learning rates
    "--model.init_args.optimizer.decay_steps=50",
    "--throughput.peak_flops=1e12",  # skip measuring the CPU
    "--sample.enabled=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
]
LOSS_TOL = {"rtol": 1e-5, "atol": 1e-6}  # fp32: the same sums in another order
WEIGHT_TOL = {"rtol": 1e-4, "atol": 1e-5}


@dataclass
class Run:
    """A finished run: its working folder, run folder and each rank's probe records."""

    workdir: Path
    folder: Path  # logs/<name>/version_0
    ranks: list[dict]  # rank r's ddp_probe JSON record
    weights: list[dict]  # rank r's {"start": state_dict, "end": state_dict}

    def steps(self, rank: int = 0) -> dict[int, dict]:
        return {s["global_step"]: s for s in self.ranks[rank]["steps"]}

    def checkpoint(self, name: str) -> dict:
        return torch.load(self.folder / "checkpoints" / name, map_location="cpu", weights_only=True)


def fit(workdir: Path, config: str, *args: str, ddp: bool, name: str = "gpt-tiny") -> Run:
    """``lmforge fit -c config`` in ``workdir`` with the probe (``args`` last, so they win): under
    2-rank DDP in a subprocess, or here on 1 process."""
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / "probe"
    argv = ["fit", "-c", config, *RUN_ARGS, *args,
            "--trainer.callbacks+=ddp_probe.DdpProbe", f"--trainer.callbacks.out_dir={probe}"]
    if ddp:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
               "OMP_NUM_THREADS": "1"}  # as this process runs (conftest): 2 ranks on a small machine
        strategy = [] if any(a.endswith("ddp.yaml") for a in args) else ["--trainer.strategy=ddp"]  # the config's
        cmd = [sys.executable, "-m", "lmforge", *argv, *strategy, "--trainer.devices=2"]
        result = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-4000:]
    else:
        cwd, err = os.getcwd(), io.StringIO()
        os.chdir(workdir)
        try:
            with contextlib.redirect_stderr(err):
                main(argv)
        except SystemExit as exit_info:  # a UserError, reported on stderr
            raise AssertionError(f"lmforge fit exited with {exit_info.code}: {err.getvalue()[-2000:]}") from exit_info
        finally:
            os.chdir(cwd)
            sys.stderr.write(err.getvalue())
    world = 2 if ddp else 1
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in range(world)]
    weights = [torch.load(probe / f"rank{r}.pt", weights_only=True) for r in range(world)]
    assert [r["world_size"] for r in ranks] == [world] * world
    return Run(workdir, workdir / "logs" / name / "version_0", ranks, weights)


@pytest.fixture(scope="module")
def gpt_runs(tmp_path_factory: pytest.TempPathFactory, isolated_cache: Path) -> dict[str, Run]:
    """The tiny GPT from the same seed for STEPS steps: on 1 process with batch 2B, and under DDP with B per rank."""
    root = tmp_path_factory.mktemp("gpt")
    single = fit(root / "single", GPT_TINY, f"--data.init_args.batch_size={2 * B}", ddp=False)
    ddp = fit(root / "ddp", GPT_TINY, f"--data.init_args.batch_size={B}", ddp=True)
    return {"single": single, "ddp": ddp}


def assert_same_weights(got: dict, want: dict, what: str, **tol: float) -> None:
    assert got.keys() == want.keys()
    for key in want:
        if not torch.allclose(got[key], want[key], **(tol or {"rtol": 0, "atol": 0})):
            diff = (got[key] - want[key]).abs().max().item()
            raise AssertionError(f"{what}: {key} differs by up to {diff:.3g}")


def assert_ddp_step_is_single_step(ddp: Run, single: Run, steps: list[int]) -> None:
    """At each of ``steps``: the ranks read disjoint halves of the one-process batch, and the
    mean of their losses is its loss."""
    ddp_steps = [ddp.steps(r) for r in range(2)]
    single_steps = single.steps()
    for step in steps:
        halves = [s[step] for s in ddp_steps]
        whole = single_steps[step]
        ids = [h["sample_ids"] for h in halves]
        assert all(len(i) == B for i in ids) and len(whole["sample_ids"]) == 2 * B
        assert not set(ids[0]) & set(ids[1]), f"step {step}: the ranks share samples {set(ids[0]) & set(ids[1])}"
        assert set(ids[0]) | set(ids[1]) == set(whole["sample_ids"]), f"step {step}: not the 1-process batch"
        rows = sorted(halves[0]["input_ids"] + halves[1]["input_ids"])
        assert rows == sorted(whole["input_ids"]), f"step {step}: the ranks' inputs are not the 1-process batch's"
        mean = (halves[0]["loss"] + halves[1]["loss"]) / 2
        assert math.isclose(mean, whole["loss"], rel_tol=LOSS_TOL["rtol"], abs_tol=LOSS_TOL["atol"]), (
            f"step {step}: mean DDP loss {mean!r} (ranks {halves[0]['loss']!r}, {halves[1]['loss']!r}) "
            f"!= 1-process loss {whole['loss']!r}"
        )


def test_gpt_two_ranks_take_the_steps_of_one_process_with_twice_the_batch(gpt_runs: dict[str, Run]) -> None:
    single, ddp = gpt_runs["single"], gpt_runs["ddp"]
    assert [sorted(ddp.steps(r)) for r in range(2)] == [list(range(1, STEPS + 1))] * 2
    assert sorted(single.steps()) == list(range(1, STEPS + 1))
    # the same initial weights (the seed), so any difference after is the training's
    assert_same_weights(ddp.weights[0]["start"], single.weights[0]["start"], "initial weights")
    losses = [s["loss"] for s in single.ranks[0]["steps"]]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses
    assert_ddp_step_is_single_step(ddp, single, list(range(1, STEPS + 1)))
    # DDP keeps the replicas identical, and averaged gradients make them the one process's weights
    assert_same_weights(ddp.weights[1]["end"], ddp.weights[0]["end"], "rank 1 vs rank 0")
    assert_same_weights(ddp.weights[0]["end"], single.weights[0]["end"], "DDP vs 1 process", **WEIGHT_TOL)
    assert not torch.equal(ddp.weights[0]["end"]["net.wte.weight"], ddp.weights[0]["start"]["net.wte.weight"])
    # one run folder, rank 0's checkpoint, at the last step
    assert ddp.checkpoint("last.ckpt")["global_step"] == STEPS
    # STEPS batches of B per rank, in epoch 0, with 2 ranks: the first 2 * STEPS * B items of the epoch's order
    sampler = ddp.checkpoint("last.ckpt")["BundledCorpus"]["sampler"]
    assert sampler == {**sampler, "epoch": 0, "position": 2 * STEPS * B, "num_replicas": 2}
    assert not (ddp.workdir / "logs" / "gpt-tiny" / "version_1").exists()
    assert_same_weights(ddp.checkpoint("last.ckpt")["state_dict"], ddp.weights[0]["end"], "last.ckpt")


def test_gpt_ranks_read_disjoint_data_through_the_epoch(gpt_runs: dict[str, Run]) -> None:
    ddp, single = gpt_runs["ddp"], gpt_runs["single"]
    seen = [[i for s in ddp.ranks[r]["steps"] for i in s["sample_ids"]] for r in range(2)]
    assert all(len(ids) == len(set(ids)) == STEPS * B for ids in seen)  # no sample twice on a rank
    assert not set(seen[0]) & set(seen[1])
    # together, exactly the samples the one process read, in the same steps
    assert set(seen[0]) | set(seen[1]) == {i for s in single.ranks[0]["steps"] for i in s["sample_ids"]}


def test_bert_trains_under_the_ddp_config_each_rank_on_its_own_samples(tmp_path: Path, isolated_cache: Path) -> None:
    """configs/trainer/ddp.yaml's strategy, unchanged, on two CPU processes. BERT with ``nsp: false``
    never uses its pooler and NSP head: DDP without unused-parameter search must still train
    (static_graph)."""
    steps = 3
    run = fit(tmp_path, BERT_TINY, "-c", str(CONFIGS / "trainer" / "ddp.yaml"), "--trainer.accelerator=cpu",
              "--trainer.precision=32-true", "--model.init_args.nsp=false", f"--data.init_args.batch_size={B}",
              f"--trainer.max_steps={steps}", f"--trainer.val_check_interval={steps}", ddp=True, name="bert-tiny")
    assert run.checkpoint("last.ckpt")["global_step"] == steps
    assert "net.pooler.weight" in run.checkpoint("last.ckpt")["state_dict"]  # the unused head is kept
    assert not (tmp_path / "logs" / "bert-tiny" / "version_1").exists()  # one run, not one per rank
    records = [run.steps(r) for r in range(2)]
    assert [sorted(r) for r in records] == [list(range(1, steps + 1))] * 2
    for step in range(1, steps + 1):
        a, b = records[0][step], records[1][step]
        assert math.isfinite(a["loss"]) and math.isfinite(b["loss"]) and a["loss"] > 0 and b["loss"] > 0
        assert len(a["sample_ids"]) == len(b["sample_ids"]) == B
        assert not set(a["sample_ids"]) & set(b["sample_ids"]), f"step {step}: the ranks share samples"
        assert a["input_ids"] != b["input_ids"]
    seen = [[i for s in records[r].values() for i in s["sample_ids"]] for r in range(2)]
    assert len(set(seen[0]) | set(seen[1])) == 2 * steps * B  # no sample read twice, on either rank
    assert_same_weights(run.weights[1]["end"], run.weights[0]["end"], "rank 1 vs rank 0")
    assert not torch.equal(run.weights[0]["end"]["net.wte.weight"], run.weights[0]["start"]["net.wte.weight"])


def resumed_from(source: Run, workdir: Path, ddp: bool) -> Run:
    """Continue ``source``'s step-SAVED_AT checkpoint to STEPS, on the other number of processes
    with the same global batch."""
    ckpt = source.folder / "checkpoints" / "best.ckpt"  # written at the validation of step SAVED_AT
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == SAVED_AT
    batch = B if ddp else 2 * B
    run = fit(workdir, GPT_TINY, f"--data.init_args.batch_size={batch}", "--ckpt_path", str(ckpt), ddp=ddp)
    # it starts from the checkpoint's weights, on every rank
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    for r, weights in enumerate(run.weights):
        assert_same_weights(weights["start"], state, f"rank {r}'s weights at the resume")
    world = len(run.ranks)
    assert [sorted(run.steps(r)) for r in range(world)] == [list(range(SAVED_AT + 1, STEPS + 1))] * world
    assert run.checkpoint("last.ckpt")["global_step"] == STEPS
    return run


def test_ddp_checkpoint_continues_on_one_process(gpt_runs: dict[str, Run], tmp_path: Path) -> None:
    """Steps SAVED_AT+1.. of 1 process x 2B resumed from the DDP run's checkpoint are those of the
    uninterrupted 1-process run: same data, same losses. The losses after the first resumed step
    and the final weights also need the optimizer's moments and the schedule's step restored."""
    single, ddp = gpt_runs["single"], gpt_runs["ddp"]
    resumed = resumed_from(ddp, tmp_path, ddp=False)
    after = list(range(SAVED_AT + 1, STEPS + 1))
    for step in after:
        got, want = resumed.steps()[step], single.steps()[step]
        assert set(got["sample_ids"]) == set(want["sample_ids"]), f"step {step}: not the next samples"
        assert sorted(got["input_ids"]) == sorted(want["input_ids"]), f"step {step}: not the next inputs"
        assert math.isclose(got["loss"], want["loss"], rel_tol=LOSS_TOL["rtol"], abs_tol=LOSS_TOL["atol"]), (
            f"step {step}: resumed loss {got['loss']!r} != uninterrupted {want['loss']!r}")
    assert_same_weights(resumed.weights[0]["end"], single.weights[0]["end"], "resumed vs uninterrupted", **WEIGHT_TOL)


def test_one_process_checkpoint_continues_under_ddp(gpt_runs: dict[str, Run], tmp_path: Path) -> None:
    """Steps SAVED_AT+1.. of 2 ranks x B resumed from the 1-process run's checkpoint are those of the
    uninterrupted 1-process run: each rank half of its batch, the mean loss its loss."""
    single = gpt_runs["single"]
    resumed = resumed_from(single, tmp_path, ddp=True)
    assert_ddp_step_is_single_step(resumed, single, list(range(SAVED_AT + 1, STEPS + 1)))
    assert_same_weights(resumed.weights[1]["end"], resumed.weights[0]["end"], "rank 1 vs rank 0")
    assert_same_weights(resumed.weights[0]["end"], single.weights[0]["end"], "resumed vs uninterrupted", **WEIGHT_TOL)


def test_a_mixture_splits_its_positions_over_ranks_and_validates_each_source(tmp_path: Path,
                                                                              isolated_cache: Path) -> None:
    """Two ranks read disjoint halves of the one process's mixture positions, step by step, and
    the per-source validation (summed over the ranks) is logged once, by name."""
    import yaml
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for name, word in (("general", "alpha"), ("domain", "kinase")):
        (tmp_path / name).mkdir()
        for d in range(12):
            (tmp_path / name / f"{d}.txt").write_text(" ".join(f"{word}{(d * 5 + i) % 17}" for i in range(80)))
    source = {name: {"class_path": "lmforge.data.TextCorpus",
                     "init_args": {"source": {"paths": str(tmp_path / name)}, "val_fraction": 0.2}}
              for name in ("general", "domain")}
    config = tmp_path / "mixture.yaml"
    config.write_text(yaml.safe_dump({"data": {"class_path": "lmforge.data.CorpusMixture", "init_args": {
        "sources": source, "weights": {"general": 0.3, "domain": 0.7}, "seq_len": 16}}}))
    runs = {ddp: fit(tmp_path / f"ddp{ddp}", GPT_TINY, "-c", str(config),
                     f"--data.init_args.batch_size={B if ddp else 2 * B}", ddp=ddp) for ddp in (False, True)}
    ids = [[runs[True].steps(r)[step]["sample_ids"] for r in range(2)] for step in range(1, STEPS + 1)]
    for step, (a, b) in enumerate(ids, 1):
        assert not set(a) & set(b) and sorted(a + b) == sorted(runs[False].steps()[step]["sample_ids"]), step
    for run in runs.values():
        events = EventAccumulator(str(run.folder))
        events.Reload()
        tags = events.Tags()["scalars"]
        assert {"val/loss", "val/loss/general", "val/loss/domain", "data/tokens/domain"} <= set(tags), tags
        (point,), (general,), (domain,) = (events.Scalars(f"val/loss{t}") for t in ("", "/general", "/domain"))
        assert point.value == pytest.approx(0.3 * general.value + 0.7 * domain.value, rel=1e-5)  # one validation
