"""Time to a held-out loss: the GPT-2 recipe against the Llama block, Muon and compile.

On Project Gutenberg books (``../shared/data/general/gutenberg``, one document per book), with
a held-out set of books the training never sees (the corpus's validation split: whole books,
chosen by a stable hash), four recipes train the same parameter budget for the same
wall-clock budget on this machine, each in a fresh ``lmforge fit`` process from its own whole
config in ``configs/recipes/`` (no recipe inherits another's, or the quick start's, settings):

- (a) GPT-2 block, AdamW (``time-to-loss-a-gpt2.yaml``: the quick start's recipe until this
  benchmark made the Llama block its recipe);
- (b) the Llama block (RMSNorm, RoPE, SwiGLU, 2 key/value heads for 4 query heads) with the
  same width and depth, its SwiGLU width chosen so that the parameter count matches (a)'s, AdamW;
- (c) (b) with Muon for the blocks' matrices (AdamW for embeddings and norms);
- (d) (c) with ``compile: true``.

Each run is checked to have built the network and optimizer its recipe names (the script
stops otherwise). Each run validates every ``--val_every`` steps on the held-out books; its
held-out loss is plotted against wall-clock (from the untrained model's validation, so
compilation counts) and against training tokens. The verdict: how long each recipe takes to
reach (a)'s final held-out loss, as a fraction of (a)'s whole budget (target: the best <= 0.5,
stretch 0.33).

    python benchmarks/time_to_loss.py                       # 2 seeds x 4 recipes x 100 s
    python benchmarks/time_to_loss.py --smoke               # seconds, on stand-in books

Not a test: it prints figures, a JSON line and writes ``--png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported
import standins  # noqa: E402  (the stand-in books of --smoke)

RECIPE_DIR = ROOT / "configs" / "recipes"


@dataclass(frozen=True)
class Recipe:
    """One recipe: its config in ``configs/recipes/`` and what that config must build."""

    config: str
    title: str
    network: str  # the network class the run must build
    optimizer: str  # ``adamw``, or ``muon`` (Muon for the blocks' matrices, AdamW for the rest)
    compile: bool


RECIPES = {
    "a": Recipe("time-to-loss-a-gpt2.yaml", "(a) GPT-2 block, AdamW", "lmforge.models.gpt.GPT", "adamw", False),
    "b": Recipe("time-to-loss-b-llama-adamw.yaml", "(b) Llama block, AdamW", "lmforge.models.llama.Llama", "adamw",
                False),
    "c": Recipe("time-to-loss-c-llama-muon.yaml", "(c) Llama block, Muon", "lmforge.models.llama.Llama", "muon",
                False),
    "d": Recipe("time-to-loss-d-llama-muon-compile.yaml", "(d) Llama block, Muon, compile",
                "lmforge.models.llama.Llama", "muon", True),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--books", default=str(ROOT.parent / "shared" / "data" / "general" / "gutenberg"))
    parser.add_argument("--seconds", type=float, default=100.0, help="wall-clock budget of each run")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--recipes", default="a,b,c,d")
    parser.add_argument("--val_every", type=int, default=50, help="steps between held-out validations")
    parser.add_argument("--val_batches", type=int, default=10)
    parser.add_argument("--decay_steps", type=int, default=3000, help="the same cosine schedule for every recipe")
    parser.add_argument("--png", default="benchmarks/time_to_loss.png")
    parser.add_argument("--smoke", action="store_true", help="stand-in books, seconds: checks that it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.seeds, args.val_every, args.val_batches, args.decay_steps = 5.0, 1, 5, 2, 50
    return args


def fit_args(args: argparse.Namespace, recipe: str, seed: int, books: str, logs: Path) -> list[str]:
    """The ``lmforge fit`` command line of one run: the recipe's config, with the books, the
    budget and the validation cadence of this invocation (the same for every recipe)."""
    minutes, seconds = divmod(args.seconds, 60)
    return [
        sys.executable, "-m", "lmforge", "fit", "-c", str(RECIPE_DIR / RECIPES[recipe].config),
        f"--data.source.paths={books}/*.txt", f"--model.optimizer.decay_steps={args.decay_steps}",
        f"--seed_everything={seed}", f"--trainer.max_time=00:00:{int(minutes):02d}:{int(seconds):02d}",
        f"--trainer.val_check_interval={args.val_every}", f"--trainer.limit_val_batches={args.val_batches}",
        f"--trainer.num_sanity_val_steps={args.val_batches}",
        f"--trainer.logger.init_args.save_dir={logs}", f"--trainer.logger.init_args.name={recipe}-seed{seed}",
        "--sample.enabled=false", "--checkpoint.save_top_k=0", "--checkpoint.save_last=false",
        *(["--trainer.log_every_n_steps=1"] if args.smoke else []),  # a few steps: log each one's lr
    ]


def what_trained(run: Path) -> dict[str, Any]:
    """What a run built: its task, the network that task builds, the optimizer (Muon with AdamW
    logs ``lr_muon`` every logged step, AdamW alone does not) and compile, from the run's own
    config.yaml (what LightningCLI instantiated) and TensorBoard events."""
    import importlib

    import yaml
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = yaml.safe_load((run / "config.yaml").read_text())["model"]
    module, name = model["class_path"].rsplit(".", 1)
    network = getattr(importlib.import_module(module), name).network
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    logged = events.Tags()["scalars"]
    optimizer = None if "lr" not in logged else "muon" if "lr_muon" in logged else "adamw"  # None: no step logged
    return {"task": model["class_path"], "network": f"{network.__module__}.{network.__qualname__}",
            "optimizer": optimizer, "compile": model["init_args"]["compile"]}


def check_trained(recipe: str, trained: dict[str, Any]) -> None:
    """Stop the benchmark when a run trained something other than its recipe names."""
    named = RECIPES[recipe]
    built = (trained["network"], trained["optimizer"], trained["compile"])
    if built != (named.network, named.optimizer, named.compile):
        sys.exit(f"{named.title} ({named.config}) trained {built}, not {(named.network, named.optimizer, named.compile)}"
                 ": fix the recipe's config.")


def curve(run: Path) -> dict[str, list[float]]:
    """The held-out loss of a run by wall-clock seconds (from the untrained model's validation)
    and by training tokens."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    val = events.Scalars("val/loss")
    t0 = val[0].wall_time
    tokens_per_step = 16 * 128
    # Lightning's step convention: a validation after N steps sits at N - 1 (the untrained one at 0)
    steps = [0] + [e.step + 1 for e in val[1:]]
    return {"seconds": [e.wall_time - t0 for e in val], "tokens": [s * tokens_per_step for s in steps],
            "loss": [e.value for e in val]}


def time_to(c: dict[str, list[float]], target: float) -> float | None:
    """The first wall-clock second at which the held-out loss reaches ``target`` (linear between
    validations), or None if it never does."""
    for i in range(1, len(c["loss"])):
        if c["loss"][i] <= target:
            l0, l1, t0, t1 = c["loss"][i - 1], c["loss"][i], c["seconds"][i - 1], c["seconds"][i]
            return t1 if l0 == l1 else t0 + (t1 - t0) * (l0 - target) / (l0 - l1)
    return None


def plot(curves: dict[str, list[dict[str, list[float]]]], png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for recipe, runs in curves.items():
        for i, c in enumerate(runs):
            label = RECIPES[recipe].title if i == 0 else None
            axes[0].plot(c["seconds"], c["loss"], color=f"C{'abcd'.index(recipe)}", label=label, alpha=0.8)
            axes[1].plot([t / 1e6 for t in c["tokens"]], c["loss"], color=f"C{'abcd'.index(recipe)}", label=label,
                         alpha=0.8)
    axes[0].set_xlabel("wall-clock seconds")
    axes[1].set_xlabel("training tokens (millions)")
    for ax in axes:
        ax.set_ylabel("held-out loss (nats/token)")
        ax.set_ylim(top=min(8.0, ax.get_ylim()[1]))
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    recipes = args.recipes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        books = args.books
        if args.smoke:
            print("SMOKE RUN: stand-in books, seconds per run -- checks that the benchmark runs; the figures mean nothing")
            books = str(standins.write_books(Path(tmp) / "books", books=20, paragraphs=60))
        elif not Path(books).is_dir():
            sys.exit(f"Books folder '{books}' not found: pass --books.")
        logs = Path(tmp) / "logs"
        env = {**os.environ, "LMFORGE_CACHE_DIR": os.environ.get("LMFORGE_CACHE_DIR", str(Path(tmp) / "cache"))}
        curves: dict[str, list[dict[str, list[float]]]] = {r: [] for r in recipes}
        trained: dict[str, dict[str, Any]] = {}
        for seed in range(1, args.seeds + 1):
            order = recipes if seed % 2 else recipes[::-1]  # the machine's drift spread over the recipes
            for recipe in order:
                start = time.perf_counter()
                result = subprocess.run(fit_args(args, recipe, seed, books, logs), env=env, capture_output=True,
                                        text=True, cwd=ROOT)
                if result.returncode != 0:
                    sys.exit(f"recipe {recipe} seed {seed} failed:\n{result.stderr[-3000:]}")
                run = logs / f"{recipe}-seed{seed}" / "version_0"
                c = curve(run)
                curves[recipe].append(c)
                trained[recipe] = what_trained(run)
                check_trained(recipe, trained[recipe])
                print(f"{RECIPES[recipe].title:32s} seed {seed}: {len(c['loss']) - 1} validations, final held-out loss "
                      f"{c['loss'][-1]:.4f} at {c['tokens'][-1] / 1e6:.2f} M tokens ({time.perf_counter() - start:.0f} s "
                      "with start-up)", flush=True)
        summary = {**summarize(curves, args), "trained": trained}
        if not args.smoke:
            plot(curves, args.png)
        print(json.dumps(summary))


def summarize(curves: dict[str, list[dict[str, list[float]]]], args: argparse.Namespace) -> dict[str, Any]:
    """Per recipe: final held-out loss, tokens, and the time to reach (a)'s final loss (per seed)."""
    base = curves.get("a")
    rows: dict[str, Any] = {}
    print(f"\nheld-out loss after {args.seconds:.0f} s of wall-clock, {args.seeds} seed(s); time to reach (a)'s final loss "
          "as a fraction of the budget")
    print(f"{'recipe':32s} {'final loss':>11s} {'M tokens':>9s} {'to (a) final':>13s}")
    for recipe, runs in curves.items():
        fractions = []
        for i, c in enumerate(runs):
            target = base[i]["loss"][-1] if base else None
            reached = time_to(c, target) if target is not None else None
            fractions.append(None if reached is None else reached / args.seconds)
        finals = [c["loss"][-1] for c in runs]
        tokens = [c["tokens"][-1] for c in runs]
        shown = ", ".join("never" if f is None else f"{f:.2f}" for f in fractions)
        print(f"{RECIPES[recipe].title:32s} {sum(finals) / len(finals):11.4f} {sum(tokens) / len(tokens) / 1e6:9.2f} {shown:>13s}")
        rows[recipe] = {"final_loss": finals, "tokens": tokens, "fraction_of_budget_to_a_final": fractions}
    best = min((f for r in rows.values() for f in r["fraction_of_budget_to_a_final"] if f is not None), default=None)
    verdict = "not judged (smoke)" if args.smoke else ("MET" if best is not None and best <= 0.5 else "NOT MET")
    print(f"best fraction {best if best is None else round(best, 3)} (target <= 0.5): {verdict}")
    return {"benchmark": "time_to_loss", "smoke": args.smoke, "seconds": args.seconds, "seeds": args.seeds,
            "recipes": rows, "best_fraction": best}


if __name__ == "__main__":
    main()
