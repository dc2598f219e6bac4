"""``lmforge evaluate``: a suite of downstream tasks x starting points (lmforge checkpoints,
transformers folders) x seeds -> runs.csv, table, PNG, TensorBoard runs; refusals before any run."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

import lmforge.evaluation.downstream_data as downstream
from conftest import CONFIGS
from lmforge.cli import main
from lmforge.errors import UserError
from lmforge.evaluation import evaluate, read_suite
from lmforge.evaluation.report import write_summary
from lmforge.evaluation.suite_spec import ScoringTask, read_average
from lmforge.evaluation.zero_shot import METRICS

FINETUNE = CONFIGS / "finetune" / "tiny.yaml"
FAST = ["--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1",
        "--trainer.enable_model_summary=false"]


def _pretrained(tmp_path: Path, name: str, steps: int) -> Path:
    main(["fit", "-c", str(CONFIGS / "bert" / "tiny.yaml"), "--data.max_documents", "40", "--trainer.max_steps",
          str(steps), "--trainer.val_check_interval", str(steps), "--trainer.limit_val_batches", "1",
          "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.name", name])
    return next(tmp_path.glob(f"logs/{name}/version_0/checkpoints/last.ckpt"))


def _suite(tmp_path: Path) -> Path:
    """Two tasks on the toy sentiment file: one as the recipe has it, one reading it from ``{data_dir}``."""
    (tmp_path / "data").mkdir()
    shutil.copy(CONFIGS / "finetune" / "toy-sentiment.tsv", tmp_path / "data" / "toy.tsv")
    suite = {"tasks": {
        "sentiment": {"recipe": [str(FINETUNE)], "metric": "val/acc"},
        "sentiment-short": {"recipe": str(FINETUNE), "metric": "val/f1_macro",
                            "args": {"data.source.paths": "{data_dir}/toy.tsv", "data.seq_len": 16}},
    }}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


@pytest.fixture
def first_batches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, list, list]]:
    """(seed of the order, first training batch's input ids, (real tokens, padded tokens) of each
    batch in the order they were made) of every training loader built."""
    seen: list[tuple[int, list, list]] = []
    original = downstream.example_loader

    def loader(examples, batch_size, collate, shuffle, seed, *args, **kwargs):
        if not shuffle:
            return original(examples, batch_size, collate, shuffle, seed, *args, **kwargs)
        entry: tuple[int, list, list] = (seed, [], [])

        def recording(items):
            batch = collate(items)
            if not entry[1]:
                entry[1].extend(batch["input_ids"].tolist())
            entry[2].append((int(batch["attention_mask"].sum()), batch["input_ids"].numel()))
            return batch

        seen.append(entry)
        return original(examples, batch_size, recording, shuffle, seed, *args, **kwargs)

    monkeypatch.setattr(downstream, "example_loader", loader)
    return seen


def test_suite_of_two_tasks_from_two_starts_writes_runs_table_png_and_tensorboard(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        first_batches: list[tuple[int, list, list]]) -> None:
    monkeypatch.chdir(tmp_path)
    first = _pretrained(tmp_path, "general", 2)
    main(["export", "--ckpt_path", str(first), "--to", str(tmp_path / "hf-folder")])  # a transformers folder
    second = f"hf:{tmp_path / 'hf-folder'}"
    suite = _suite(tmp_path)
    capsys.readouterr()
    main(["evaluate", "--suite", str(suite), "--data_dir", "data", "--starts", f"[{first}, {second}]",
          "--labels", "[general, domain]", "--seeds", "2", "--random_baseline", "false", "--out", "results",
          "--overrides", json.dumps(FAST)])
    out = tmp_path / "results"
    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert [(r["task"], r["start"], r["seed"]) for r in runs] == [
        (task, start, seed) for task in ("sentiment", "sentiment-short") for start in ("general", "domain")
        for seed in ("0", "1")]
    assert all(0.0 <= float(r["val/acc"]) <= 1.0 and 0.0 <= float(r["val/f1_macro"]) <= 1.0 for r in runs)
    assert {r["source"] for r in runs} == {str(first), second}
    table = (out / "summary.md").read_text().splitlines()
    assert table[0] == "| task | metric | general | domain |" and len(table) == 4
    assert table[2].startswith("| sentiment | val/acc | ") and table[2].count(" ± ") == 2
    assert table[3].startswith("| sentiment-short | val/f1_macro | ")
    with open(out / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert [(r["task"], r["metric"], r["runs"]) for r in summary] == [("sentiment", "val/acc", "2"),
                                                                      ("sentiment-short", "val/f1_macro", "2")]
    accs = [float(r["val/acc"]) for r in runs if r["task"] == "sentiment" and r["start"] == "domain"]
    assert float(summary[0]["domain mean"]) == pytest.approx(sum(accs) / 2, abs=1e-5)
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tb = sorted(p.relative_to(out / "tensorboard").parent.as_posix() for p in (out / "tensorboard").rglob("events.*"))
    assert tb == sorted(f"{task}/{start}/seed_{seed}" for task in ("sentiment", "sentiment-short")
                        for start in ("domain", "general") for seed in (0, 1))
    assert table[2] in capsys.readouterr().out

    # what each run cost, after its metrics: training time, real (unpadded) tokens per second, peak memory
    assert list(runs[0])[-3:] == ["perf/peak_rss_mb", "perf/train_seconds", "perf/train_tokens_per_sec"]
    for run, (_, _, made) in zip(runs, first_batches):
        seconds, rate = float(run["perf/train_seconds"]), float(run["perf/train_tokens_per_sec"])
        assert 0 < seconds < 60 and 50 < float(run["perf/peak_rss_mb"]) < 100_000
        # the two steps' batches (FAST: max_steps 2) are the first two made; their padding is not counted
        real, padded = (sum(counts) for counts in zip(*made[:2]))
        assert rate * seconds == pytest.approx(real, rel=1e-4) and real < padded
    assert "perf/" not in "".join(table)  # the table reports each task's metric only

    # the seed orders the training examples: seed 0 and seed 1 differ, the same seed repeats
    assert [seed for seed, _, _ in first_batches] == [0, 1, 0, 1] * 2
    for task in range(2):
        general_0, general_1, domain_0, domain_1 = (batch for _, batch, _ in first_batches[4 * task: 4 * task + 4])
        assert general_0 == domain_0 and general_1 == domain_1
        assert general_0 != general_1

    before = {p: p.read_bytes() for p in out.glob("*.*")}
    with pytest.raises(SystemExit):  # never overwrites results
        main(["evaluate", "--recipe", f"[{FINETUNE}]", "--starts", f"[{first}]", "--out", "results"])
    assert "'results' already holds runs.csv, summary.csv, summary.md, summary.png, tensorboard: choose another " \
           "--out (nothing was run)." in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.glob("*.*")} == before and len(first_batches) == 8


def _fake_checkpoints(folder: Path, *names: str) -> None:
    """Files that pass the start check (an lmforge checkpoint's outline) for runs that FakeFit fakes."""
    for name in names:
        torch.save({"lmforge": {"model_config": {}}}, folder / name)


class FakeFit:
    """Records the arguments of every run and returns made-up final metrics."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, args: list[str]) -> dict[str, float]:
        self.calls.append(args)
        return {"val/acc": 0.5 + 0.1 * len(self.calls), "val/loss": 1.0, "train/loss": 2.0}


def test_recipe_is_the_one_task_suite_with_the_random_baseline_first(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _fake_checkpoints(tmp_path, "a.ckpt")
    fit = FakeFit()
    evaluate(["a.ckpt", "hf:org/b"], recipe=[str(FINETUNE)], seeds=2, out=str(tmp_path / "out"),
             overrides=["--trainer.max_steps=7"], fit=fit)
    assert len(fit.calls) == 6
    baseline = fit.calls[0]
    assert baseline[:2] == ["-c", str(FINETUNE)] and baseline[-1] == "--trainer.max_steps=7"
    assert {"--model.init_from=a.ckpt", "--model.random_init=true", "--seed_everything=0",
            f"--trainer.logger.save_dir={tmp_path / 'out' / 'tensorboard' / 'tiny'}", "--trainer.logger.name=random_init",
            "--trainer.logger.version=seed_0", "--trainer.enable_progress_bar=false"} <= set(baseline)
    assert "--model.init_from=hf:org/b" in fit.calls[5] and "--seed_everything=1" in fit.calls[5]
    assert not any("random_init" in a for call in fit.calls[2:] for a in call if a.startswith("--model"))
    with open(tmp_path / "out" / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert [(r["task"], r["start"]) for r in runs[::2]] == [("tiny", "random init"), ("tiny", "a"), ("tiny", "org_b")]
    assert set(runs[0]) == {"task", "start", "source", "seed", "train_size", "val/acc", "val/loss"}  # val/* only
    assert (tmp_path / "out" / "summary.md").read_text().splitlines()[0] == "| task | metric | random init | a | org_b |"


def test_suite_args_follow_the_recipe_and_fill_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _fake_checkpoints(tmp_path, "a.ckpt")
    suite = _suite(tmp_path)
    fit = FakeFit()
    evaluate(["a.ckpt"], suite=str(suite), tasks=["sentiment-short"], data_dir=str(tmp_path / "data"), seeds=1,
             random_baseline=False, out=str(tmp_path / "out"), fit=fit)
    [call] = fit.calls
    assert call[:4] == ["-c", str(FINETUNE), f"--data.source.paths={tmp_path / 'data' / 'toy.tsv'}",
                        "--data.seq_len=16"]


def test_without_matplotlib_the_tables_are_written_and_the_chart_is_left_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed: importing it fails
    rows = [{"task": "t", "start": "a", "source": "a.ckpt", "seed": 0, "val/acc": 0.5}]
    write_summary(rows, {"t": "val/acc"}, tmp_path)
    assert (tmp_path / "summary.md").is_file() and (tmp_path / "summary.csv").is_file()
    assert not (tmp_path / "summary.png").exists() and "No summary.png" in capsys.readouterr().err


def test_summary_statistics(tmp_path: Path) -> None:
    rows = [{"task": "t", "start": "a", "source": "a.ckpt", "seed": s, "val/acc": v} for s, v in enumerate([0.5, 0.7, 0.9])]
    rows.append({"task": "t", "start": "b", "source": "b.ckpt", "seed": 0, "val/acc": 0.25})
    rows.append({"task": "u", "start": "b", "source": "b.ckpt", "seed": 0, "val/f1": 0.5})
    table = write_summary(rows, {"t": "val/acc", "u": "val/f1"}, tmp_path)
    with open(tmp_path / "summary.csv") as f:
        summary = {r["task"]: r for r in csv.DictReader(f)}
    assert float(summary["t"]["a mean"]) == pytest.approx(0.7)
    assert float(summary["t"]["a std"]) == pytest.approx(0.2)  # sample standard deviation
    assert float(summary["t"]["b std"]) == 0.0 and summary["t"]["runs"] == "3"
    assert table.splitlines()[3] == "| u | val/f1 | not logged | 0.5000 |"  # one run: no spread shown


@pytest.mark.parametrize("case, message", [
    ("unknown task", "has no task 'ner': its tasks are sentiment, sentiment-short."),
    ("no data_dir", "Task 'sentiment-short' of suite '{suite}', data.source.paths is '{{data_dir}}/toy.tsv': give "
                    "the data folder with --data_dir."),
    ("no metric", "Task 'sentiment' of suite '{suite}' needs `recipe` (fit config files) and `metric` (e.g. val/f1, "
                  "or a list of distinct metrics such as [val/f1_1, val/acc])."),
    ("missing recipe", "Task 'sentiment' of suite '{suite}': recipe file '{missing}' does not exist."),
    ("missing data", "Task 'sentiment-short' of suite '{suite}', data.source.paths is '{data}/toy.tsv', which does "
                     "not exist: check --data_dir"),
    ("results", "already holds runs.csv: choose another --out (nothing was run)."),
    ("suite and recipe", "Give exactly one of --suite (a suite YAML) and --recipe (fine-tuning config files)."),
])
def test_refusals_come_before_any_run(tmp_path: Path, case: str, message: str) -> None:
    suite = _suite(tmp_path)
    spec = yaml.safe_load(suite.read_text())
    kwargs = {"suite": str(suite), "data_dir": str(tmp_path / "data"), "out": str(tmp_path / "out")}
    if case == "unknown task":
        kwargs["tasks"] = ["ner"]
    elif case == "no data_dir":
        kwargs["data_dir"] = None
    elif case == "no metric":
        del spec["tasks"]["sentiment"]["metric"]
    elif case == "missing recipe":
        spec["tasks"]["sentiment"]["recipe"] = ["finetune/absent.yaml"]
    elif case == "missing data":
        kwargs["data_dir"] = str(tmp_path / "elsewhere")
    elif case == "suite and recipe":
        kwargs["recipe"] = [str(FINETUNE)]
    else:
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "runs.csv").write_text("earlier results\n")
    suite.write_text(yaml.safe_dump(spec, sort_keys=False))
    fit = FakeFit()
    with pytest.raises(UserError) as refused:
        evaluate(["a.ckpt"], fit=fit, **kwargs)
    assert message.format(suite=suite, missing=tmp_path / "finetune" / "absent.yaml",
                          data=tmp_path / "elsewhere") in str(refused.value)
    assert fit.calls == []
    if case == "results":
        assert [p.name for p in (tmp_path / "out").iterdir()] == ["runs.csv"]
        assert (tmp_path / "out" / "runs.csv").read_text() == "earlier results\n"
    else:
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["text file", "folder", "missing", "torn"])
def test_a_start_no_run_can_use_is_refused_before_anything_is_written(case: str, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Every start is checked before the results folder exists; the sentence says what --starts
    takes and never names an option evaluate does not have (--ckpt_path)."""
    from test_first_hour import files, refused

    monkeypatch.chdir(tmp_path)
    _fake_checkpoints(tmp_path, "good.ckpt")
    start = {"text file": "notes.txt", "folder": "notes", "missing": "absent.ckpt", "torn": "torn.ckpt"}[case]
    (tmp_path / "notes.txt").write_text("my notes about the runs\n")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("a folder of notes\n")
    (tmp_path / "torn.ckpt").write_bytes((tmp_path / "good.ckpt").read_bytes()[:200])
    before = files(tmp_path)
    line = refused(capsys, "evaluate", "--recipe", f"[{FINETUNE}]", "--starts", f"[good.ckpt, {start}]")
    said = {"text file": "'notes.txt' is neither an lmforge .ckpt nor a Hugging Face model folder: --starts takes",
            "folder": "'notes' is a folder without config.json, not a Hugging Face model folder: --starts takes",
            "missing": "Start 'absent.ckpt' does not exist: --starts takes",
            "torn": "'torn.ckpt' is not a complete checkpoint"}[case]
    assert line.startswith(f"lmforge: error: {said}"), line
    assert "--ckpt_path" not in line
    assert files(tmp_path) == before and not (tmp_path / "evaluation").exists()


@pytest.mark.parametrize("suite", sorted((CONFIGS / "eval").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_suites_name_existing_recipes_metrics_and_the_data_layout(suite: Path, tmp_path: Path) -> None:
    """Every task of configs/eval/ has its recipe files and a val/ metric, and every data path
    of the documented layout (made here as empty files) is filled from --data_dir; a hub task names
    its dataset instead."""
    glue = [f"{task}/{split}.tsv" for task in ("CoLA", "SST-2", "MRPC", "QQP", "STS-B", "QNLI", "RTE", "WNLI")
            for split in ("train", "dev")] + [f"MNLI/{split}.tsv" for split in ("train", "dev_matched", "dev_mismatched")]
    for relative in ("ner/jnlpba/dev.txt", "ner/jnlpba/test.txt", "classification/ohsumed/train.jsonl",
                     *[f"{task}/{split}.txt" for task in ("ner/sciie", "relation/sciie",
                                                           "classification/citation_intent")
                       for split in ("train", "dev", "test")], "BioASQ-train-factoid-7b.json", *glue):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).touch()
    tasks = read_suite(suite, str(tmp_path))
    assert tasks
    for task in tasks:
        if isinstance(task, ScoringTask):  # a zero/few-shot task file: checked in test_prompt_tasks.py
            assert Path(task.task.path).parent == CONFIGS / "eval" / "tasks" and task.metric in METRICS[task.task.kind]
            continue
        assert task.metrics and all(m.startswith("val/") for m in task.metrics)
        assert all(Path(r).resolve().parent == CONFIGS / "finetune" for r in task.recipe)
        if dict(task.args).get("data.source.hf_dataset"):  # the hub's splits, not files
            assert "data.source.paths" not in dict(task.args) and dict(task.args)["data.validation"]
            continue
        paths = [v for k, v in task.args if k in ("data.source.paths", "data.validation")]
        paths += list(dict(task.args).get("data.extra_validation", {}).values())
        assert paths and all(v is None or v.startswith(str(tmp_path)) for v in paths)
    average = read_average(suite)
    assert average is None or {t for t, _ in average.parts} <= {t.name for t in tasks}


def test_the_zero_shot_suite_holds_every_shipped_task_file() -> None:
    tasks = read_suite(CONFIGS / "eval" / "zeroshot.yaml")
    shipped = sorted(p.stem for p in (CONFIGS / "eval" / "tasks").glob("*.yaml") if p.stem != "python-docs")
    assert sorted(Path(t.task.path).stem for t in tasks) == shipped  # all but the quick start's local probe
    assert {t.name: t.metric for t in tasks}["hellaswag"] == "acc_norm"


def test_evaluate_help_and_compare_is_gone(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        main(["evaluate", "--help"])
    assert done.value.code in (0, None)
    help_text = capsys.readouterr().out
    assert "--suite" in help_text and "--recipe" in help_text and "--data_dir" in help_text
    assert all(f"--{option}" in help_text for option in ("limit", "shots", "batch_size", "device", "train_sizes"))
    assert "a subsample trains for exactly ``curve_steps`` optimizer steps" in " ".join(help_text.split())
    assert "--scorer" not in help_text and "--fit" not in help_text
    with pytest.raises(SystemExit) as done:
        main(["compare", "--recipe", f"[{FINETUNE}]", "--starts", "[a.ckpt]"])
    assert done.value.code == 2



class FakeScorers:
    """Opens a made-up scorer per start (not a model: a continuation's log-likelihood is minus its
    length over 10, plus 1 for the right answer from the second start on); records what it opened."""

    def __init__(self) -> None:
        self.opened: list[tuple[str, dict]] = []

    def __call__(self, start: str, **options: object) -> object:
        self.opened.append((start, options))
        bonus = 0.0 if len(self.opened) == 1 else 1.0
        rights = {" 2", " 3", " 4"}

        class Scorer:
            max_length = 64

            def loglikelihood(self, questions):
                return [[(-len(c) / 10 + (bonus if c in rights else 0.0), False) for c in conts]
                        for _, conts in questions]

        return Scorer()


def _scoring_suite(tmp_path: Path, **entry: object) -> Path:
    """A fine-tune task and a scoring task over a three-question jsonl file."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "sums.jsonl").write_text("".join(
        json.dumps({"q": f"{n} + 1", "right": str(n + 1), "wrong": str(n + 5) * 3}) + "\n" for n in (1, 2, 3)))
    (tmp_path / "tasks" / "sums.yaml").write_text(yaml.safe_dump({
        "kind": "multiple_choice", "data": {"path": "sums.jsonl", "split": "train", "shot_split": "train"},
        "prompt": "{q} =", "choices": ["{wrong}", "{right}"], "gold": 1}))
    suite = {"tasks": {"sentiment": {"recipe": [str(FINETUNE)], "metric": "val/acc"},
                       "sums": {"kind": "multiple_choice", "task": "tasks/sums.yaml", **entry}}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def test_a_suite_mixes_fine_tune_and_scoring_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    _fake_checkpoints(tmp_path, "a.ckpt", "b.ckpt")
    fit, scorers = FakeFit(), FakeScorers()
    suite = _scoring_suite(tmp_path, random_baseline=True, shots=1, metric="acc_norm")
    evaluate(["a.ckpt", "b.ckpt"], suite=str(suite), seeds=2, out=str(tmp_path / "out"), limit=2, batch_size=4,
             device="cuda:1", fit=fit, scorer=scorers)
    # one scorer per start, the baseline first (asked for by the command and the suite entry)
    assert scorers.opened == [("a.ckpt", {"device": "cuda:1", "batch_size": 4, "random_init": True}),
                              ("a.ckpt", {"device": "cuda:1", "batch_size": 4}),
                              ("b.ckpt", {"device": "cuda:1", "batch_size": 4})]
    assert len(fit.calls) == 6  # the fine-tune task as before: 3 starts x 2 seeds
    with open(tmp_path / "out" / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert [(r["task"], r["start"], r["seed"]) for r in runs] == [
        ("sentiment", start, seed) for start in ("random init", "a", "b") for seed in ("0", "1")] + [
        ("sums", start, "") for start in ("random init", "a", "b")]
    assert [(r["acc"], r["acc_norm"]) for r in runs[6:]] == [("1.0", "0.0"), ("1.0", "1.0"), ("1.0", "1.0")]
    assert all(r["acc"] == "" for r in runs[:6]) and all(r["val/acc"] == "" for r in runs[6:])
    lines = (tmp_path / "out" / "requests" / "sums" / "b.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 4 and records[1]["continuation"] == " 2" and records[1]["gold"] == 1  # limit 2, 2 choices
    assert records[0]["context"].count(" =") == 2 and records[0]["context"].endswith("1 + 1 =")  # one shot
    assert sorted(p.name for p in (tmp_path / "out" / "requests" / "sums").iterdir()) == [
        "a.jsonl", "b.jsonl", "random_init.jsonl"]
    table = (tmp_path / "out" / "summary.md").read_text().splitlines()
    assert table[3] == "| sums | acc_norm | 0.0000 | 1.0000 | 1.0000 |"  # one run per start
    assert "sums from b: acc 1.0000, acc_norm 1.0000 (2 items" in capsys.readouterr().out


def test_scoring_tasks_need_no_fit_and_no_baseline_unless_their_entry_asks(tmp_path: Path) -> None:
    _fake_checkpoints(tmp_path, "a.ckpt")
    scorers = FakeScorers()
    evaluate([str(tmp_path / "a.ckpt")], suite=str(_scoring_suite(tmp_path)), tasks=["sums"],
             out=str(tmp_path / "out"), scorer=scorers)
    assert [options for _, options in scorers.opened] == [{"device": "cpu", "batch_size": 32}]
    assert not (tmp_path / "out" / "tensorboard").exists()


@pytest.mark.parametrize("entry, said", [
    ({"kind": "generate"}, "has kind generate but its task file '{tmp}/tasks/sums.yaml' is kind multiple_choice"),
    ({"metric": "exact_match"}, "has metric 'exact_match', which kind multiple_choice does not compute"),
    ({"shot": 2}, "has unknown key 'shot': did you mean 'shots'?"),
    ({"shots": 3}, "`shots` 3 is more than the 2 examples of the shot split"),
    ({"task": "tasks/absent.yaml"}, "Task file '{tmp}/tasks/absent.yaml' does not exist"),
])
def test_bad_scoring_tasks_are_refused_before_any_start_is_opened(tmp_path: Path, entry: dict, said: str) -> None:
    _fake_checkpoints(tmp_path, "a.ckpt")
    fit, scorers = FakeFit(), FakeScorers()
    with pytest.raises(UserError) as refused:
        evaluate([str(tmp_path / "a.ckpt")], suite=str(_scoring_suite(tmp_path, **entry)), out=str(tmp_path / "out"),
                 fit=fit, scorer=scorers)
    assert said.format(tmp=tmp_path) in str(refused.value)
    assert fit.calls == [] and scorers.opened == [] and not (tmp_path / "out").exists()


def test_the_command_refuses_a_bad_task_file_or_limit_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import refused

    monkeypatch.chdir(tmp_path)
    _fake_checkpoints(tmp_path, "a.ckpt")
    suite = _scoring_suite(tmp_path)
    line = refused(capsys, "evaluate", "--suite", str(suite), "--starts", "[a.ckpt]", "--tasks", "[sums]",
                   "--limit", "0")
    assert line == (f"lmforge: error: Task file '{tmp_path / 'tasks' / 'sums.yaml'}': limit (--limit or the "
                    "suite's) must be at least 1 item, got 0.")
    (tmp_path / "tasks" / "sums.yaml").write_text(yaml.safe_dump({
        "kind": "multiple_choice", "data": {"path": "sums.jsonl", "split": "train"}, "prompt": "{q} =",
        "choices": ["{wrong}", "{rigth}"], "gold": 1}))
    line = refused(capsys, "evaluate", "--suite", str(suite), "--starts", "[a.ckpt]", "--shots", "0")
    assert line.startswith(f"lmforge: error: Task file '{tmp_path / 'tasks' / 'sums.yaml'}': `choices` uses field "
                           "'rigth', which item 0 lacks: its fields are q, right, wrong; fix `choices`.")
    assert not (tmp_path / "evaluation").exists()
