"""The results of ``lmforge evaluate``: every run's metrics (``runs.csv``), the table of one
metric per task, mean ± sample standard deviation over seeds per start (``summary.csv``,
``summary.md``), and grouped bars of that table (``summary.png``)."""

from __future__ import annotations

import csv
import math
import statistics
import sys
from pathlib import Path


RESULT_FILES = ("runs.csv", "summary.csv", "summary.md", "summary.png")


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
    empty, as does a scoring run's seed)."""
    columns = ["task", "start", "source", "seed"]
    # the metrics first, then what the run cost
    names = sorted({k for row in rows for k in row} - set(columns), key=lambda k: (k.startswith("perf/"), k))
    with open(out_dir / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, [*columns, *names])
        writer.writeheader()
        writer.writerows(rows)


def summary_table(rows: list[dict], metrics: dict[str, str]) -> tuple[list[str], dict[str, dict[str, tuple]]]:
    """The starts in run order, and per task and start ``(mean, std, runs)`` of the task's metric.

    Args:
        rows: One dict per run, as in ``runs.csv``.
        metrics: The reported metric of each task, in table order.
    """
    starts = list(dict.fromkeys(row["start"] for row in rows))
    table = {}
    for task, metric in metrics.items():
        table[task] = {}
        for start in starts:
            values = [r[metric] for r in rows if r["task"] == task and r["start"] == start and metric in r]
            table[task][start] = (*mean_std(values), len(values))
    return starts, table


def write_summary(rows: list[dict], metrics: dict[str, str], out_dir: Path) -> str:
    """``summary.csv``, ``summary.md`` and ``summary.png``: one row (group of bars) per task, one
    column (bar) per start; the markdown table is returned.

    Args:
        rows: One dict per run, as in ``runs.csv``.
        metrics: The reported metric of each task, in table order.
        out_dir: Where to write.
    """
    starts, table = summary_table(rows, metrics)
    with open(out_dir / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "metric", "runs", *[f"{s} {part}" for s in starts for part in ("mean", "std")]])
        for task, metric in metrics.items():
            runs = max(n for _, _, n in table[task].values())
            writer.writerow([task, metric, runs, *[f"{v:.6g}" for s in starts for v in table[task][s][:2]]])
    lines = ["| task | metric | " + " | ".join(starts) + " |", "|---|---|" + "---|" * len(starts)]
    for task, metric in metrics.items():
        # one run (a scoring task, or one seed) has no spread to show
        cells = [(f"{m:.4f} ± {s:.4f}" if n > 1 else f"{m:.4f}") if n else "not logged"
                 for m, s, n in (table[task][st] for st in starts)]
        lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    markdown = "\n".join(lines) + "\n"
    (out_dir / "summary.md").write_text(markdown, encoding="utf-8")
    _bar_chart(starts, metrics, table, out_dir / "summary.png")
    return markdown


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
