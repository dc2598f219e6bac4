"""``lmforge evaluate``: does pretraining help? A suite of downstream tasks, several starting
points, N seeds each, every run a real ``lmforge fit``.

A suite is a YAML file of named tasks (``configs/eval/`` holds the biomedical and scientific ones)::

    tasks:
      sciie-ner:
        recipe: [../finetune/ner.yaml]   # fit config file(s), relative to the suite file
        metric: val/f1                   # what the table reports (every val/* metric goes to runs.csv)
        args:                            # fit arguments of this task; {data_dir} becomes --data_dir
          data.source.paths: "{data_dir}/ner/sciie/train.txt"
          data.validation: "{data_dir}/ner/sciie/dev.txt"
          data.scheme: IO

``--recipe finetune.yaml`` instead of ``--suite`` is the suite of one task, named after the
recipe's file stem (its metric: ``--metric``, else ``val/acc``, ``val/spearman`` or the first
logged). Each task's ``args`` become ``--key=value`` after its recipe files; the run's own
arguments and then ``--overrides`` follow, so they win.

Every (task, start, seed) is ``fit`` with ``--model.init_from <start>`` and
``--seed_everything <seed>`` (seeds 0..N-1: the initialisation of new heads, dropout and the
training order all follow it), logged to ``<out>/tensorboard/<task>/<start>/seed_<seed>``. The
random baseline is the first start's architecture and tokenizer with ``random_init``. ``<out>``
receives ``runs.csv`` (rewritten after every run, so a stopped suite keeps what it finished),
``summary.csv``, ``summary.md`` and ``summary.png`` (see :mod:`lmforge.evaluation.report`).

Nothing is overwritten: a ``<out>`` that already holds any of these files or ``tensorboard/``
is refused before anything runs; choose a new ``--out``. The suite is checked whole before the
first run too: its tasks, recipe files, ``{data_dir}`` and the data files it names.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lmforge.errors import UserError
from lmforge.evaluation.report import RESULT_FILES, write_runs, write_summary

RANDOM = "random init"
PLACEHOLDER = "{data_dir}"
TASK_KEYS = ("recipe", "metric", "args")
Fit = Callable[[list[str]], dict[str, float]]  # `lmforge fit` arguments -> the run's final logged metrics


@dataclass(frozen=True)
class SuiteTask:
    """One downstream task of a suite.

    Args:
        name: The task's name in the table and the TensorBoard folders.
        recipe: Its fit config files.
        metric: The metric the table reports (``None``: pick from what the runs log).
        args: More fit arguments, ``key: value`` (placeholders already filled).
    """

    name: str
    recipe: tuple[str, ...]
    metric: str | None
    args: tuple[tuple[str, Any], ...] = ()

    def fit_args(self) -> list[str]:
        """``-c recipe ... --key=value ...``."""
        args = [a for path in self.recipe for a in ("-c", path)]
        return args + [f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in self.args]


def file_name(name: str) -> str:
    """``name`` made safe as a file or folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "run"


def label_of(start: str) -> str:
    """A short, file-name-safe name for a starting point."""
    path = Path(start)
    return file_name(start[3:] if start.startswith("hf:") else path.stem if path.suffix == ".ckpt" else path.name)


def read_suite(path: str | Path, data_dir: str | None = None, only: list[str] | None = None) -> list[SuiteTask]:
    """The tasks of the suite file ``path`` (those named in ``only``, in suite order), every
    recipe file and ``{data_dir}`` value checked.

    Args:
        path: The suite YAML.
        data_dir: What ``{data_dir}`` stands for in the tasks' ``args``.
        only: Task names to keep; ``None`` keeps all.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Suite file '{path}' does not exist: give a suite YAML (see configs/eval/) or --recipe.")
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    tasks = spec.get("tasks") if isinstance(spec, dict) else None
    if not isinstance(tasks, dict) or not tasks:
        raise UserError(f"Suite '{path}' has no `tasks:` mapping of task names to recipe, metric and args.")
    unknown = [name for name in only or [] if name not in tasks]
    if unknown:
        raise UserError(f"Suite '{path}' has no task {', '.join(map(repr, unknown))}: its tasks are "
                        f"{', '.join(map(str, tasks))}.")
    chosen = [name for name in tasks if only is None or name in only]
    return [_task(str(name), tasks[name], path, data_dir) for name in chosen]


def _task(name: str, spec: Any, suite: Path, data_dir: str | None) -> SuiteTask:
    where = f"Task '{name}' of suite '{suite}'"
    if not isinstance(spec, dict) or not spec.get("recipe") or not isinstance(spec.get("metric"), str):
        raise UserError(f"{where} needs `recipe` (fit config files) and `metric` (e.g. val/f1).")
    extra = sorted(set(spec) - set(TASK_KEYS))
    if extra:
        raise UserError(f"{where} has unknown key(s) {', '.join(extra)}: a task has {', '.join(TASK_KEYS)}.")
    recipe = [spec["recipe"]] if isinstance(spec["recipe"], str) else list(spec["recipe"])
    files = [Path(os.path.normpath(suite.parent / r)) for r in recipe]
    missing = next((f for f in files if not f.is_file()), None)
    if missing is not None:
        raise UserError(f"{where}: recipe file '{missing}' does not exist.")
    args = spec.get("args") or {}
    if not isinstance(args, dict):
        raise UserError(f"{where}: `args` must map fit arguments to values, e.g. `data.batch_size: 16`.")
    filled = tuple((str(key), _fill(value, data_dir, f"{where}, {key}")) for key, value in args.items())
    return SuiteTask(name, tuple(map(str, files)), spec["metric"], filled)


def _fill(value: Any, data_dir: str | None, where: str) -> Any:
    """``value`` with ``{data_dir}`` replaced; a path made from it must exist."""
    if isinstance(value, list):
        return [_fill(v, data_dir, where) for v in value]
    if not isinstance(value, str) or PLACEHOLDER not in value:
        return value
    if data_dir is None:
        raise UserError(f"{where} is '{value}': give the data folder with --data_dir.")
    filled = value.replace(PLACEHOLDER, data_dir)
    if not (glob.glob(filled) if glob.has_magic(filled) else Path(filled).exists()):
        raise UserError(f"{where} is '{filled}', which does not exist: check --data_dir (the suite file names the "
                        "layout it expects).")
    return filled


def run_one(fit: Fit, task: SuiteTask, start: str, seed: int, out: Path, label: str, random_init: bool,
            overrides: list[str]) -> dict[str, float]:
    """Fine-tune ``task`` from ``start`` with ``seed``; the run's final ``val/*`` metrics."""
    args = [*task.fit_args(), f"--model.init_from={start}", f"--seed_everything={seed}",
            "--trainer.logger=lightning.pytorch.loggers.TensorBoardLogger",
            f"--trainer.logger.save_dir={out / 'tensorboard' / file_name(task.name)}",
            f"--trainer.logger.name={label}", f"--trainer.logger.version=seed_{seed}",
            "--trainer.logger.default_hp_metric=false", "--trainer.enable_progress_bar=false"]
    if random_init:
        args.append("--model.random_init=true")
    metrics = {k: v for k, v in fit([*args, *overrides]).items() if k.startswith("val/")}
    if not metrics:
        raise UserError(f"Task '{task.name}' from {start} (seed {seed}) logged no val/ metric: let it validate "
                        "(trainer.limit_val_batches > 0, a validation split in the data).")
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
    fit: Fit | None = None,
) -> Path:
    """Fine-tune a suite of downstream tasks from several starting points, N seeds each; tabulate, plot, log.

    Args:
        starts: Starting points: lmforge ``.ckpt`` files, Hugging Face folders or ``hf:<id>``.
        suite: A suite YAML file (see ``configs/eval/``); or give ``recipe``.
        recipe: Fine-tuning config file(s) of a one-task suite, named after the (first) file's stem.
        metric: With ``recipe``: the metric the table reports (default: ``val/acc``,
            ``val/spearman`` or the first logged). A suite names each task's own.
        tasks: Run only these tasks of the suite.
        data_dir: The data folder that ``{data_dir}`` in the suite's task arguments stands for.
        seeds: Runs per task and start, with seeds 0, 1, ... (each passed as ``--seed_everything``).
        random_baseline: Add a randomly initialised network of the first start's architecture.
        labels: Names of the starts in the table (default: file stems or hub ids).
        out: The folder to write into; one that already holds results is refused.
        overrides: More ``fit`` arguments for every run, e.g. ``["--trainer.max_steps=200"]``.
        fit: Runs ``lmforge fit`` with the given arguments and returns its final metrics (the
            command line hands over its own).
    """
    if fit is None:
        raise UserError("evaluate needs a way to run `lmforge fit`: call it through `lmforge evaluate`.")
    out_dir = Path(out)
    names = _start_names(starts, labels, seeds, out_dir)
    chosen = _chosen_tasks(suite, recipe, metric, tasks, data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = [(RANDOM, starts[0], True)] if random_baseline else []
    plan += [(name, start, False) for name, start in zip(names, starts)]
    rows: list[dict] = []
    for task in chosen:
        for name, start, random_init in plan:
            for seed in range(seeds):
                metrics = run_one(fit, task, start, seed, out_dir, file_name(name), random_init, list(overrides or []))
                rows.append({"task": task.name, "start": name, "source": start, "seed": seed, **metrics})
                write_runs(rows, out_dir)
    _report(rows, chosen, out_dir)
    return out_dir


def _start_names(starts: list[str], labels: list[str] | None, seeds: int, out_dir: Path) -> list[str]:
    """The names of the starts in the table, once the run is known to be possible (before anything runs)."""
    if not starts:
        raise UserError("Give at least one starting point: --starts '[general.ckpt, domain.ckpt]'.")
    if seeds < 1:
        raise UserError(f"seeds must be at least 1, got {seeds}.")
    names = list(labels) if labels else [label_of(s) for s in starts]
    if len(names) != len(starts) or len(set(names)) != len(names) or RANDOM in names:
        raise UserError(f"labels {names} must name each of the {len(starts)} starts once, other than "
                        f"'{RANDOM}': pass distinct --labels.")
    existing = [p for p in (*RESULT_FILES, "tensorboard") if (out_dir / p).exists()]
    if existing:
        raise UserError(f"'{out_dir}' already holds {', '.join(existing)}: choose another --out (nothing was run).")
    return names


def _report(rows: list[dict], chosen: list[SuiteTask], out_dir: Path) -> None:
    """Write and print the summary table, name a task that logged no metric of the table, say where the files are."""
    reported = {t.name: t.metric or _default_metric([r for r in rows if r["task"] == t.name]) for t in chosen}
    table = write_summary(rows, reported, out_dir)
    print(table)
    for task, name in reported.items():
        if not any(name in r for r in rows if r["task"] == task):
            logged = sorted({k for r in rows if r["task"] == task for k in r if k.startswith("val/")})
            print(f"Task '{task}' logged no {name} (it logged {', '.join(logged)}): fix its metric.")
    print(f"Wrote {out_dir}/runs.csv, summary.md, summary.csv, summary.png and tensorboard/ "
          f"(tensorboard --logdir {out_dir / 'tensorboard'}).")


def _chosen_tasks(suite: str | None, recipe: list[str] | None, metric: str | None, tasks: list[str] | None,
                  data_dir: str | None) -> list[SuiteTask]:
    """The tasks to run: those of the suite file, or the one task of ``recipe``."""
    if (suite is None) == (not recipe):
        raise UserError("Give exactly one of --suite (a suite YAML) and --recipe (fine-tuning config files).")
    if suite is not None:
        if metric is not None:
            raise UserError("--metric is for --recipe only: a suite names each task's metric in its file.")
        return read_suite(suite, str(Path(data_dir).resolve()) if data_dir is not None else None, tasks)
    task = SuiteTask(Path(recipe[0]).stem, tuple(recipe), metric)
    missing = next((r for r in recipe if not Path(r).is_file()), None)
    if missing is not None:
        raise UserError(f"Recipe file '{missing}' does not exist.")
    if tasks and tasks != [task.name]:
        raise UserError(f"--recipe makes the one task '{task.name}': drop --tasks {tasks}.")
    return [task]


def _default_metric(rows: list[dict]) -> str:
    logged = sorted({k for r in rows for k in r if k.startswith("val/")})
    return next((m for m in ("val/acc", "val/spearman") if m in logged), logged[0])


def evaluate_command(argv: list[str], fit: Fit) -> None:
    """``lmforge evaluate --suite configs/eval/x.yaml --starts '[a.ckpt, b.ckpt]' ...``; every run goes through ``fit``."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="lmforge evaluate", description=evaluate.__doc__.splitlines()[0])
    parser.add_function_arguments(evaluate, as_positional=False, skip={"fit"})
    evaluate(**parser.parse_args(argv).as_dict(), fit=fit)
