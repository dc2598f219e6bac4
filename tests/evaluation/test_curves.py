"""``lmforge evaluate --train_sizes``: learning curves, one run per (task, size, start, seed), each
a ``fit`` on a subsample with the step rule's arguments; the size in runs.csv, the summary,
``curve.png`` and TensorBoard."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import lmforge.evaluation.downstream_data as downstream
from conftest import CONFIGS
from lmforge.cli import main
from lmforge.errors import UserError
from lmforge.evaluation import evaluate
from lmforge.evaluation.report import write_summary

FINETUNE = CONFIGS / "finetune" / "tiny.yaml"
PNG = b"\x89PNG\r\n\x1a\n"


class FakeFit:
    """Records every run's arguments; its val/acc is the run's number over 100."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, args: list[str]) -> dict[str, float]:
        self.calls.append(args)
        return {"val/acc": len(self.calls) / 100}


def test_each_size_is_a_fit_on_a_subsample_with_a_fixed_step_budget(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.save({"lmforge": {"model_config": {}}}, tmp_path / "a.ckpt")
    fit = FakeFit()
    evaluate(["a.ckpt", "hf:org/b"], recipe=[str(FINETUNE)], seeds=2, random_baseline=False,
             out=str(tmp_path / "out"), train_sizes=["all", 40, 8], curve_steps=5, fit=fit)
    assert len(fit.calls) == 12  # 3 sizes x 2 starts x 2 seeds, smallest size first
    step_rule = {"--trainer.max_steps=5", "--trainer.max_epochs=-1", "--trainer.val_check_interval=5",
                 "--trainer.check_val_every_n_epoch=null"}
    for call, size in zip(fit.calls, [8] * 4 + [40] * 4 + ["all"] * 4):
        sized = [a for a in call if a.startswith("--data.train_size")]
        if size == "all":  # the whole split, trained as the recipe says
            assert not sized and not step_rule & set(call)
        else:
            assert sized == [f"--data.train_size={size}"] and step_rule <= set(call)
    assert "--trainer.logger.version=n8_seed_1" in fit.calls[1] and "--model.init_from=hf:org/b" in fit.calls[2]
    out = tmp_path / "out"
    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert [(r["train_size"], r["start"], r["seed"]) for r in runs[:4]] == [
        ("8", "a", "0"), ("8", "a", "1"), ("8", "org_b", "0"), ("8", "org_b", "1")]
    assert [r["train_size"] for r in runs[4:]] == ["40"] * 4 + ["all"] * 4
    with open(out / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert [(r["task"], r["train_size"], r["runs"]) for r in summary] == [("tiny", "8", "2"), ("tiny", "40", "2"),
                                                                          ("tiny", "all", "2")]
    assert float(summary[1]["org_b mean"]) == pytest.approx((0.07 + 0.08) / 2)  # runs 7 and 8
    table = (out / "summary.md").read_text().splitlines()
    assert table[0] == "| task | train size | metric | a | org_b |" and table[3].startswith("| tiny | 40 | val/acc | ")
    assert (out / "curve.png").read_bytes()[:8] == PNG and (out / "summary.png").read_bytes()[:8] == PNG
    board = EventAccumulator(str(next((out / "tensorboard" / "curve" / "tiny" / "org_b").glob("events.*")))).Reload()
    points = [(e.step, e.value) for e in board.Scalars("val/acc")]
    assert points == [(8, pytest.approx(0.035)), (40, pytest.approx(0.075))]  # the mean over seeds at step = size


def test_without_matplotlib_the_curve_is_left_out_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed: importing it fails
    rows = [{"task": "t", "start": "a", "source": "a.ckpt", "seed": 0, "train_size": n, "val/acc": 0.5} for n in (4, 8)]
    write_summary(rows, {"t": "val/acc"}, tmp_path)
    assert (tmp_path / "summary.md").read_text().splitlines()[2] == "| t | 4 | val/acc | 0.5000 |"
    assert not (tmp_path / "curve.png").exists() and "No curve.png" in capsys.readouterr().err
    assert list((tmp_path / "tensorboard" / "curve" / "t" / "a").glob("events.*"))  # TensorBoard needs no matplotlib


@pytest.mark.parametrize("sizes, steps", [([0, "all"], 5), ([8, 8], 5), ([], 5), ([8], 0)])
def test_bad_sizes_are_refused_before_any_run(tmp_path: Path, sizes: list, steps: int) -> None:
    fit = FakeFit()
    with pytest.raises(UserError, match="train_sizes|curve_steps must be at least 1"):
        evaluate(["hf:org/b"], recipe=[str(FINETUNE)], out=str(tmp_path / "out"), train_sizes=sizes,
                 curve_steps=steps, fit=fit)
    assert not fit.calls and not (tmp_path / "out").exists()


def test_a_real_curve_trains_on_the_subsample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", str(CONFIGS / "bert" / "tiny.yaml"), "--data.max_documents", "40", "--trainer.max_steps", "1",
          "--trainer.val_check_interval", "1", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar",
          "false", "--trainer.logger.init_args.name", "pre"])
    start = next(tmp_path.glob("logs/pre/version_0/checkpoints/last.ckpt"))
    trained: list[int] = []  # the training examples of each run's loader
    original = downstream.example_loader

    def loader(examples, batch_size, collate, shuffle, seed, *args, **kwargs):
        if shuffle:
            trained.append(len(examples))
        return original(examples, batch_size, collate, shuffle, seed, *args, **kwargs)

    monkeypatch.setattr(downstream, "example_loader", loader)
    main(["evaluate", "--recipe", f"[{FINETUNE}]", "--starts", f"[{start}]", "--seeds", "1", "--random_baseline",
          "false", "--out", "out", "--train_sizes", "[6, all]", "--curve_steps", "2", "--overrides",
          '["--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1"]'])
    assert trained == [6, 72]  # toy-sentiment: 96 examples, a quarter held out for validation
    with open(tmp_path / "out" / "runs.csv") as f:
        assert [(r["train_size"], 0 <= float(r["val/acc"]) <= 1) for r in csv.DictReader(f)] == [("6", True),
                                                                                                   ("all", True)]
    assert (tmp_path / "out" / "curve.png").is_file()
