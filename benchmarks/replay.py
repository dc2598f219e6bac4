"""Continued pretraining with and without replay: does a share of the old text stop forgetting?

A decoder is pretrained here on general text (the Project Gutenberg books of the data folder),
then continued on biomedical abstracts (OHSUMED's MEDLINE titles and abstracts) from its
weights (``init_from``: a new, re-warmed schedule), once on the abstracts alone and once per
replay share, with that share of the books mixed back in (:class:`lmforge.data.CorpusMixture`).
Every run validates on the same held-out abstracts and the same held-out *books* (whole books,
never trained on in any stage): ``val/loss/abstracts`` (the domain, falling) and
``val/loss/books`` (general text: forgetting, with and without replay). Ibrahim et al. 2024
("Simple and Scalable Strategies to Continually Pre-train Large Language Models") found a few
percent of replay enough for a weak shift and more for a strong one.

    python benchmarks/replay.py --plot benchmarks/replay.png   # the data folder, ~15 min on 2 CPU cores
    python benchmarks/replay.py --replay 0.05 0.25 --continue_steps 400
    python benchmarks/replay.py --smoke            # plumbing only on stand-in data, seconds

It prints a markdown table (also written to ``--out``), draws both validation curves of every run
(``--plot``), and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_report, standins

import bench_report  # noqa: E402
import standins  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHAPE = {"n_layer": 4, "n_head": 4, "d_model": 128}
SMOKE_SHAPE = {"n_layer": 1, "n_head": 2, "d_model": 32}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help=f"the data folder (default {DATA}; smoke: stand-ins)")
    p.add_argument("--work", default=None, help="the run folder (default: a new folder under /tmp)")
    p.add_argument("--replay", type=float, nargs="+", default=[0.05, 0.25],
                   help="the books' shares of the continued runs' training tokens (0 always runs too)")
    p.add_argument("--pretrain_steps", type=int, default=800, help="steps of general pretraining on the books")
    p.add_argument("--continue_steps", type=int, default=300, help="steps of continued pretraining")
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3, help="the peak learning rate of both stages")
    p.add_argument("--val_every", type=int, default=50, help="steps between validations")
    p.add_argument("--val_batches", type=int, default=16, help="batches of each validation set")
    p.add_argument("--vocab_size", type=int, default=4096)
    p.add_argument("--seeds", type=int, default=1, help="continued runs per replay share, each with its own seed "
                   "(the order of the data and the sampling of the mixture; the held-out sets stay the same)")
    p.add_argument("--pretrained", default=None, help="a checkpoint of the general pretraining to continue from, "
                   "instead of pretraining first (e.g. the pretrain run of an earlier --work)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="also write the markdown report here")
    p.add_argument("--plot", default=None, help="draw the curves into this PNG")
    p.add_argument("--smoke", action="store_true", help="stand-in data, a tiny model, a few steps (2 seeds)")
    a = p.parse_args(argv)
    a.command = "replay"
    return a


def books(folder: Path) -> dict:
    """The books as a corpus: whole books held out for validation (a document is a book)."""
    return {"class_path": "lmforge.data.BookCorpus",
            "init_args": {"source": {"paths": str(folder)}, "val_fraction": 0.15, "seed": 1}}


def abstracts(path: Path) -> dict:
    return {"class_path": "lmforge.data.TextCorpus",
            "init_args": {"source": {"paths": str(path), "text_field": "text"}, "val_fraction": 0.1, "seed": 1}}


def fit(work: Path, name: str, model: dict, data: dict, steps: int, a: argparse.Namespace, seed: int = 1234) -> Path:
    """``lmforge fit`` of one stage in ``work`` from ``seed``; its run folder."""
    import yaml

    from lmforge.cli import main

    trainer = {"accelerator": "cpu", "precision": "32-true", "max_steps": steps, "val_check_interval": a.val_every,
               "limit_val_batches": a.val_batches, "num_sanity_val_steps": a.val_batches, "log_every_n_steps": min(10, a.val_every),
               "gradient_clip_val": 1.0, "enable_progress_bar": False, "enable_model_summary": False,
               "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                          "init_args": {"save_dir": str(work / "logs"), "name": name, "default_hp_metric": False}}}
    config = work / f"{name}.yaml"
    config.write_text(yaml.safe_dump({"seed_everything": seed, "model": model, "data": data, "trainer": trainer}))
    started = time.perf_counter()
    main(["fit", "-c", str(config), "--sample.enabled=false"])
    print(f"[replay] {name}: {steps} steps in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return work / "logs" / name / "version_0"


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    bench_report.threads_and_notice(a)
    if a.smoke:
        base = standins.temporary_folder("lmforge-replay-smoke-")
        book_folder = standins.write_books(base / "gutenberg", books=8)
        ohsumed = standins.write_ohsumed(base / "ohsumed.jsonl", abstracts=80)
        a.pretrain_steps, a.continue_steps, a.val_every, a.val_batches = 6, 4, 2, 2
        a.seq_len, a.batch_size, a.vocab_size, a.replay, a.seeds = 32, 4, 400, [0.25], 2
    else:
        data = Path(a.data) if a.data else DATA
        book_folder, ohsumed = data / "general" / "gutenberg", data / "biomed" / "ohsumed_train.jsonl"
    work = Path(a.work) if a.work else standins.temporary_folder("lmforge-replay-")
    started = bench_report.open_run(work / "run", book_folder, "replay")
    run_dir = work / "run"
    shape = SMOKE_SHAPE if a.smoke else SHAPE
    optimizer = {"lr": a.lr, "warmup_steps": max(1, a.continue_steps // 10), "min_lr_ratio": 0.1}
    shared = {"seq_len": a.seq_len, "batch_size": a.batch_size}

    # 1. general pretraining on the books (the held-out books are validated on)
    model = {"class_path": "lmforge.tasks.CausalLMTask",
             "init_args": {"config": {**shape, "dropout": 0.0}, "optimizer": optimizer}}
    tokenizer = {"kind": "byte_level_bpe", "vocab_size": a.vocab_size, "specials": "gpt"}
    general = {"class_path": "lmforge.data.CorpusMixture",
               "init_args": {"sources": {"books": books(book_folder)}, "weights": {"books": 1.0},
                             "validate_on": {"abstracts": abstracts(ohsumed)}, "tokenizer": tokenizer, **shared}}
    if a.pretrained:
        start, pretrained = a.pretrained, Path(a.pretrained).parents[1]
    else:
        pretrained = fit(run_dir, "pretrain", model, general, a.pretrain_steps, a)
        start = str(pretrained / "checkpoints" / "last.ckpt")

    # 2. continued on the abstracts, from those weights (a new, re-warmed schedule), with each replay share
    results: dict[str, list[dict]] = {}
    for share in [0.0, *a.replay]:
        for seed in range(a.seeds):
            model = {"class_path": "lmforge.tasks.CausalLMTask",
                     "init_args": {"init_from": start, "optimizer": optimizer}}
            sources, weights, validate_on = {"abstracts": abstracts(ohsumed)}, {"abstracts": 1 - share}, {}
            if share > 0:
                sources["books"], weights["books"] = books(book_folder), share
            else:
                validate_on["books"] = books(book_folder)
            data = {"class_path": "lmforge.data.CorpusMixture",
                    "init_args": {"sources": sources, "weights": weights, "validate_on": validate_on,
                                  "seed": 1234 + seed, **shared}}
            run = fit(run_dir, f"continue-replay{share:g}-seed{seed}", model, data, a.continue_steps, a, 1234 + seed)
            results.setdefault(f"{share:g}", []).append(trained_and_scored(run, share, a))

    base = bench_report.scalars(pretrained)
    end = {tag: base[f"val/loss/{tag}"][-1][1] for tag in ("abstracts", "books")}
    seeds = f", mean ± sd over {a.seeds} seeds" if a.seeds > 1 else " (one seed)"
    report = [
        f"Pretrained {a.pretrain_steps} steps on the books ({shape}), then continued {a.continue_steps} steps "
        f"({a.batch_size} x {a.seq_len} tokens a step) from its weights with a re-warmed schedule (peak lr {a.lr}).",
        f"Validation loss (nats per token) on held-out abstracts and held-out whole books{seeds}:",
        "",
        "| run | books trained on | abstracts: end | books: end | books: change (forgetting) |",
        "|---|---|---|---|---|",
        f"| the start: pretrained on books | all of the training | {end['abstracts']:.3f} | {end['books']:.3f} | |",
    ]
    for share, runs in results.items():
        share_text = "none" if share == "0" else f"{float(share):.0%} of tokens"
        domain, general = (spread([r[tag][-1][1] for r in runs]) for tag in ("abstracts", "books"))
        change = spread([r["books"][-1][1] - r["books"][0][1] for r in runs], signed=True)
        report.append(f"| continued, replay {float(share):.0%} | {share_text} | {domain} | {general} | {change} |")
    if a.plot:
        plot(results, Path(a.plot))
        report += ["", f"Curves: {a.plot}"]
    bench_report.publish(report, started, a, {"runs": results, "pretrained": end})


def trained_and_scored(run: Path, share: float, a: argparse.Namespace) -> dict:
    """What a continued run trained on (tokens per source, checked against its replay share) and its
    two validation curves."""
    s = bench_report.scalars(run)
    tokens = {name: s[f"data/tokens/{name}"][-1][1] for name in ("abstracts", "books") if f"data/tokens/{name}" in s}
    # each side is what it names: no books trained on without replay, and the books' share as asked
    assert ("books" in tokens) == (share > 0), tokens
    block = a.seq_len + 1
    examples = sum(tokens.values()) / block
    assert examples == int(examples)
    if share > 0:  # (within 2 points of the share over 200 batches of 8: tests/data/test_mixture.py)
        assert tokens["books"] > 0 and (examples < 1600 or abs(tokens["books"] / block / examples - share) < 0.02)
    return {"tokens": tokens, **{tag: s[f"val/loss/{tag}"] for tag in ("abstracts", "books")}}


def spread(values: list[float], signed: bool = False) -> str:
    """``mean ± sd`` of ``values`` (the mean alone for one)."""
    import statistics

    mean = f"{statistics.mean(values):{'+' if signed else ''}.3f}"
    return mean if len(values) == 1 else f"{mean} ± {statistics.stdev(values):.3f}"


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, tag, title in zip(axes, ("abstracts", "books"), ("domain: held-out abstracts", "general: held-out books")):
        for i, (share, runs) in enumerate(results.items()):
            for j, r in enumerate(runs):  # every seed, one colour per share
                steps, values = zip(*r[tag])
                ax.plot(steps, values, marker=".", color=f"C{i}", alpha=0.8,
                        label=f"replay {float(share):.0%}" if j == 0 else None)
        ax.set_title(title)
        ax.set_xlabel("continued-pretraining step")
        ax.set_ylabel("validation loss (nats/token)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
