"""``lmforge compare``: several starting points (lmforge checkpoints, transformers folders) x seeds
-> table, CSV, PNG, TensorBoard runs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from conftest import CONFIGS
from lmforge.cli import main
from lmforge.evaluation import write_results

FINETUNE = str(CONFIGS / "finetune" / "tiny.yaml")


def _pretrained(tmp_path: Path, name: str, steps: int) -> Path:
    main(["fit", "-c", str(CONFIGS / "bert" / "tiny.yaml"), "--data.max_documents", "40", "--trainer.max_steps",
          str(steps), "--trainer.val_check_interval", str(steps), "--trainer.limit_val_batches", "1",
          "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.name", name])
    return next(tmp_path.glob(f"logs/{name}/version_0/checkpoints/last.ckpt"))


def test_compare_two_checkpoints_writes_table_csv_png_and_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    first = _pretrained(tmp_path, "general", 2)
    main(["export", "--ckpt_path", str(first), "--to", str(tmp_path / "hf-folder")])  # a transformers folder
    second = f"hf:{tmp_path / 'hf-folder'}"
    main(["compare", "--recipe", f"[{FINETUNE}]", "--starts", f"[{first}, {second}]", "--labels", "[general, domain]",
          "--seeds", "2", "--out", "results", "--overrides",
          '["--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1"]'])
    out = tmp_path / "results"
    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert [(r["start"], r["seed"]) for r in runs] == [
        ("random init", "0"), ("random init", "1"), ("general", "0"), ("general", "1"), ("domain", "0"), ("domain", "1")]
    assert all(0.0 <= float(r["val/acc"]) <= 1.0 for r in runs)
    table = (out / "summary.md").read_text().splitlines()
    assert table[0].startswith("| start | runs | ") and "val/acc" in table[0] and len(table) == 5
    assert table[2].startswith("| random init | 2 | ") and " ± " in table[2]
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tb = sorted(p.relative_to(out / "tensorboard").parent.as_posix() for p in (out / "tensorboard").rglob("events.*"))
    assert tb == ["domain/seed_0", "domain/seed_1", "general/seed_0", "general/seed_1", "random_init/seed_0",
                  "random_init/seed_1"]
    assert "| general | 2 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # never overwrites results
        main(["compare", "--recipe", f"[{FINETUNE}]", "--starts", f"[{first}]", "--out", "results"])


def test_summary_statistics(tmp_path: Path) -> None:
    rows = [{"start": "a", "source": "a.ckpt", "seed": s, "val/acc": v} for s, v in enumerate([0.5, 0.7, 0.9])]
    rows.append({"start": "b", "source": "b.ckpt", "seed": 0, "val/acc": 0.25})
    write_results(rows, tmp_path)
    with open(tmp_path / "summary.csv") as f:
        summary = {r["start"]: r for r in csv.DictReader(f)}
    assert float(summary["a"]["val/acc mean"]) == pytest.approx(0.7)
    assert float(summary["a"]["val/acc std"]) == pytest.approx(0.2)  # sample standard deviation
    assert float(summary["b"]["val/acc std"]) == 0.0 and summary["b"]["runs"] == "1"
