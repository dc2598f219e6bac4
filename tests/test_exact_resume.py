"""Interrupted and resumed runs equal uninterrupted ones, bit for bit (issue 7: exact resume,
preemption, schedule and TensorBoard continuity).

Every case runs ``lmforge fit`` three times in fresh processes: N steps without a break; the
same run stopped by a real signal (sent by the OS to the running process, from inside at a
chosen batch or from this test at whatever step the run has reached); and its resume with
``--ckpt_path last``. GPT has dropout on and Muon training its blocks; BERT draws random
whole-word masks with 2 DataLoader workers and gradient accumulation.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import CONFIGS, ROOT

pytestmark = pytest.mark.slow  # each case runs lmforge fit three times in fresh processes

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
STEPS = 10
CASES = {
    # family: (config, extra arguments)
    # Muon for the blocks' matrices, AdamW for the rest: both optimizers' states in one checkpoint
    # (the BERT case keeps AdamW alone)
    "gpt-dropout-muon": ("gpt/tiny.yaml", ["--model.config.dropout=0.1", "--model.optimizer.name=muon"]),
    # random masks, 2 DataLoader workers and gradient accumulation in one case (T5's spans draw
    # from the same per-step random stream as BERT's masks: lmforge.tasks.rng)
    "bert-wwm-2-workers-accumulate": ("bert/tiny.yaml", ["--model.nsp=false", "--model.whole_word=true",
                                                         "--data.num_workers=2", "--trainer.accumulate_grad_batches=2"]),
}


def fit(folder: Path, config: str, extra: list[str], *args: str, wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    # one CPU thread: multithreaded kernels do not promise the same float sums from process to process (on 2
    # cores, beside the other pytest worker, train/loss came out an ulp or a few apart about every other run,
    # never single-threaded), and what this compares is lmforge's saved and restored state, not the BLAS
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lmforge", "fit", "-c", str(CONFIGS / config), f"--trainer.max_steps={STEPS}",
           "--trainer.log_every_n_steps=1", "--trainer.val_check_interval=4", "--trainer.limit_val_batches=2",
           "--data.max_documents=60", "--sample.enabled=false", "--trainer.logger.init_args.name=run", *QUIET,
           *extra, *args]
    folder.mkdir(parents=True, exist_ok=True)
    if not wait:
        return subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    result = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def signal_at(batch: int, name: str) -> list[str]:
    return ["--trainer.callbacks+=signal_at_step.SignalAtStep", f"--trainer.callbacks.batch={batch}",
            f"--trainer.callbacks.signal_name={name}"]


def curves(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run folder as (step, value), as TensorBoard shows them (points that
    a restart superseded are dropped, as TensorBoard drops them)."""
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def assert_same_run(full: Path, resumed: Path) -> None:
    a, b = curves(full), curves(resumed)
    for tag in ("train/loss", "lr", "val/loss"):
        steps = [s for s, _ in b[tag]]
        assert steps == sorted(set(steps)), f"{tag}: steps repeat or go back: {steps}"
        assert b[tag] == a[tag], tag  # the same points, bit for bit: none missing, none twice
    assert len(a["train/loss"]) == STEPS
    wa, wb = weights(full), weights(resumed)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    runs = {}
    for case, (config, extra) in CASES.items():
        folder = tmp_path_factory.mktemp(f"full-{case}")
        fit(folder, config, extra)
        runs[case] = folder / "logs" / "run" / "version_0"
    return runs


def test_signal_mid_run_then_resume_equals_the_uninterrupted_run(tmp_path: Path, uninterrupted: dict[str, Path]) -> None:
    case, batch, name, step = "bert-wwm-2-workers-accumulate", 7, "SIGUSR1", 4
    config, extra = CASES[case]
    stopped = fit(tmp_path, config, extra, *signal_at(batch, name))
    run = tmp_path / "logs" / "run" / "version_0"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # 2 batches per step: the signal after batch 7 waits for the step that ends at batch 8, step 4,
    # where a validation is due: it runs before the exit
    assert ckpt["global_step"] == step, ckpt["global_step"]
    assert f"{name} received: stopped after step {step}" in stopped.stdout + stopped.stderr
    assert len(curves(run)["train/loss"]) == step
    fit(tmp_path, config, extra, "--ckpt_path", "last")
    assert not (tmp_path / "logs" / "run" / "version_1").exists()  # continued in its own folder
    assert_same_run(uninterrupted[case], run)


def step_reached(progress: Path) -> int:
    """The step the run wrote to ``progress``, read once (-1 before the first write)."""
    text = progress.read_text() if progress.exists() else ""
    return int(text) if text.strip() else -1


def test_sigterm_from_outside_then_resume_equals_the_uninterrupted_run(tmp_path: Path,
                                                                       uninterrupted: dict[str, Path]) -> None:
    """The test sends SIGTERM to the running ``lmforge fit`` once it has trained a few steps."""
    config, extra = CASES["gpt-dropout-muon"]
    progress = tmp_path / "step"
    process = fit(tmp_path, config, extra, "--trainer.callbacks+=signal_at_step.SignalAtStep",
                  f"--trainer.callbacks.progress_file={progress}", wait=False)
    deadline = time.monotonic() + 300
    while step_reached(progress) < 2:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0][-3000:]
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output[-3000:]
    run = tmp_path / "logs" / "run" / "version_0"
    stopped_at = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    assert 2 <= stopped_at < STEPS, output[-3000:]  # the signal arrived mid-run
    assert f"SIGTERM received: stopped after step {stopped_at}" in output
    fit(tmp_path, config, extra, "--ckpt_path", "last")
    assert_same_run(uninterrupted["gpt-dropout-muon"], run)


def test_a_save_killed_halfway_leaves_the_last_good_checkpoint(tmp_path: Path,
                                                                uninterrupted: dict[str, Path]) -> None:
    """SIGKILL in the second save of last.ckpt (step 8), halfway: last.ckpt stays the complete step-4
    file, `--ckpt_path last` passes over a newer but incomplete checkpoint, and the resumed run
    still equals the uninterrupted one."""
    config, extra = CASES["gpt-dropout-muon"]
    args = ["--trainer.callbacks+=signal_at_step.KillMidSave", "--trainer.callbacks.save=2"]
    process = fit(tmp_path, config, extra, *args, wait=False)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == -signal.SIGKILL, output[-3000:]
    folder = tmp_path / "logs" / "run" / "version_0" / "checkpoints"
    partial = list(folder.glob(".last.ckpt.partial-*"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0  # the torn write, beside the good file
    assert torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 4
    # SIGKILL gave no chance to save: the points logged after the step-4 checkpoint are superseded
    # in TensorBoard by the resumed run's, not doubled (assert_same_run below)
    assert [s for s, _ in curves(folder.parent)["train/loss"]][-1] >= 5
    # a torn file of a writer that is not atomic, newer than last.ckpt: never picked
    (folder / "torn.ckpt").write_bytes(partial[0].read_bytes())
    resumed = fit(tmp_path, config, extra, "--ckpt_path", "last")
    said = resumed.stdout + resumed.stderr
    assert "'logs/run/version_0/checkpoints/torn.ckpt' is incomplete (its write was cut short): moved aside" in said
    assert (folder / "torn.ckpt.torn").is_file() and not (folder / "torn.ckpt").exists()  # kept, out of the way
    assert not list(folder.glob(".last.ckpt.partial-*"))  # cleaned up by the next save
    assert_same_run(uninterrupted["gpt-dropout-muon"], tmp_path / "logs" / "run" / "version_0")
