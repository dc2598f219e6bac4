"""Scaling on a CPU: a small IsoFLOP sweep of tiny GPTs, its own fit of L(N, D), and a held-out prediction.

Five GPT sizes (lmforge's ``CausalLMTask`` and ``GPT``, byte-level BPE of 1,024 tokens, blocks of
128 tokens, 8 blocks a step) train at each of three compute budgets C = 6 N D on Project Gutenberg
books (``../shared/data/general/gutenberg``, one document per book, whole books held out for
validation), each run its own ``lmforge fit`` (in this process) with a warmup + cosine schedule
that ends at its last step, validated once at the end on the same held-out batches. The final
held-out losses are fitted with ``L(N, D) = E + A / N^alpha + B / D^beta`` as Hoffmann et al. 2022
fitted theirs (Huber loss, delta 1e-3, on log L, L-BFGS from a grid of starts); the fit then
predicts the held-out loss of a larger model trained at a larger budget than any in the fit,
which is run afterwards. N counts all parameters, embeddings included.

    python benchmarks/scaling.py                  # the sweep (24 minutes on one thread of a shared 2-core CPU)
    python benchmarks/scaling.py --refit benchmarks/scaling.json   # fit and report saved runs again
    python benchmarks/scaling.py --smoke          # seconds, on stand-in books

Not a test: it prints figures, a JSON line and writes ``--png``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported
import standins  # noqa: E402  (the stand-in books of --smoke)

from lmforge.scaling import FITS, ScalingLaw  # noqa: E402

SEQ_LEN, BATCH, VOCAB = 128, 8, 1024
TOKENS_PER_STEP = SEQ_LEN * BATCH
SIZES = [(2, 2, 24), (2, 2, 32), (2, 2, 48), (3, 2, 64), (3, 4, 96)]  # (n_layer, n_head, d_model): 42 K to 446 K
BUDGETS = [3e11, 1e12, 3e12]  # FLOPs = 6 N D
HELD_OUT = ((4, 4, 128), 1e13)  # a larger model (941 K) at a larger budget than any in the fit
SMOKE_SIZES, SMOKE_BUDGETS, SMOKE_HELD_OUT = SIZES[:3], [6e9, 1.5e10], ((3, 2, 64), 4e10)


@dataclass
class Run:
    """One training run of the sweep, planned and then measured."""

    shape: tuple[int, int, int]
    budget: float
    params: int
    steps: int
    loss: float | None = None
    seconds: float | None = None

    @property
    def tokens(self) -> int:
        return self.steps * TOKENS_PER_STEP

    @property
    def flops(self) -> float:
        return 6 * self.params * self.tokens


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--books", default=str(ROOT.parent / "shared" / "data" / "general" / "gutenberg"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--val_batches", type=int, default=24, help="held-out batches of 8 x 128 tokens")
    parser.add_argument("--png", default=str(ROOT / "benchmarks" / "scaling.png"))
    parser.add_argument("--smoke", action="store_true", help="stand-in books, seconds: checks that it runs")
    parser.add_argument("--refit", help="no training: fit and report again the runs of a JSON line this script printed")
    parser.add_argument("--json", help="also write the final JSON line to this file")
    return parser.parse_args(argv)


def config(args: argparse.Namespace, books: str) -> dict[str, Any]:
    """The whole ``fit`` config every run shares; the runs add their shape and length."""
    return {
        "model": {"class_path": "lmforge.tasks.CausalLMTask", "init_args": {
            "config": {"dropout": 0.0},
            "optimizer": {"lr": args.lr, "weight_decay": 0.1, "betas": [0.9, 0.95], "min_lr_ratio": 0.1}}},
        "data": {"class_path": "lmforge.data.TextCorpus", "init_args": {
            "source": {"paths": f"{books}/*.txt"}, "val_fraction": 0.1, "seq_len": SEQ_LEN, "batch_size": BATCH,
            "tokenizer": {"kind": "byte_level_bpe", "vocab_size": VOCAB, "specials": "gpt"}}},
        "trainer": {"accelerator": "cpu", "precision": "32-true", "check_val_every_n_epoch": None,
                    "limit_val_batches": args.val_batches, "num_sanity_val_steps": 0, "log_every_n_steps": 50,
                    "gradient_clip_val": 1.0, "enable_progress_bar": False, "enable_model_summary": False},
        "sample": {"enabled": False}, "throughput": {"peak_flops": 1e12},  # no CPU peak measured per run
        "checkpoint": {"save_top_k": 0, "save_last": False},
    }


def count_params(shape: tuple[int, int, int], vocab: int) -> int:
    """A GPT's parameters, embeddings included, as the preset tests count them (on the meta device)."""
    import torch

    from lmforge.models import GPT, GPTConfig

    n_layer, n_head, d_model = shape
    with torch.device("meta"):
        return GPT(GPTConfig(n_layer=n_layer, n_head=n_head, d_model=d_model, vocab_size=vocab,
                             max_seq_len=SEQ_LEN)).num_params()


def plan(shape: tuple[int, int, int], budget: float, vocab: int) -> Run:
    params = count_params(shape, vocab)
    steps = round(budget / (6 * params * TOKENS_PER_STEP))
    assert steps >= 3, f"budget {budget:.3g} is under 3 steps of {shape}: raise it"
    return Run(shape, budget, params, steps)


def train(run: Run, config_file: Path, logs: Path) -> None:
    """One ``lmforge fit``; checks that it built and trained what ``run`` says, keeps its held-out loss."""
    from lmforge.commands.lightning import LmforgeCLI

    n_layer, n_head, d_model = run.shape
    start = time.perf_counter()
    cli = LmforgeCLI(args=[
        "fit", "-c", str(config_file), f"--model.config.n_layer={n_layer}", f"--model.config.n_head={n_head}",
        f"--model.config.d_model={d_model}", f"--model.optimizer.warmup_steps={max(1, run.steps // 20)}",
        f"--model.optimizer.decay_steps={run.steps}", f"--trainer.max_steps={run.steps}",
        f"--trainer.val_check_interval={run.steps}", f"--trainer.logger.init_args.save_dir={logs}",
        f"--trainer.logger.init_args.name=d{d_model}-C{run.budget:.0e}",
    ])
    run.seconds = time.perf_counter() - start
    assert cli.model.net.num_params() == run.params, (run.shape, cli.model.net.num_params(), run.params)
    assert cli.trainer.global_step == run.steps, (run.shape, cli.trainer.global_step, run.steps)
    run.loss = float(cli.trainer.callback_metrics["val/loss"])
    print(f"  N {run.params:>9,}  D {run.tokens:>11,}  ({run.tokens / run.params:7.2f} tokens/param, {run.steps:5d} "
          f"steps)  C {run.flops:.3e}  held-out loss {run.loss:.4f}  ({run.seconds:.0f} s)", flush=True)


def huber_objective(theta: np.ndarray, x: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    """Hoffmann et al.'s objective and its gradient: Huber(LSE(a - alpha log N, b - beta log D, e) - log L)
    summed over the runs, ``theta = (a, b, e, alpha, beta)``, ``x`` the columns log N, log D, log L."""
    a, b, e, alpha, beta = theta
    log_n, log_d, log_l = x
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])  # (3, runs)
    top = terms.max(axis=0)
    weights = np.exp(terms - top)
    total = weights.sum(axis=0)
    residual = top + np.log(total) - log_l
    weights /= total  # d LSE / d term
    small = np.abs(residual) <= delta
    value = np.where(small, 0.5 * residual**2, delta * (np.abs(residual) - 0.5 * delta)).sum()
    slope = np.clip(residual, -delta, delta)
    grad = np.array([(slope * weights[0]).sum(), (slope * weights[1]).sum(), (slope * weights[2]).sum(),
                     -(slope * weights[0] * log_n).sum(), -(slope * weights[1] * log_d).sum()])
    return float(value), grad


def fit_law(runs: list[Run], grid: int = 5, delta: float = 1e-3) -> ScalingLaw:
    """L-BFGS from each start of Hoffmann et al.'s grid (``grid`` values per parameter); the best fit."""
    from scipy.optimize import minimize

    x = np.array([[math.log(r.params) for r in runs], [math.log(r.tokens) for r in runs],
                  [math.log(r.loss) for r in runs]])
    starts = itertools.product(np.linspace(0, 25, grid + 1), np.linspace(0, 25, grid + 1), np.linspace(-1, 1, grid),
                               np.linspace(0, 2, grid), np.linspace(0, 2, grid))
    best = None
    for theta in starts:
        found = minimize(huber_objective, np.array(theta), args=(x, delta), jac=True, method="L-BFGS-B")
        if best is None or found.fun < best.fun:
            best = found
    a, b, e, alpha, beta = best.x
    return ScalingLaw(math.exp(e), math.exp(a), math.exp(b), alpha, beta, "this CPU sweep")


def isoflop_minima(runs: list[Run]) -> dict[str, Any]:
    """Hoffmann et al.'s approach 2 on the same runs: per budget, a parabola in log N through the best
    run and its two neighbours, its vertex N_opt; then N_opt ~ C^a fitted over the budgets."""
    minima = {}
    for budget in sorted({r.budget for r in runs}):
        curve = sorted((r for r in runs if r.budget == budget), key=lambda r: r.params)
        best = min(range(len(curve)), key=lambda i: curve[i].loss)
        near = curve[min(max(best - 1, 0), len(curve) - 3):][:3]
        a, b, _ = np.polyfit([math.log(r.params) for r in near], [r.loss for r in near], 2)
        minima[budget] = math.exp(-b / (2 * a)) if a > 0 else curve[best].params
    budgets = sorted(minima)
    exponent = float(np.polyfit(np.log(budgets), np.log([minima[c] for c in budgets]), 1)[0])
    return {"n_opt": {f"{c:.0e}": n for c, n in minima.items()},
            "tokens_per_param": {f"{c:.0e}": c / (6 * n * n) for c, n in minima.items()}, "a": exponent}


def check_isoflops(runs: list[Run], tolerance: float) -> float:
    """Each run's 6 N D is its budget up to the rounding of its steps, and the runs of one budget
    agree within ``tolerance``; the largest relative spread found."""
    spread = 0.0
    for budget in sorted({r.budget for r in runs}):
        curve = [r for r in runs if r.budget == budget]
        for r in curve:
            assert abs(r.flops - budget) <= 0.5 * 6 * r.params * TOKENS_PER_STEP + 1e-6 * budget, (r, budget)
        flops = [r.flops for r in curve]
        spread = max(spread, max(flops) / min(flops) - 1)
    assert spread <= tolerance, f"the runs of one budget differ by {spread:.1%} of their FLOPs (> {tolerance:.0%})"
    return spread


def plot(runs: list[Run], held_out: Run, law: ScalingLaw, png: str) -> None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    n = np.geomspace(min(r.params for r in runs) / 1.5, held_out.params * 1.5, 100)
    for i, budget in enumerate(sorted({r.budget for r in runs} | {held_out.budget})):
        curve = [r for r in [*runs, held_out] if r.budget == budget]
        marker, size = ("*", 12) if held_out in curve else ("o", 6)
        axes[0].plot([r.params for r in curve], [r.loss for r in curve], marker, color=f"C{i}", ms=size,
                     label=f"C = {budget:.0e} FLOPs")
        axes[0].plot(n, [law.loss(p, budget / (6 * p)) for p in n], "-", color=f"C{i}", alpha=0.6)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("parameters N (embeddings included)")
    axes[0].set_ylabel("held-out loss (nats/token)")
    axes[0].set_title("IsoFLOP curves: runs (points), fit (lines); star: held out")
    axes[0].legend()
    fitted = [law.loss(r.params, r.tokens) for r in runs]
    axes[1].plot(fitted, [r.loss for r in runs], "o", label="runs in the fit")
    axes[1].plot([law.loss(held_out.params, held_out.tokens)], [held_out.loss], "*", ms=12, label="held-out run")
    low, high = min(fitted + [r.loss for r in runs]), max(fitted + [r.loss for r in runs])
    axes[1].plot([low, high], [low, high], "k:", lw=1)
    axes[1].set_xlabel("predicted by the fit")
    axes[1].set_ylabel("measured")
    axes[1].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"plot: {png}")


def report(runs: list[Run], held_out: Run, law: ScalingLaw) -> dict[str, Any]:
    minima = isoflop_minima(runs)
    predicted = law.loss(held_out.params, held_out.tokens)
    error = predicted - held_out.loss
    print(f"\nfit on {len(runs)} runs: L(N, D) = {law.E:.4g} + {law.A:.4g} / N^{law.alpha:.4f} + "
          f"{law.B:.4g} / D^{law.beta:.4f}")
    print(f"{'':12s} {'alpha':>7s} {'beta':>7s} {'a = beta/(alpha+beta)':>22s}")
    for name, fit in (("this sweep", law), ("Chinchilla", FITS["chinchilla"]), ("Besiroglu", FITS["besiroglu"])):
        print(f"{name:12s} {fit.alpha:7.4f} {fit.beta:7.4f} {fit.beta / (fit.alpha + fit.beta):22.3f}")
    for budget in sorted({r.budget for r in runs}):
        print(f"compute-optimal at C = {budget:.0e}: N {law.optimal_params(budget):,.0f}, D "
              f"{law.optimal_tokens(budget):,.0f} ({law.optimal_tokens(budget) / law.optimal_params(budget):.3g} "
              "tokens/param)")
    print("IsoFLOP minima (approach 2, a parabola in log N through the best run and its neighbours): " + ", ".join(
        f"C {c}: N {n:,.0f} ({minima['tokens_per_param'][c]:.3g} tokens/param)" for c, n in minima["n_opt"].items())
        + f"; N_opt ~ C^{minima['a']:.3f}")
    print(f"held-out run N {held_out.params:,} D {held_out.tokens:,} (C {held_out.flops:.3e}): predicted "
          f"{predicted:.4f}, measured {held_out.loss:.4f}, error {error:+.4f} ({error / held_out.loss:+.2%})")
    return {"isoflop_minima": minima, "fit": {"E": law.E, "A": law.A, "B": law.B, "alpha": law.alpha, "beta": law.beta},
            "runs": [{"shape": r.shape, "budget": r.budget, "N": r.params, "D": r.tokens, "loss": r.loss,
                      "seconds": r.seconds} for r in runs],
            "held_out": {"shape": held_out.shape, "budget": held_out.budget, "N": held_out.params, "D": held_out.tokens, "loss": held_out.loss,
                         "predicted": predicted, "error": error, "relative_error": error / held_out.loss}}


def saved_runs(path: str) -> tuple[list[Run], Run, int]:
    """The runs, the held-out run and the vocabulary of a JSON line this script printed (``--refit``)."""
    saved = json.loads(Path(path).read_text().strip().splitlines()[-1])

    def run(r: dict[str, Any], budget: float) -> Run:
        return Run(tuple(r["shape"]), budget, r["N"], r["D"] // TOKENS_PER_STEP, r["loss"], r.get("seconds"))

    held = saved["held_out"]
    return ([run(r, r["budget"]) for r in saved["runs"]], run(held, held.get("budget", 6 * held["N"] * held["D"])),
            saved["vocab"])


def finish(args: argparse.Namespace, runs: list[Run], held_out: Run, vocab: int, started: float) -> None:
    """Fit, report, plot and print the JSON line."""
    law = fit_law(runs, grid=2 if args.smoke else 5)
    summary = {"benchmark": "scaling", "smoke": args.smoke, "threads": args.threads, "vocab": vocab,
               "refit": args.refit, "seconds": time.perf_counter() - started, **report(runs, held_out, law)}
    if not args.smoke:
        plot(runs, held_out, law, args.png)
    if args.json:
        Path(args.json).write_text(json.dumps(summary) + "\n")
    print(json.dumps(summary))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.refit:
        finish(args, *saved_runs(args.refit), time.perf_counter())
        return
    import torch

    from lmforge.commands.prepare import PrepareCLI

    torch.set_num_threads(args.threads)
    sizes, budgets, held_out_plan = (SMOKE_SIZES, SMOKE_BUDGETS, SMOKE_HELD_OUT) if args.smoke else \
        (SIZES, BUDGETS, HELD_OUT)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        books = args.books
        if args.smoke:
            print("SMOKE RUN: stand-in books, a few steps per run -- checks that the benchmark runs; "
                  "the figures mean nothing")
            books = str(standins.write_books(Path(tmp) / "books", books=20, paragraphs=60))
        elif not Path(books).is_dir():
            sys.exit(f"Books folder '{books}' not found: pass --books.")
        os.environ["LMFORGE_CACHE_DIR"] = str(Path(tmp) / "cache")  # the tokenizer and shards, made once
        config_file = Path(tmp) / "sweep.yaml"
        config_file.write_text(yaml.safe_dump(config(args, books)))
        vocab = PrepareCLI(args=["-c", str(config_file)], run=False).datamodule.vocab_size
        runs = [plan(shape, budget, vocab) for budget in budgets for shape in sizes]
        held_out = plan(*held_out_plan, vocab)
        spread = check_isoflops(runs, tolerance=0.25 if args.smoke else 0.02)
        print(f"{len(runs)} runs, {len(budgets)} budgets (FLOPs of one budget within {spread:.2%}), vocabulary "
              f"{vocab}, {args.threads} thread(s)", flush=True)
        for run in [*runs, held_out]:
            train(run, config_file, Path(tmp) / "logs")
    finish(args, runs, held_out, vocab, started)


if __name__ == "__main__":
    main()
