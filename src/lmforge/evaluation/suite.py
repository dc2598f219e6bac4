"""``lmforge evaluate``: does pretraining help? A suite of downstream tasks, several starting
points: fine-tune tasks (N seeds each, every run a real ``lmforge fit``) and zero/few-shot scoring
tasks (one run per start, no training).

A suite is a YAML file of named tasks (``configs/eval/`` holds the biomedical, scientific and
zero-shot ones)::

    tasks:
      sciie-ner:
        recipe: [../finetune/ner.yaml]   # fit config file(s), relative to the suite file
        metric: val/f1                   # what the table reports, or a list: [val/f1_1, val/acc] (a row each;
                                         # runs.csv: every val/*, time, memory)
        args:                            # fit arguments of this task; {data_dir} becomes --data_dir
          data.source.paths: "{data_dir}/ner/sciie/train.txt"
          data.validation: "{data_dir}/ner/sciie/dev.txt"
          data.scheme: IO
      sciq:
        kind: multiple_choice            # a zero/few-shot task file (lmforge.evaluation.prompt_tasks)
        task: tasks/sciq.yaml            # optional: shots, limit, metric, random_baseline
    average:                             # optional: one more row per start, e.g. GLUE's average
      name: GLUE average
      of: [sciie-ner val/f1, sciq acc]   # "task metric" each (a pair may come twice)
      note: on validation sets           # optional: written under the table

The average row is, per start (and training-set size), the mean over seeds of each seed's mean
of its parts (seed k of every task; a scoring task's one run pairs with every seed), ± its
standard deviation; a start lacking runs of some averaged task (``--tasks`` chose others) shows
which, rather than an average of a part.

``--recipe finetune.yaml`` instead of ``--suite`` is the suite of one task, named after the
recipe's file stem (its metric: ``--metric``, else ``val/acc``, ``val/spearman`` or the first
logged). Each task's ``args`` become ``--key=value`` after its recipe files; the run's own
arguments and then ``--overrides`` follow, so they win.

Every (task, start, seed) is ``fit`` with ``--model.init_from <start>`` and
``--seed_everything <seed>`` (seeds 0..N-1: the initialisation of new heads, dropout and the
training order all follow it), logged to ``<out>/tensorboard/<task>/<start>/seed_<seed>``. The
random baseline is the first start's architecture and tokenizer with ``random_init`` (for a
scoring task only when its suite entry asks too). Scoring tasks run first, every one for a start
with the start's model opened once; each writes ``<out>/requests/<task>/<start>.jsonl``, one
line per request. ``<out>`` receives ``runs.csv`` (rewritten after every run, so a stopped suite
keeps what it finished), ``summary.csv``, ``summary.md`` and ``summary.png`` (see
:mod:`lmforge.evaluation.report`).

``--train_sizes '[100, 1000, all]'`` makes a learning curve: every fine-tune run once per size,
on that many training examples drawn by its seed (``--data.train_size``), each subsample trained
for ``--curve_steps`` optimizer steps (:func:`size_args`); runs go to
``tensorboard/<task>/<start>/n<size>_seed_<seed>``, and ``curve.png`` and
``tensorboard/curve/<task>/<start>`` show the score against the number of examples.

Nothing is overwritten: a ``<out>`` that already holds any of these files, ``tensorboard/`` or
``requests/`` is refused before anything runs; choose a new ``--out``. The suite is checked whole
before the first run too: its tasks, recipe files, ``{data_dir}`` and the data files it names,
and every scoring task's data, rendered into its items.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import UserError
from lmforge.evaluation.prompt_tasks import Item, load_items
from lmforge.evaluation.report import RESULT_FILES, file_name, write_runs, write_summary
from lmforge.evaluation.suite_spec import Average, ScoringTask, SuiteTask, chosen_tasks, read_average
from lmforge.evaluation.zero_shot import score_task
from lmforge.start.starting_point import read_checkpoint

RANDOM = "random init"
Fit = Callable[[list[str]], dict[str, float]]  # `lmforge fit` arguments -> the run's final logged metrics
OpenScorer = Callable[..., Any]  # (start, device=, batch_size=) -> a Scorer (lmforge.evaluation.likelihood)
Plan = list[tuple[str, str, bool]]  # (label, start, random init) in table order
RUN_COLUMNS = ("val/", "perf/train_", "perf/peak_")  # what runs.csv keeps of a fine-tune run's logged metrics


def label_of(start: str) -> str:
    """A short, file-name-safe name for a starting point."""
    path = Path(start)
    return file_name(start[3:] if start.startswith("hf:") else path.stem if path.suffix == ".ckpt" else path.name)


def size_args(size: int | str | None, curve_steps: int) -> list[str]:
    """The fit arguments of a learning curve's point: ``size`` training examples (drawn by the
    run's seed) trained for ``curve_steps`` optimizer steps, validated once at the last (however
    many epochs that is); ``all`` and ``None`` keep the recipe's."""
    if not isinstance(size, int):
        return []
    return [f"--data.train_size={size}", f"--trainer.max_steps={curve_steps}", "--trainer.max_epochs=-1",
            f"--trainer.val_check_interval={curve_steps}", "--trainer.check_val_every_n_epoch=null"]


def run_one(fit: Fit, task: SuiteTask, start: str, seed: int, out: Path, label: str, random_init: bool,
            overrides: list[str], size: int | str | None = None, curve_steps: int = 0) -> dict[str, float]:
    """Fine-tune ``task`` from ``start`` with ``seed`` (on ``size`` training examples, see
    :func:`size_args`); the run's final ``val/*`` metrics and its training time, real-token rate
    and peak memory (``perf/train_*``, ``perf/peak_*``, see :class:`lmforge.callbacks.ThroughputMonitor`)."""
    version = f"seed_{seed}" if size is None else f"n{size}_seed_{seed}"
    args = [*task.fit_args(), f"--model.init_from={start}", f"--seed_everything={seed}",
            "--trainer.logger=lightning.pytorch.loggers.TensorBoardLogger",
            f"--trainer.logger.save_dir={out / 'tensorboard' / file_name(task.name)}",
            f"--trainer.logger.name={label}", f"--trainer.logger.version={version}",
            "--trainer.logger.default_hp_metric=false", "--trainer.enable_progress_bar=false",
            *size_args(size, curve_steps)]
    if random_init:
        args.append("--model.random_init=true")
    metrics = {k: v for k, v in fit([*args, *overrides]).items() if k.startswith(RUN_COLUMNS)}
    if not any(k.startswith("val/") for k in metrics):
        examples = f", {size} examples" if size else ""
        raise UserError(f"Task '{task.name}' from {start} (seed {seed}{examples}) logged no val/ metric: let it "
                        "validate (trainer.limit_val_batches > 0, a validation split in the data).")
    return metrics


def evaluate(
    starts: list[str],
    suite: str | None = None,
    recipe: list[str] | None = None,
    metric: str | None = None,
    tasks: list[str] | None = None,
    data_dir: str | None = None,
    seeds: int = 3,
    random_baseline: bool = True,
    labels: list[str] | None = None,
    out: str = "evaluation",
    overrides: list[str] | None = None,
    limit: int | None = None,
    shots: int | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    train_sizes: list[int | Literal["all"]] | None = None,
    curve_steps: int = 200,
    fit: Fit | None = None,
    scorer: OpenScorer | None = None,
) -> Path:
    """Fine-tune (N seeds) or score (zero/few-shot) a suite of downstream tasks from several starts; tabulate, plot.

    Args:
        starts: Starting points: lmforge ``.ckpt`` files, Hugging Face folders or ``hf:<id>``.
        suite: A suite YAML file (``configs/eval/``: glue.yaml, glue-tsv.yaml, biomed.yaml ...); or give ``recipe``.
        recipe: Fine-tuning config file(s) of a one-task suite, named after the (first) file's stem.
        metric: With ``recipe``: the metric the table reports (default: ``val/acc``, ``val/spearman`` or the first
            logged). A suite names each task's own, or a list (a row each), and may add an ``average:`` row.
        tasks: Run only these tasks of the suite.
        data_dir: The data folder that ``{data_dir}`` in the suite's task arguments stands for.
        seeds: Fine-tune runs per task and start, with seeds 0, 1, ... (each passed as ``--seed_everything``).
        random_baseline: Add a randomly initialised network of the first start's architecture (a
            scoring task only when its suite entry says ``random_baseline: true`` too).
        labels: Names of the starts in the table (default: file stems or hub ids).
        out: The folder to write into; one that already holds results is refused.
        overrides: More ``fit`` arguments for every run, e.g. ``["--trainer.max_steps=200"]``.
        limit: Score only the first N items of every scoring task.
        shots: Solved examples before each item of every scoring task (overrides the task files and suite).
        batch_size: Sequences per forward pass of the scoring model.
        device: Where the scoring model runs: ``cpu``, ``cuda``, ``cuda:1`` ...
        train_sizes: A learning curve, e.g. ``[100, 1000, all]``: every fine-tune run once per size on that many
            training examples (``data.train_size``, drawn by the run's seed, stratified by class). Step rule, the same
            for every start: a subsample trains for exactly ``curve_steps`` optimizer steps; ``all`` as the recipe says.
        curve_steps: Optimizer steps of every run on a subsample (see ``train_sizes``).
        fit: Runs ``lmforge fit`` with these arguments, returning its final metrics (the command gives its own).
        scorer: Opens a start for scoring (default: ``lmforge.evaluation.likelihood.open_scorer``).
    """
    names = _start_labels(starts, labels, seeds)
    sizes = _curve_sizes(train_sizes, curve_steps)  # refused before anything runs
    _refuse_earlier_results(out_dir := Path(out))
    chosen = [_overridden(t, shots, limit) for t in chosen_tasks(suite, recipe, metric, tasks, data_dir)]
    average = read_average(suite) if suite is not None else None
    items = _checked(chosen, starts, fit)
    out_dir.mkdir(parents=True, exist_ok=True)  # only now: a refused suite leaves no folder behind
    plan = [(RANDOM, starts[0], True)] * random_baseline + [(n, start, False) for n, start in zip(names, starts)]
    rows = _score_all(scorer, chosen, items, plan, out_dir, device, batch_size)
    _run_plan(fit, chosen, plan, seeds, out_dir, list(overrides or []), rows, sizes, curve_steps)
    _report(rows, chosen, out_dir, average)
    return out_dir


def _checked(chosen: list[SuiteTask | ScoringTask], starts: list[str], fit: Fit | None) -> dict[str, list[Item]]:
    """The items of every scoring task, once the suite and the starts are checked: refusals before any run."""
    if fit is None and any(isinstance(t, SuiteTask) for t in chosen):
        raise UserError("evaluate needs a way to run `lmforge fit`: call it through `lmforge evaluate`.")
    for start in starts:
        check_start(start)
    return {t.name: load_items(t.task) for t in chosen if isinstance(t, ScoringTask)}


def _overridden(task: SuiteTask | ScoringTask, shots: int | None, limit: int | None) -> SuiteTask | ScoringTask:
    """A scoring task with the command line's shots and limit."""
    if isinstance(task, SuiteTask):
        return task
    return dataclasses.replace(task, task=task.task.overridden(shots, limit))


def _start_labels(starts: list[str], labels: list[str] | None, seeds: int) -> list[str]:
    """The starts' names in the table, once the arguments that need no file are checked."""
    if not starts:
        raise UserError("Give at least one starting point: --starts '[general.ckpt, domain.ckpt]'.")
    if seeds < 1:
        raise UserError(f"seeds must be at least 1, got {seeds}.")
    names = list(labels) if labels else [label_of(s) for s in starts]
    if len(names) != len(starts) or len(set(names)) != len(names) or RANDOM in names:
        raise UserError(f"labels {names} must name each of the {len(starts)} starts once, other than "
                        f"'{RANDOM}': pass distinct --labels.")
    return names


def _curve_sizes(train_sizes: list[int | str] | None, curve_steps: int) -> list[int | str | None]:
    """The training-set sizes to run, smallest first and ``all`` last; ``[None]`` without a curve."""
    if train_sizes is None:
        return [None]
    bad = [s for s in train_sizes if s != "all" and (not isinstance(s, int) or isinstance(s, bool) or s < 1)]
    if not train_sizes or bad or len(set(train_sizes)) != len(train_sizes):
        raise UserError(f"train_sizes {train_sizes} must be distinct positive numbers of examples or 'all', "
                        "e.g. --train_sizes '[100, 1000, all]'.")
    if curve_steps < 1:
        raise UserError(f"curve_steps must be at least 1, got {curve_steps}.")
    return sorted(train_sizes, key=lambda s: (s == "all", s if isinstance(s, int) else 0))


def _refuse_earlier_results(out_dir: Path) -> None:
    """Nothing is overwritten: an ``out_dir`` holding results of an earlier suite is refused."""
    existing = [p for p in (*RESULT_FILES, "tensorboard", "requests") if (out_dir / p).exists()]
    if existing:
        raise UserError(f"'{out_dir}' already holds {', '.join(existing)}: choose another --out (nothing was run).")


def check_start(start: str) -> None:
    """Refuse a starting point that no run could start from, before the first run: a path that is
    neither an lmforge checkpoint nor a Hugging Face model folder, or a damaged checkpoint. A hub
    id (``hf:<id>`` that is no local folder) is downloaded, and checked, by its first run.

    Args:
        start: One of ``--starts``.
    """
    accepted = ("--starts takes .ckpt files written by `lmforge fit`, Hugging Face model folders (with "
                "config.json) or hf:<model id>")
    path = Path(start.removeprefix("hf:"))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"'{start}' is a folder without config.json, not a Hugging Face model folder: {accepted}.")
    elif start.startswith("hf:"):
        return
    elif not path.is_file():
        raise UserError(f"Start '{start}' does not exist: {accepted}.")
    elif not _is_zip_archive(path):  # a torch checkpoint is a zip archive, also when cut short
        raise UserError(f"'{start}' is neither an lmforge .ckpt nor a Hugging Face model folder: {accepted}.")
    else:
        read_checkpoint(path, resuming=False)


def _is_zip_archive(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _write_runs(rows: list[dict], chosen: list[SuiteTask | ScoringTask], out_dir: Path) -> None:
    """``runs.csv`` with the rows in suite order (scoring tasks run first)."""
    order = {task.name: i for i, task in enumerate(chosen)}
    write_runs(sorted(rows, key=lambda row: order[row["task"]]), out_dir)


def _score_all(open_scorer: OpenScorer | None, chosen: list[SuiteTask | ScoringTask], items: dict[str, list[Item]],
               plan: Plan, out_dir: Path, device: str, batch_size: int) -> list[dict]:
    """Every scoring task from every start, each start's model opened once; a row per (task,
    start), returned and in ``runs.csv``, the requests in ``requests/<task>/<start>.jsonl``."""
    rows: list[dict] = []
    scoring = [task for task in chosen if isinstance(task, ScoringTask)]
    if scoring and open_scorer is None:
        from lmforge.evaluation.likelihood import open_scorer
    for name, start, random_init in plan:
        wanted = [task for task in scoring if task.random_baseline or not random_init]
        if not wanted:
            continue
        baseline = {"random_init": True} if random_init else {}  # the first start's network, freshly initialised
        model = open_scorer(start, device=device, batch_size=batch_size, **baseline)
        for task in wanted:
            began = time.perf_counter()
            metrics, records = score_task(task.task, model, items[task.name])
            path = out_dir / "requests" / file_name(task.name) / f"{file_name(name)}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
            rows.append({"task": task.name, "start": name, "source": start, "seed": None, **metrics})
            _write_runs(rows, chosen, out_dir)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            print(f"{task.name} from {name}: {shown} ({len(items[task.name])} items, "
                  f"{time.perf_counter() - began:.1f} s)")
    return rows


def _run_plan(fit: Fit | None, chosen: list[SuiteTask | ScoringTask], plan: Plan, seeds: int, out_dir: Path,
              overrides: list[str], rows: list[dict], sizes: list[int | str | None], curve_steps: int) -> None:
    """Every (fine-tune task, size, start, seed) run, in order, smallest size first (a stopped
    curve compares every start on what it finished); a row in ``rows`` and ``runs.csv`` after each."""
    for task in chosen:
        if not isinstance(task, SuiteTask):
            continue
        assert fit is not None  # evaluate refuses a fine-tune task without it
        for size in sizes:
            for name, start, random_init in plan:
                for seed in range(seeds):
                    metrics = run_one(fit, task, start, seed, out_dir, file_name(name), random_init, overrides,
                                      size, curve_steps)
                    rows.append({"task": task.name, "start": name, "source": start, "seed": seed,
                                 "train_size": size, **metrics})
                    _write_runs(rows, chosen, out_dir)


def _report(rows: list[dict], chosen: list[SuiteTask | ScoringTask], out_dir: Path, average: Average | None) -> None:
    """Write and print the summary table; name each task metric no run logged."""
    reported = {t.name: list(t.metrics) or [_default_metric([r for r in rows if r["task"] == t.name])]
                for t in chosen}
    row = (average.name, list(average.parts)) if average is not None else None
    table = write_summary(rows, reported, out_dir, row, average.note if average is not None else "")
    print(table)
    for task, names in reported.items():
        for name in names:
            if not any(name in r for r in rows if r["task"] == task):
                logged = sorted({k for r in rows if r["task"] == task for k in r if k.startswith("val/")})
                print(f"Task '{task}' logged no {name} (it logged {', '.join(logged)}): fix its metric.")
    folders = [f for f, kind in (("tensorboard/", SuiteTask), ("requests/", ScoringTask))
               if any(isinstance(t, kind) for t in chosen)]
    board = f" (tensorboard --logdir {out_dir / 'tensorboard'})" if "tensorboard/" in folders else ""
    pictures = [p for p in ("summary.png", "curve.png") if (out_dir / p).exists()]
    written = ["summary.md", "summary.csv", *pictures, *folders]
    print(f"Wrote {out_dir}/runs.csv, {', '.join(written[:-1])} and {written[-1]}{board}.")


def _default_metric(rows: list[dict]) -> str:
    logged = sorted({k for r in rows for k in r if k.startswith("val/")})
    return next((m for m in ("val/acc", "val/spearman") if m in logged), logged[0])
