"""The tasks of an ``lmforge evaluate`` suite file, read and checked before anything runs: fine-tune
tasks (fit recipes, see :mod:`lmforge.evaluation.suite`) and zero/few-shot scoring tasks::

    tasks:
      sciq:
        kind: multiple_choice     # the kind of the task file (multiple_choice | loglikelihood | generate | perplexity)
        task: tasks/sciq.yaml     # relative to the suite file
        shots: 5                  # optional: overrides the task file's
        limit: 1000               # optional: score only the first N items
        metric: acc_norm          # optional: what the table reports (default: the kind's first metric)
        random_baseline: true     # optional: score the random baseline too (when --random_baseline)
      mrpc:
        recipe: [../finetune/glue.yaml]
        metric: [val/f1_1, val/acc]   # one metric, or several: a table row each
    average:                      # optional: a row averaging task metrics per seed (GLUE's)
      name: GLUE average
      of: [mrpc val/f1_1, sciq acc_norm]   # "task metric" each; a pair may come twice
      note: validation sets, not the test server's   # optional: written under the table
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lmforge.errors import UserError, did_you_mean
from lmforge.evaluation.prompt_tasks import KINDS, PromptTask, read_task
from lmforge.evaluation.zero_shot import METRICS

PLACEHOLDER = "{data_dir}"
TASK_KEYS = ("recipe", "metric", "args")
SUITE_KEYS = ("tasks", "average")
AVERAGE_KEYS = ("name", "of", "note")
SCORING_KEYS = ("kind", "task", "shots", "limit", "metric", "random_baseline")
DEFAULT_METRIC = {"multiple_choice": "acc", "loglikelihood": "acc", "generate": "exact_match",
                  "perplexity": "bits_per_byte"}  # bits per byte compares models with different tokenizers


@dataclass(frozen=True)
class SuiteTask:
    """One fine-tune task of a suite.

    Args:
        name: The task's name in the table and the TensorBoard folders.
        recipe: Its fit config files.
        metric: The metric the table reports, or several (a row each); ``None``: pick from what the runs log.
        args: More fit arguments, ``key: value`` (placeholders already filled).
    """

    name: str
    recipe: tuple[str, ...]
    metric: str | tuple[str, ...] | None
    args: tuple[tuple[str, Any], ...] = ()

    @property
    def metrics(self) -> tuple[str, ...]:
        """The reported metrics (none: picked from what the runs log)."""
        return (self.metric,) if isinstance(self.metric, str) else tuple(self.metric or ())

    def fit_args(self) -> list[str]:
        """``-c recipe ... --key=value ...``."""
        args = [a for path in self.recipe for a in ("-c", path)]
        return args + [f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in self.args]


@dataclass(frozen=True)
class ScoringTask:
    """One zero/few-shot task of a suite: no fit, no seeds, one run per start.

    Args:
        name: The task's name in the table and the requests folder.
        task: Its task file, read, with the suite's overrides.
        metric: The metric the table reports.
        random_baseline: Score the random baseline too (when the command asks for one).
    """

    name: str
    task: PromptTask
    metric: str
    random_baseline: bool = False

    @property
    def metrics(self) -> tuple[str, ...]:
        """The reported metric, as a fine-tune task's several."""
        return (self.metric,)


@dataclass(frozen=True)
class Average:
    """A suite's average row: per start (and training-set size), the mean over seeds of each
    seed's mean of task metrics (:func:`lmforge.evaluation.report.average_cell`).

    Args:
        name: The row's name in the table.
        parts: The averaged ``(task, metric)`` pairs, in order; a pair may come twice.
        note: Written under the table (e.g. how a published average differs).
    """

    name: str
    parts: tuple[tuple[str, str], ...]
    note: str = ""


def read_suite(path: str | Path, data_dir: str | None = None,
               only: list[str] | None = None) -> list[SuiteTask | ScoringTask]:
    """The tasks of the suite file ``path`` (those named in ``only``, in suite order), every
    recipe file, task file and ``{data_dir}`` value checked.

    Args:
        path: The suite YAML.
        data_dir: What ``{data_dir}`` stands for in the tasks' ``args``.
        only: Task names to keep; ``None`` keeps all.
    """
    path = Path(path)
    tasks = _suite_tasks(path)
    unknown = [name for name in only or [] if name not in tasks]
    if unknown:
        raise UserError(f"Suite '{path}' has no task {', '.join(map(repr, unknown))}: its tasks are "
                        f"{', '.join(map(str, tasks))}.")
    chosen = [name for name in tasks if only is None or name in only]
    return [_scoring_task(str(name), tasks[name], path) if isinstance(tasks[name], dict) and "kind" in tasks[name]
            else _task(str(name), tasks[name], path, data_dir) for name in chosen]


def _suite_tasks(path: Path) -> dict:
    """The ``tasks:`` mapping of the suite file ``path``, its top-level keys checked."""
    if not path.is_file():
        raise UserError(f"Suite file '{path}' does not exist: give a suite YAML (see configs/eval/) or --recipe.")
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    tasks = spec.get("tasks") if isinstance(spec, dict) else None
    if not isinstance(tasks, dict) or not tasks:
        raise UserError(f"Suite '{path}' has no `tasks:` mapping of task names to recipe, metric and args.")
    unknown = next((str(k) for k in spec if k not in SUITE_KEYS), None)
    if unknown is not None:
        raise UserError(f"Suite '{path}' has the unknown key '{unknown}': {did_you_mean(unknown, SUITE_KEYS)}")
    return tasks


def read_average(path: str | Path) -> Average | None:
    """The ``average:`` entry of the suite file ``path`` (``None`` without one), every part naming
    a task of the suite and one of the metrics it reports.

    Args:
        path: The suite YAML.
    """
    path = Path(path)
    tasks = _suite_tasks(path)
    spec = yaml.safe_load(path.read_text(encoding="utf-8")).get("average")
    if spec is None:
        return None
    where = f"The average of suite '{path}'"
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("of"), list):
        raise UserError(f"{where} needs `name` (the row's) and `of` (a list of \"task metric\" entries).")
    unknown = next((str(k) for k in spec if k not in AVERAGE_KEYS), None)
    if unknown is not None:
        raise UserError(f"{where} has the unknown key '{unknown}': {did_you_mean(unknown, AVERAGE_KEYS)}")
    reported = {str(name): _reported(entry) for name, entry in tasks.items()}
    parts = []
    for entry in spec["of"]:
        task, _, metric = str(entry).strip().partition(" ")
        metric = metric.strip()
        if task not in reported or not metric:
            hint = did_you_mean(task, reported) if metric else 'write each as "task metric", e.g. "mrpc val/f1_1".'
            raise UserError(f"{where} averages {entry!r}, not a task of the suite with a metric: {hint}")
        if metric not in reported[task]:
            raise UserError(f"{where} averages {metric!r} of task '{task}', which reports "
                            f"{', '.join(reported[task])}: {did_you_mean(metric, reported[task])}")
        parts.append((task, metric))
    return Average(spec["name"], tuple(parts), str(spec.get("note") or ""))


def _reported(entry: Any) -> list[str]:
    """The metrics a suite entry reports (unchecked: reading its task checks them)."""
    if not isinstance(entry, dict):
        return []
    metric = entry.get("metric") or (DEFAULT_METRIC.get(entry.get("kind")) if "kind" in entry else None)
    return [metric] if isinstance(metric, str) else [str(m) for m in metric or []]


def _task(name: str, spec: Any, suite: Path, data_dir: str | None) -> SuiteTask:
    where = f"Task '{name}' of suite '{suite}'"
    metric = spec.get("metric") if isinstance(spec, dict) else None
    metrics = [metric] if isinstance(metric, str) else metric
    if not isinstance(spec, dict) or not spec.get("recipe") or not isinstance(metrics, list) or not metrics \
            or not all(isinstance(m, str) for m in metrics) or len(set(metrics)) != len(metrics):
        raise UserError(f"{where} needs `recipe` (fit config files) and `metric` (e.g. val/f1, or a list of distinct "
                        "metrics such as [val/f1_1, val/acc]).")
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
    return SuiteTask(name, tuple(map(str, files)), metric if isinstance(metric, str) else tuple(metrics), filled)


def _scoring_task(name: str, spec: dict, suite: Path) -> ScoringTask:
    where = f"Task '{name}' of suite '{suite}'"
    for key in spec:
        if key not in SCORING_KEYS:
            raise UserError(f"{where} has unknown key '{key}': {did_you_mean(str(key), SCORING_KEYS)}")
    if spec["kind"] not in KINDS or not isinstance(spec.get("task"), str):
        raise UserError(f"{where} needs `kind` ({', '.join(KINDS)}) and `task` (a task file such as "
                        f"tasks/sciq.yaml), got kind {spec['kind']!r} and task {spec.get('task')!r}.")
    task = read_task(os.path.normpath(suite.parent / spec["task"]))
    if task.kind != spec["kind"]:
        raise UserError(f"{where} has kind {spec['kind']} but its task file '{task.path}' is kind {task.kind}: "
                        "make them agree.")
    for key in ("shots", "limit"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise UserError(f"{where}: `{key}` must be a whole number, got {value!r}.")
    task = task.overridden(spec.get("shots"), spec.get("limit"))
    metric = spec.get("metric") or DEFAULT_METRIC[task.kind]
    if metric not in METRICS[task.kind]:
        raise UserError(f"{where} has metric {metric!r}, which kind {task.kind} does not compute: "
                        f"{did_you_mean(str(metric), METRICS[task.kind])}")
    if not isinstance(spec.get("random_baseline", False), bool):
        raise UserError(f"{where}: `random_baseline` must be true or false, got {spec['random_baseline']!r}.")
    return ScoringTask(name, task, metric, spec.get("random_baseline", False))


def _fill(value: Any, data_dir: str | None, where: str) -> Any:
    """``value`` with ``{data_dir}`` replaced; a path made from it must exist."""
    if isinstance(value, list):
        return [_fill(v, data_dir, where) for v in value]
    if isinstance(value, dict):  # e.g. data.extra_validation: {mismatched: "{data_dir}/MNLI/dev_mismatched.tsv"}
        return {k: _fill(v, data_dir, f"{where}.{k}") for k, v in value.items()}
    if not isinstance(value, str) or PLACEHOLDER not in value:
        return value
    if data_dir is None:
        raise UserError(f"{where} is '{value}': give the data folder with --data_dir.")
    filled = value.replace(PLACEHOLDER, data_dir)
    if not (glob.glob(filled) if glob.has_magic(filled) else Path(filled).exists()):
        raise UserError(f"{where} is '{filled}', which does not exist: check --data_dir (the suite file names the "
                        "layout it expects).")
    return filled


def chosen_tasks(suite: str | None, recipe: list[str] | None, metric: str | None, tasks: list[str] | None,
                 data_dir: str | None) -> list[SuiteTask | ScoringTask]:
    """The tasks to run: those of the suite file, or the one task of ``recipe``.

    Args:
        suite: The suite file, or ``None``.
        recipe: The fit config files of a one-task suite, or ``None``.
        metric: With ``recipe``: the metric the table reports.
        tasks: Only these tasks of the suite.
        data_dir: What ``{data_dir}`` stands for.
    """
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
