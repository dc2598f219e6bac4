"""Watching pretraining: ``--zeroshot.tasks`` scores task files after validations and logs
``zeroshot/<task>/<metric>`` to TensorBoard without stopping the run; the last point equals
the task scored afterwards from the run's checkpoint; a bad task file stops the run before its
first step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import fit_tiny_gpt, refused
from lmforge.evaluation.likelihood import open_scorer
from lmforge.evaluation.prompt_tasks import read_task
from lmforge.evaluation.zero_shot import score_task
from test_cli import scalars

ROWS = [{"q": f"The {w} sat on the", "a": "mat", "b": "sky"} for w in ("cat", "dog", "bird", "fox", "man")]


def task(folder: Path, prompt: str = "{q}") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "probe.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    path = folder / "probe.yaml"
    path.write_text(f"kind: multiple_choice\ndata: {{path: probe.jsonl, split: train}}\nprompt: '{prompt}'\n"
                    "choices: ['{a}', '{b}']\ngold: 0\n")
    return path


def test_zero_shot_scores_are_logged_during_pretraining_and_match_the_checkpoint(tmp_path: Path) -> None:
    probe = task(tmp_path / "tasks")
    fit_tiny_gpt(tmp_path / "run", 6, f"--zeroshot.tasks=[{probe}]", "--trainer.num_sanity_val_steps=1")
    run = tmp_path / "run" / "logs" / "gpt-tiny" / "version_0"
    found = scalars(run)
    steps = [step for step, _ in found["zeroshot/probe/acc"]]
    # the untrained model (the sanity check), then beside val/loss after each validation
    assert steps == [step for step, _ in found["val/loss"]] and len(steps) == 3 and steps[0] == 0
    assert "zeroshot/probe/acc_norm" in found
    scored, _ = score_task(read_task(probe), open_scorer(str(run / "checkpoints" / "last.ckpt")))
    assert found["zeroshot/probe/acc"][-1][1] == pytest.approx(scored["acc"])
    assert found["zeroshot/probe/acc_norm"][-1][1] == pytest.approx(scored["acc_norm"])


def test_a_bad_probe_task_stops_the_run_before_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    probe = task(tmp_path / "tasks", prompt="{question}")
    said = refused(capsys, "fit", "-c", "configs/gpt/tiny.yaml", f"--zeroshot.tasks=[{probe}]")
    assert "uses field 'question', which item 0 lacks" in said
