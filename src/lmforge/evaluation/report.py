"""The results of ``lmforge evaluate``: every run's metrics (``runs.csv``), the table of each
task's reported metrics (one row per task and metric; per training-set size too for a learning
curve), mean ± sample standard deviation over seeds per start (``summary.csv``, ``summary.md``),
an optional average row over chosen task metrics (GLUE's), grouped bars of that table
(``summary.png``) and, for a learning curve, the score against the number of labelled examples
(``curve.png`` and ``tensorboard/curve/<task>/<start>``)."""

from __future__ import annotations

import csv
import math
import re
import statistics
import sys
from pathlib import Path


RESULT_FILES = ("runs.csv", "summary.csv", "summary.md", "summary.png", "curve.png")
Size = int | str | None  # a run's training examples: a number, "all", or None (no learning curve)
Table = dict[tuple[str, str, Size], dict[str, tuple]]  # (task, metric, size) -> start -> (mean, std, runs)
Metrics = dict[str, str | list[str]]  # each task's reported metric(s), in table order
Average = tuple[str, list[tuple[str, str]]]  # an average row's name and its (task, metric) parts


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value, NaN for none)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def write_runs(rows: list[dict], out_dir: Path) -> None:
    """``runs.csv``: one row per run (``task``, ``start``, ``source``, ``seed``, then every metric
    any run logged: a fine-tune run's ``val/*``, a scoring run's ``acc``, ``bits_per_byte`` ...;
    last a fine-tune run's cost: ``perf/train_seconds``, ``perf/train_tokens_per_sec`` (real
    tokens, padding left out) and ``perf/peak_cuda_allocated_mb`` on a GPU or ``perf/peak_rss_mb``
    (the process's peak resident memory) on a CPU; a column another task's runs do not log stays
    empty, as does a scoring run's seed, and ``train_size`` outside a learning curve)."""
    columns = ["task", "start", "source", "seed", "train_size"]
    # the metrics first, then what the run cost
    names = sorted({k for row in rows for k in row} - set(columns), key=lambda k: (k.startswith("perf/"), k))
    with open(out_dir / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, [*columns, *names])
        writer.writeheader()
        writer.writerows(rows)


def sizes_of(rows: list[dict], task: str) -> list[Size]:
    """The training-set sizes ``task``'s runs used, smallest first, ``all`` last (``[None]`` outside a curve)."""
    found = {r.get("train_size") for r in rows if r["task"] == task} or {None}
    return sorted(found, key=lambda size: (not isinstance(size, int), size if isinstance(size, int) else 0))


def metric_list(metric: str | list[str]) -> list[str]:
    """A task's reported metrics as a list (a suite entry may name one or several)."""
    return [metric] if isinstance(metric, str) else list(metric)


def summary_table(rows: list[dict], metrics: Metrics) -> tuple[list[str], Table]:
    """The starts in run order, and per (task, metric, training-set size) and start ``(mean,
    std, runs)`` of that metric.

    Args:
        rows: One dict per run, as in ``runs.csv``.
        metrics: The reported metric(s) of each task, in table order.
    """
    starts = list(dict.fromkeys(row["start"] for row in rows))
    table = {}
    for task, reported in metrics.items():
        for metric in metric_list(reported):
            for size in sizes_of(rows, task):
                table[task, metric, size] = {}
                for start in starts:
                    values = [r[metric] for r in rows if r["task"] == task and r["start"] == start
                              and r.get("train_size") == size and metric in r]
                    table[task, metric, size][start] = (*mean_std(values), len(values))
    return starts, table


def average_cell(rows: list[dict], parts: list[tuple[str, str]], start: str, size: Size) -> tuple | list[str]:
    """``(mean, std, seeds)`` over seeds of the per-seed mean of the ``(task, metric)`` parts for
    ``start`` (seed k of every task; a scoring task's one run pairs with every seed), from the
    seeds every part has; or the tasks of the parts without a run for ``start`` at all.

    Args:
        rows: One dict per run, as in ``runs.csv``.
        parts: The averaged ``(task, metric)`` pairs (a pair may come twice: MNLI-m and -mm are two).
        start: The start's name.
        size: The training-set size (``None`` outside a learning curve).
    """
    mine = [r for r in rows if r["start"] == start and r.get("train_size") == size]
    missing = [task for task in dict.fromkeys(t for t, _ in parts) if not any(r["task"] == task for r in mine)]
    if missing:
        return missing
    seeds = sorted({r["seed"] for r in mine if r["seed"] is not None} or {None}, key=str)
    means = []
    for seed in seeds:
        found = [next((r[m] for r in mine if r["task"] == t and r["seed"] in (seed, None) and m in r), None)
                 for t, m in parts]
        if None not in found:
            means.append(statistics.fmean(found))
    if not means:  # every part ran, but no seed has them all logged
        return [f"{t} {m}" for t, m in parts if not any(r["task"] == t and m in r for r in mine)]
    return (*mean_std(means), len(means))


def _cell(mean: float, std: float, n: int) -> str:
    # one run (a scoring task, or one seed) has no spread to show
    return (f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}") if n else "not logged"


def write_summary(rows: list[dict], metrics: Metrics, out_dir: Path, average: Average | None = None,
                  note: str = "") -> str:
    """``summary.csv``, ``summary.md`` and ``summary.png``: one row (group of bars) per task and
    metric, one column (bar) per start; with training-set sizes one row per task, metric and
    size, and ``curve.png``; then the ``average`` row (per size), its parts and ``note`` written
    under the markdown table. The markdown table is returned.

    Args:
        rows: One dict per run, as in ``runs.csv``.
        metrics: The reported metric(s) of each task, in table order.
        out_dir: Where to write.
        average: A row's name and the ``(task, metric)`` pairs it averages per seed (:func:`average_cell`).
        note: What the average row's reader must know (e.g. where a published average comes from).
    """
    starts, table = summary_table(rows, metrics)
    curve = any(size is not None for _, _, size in table)
    lines = [["task", *["train_size"] * curve, "metric", "runs", *[f"{s} {p}" for s in starts for p in ("mean", "std")]]]
    markdown = ["| task | " + "train size | " * curve + "metric | " + " | ".join(starts) + " |",
                "|---|---|" + "---|" * (len(starts) + curve)]
    rows_of = [(task, metric, size, cells) for (task, metric, size), cells in table.items()]
    if average is not None:
        name, parts = average
        for size in dict.fromkeys(size for _, _, size in table):
            rows_of.append((name, f"mean of {len(parts)}", size, {s: average_cell(rows, parts, s, size) for s in starts}))
    for task, metric, size, cells in rows_of:
        sized = [size if size is not None else ""] * curve
        runs = max(c[2] if isinstance(c, tuple) else 0 for c in cells.values())
        lines.append([task, *sized, metric, runs, *[v for s in starts for v in _csv_cells(cells[s])]])
        shown = [_cell(*c) if isinstance(c, tuple) else f"missing: {', '.join(c)}" for c in (cells[s] for s in starts)]
        markdown.append(f"| {task} | " + "".join(f"{v} | " for v in sized) + f"{metric} | " + " | ".join(shown) + " |")
    if average is not None:
        said = ", ".join(f"{t} {m}" for t, m in average[1])
        markdown += ["", f"{average[0]}: the mean over seeds of each seed's mean of {said}. {note}".strip()]
    with open(out_dir / "summary.csv", "w", newline="") as f:
        csv.writer(f).writerows(lines)
    text = "\n".join(markdown) + "\n"
    (out_dir / "summary.md").write_text(text, encoding="utf-8")
    bars = {f"{t}\n{m}": cells for (t, m, size), cells in table.items() if size in (None, "all")}  # whole split
    if bars:
        _bar_chart(starts, bars, out_dir / "summary.png")
    if curve:
        write_curves(starts, metrics, table, out_dir)
    return text


def _csv_cells(cell: tuple | list[str]) -> list[str]:
    """A start's mean and std in summary.csv; an average row lacking tasks names them instead."""
    return [f"{v:.6g}" for v in cell[:2]] if isinstance(cell, tuple) else [f"missing: {' '.join(cell)}", ""]


def _curves(starts: list[str], table: Table) -> dict[tuple[str, str], dict[str, list[tuple]]]:
    """Per (task, metric) and start, ``(size, mean, std)`` of every numbered size with runs, smallest first."""
    curves: dict[tuple[str, str], dict[str, list[tuple]]] = {}
    for (task, metric, size), cells in table.items():
        if isinstance(size, int):
            for start in starts:
                mean, std, n = cells[start]
                if n:
                    curves.setdefault((task, metric), {}).setdefault(start, []).append((size, mean, std))
    return curves


def write_curves(starts: list[str], metrics: Metrics, table: Table, out_dir: Path) -> None:
    """The learning curves: ``curve.png`` (one panel per task and metric, one line per start, mean
    ± std over seeds, log-scale x; the whole split's score, ``all``, a dashed line) and each start's
    mean in TensorBoard at step = training examples (``tensorboard/curve/<task>/<start>``, one
    scalar per metric).

    Args:
        starts: The starts, in run order.
        metrics: The reported metric(s) of each task.
        table: :func:`summary_table`'s second value.
        out_dir: Where to write.
    """
    curves = _curves(starts, table)
    _log_curves(curves, out_dir)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("No curve.png: the learning curve needs matplotlib (`pip install matplotlib`, or lmforge[plot]).",
              file=sys.stderr)
        return
    if not curves:
        return
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.6), squeeze=False)
    for ax, ((task, metric), lines) in zip(axes[0], curves.items()):
        for i, start in enumerate(starts):
            color = f"C{i}"
            points = lines.get(start, [])
            if points:
                x, mean, std = (list(v) for v in zip(*points))
                ax.plot(x, mean, marker="o", color=color, label=start)
                ax.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                                color=color, alpha=0.2)
            whole = table.get((task, metric, "all"), {}).get(start)
            if whole and whole[2]:
                ax.axhline(whole[0], color=color, linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("labelled training examples")
        ax.set_ylabel(metric)
        ax.set_title(f"{task} (dashed: all)" if (task, metric, "all") in table else task)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out_dir / "curve.png", dpi=120)
    plt.close(fig)


def _log_curves(curves: dict[tuple[str, str], dict[str, list[tuple]]], out_dir: Path) -> None:
    """Each start's mean per task at step = training examples, in ``tensorboard/curve/<task>/<start>``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the runs' own logs need it too; the tables and curve.png do not
        print("No tensorboard/curve: it needs tensorboard (`pip install tensorboard`).", file=sys.stderr)
        return
    for (task, metric), lines in curves.items():
        for start, points in lines.items():
            with SummaryWriter(str(out_dir / "tensorboard" / "curve" / file_name(task) / file_name(start))) as writer:
                for size, mean, _ in points:
                    writer.add_scalar(metric, mean, global_step=size)


def file_name(name: str) -> str:
    """``name`` made safe as a file or folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "run"


def _bar_chart(starts: list[str], table: dict[str, dict[str, tuple]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the tables are the result; the chart is a view of them
        print("No summary.png: the bar chart needs matplotlib (`pip install matplotlib`, or lmforge[plot]).",
              file=sys.stderr)
        return
    tasks = list(table)  # "task\nmetric"
    width = 0.8 / len(starts)
    fig, ax = plt.subplots(figsize=(2.0 + 0.5 * len(tasks) * len(starts), 3.8))
    for i, start in enumerate(starts):
        means = [table[t][start][0] for t in tasks]
        stds = [table[t][start][1] for t in tasks]
        ax.bar([k + (i - (len(starts) - 1) / 2) * width for k in range(len(tasks))], means, width, yerr=stds,
               capsize=4, label=start)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("task metric")
    ax.set_title("mean ± std over seeds")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
