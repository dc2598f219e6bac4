"""Schedules across a stop and resume, read back from TensorBoard's ``lr``: a WSD run decays from
its stable-phase checkpoint when the command line says so (command-line settings win over the
checkpoint's), and a new ``optimizer.stage`` re-warms from another run's full checkpoint, on
other data, keeping or resetting AdamW's moments."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import CONFIGS, fit_tiny_gpt, refused
from lmforge.tasks import CausalLMTask

PEAK = 3e-3  # configs/gpt/tiny.yaml's lr
STABLE = ["--model.optimizer.schedule=wsd", "--model.optimizer.warmup_steps=2", "--model.optimizer.decay_steps=100"]


def run_folder(folder: Path, version: int) -> Path:
    return folder / "logs" / "gpt-tiny" / f"version_{version}"


def last(folder: Path) -> dict:
    return torch.load(run_folder(folder, 0) / "checkpoints" / "last.ckpt", weights_only=True)


def rates(folder: Path, version: int) -> dict[int, float]:
    """The ``lr`` scalar of a run folder's event files, by step (a resumed run's file adds its steps)."""
    found: dict[int, float] = {}
    for events in sorted(run_folder(folder, version).glob("events.out.tfevents.*")):
        board = EventAccumulator(str(events))
        board.Reload()
        found.update((e.step, e.value) for e in board.Scalars("lr"))
    return found


@pytest.fixture(scope="module")
def stable_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A WSD run stopped at step 6, in its stable phase (its cooldown would end at step 100)."""
    folder = tmp_path_factory.mktemp("stable")
    fit_tiny_gpt(folder, 6, *STABLE)
    return folder


@pytest.fixture
def copy(stable_run: Path, tmp_path: Path) -> Path:
    shutil.copytree(stable_run, tmp_path / "run")
    return tmp_path / "run"


def test_a_stable_phase_checkpoint_decays_from_its_step_when_the_command_line_says_so(copy: Path) -> None:
    ckpt = fit_tiny_gpt(copy, 10, *STABLE, "--ckpt_path", "last", "--model.optimizer.decay_steps=10",
                        "--model.optimizer.cooldown_steps=4", "--model.config.n_layer=3")
    lr = rates(copy, 0)
    assert sorted(lr) == list(range(10))  # one run folder, the steps continue
    assert [lr[s] / PEAK for s in range(2, 7)] == pytest.approx([1.0] * 5)  # stable, and continuous at step 6
    assert [lr[s] / PEAK for s in (7, 8, 9)] == pytest.approx([0.775, 0.55, 0.325])  # the cooldown to 0.1 at 10
    assert ckpt["hyper_parameters"]["optimizer"]["decay_steps"] == 10  # a further resume keeps the decay
    assert ckpt["lmforge"]["model_config"]["n_layer"] == 2  # the network's shape stays the checkpoint's


def _capture_moments(monkeypatch: pytest.MonkeyPatch) -> list[list[torch.Tensor]]:
    """AdamW's first moments as training starts, after the checkpoint was restored (one list per fit)."""
    seen: list[list[torch.Tensor]] = []

    def on_train_start(task: CausalLMTask) -> None:
        optimizer = task.optimizers().optimizer
        seen.append([optimizer.state[p]["exp_avg"].clone() if p in optimizer.state else None
                     for group in optimizer.param_groups for p in group["params"]])

    monkeypatch.setattr(CausalLMTask, "on_train_start", on_train_start)
    return seen


@pytest.mark.parametrize("reset", [False, True])
def test_a_new_stage_rewarms_from_another_runs_checkpoint_on_other_data(copy: Path, reset: bool,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _capture_moments(monkeypatch)
    source = last(copy)
    stage = ["--ckpt_path", str(run_folder(copy, 0) / "checkpoints" / "last.ckpt"), "--model.optimizer.stage=1",
             "--model.optimizer.lr=2e-3", "--model.optimizer.decay_steps=10", "--model.optimizer.cooldown_steps=2",
             f"--model.optimizer.reset_state={str(reset).lower()}", "--data.max_documents=40"]  # other data
    first = fit_tiny_gpt(copy, 8, *STABLE, *stage, version=1)
    # stage 1 writes a run folder of its own, its steps going on from the checkpoint's
    lr = rates(copy, 1)
    assert sorted(lr) == [6, 7]
    assert [lr[6] / 2e-3, lr[7] / 2e-3] == pytest.approx([0.5, 1.0])  # warmed up again to the new peak
    moments = [source["optimizer_states"][0]["state"][i]["exp_avg"] for i in range(len(seen[0]))]
    if reset:
        assert all(m is None for m in seen[0])  # AdamW starts its moments afresh
    else:
        assert all(torch.equal(a, b) for a, b in zip(seen[0], moments))
    assert first["lmforge"]["stage"] == 1
    assert first["optimizer_states"][0]["state"][0]["step"] == (2 if reset else 8)
    # stopped at step 8, the stage resumes with the same command line: it goes on, not warmed up again
    fit_tiny_gpt(copy, 10, *STABLE, *stage[2:], "--ckpt_path", "last", version=1)
    lr = rates(copy, 1)
    assert sorted(lr) == [6, 7, 8, 9]
    assert [lr[8] / 2e-3, lr[9] / 2e-3] == pytest.approx([1.0, 0.55])  # stable, then cooling down to step 10
    assert last(copy)["global_step"] == 6  # the source run is untouched


def test_a_stage_that_cannot_warm_up_before_its_end_is_refused(copy: Path, capsys: pytest.CaptureFixture,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(copy)
    line = refused(capsys, "fit", "-c", str(CONFIGS / "gpt" / "tiny.yaml"), "--trainer.max_steps=8",
                   "--data.max_documents=60", *STABLE, "--ckpt_path", "last", "--model.optimizer.stage=1",
                   "--model.optimizer.decay_steps=8", "--model.optimizer.warmup_steps=5")
    assert line.endswith("optimizer.warmup_steps=5: stage 1 would warm up from the checkpoint's step 6 to 11, past "
                         "optimizer.decay_steps=8: give fewer warmup steps or a later end.")
    assert not run_folder(copy, 1).exists()  # refused before anything was written
