"""``lmforge compare``: does pretraining help? One downstream recipe, several starting points, N seeds.

Every (start, seed) is a real ``lmforge fit`` of the fine-tuning config with
``--model.init_from <start>`` and ``--seed_everything <seed>``, logged to TensorBoard under
``<out>/tensorboard/<start>/seed_<seed>`` so the runs sit side by side. The final validation
metrics of every run go to ``runs.csv``; their mean ± standard deviation per start to
``summary.md`` and ``summary.csv``; a bar chart with error bars of one metric to
``comparison.png``.
"""

from __future__ import annotations

import csv
import re
import statistics
from collections.abc import Callable
from pathlib import Path

from lmforge.errors import UserError

RANDOM = "random init"
Fit = Callable[[list[str]], dict[str, float]]  # `lmforge fit` arguments -> the run's final logged metrics


def label_of(start: str) -> str:
    """A short, file-name-safe name for a starting point."""
    name = start[3:] if start.startswith("hf:") else Path(start).stem if Path(start).suffix == ".ckpt" else \
        Path(start).name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "start"


def run_one(fit: Fit, recipe: list[str], start: str, seed: int, out: Path, label: str, random_init: bool,
            overrides: list[str]) -> dict[str, float]:
    """Fine-tune from ``start`` with ``seed``; the run's final ``val/*`` metrics."""
    args: list[str] = []
    for path in recipe:
        args += ["-c", path]
    args += [f"--model.init_from={start}", f"--seed_everything={seed}",
             "--trainer.logger=lightning.pytorch.loggers.TensorBoardLogger",
             f"--trainer.logger.save_dir={out / 'tensorboard'}", f"--trainer.logger.name={label}",
             f"--trainer.logger.version=seed_{seed}", "--trainer.logger.default_hp_metric=false",
             "--trainer.enable_progress_bar=false", *overrides]
    if random_init:
        args.append("--model.random_init=true")
    metrics = {k: v for k, v in fit(args).items() if k.startswith("val/")}
    if not metrics:
        raise UserError(f"The run from {start} (seed {seed}) logged no val/ metric: let it validate "
                        "(trainer.limit_val_batches > 0, a validation split in the data).")
    return metrics


def compare(
    recipe: list[str],
    starts: list[str],
    seeds: int = 3,
    random_baseline: bool = True,
    labels: list[str] | None = None,
    metric: str | None = None,
    out: str = "compare",
    overrides: list[str] | None = None,
    fit: Fit | None = None,
) -> Path:
    """Fine-tune one downstream recipe from several starting points, ``seeds`` times each, and
    tabulate, plot and log the results.

    Args:
        recipe: The fine-tuning config file(s) (a ``FineTuneTask`` and a ``LabeledText``), as for ``fit -c``.
        starts: Starting points: lmforge ``.ckpt`` files, Hugging Face folders or ``hf:<id>``.
        seeds: Seeds per starting point (0, 1, ...).
        random_baseline: Add a randomly initialised network of the first start's architecture.
        labels: Names of the starts in the table (default: file stems or hub ids).
        metric: The metric to plot (default: ``val/acc`` for classification, ``val/spearman``
            for regression, else the first logged).
        out: The folder to write into (created; existing result files are not overwritten).
        overrides: More ``fit`` arguments for every run, e.g. ``["--trainer.max_steps=200"]``.
        fit: Runs ``lmforge fit`` with the given arguments and returns its final metrics (the
            command line hands over its own).
    """
    if fit is None:
        raise UserError("compare needs a way to run `lmforge fit`: call it through `lmforge compare`.")
    if not starts:
        raise UserError("Give at least one starting point: --starts '[general.ckpt, domain.ckpt]'.")
    if seeds < 1:
        raise UserError(f"seeds must be at least 1, got {seeds}.")
    names = list(labels) if labels else [label_of(s) for s in starts]
    if len(names) != len(starts) or len(set(names)) != len(names):
        raise UserError(f"labels {names} must name each of the {len(starts)} starts once: pass distinct --labels.")
    out_dir = Path(out)
    existing = [p for p in ("runs.csv", "summary.md", "summary.csv", "comparison.png") if (out_dir / p).exists()]
    if existing:
        raise UserError(f"'{out_dir}' already holds {', '.join(existing)}: choose another --out.")
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = [(RANDOM, starts[0], True)] if random_baseline else []
    plan += [(name, start, False) for name, start in zip(names, starts)]
    rows: list[dict] = []
    for name, start, random_init in plan:
        for seed in range(seeds):
            metrics = run_one(fit, recipe, start, seed, out_dir, label_of(name), random_init, list(overrides or []))
            rows.append({"start": name, "source": start, "seed": seed, **metrics})
    return write_results(rows, out_dir, metric)


def write_results(rows: list[dict], out_dir: Path, metric: str | None = None) -> Path:
    """``runs.csv``, ``summary.md``, ``summary.csv`` and ``comparison.png`` of the runs' metrics.

    Args:
        rows: One dict per run: ``start``, ``source``, ``seed`` and its ``val/*`` metrics.
        out_dir: Where to write.
        metric: The metric to plot.
    """
    names = sorted({k for row in rows for k in row if k.startswith("val/")})
    starts = list(dict.fromkeys(row["start"] for row in rows))
    with open(out_dir / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["start", "source", "seed", *names])
        writer.writeheader()
        writer.writerows(rows)
    stats = {s: {m: _mean_std([r[m] for r in rows if r["start"] == s and m in r]) for m in names} for s in starts}
    seeds = {s: sum(r["start"] == s for r in rows) for s in starts}
    with open(out_dir / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["start", "runs", *[f"{m} {part}" for m in names for part in ("mean", "std")]])
        for s in starts:
            writer.writerow([s, seeds[s], *[f"{v:.6g}" for m in names for v in stats[s][m]]])
    lines = ["| start | runs | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for s in starts:
        cells = [f"{mean:.4f} ± {std:.4f}" for mean, std in (stats[s][m] for m in names)]
        lines.append(f"| {s} | {seeds[s]} | " + " | ".join(cells) + " |")
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plotted = metric or next((m for m in ("val/acc", "val/spearman") if m in names), names[0] if names else None)
    if plotted is None or plotted not in names:
        raise UserError(f"Metric {plotted!r} was not logged; the runs logged {', '.join(names) or 'nothing'}.")
    _bar_chart(starts, [stats[s][plotted] for s in starts], plotted, out_dir / "comparison.png")
    print("\n".join(lines))
    print(f"\nWrote {out_dir}/runs.csv, summary.md, summary.csv, comparison.png and tensorboard/ "
          f"(tensorboard --logdir {out_dir / 'tensorboard'}).")
    return out_dir


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _bar_chart(starts: list[str], stats: list[tuple[float, float]], metric: str, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise UserError("The bar chart needs matplotlib: `pip install matplotlib` (or lmforge[plot]).") from err
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(starts), 3.6))
    means, stds = zip(*stats)
    ax.bar(range(len(starts)), means, yerr=stds, capsize=6, color="#4C72B0")
    ax.set_xticks(range(len(starts)), starts, rotation=15, ha="right")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare_command(argv: list[str], fit: Fit) -> None:
    """``lmforge compare --recipe finetune.yaml --starts '[a.ckpt, b.ckpt]' ...``; every run goes through ``fit``."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="lmforge compare", description=compare.__doc__.splitlines()[0])
    parser.add_function_arguments(compare, as_positional=False, skip={"fit"})
    compare(**parser.parse_args(argv).as_dict(), fit=fit)
