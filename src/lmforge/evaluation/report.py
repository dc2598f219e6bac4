"""The results of ``lmforge evaluate``: every run's metrics (``runs.csv``), the table of one
metric per task (per task and training-set size for a learning curve), mean ± sample standard
deviation over seeds per start (``summary.csv``, ``summary.md``), grouped bars of that table
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
Table = dict[tuple[str, Size], dict[str, tuple]]  # (task, size) -> start -> (mean, std, runs)


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


def summary_table(rows: list[dict], metrics: dict[str, str]) -> tuple[list[str], Table]:
    """The starts in run order, and per (task, training-set size) and start ``(mean, std, runs)``
    of the task's metric.

    Args:
        rows: One dict per run, as in ``runs.csv``.
        metrics: The reported metric of each task, in table order.
    """
    starts = list(dict.fromkeys(row["start"] for row in rows))
    table = {}
    for task, metric in metrics.items():
        for size in sizes_of(rows, task):
            table[task, size] = {}
            for start in starts:
                values = [r[metric] for r in rows if r["task"] == task and r["start"] == start
                          and r.get("train_size") == size and metric in r]
                table[task, size][start] = (*mean_std(values), len(values))
    return starts, table


def write_summary(rows: list[dict], metrics: dict[str, str], out_dir: Path) -> str:
    """``summary.csv``, ``summary.md`` and ``summary.png``: one row (group of bars) per task, one
    column (bar) per start; with training-set sizes one row per task and size, and ``curve.png``.
    The markdown table is returned.

    Args:
        rows: One dict per run, as in ``runs.csv``.
        metrics: The reported metric of each task, in table order.
        out_dir: Where to write.
    """
    starts, table = summary_table(rows, metrics)
    curve = any(size is not None for _, size in table)
    sized = ["train_size"] if curve else []
    with open(out_dir / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        parts = [f"{s} {part}" for s in starts for part in ("mean", "std")]
        writer.writerow(["task", *sized, "metric", "runs", *parts])
        for (task, size), cells in table.items():
            runs = max(n for _, _, n in cells.values())
            writer.writerow([task, *([size] if curve else []), metrics[task], runs,
                             *[f"{v:.6g}" for s in starts for v in cells[s][:2]]])
    lines = ["| task | " + "train size | " * curve + "metric | " + " | ".join(starts) + " |",
             "|---|---|" + "---|" * (len(starts) + curve)]
    for (task, size), cells in table.items():
        # one run (a scoring task, or one seed) has no spread to show
        shown = [(f"{m:.4f} ± {s:.4f}" if n > 1 else f"{m:.4f}") if n else "not logged"
                 for m, s, n in (cells[st] for st in starts)]
        lines.append(f"| {task} | " + (f"{size if size is not None else ''} | " if curve else "")
                     + f"{metrics[task]} | " + " | ".join(shown) + " |")
    markdown = "\n".join(lines) + "\n"
    (out_dir / "summary.md").write_text(markdown, encoding="utf-8")
    bars = {task: cells for (task, size), cells in table.items() if size in (None, "all")}  # the whole training split
    if bars:
        _bar_chart(starts, {task: metrics[task] for task in bars}, bars, out_dir / "summary.png")
    if curve:
        write_curves(starts, metrics, table, out_dir)
    return markdown


def _curves(starts: list[str], table: Table) -> dict[str, dict[str, list[tuple]]]:
    """Per task and start, ``(size, mean, std)`` of every numbered size with runs, smallest first."""
    curves: dict[str, dict[str, list[tuple]]] = {}
    for (task, size), cells in table.items():
        if isinstance(size, int):
            for start in starts:
                mean, std, n = cells[start]
                if n:
                    curves.setdefault(task, {}).setdefault(start, []).append((size, mean, std))
    return curves


def write_curves(starts: list[str], metrics: dict[str, str], table: Table,
                 out_dir: Path) -> None:
    """The learning curves: ``curve.png`` (one panel per task, one line per start, mean ± std over
    seeds, log-scale x; the whole split's score, ``all``, a dashed line) and each start's mean in
    TensorBoard at step = training examples (``tensorboard/curve/<task>/<start>``).

    Args:
        starts: The starts, in run order.
        metrics: The reported metric of each task.
        table: :func:`summary_table`'s second value.
        out_dir: Where to write.
    """
    curves = _curves(starts, table)
    _log_curves(curves, metrics, out_dir)
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
    for ax, (task, lines) in zip(axes[0], curves.items()):
        for i, start in enumerate(starts):
            color = f"C{i}"
            points = lines.get(start, [])
            if points:
                x, mean, std = (list(v) for v in zip(*points))
                ax.plot(x, mean, marker="o", color=color, label=start)
                ax.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                                color=color, alpha=0.2)
            whole = table.get((task, "all"), {}).get(start)
            if whole and whole[2]:
                ax.axhline(whole[0], color=color, linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("labelled training examples")
        ax.set_ylabel(metrics[task])
        ax.set_title(f"{task} (dashed: all)" if any(size == "all" for t, size in table if t == task) else task)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out_dir / "curve.png", dpi=120)
    plt.close(fig)


def _log_curves(curves: dict[str, dict[str, list[tuple]]], metrics: dict[str, str], out_dir: Path) -> None:
    """Each start's mean per task at step = training examples, in ``tensorboard/curve/<task>/<start>``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the runs' own logs need it too; the tables and curve.png do not
        print("No tensorboard/curve: it needs tensorboard (`pip install tensorboard`).", file=sys.stderr)
        return
    for task, lines in curves.items():
        for start, points in lines.items():
            with SummaryWriter(str(out_dir / "tensorboard" / "curve" / file_name(task) / file_name(start))) as writer:
                for size, mean, _ in points:
                    writer.add_scalar(metrics[task], mean, global_step=size)


def file_name(name: str) -> str:
    """``name`` made safe as a file or folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "run"


def _bar_chart(starts: list[str], metrics: dict[str, str], table: dict[str, dict[str, tuple]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the tables are the result; the chart is a view of them
        print("No summary.png: the bar chart needs matplotlib (`pip install matplotlib`, or lmforge[plot]).",
              file=sys.stderr)
        return
    tasks = list(metrics)
    width = 0.8 / len(starts)
    fig, ax = plt.subplots(figsize=(2.0 + 0.5 * len(tasks) * len(starts), 3.8))
    for i, start in enumerate(starts):
        means = [table[t][start][0] for t in tasks]
        stds = [table[t][start][1] for t in tasks]
        ax.bar([k + (i - (len(starts) - 1) / 2) * width for k in range(len(tasks))], means, width, yerr=stds,
               capsize=4, label=start)
    ax.set_xticks(range(len(tasks)), [f"{t}\n{metrics[t]}" for t in tasks])
    ax.set_ylabel("task metric")
    ax.set_title("mean ± std over seeds")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
