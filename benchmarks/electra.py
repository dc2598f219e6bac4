"""Equal-compute encoder pretraining on the CPU: BERT MLM vs the small-budget recipe vs ELECTRA, then downstream.

End to end through the real CLI (``lmforge fit`` and ``lmforge evaluate``, in process), on the
books of ``../shared/data/general/gutenberg`` (one document per paragraph, one WordPiece
vocabulary trained on them and shared by every arm, blocks of 128 tokens):

1. Each arm pretrains from scratch on the SAME number of training FLOPs: its steps are the budget
   divided by its task's ``flops_per_token()`` (the work its step does: sparse prediction's MLM
   head on the masked positions only; ELECTRA's generator and discriminator) times the tokens of
   a step. The budget is what ``--reference-steps`` steps of the first arm cost (800 BERT steps:
   7 to 13 minutes an arm on 2 CPU cores), or ``--budget-flops``. A checkpoint is kept at a quarter, a
   half and all of each arm's steps.
   - ``bert``: ``configs/bert/mini.yaml`` (post-norm, biases, dropout 0.1), masked LM without NSP,
     peak 5e-4, linear warmup over 10% of the steps then linear decay (OUR choice: the preset's
     1e-4 with 10k warmup steps is for a million steps);
   - ``recipe``: ``configs/recipes/encoder-small-budget.yaml`` (cramming's pre-norm, no biases, 1e-3
     one-cycle triangle with the peak at 3/4 of the steps, no dropout, clipping 0.5; an untied MLM
     output matrix), same shape; ``recipe-tied`` (not a default arm): the same with the output matrix
     tied to the input embeddings, as cramming's;
   - ``electra``: ``lmforge.tasks.ElectraTask`` from ``--electra-config``, the discriminator at the
     same shape (embeddings unfactorised, as BERT's), its generator a quarter of its width (ELECTRA-Small's), peak
     5e-4, warmup 10%.
2. ``lmforge evaluate`` fine-tunes every checkpoint and a random initialisation (of the first
   arm's architecture), ``--seeds`` seeds each, on SST-2 (``--sst2-train`` sentences drawn per seed
   from ``labeled/sst2/train.tsv``, scored on its dev set) and JNLPBA entities
   (``downstream/ner/jnlpba``: trained on dev.txt, scored on test.txt, as SciBERT's copy ships it).
3. A table (mean ± sd over seeds) and a plot (``electra.png``) of each score against the
   pretraining FLOPs, and a final JSON line with every figure.

    python benchmarks/electra.py --curve-seeds 1      # the RESULTS.md run: 1 h 37 min on 2 shared CPU cores
    python benchmarks/electra.py --arms bert electra   # some of the arms
    python benchmarks/electra.py --smoke               # plumbing only on stand-in data, about a minute
    python benchmarks/electra.py --arms recipe --d-model 128 --budget-flops 7.97e13 --only-pretrain  # another width
    python benchmarks/electra.py --arms recipe recipe-tied --corpus-mb 30 --tasks sst2 \
        --curve-seeds 0                                # the recipe's untied MLM matrix against a tied one
    python benchmarks/electra.py --arms recipe --reuse benchmarks/.runs/electra-<time> --tasks sst2 \
        --curve-seeds 0 --finetune-lr 1e-3 --finetune-mode probe   # its checkpoints again, other settings

``--reuse`` takes an earlier run's folder and fine-tunes its checkpoints (pass the same shape and
budget; the arms it has are not pretrained again), writing ``eval-<task>-<mode>-lr<lr>`` folders
beside the first ones (``-2``, ``-3``, ... after a name already there), so the fine-tuning settings
can be varied on the very same pretrained networks. An arm the folder does not have yet is
pretrained into it, with the tokenizer its arms saved and on the same examples (asserted), so a
comparison too long for one sitting can be built an arm at a time (``--only-pretrain``):

    python benchmarks/electra.py --arms recipe --reference-steps 6000 --corpus-mb 30 --only-pretrain
    python benchmarks/electra.py --arms recipe bert --reference-steps 6000 --corpus-mb 30 \
        --reuse benchmarks/.runs/electra-<time> --only-pretrain    # adds BERT on the recipe's budget

Runs go to ``benchmarks/.runs/electra-<time>/`` (ignored by git). ``--smoke`` runs every step
through the same code on stand-ins of the data folder (``standins.py``) unless ``--data`` names a
real one, with a 1-layer width-32 encoder, blocks of 32 x 4, a budget of a few steps, 1 seed and a
few fine-tuning steps; its runs go to a temporary folder. Its figures are not meaningful.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported
import bench_report  # noqa: E402
import standins  # noqa: E402  (the stand-in data of --smoke)

SHAPE = {"n_layer": 4, "n_head": 4, "d_model": 256, "vocab": 16384, "seq_len": 128, "batch_size": 32}
SMOKE_SHAPE = {"n_layer": 1, "n_head": 2, "d_model": 32, "vocab": 512, "seq_len": 32, "batch_size": 4}
FRACTIONS = (0.25, 0.5, 1.0)  # the checkpoints kept, as shares of each arm's steps


@dataclass
class Arm:
    """One pretraining arm: its config files, its own arguments, and its warmup as a share of its steps.

    Args:
        configs: ``-c`` files, relative to the repository root.
        args: More ``fit`` arguments (after the files, before the shared ones).
        warmup: ``optimizer.warmup_steps`` as a share of the arm's steps.
        shaped: Whether the shared shape (``--model.config.n_layer`` ...) applies to its ``model.config``.
    """

    configs: list[str]
    args: list[str] = field(default_factory=list)
    warmup: float = 0.1
    shaped: bool = True


RECIPE = Arm(["configs/recipes/encoder-small-budget.yaml"], warmup=0.75)  # the triangle's peak at 3/4
ARMS = {
    "bert": Arm(["configs/bert/mini.yaml"],
                ["--model.nsp=false", "--model.config.nsp_head=false", "--model.optimizer.lr=5e-4",
                 "--model.optimizer.schedule=linear", "--model.optimizer.min_lr_ratio=0.0"]),
    "recipe": RECIPE,
    # the recipe with its MLM output matrix tied to the input embeddings, as cramming's and BERT's (the ablation of
    # the recipe's untied head: the tied softmax turns the embeddings one way, Gao et al. 2019)
    "recipe-tied": replace(RECIPE, args=["--model.config.tie_embeddings=true"]),
    # the shape keys are the discriminator's, as BERT's here (unfactorised embeddings, as BERT's);
    # the generator a quarter of its width (ELECTRA-Small's), set in arm_args
    "electra": Arm(["configs/electra/tiny.yaml"],
                   ["--model.optimizer.lr=5e-4",
                    "--model.optimizer.schedule=linear", "--model.optimizer.min_lr_ratio=0.0"]),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", nargs="+", default=["bert", "recipe", "electra"], choices=list(ARMS),
                   help="the pretraining arms, in order")
    p.add_argument("--electra-config", default=None, help="the ELECTRA arm config (default configs/electra/tiny.yaml)")
    p.add_argument("--generator-width", type=float, default=0.25,
                   help="the ELECTRA generator's width as a share of the discriminator's (ELECTRA-Small's quarter)")
    p.add_argument("--generator-layers", type=int, default=None, help="the generator's blocks (default: as many as the "
                   "discriminator, as in the paper)")
    p.add_argument("--d-model", type=int, default=SHAPE["d_model"],
                   help="the encoders' width (every arm; a head per 64 channels)")
    p.add_argument("--n-layer", type=int, default=SHAPE["n_layer"], help="the encoders' blocks (every arm)")
    p.add_argument("--data", default=None, help=f"the data folder (default {DATA}; smoke: stand-ins)")
    p.add_argument("--corpus-mb", type=float, default=16.0,
                   help="MB of books (16 MB: 3.5 M tokens, a little more than one pass of the default budget)")
    p.add_argument("--reference-steps", type=int, default=800,
                   help="the budget: this many steps of the first arm (800 x 4096 tokens: BERT 9.5 min at 5,800 tokens/s)")
    p.add_argument("--budget-flops", type=float, default=None, help="the budget in FLOPs (not --reference-steps)")
    p.add_argument("--reuse", default=None, metavar="RUN",
                   help="fine-tune the checkpoints of an earlier run's folder (the same shape and budget) instead of "
                        "pretraining again, and pretrain into it the arms it lacks (on its tokenizer and shards): its "
                        "evaluation folders are named after the fine-tuning settings")
    p.add_argument("--only-pretrain", action="store_true", help="stop after pretraining (sizing and tokens/s)")
    p.add_argument("--sst2-train", type=int, default=1000, help="SST-2 training sentences per fine-tune")
    p.add_argument("--tasks", nargs="+", default=["sst2", "jnlpba"], choices=["sst2", "jnlpba"],
                   help="the downstream tasks to fine-tune")
    p.add_argument("--finetune-lr", type=float, default=5e-4, help="the fine-tuning peak learning rate (every start)")
    p.add_argument("--finetune-mode", choices=["full", "probe"], default="full",
                   help="fine-tune the whole network, or train a head on the frozen network (probe)")
    p.add_argument("--sst2-steps", type=int, default=300)
    p.add_argument("--ner-steps", type=int, default=300)
    p.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds of random init and each arm's last checkpoint")
    p.add_argument("--curve-seeds", type=int, default=None,
                   help="fine-tuning seeds of the quarter and half checkpoints (default --seeds; 0: none); run after the others")
    p.add_argument("--no-random-init", action="store_true",
                   help="no random-init baseline (another run of the same shape and tokenizer has its figures)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads")
    p.add_argument("--smoke", action="store_true",
                   help="stand-in data, tiny model, a few steps, 1 seed: the plumbing only, no shared data")
    return p.parse_args(argv)


def arm_args(name: str, a: argparse.Namespace, shape: dict, data: list[str]) -> list[str]:
    """The ``fit`` arguments every run of arm ``name`` shares: its files and arguments, the shape, the data."""
    arm = ARMS[name]
    configs = [a.electra_config] if name == "electra" and a.electra_config else arm.configs
    args = [f for c in configs for f in ("-c", str(ROOT / c))] + arm.args
    if arm.shaped:
        args += [f"--model.config.{key}={shape[key]}" for key in ("n_layer", "n_head", "d_model")]
    if arm.shaped and name == "electra":  # embeddings as wide as BERT's; the generator narrower, a head per 64
        width = max(1, round(shape["d_model"] * a.generator_width))
        args += [f"--model.config.embedding_size={shape['d_model']}", f"--model.config.generator_d_model={width}",
                 f"--model.config.generator_n_head={max(1, width // 64)}"]
        if a.generator_layers:
            args.append(f"--model.config.generator_n_layer={a.generator_layers}")
    return args + data + [f"--data.seq_len={shape['seq_len']}", f"--data.batch_size={shape['batch_size']}"]


def flops_per_token(args: list[str], shape: dict) -> float:
    """The arm's task's ``flops_per_token()``: its resolved config (``fit --print_config``) built on
    the meta device with the vocabulary and block length the data will link."""
    import torch

    from lmforge.cli import main
    from lmforge.start import import_class

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.suppress(SystemExit):
        main(["fit", *args, "--print_config"])
    model = yaml.safe_load(printed.getvalue())["model"]
    init = dict(model["init_args"])
    init["config"] = {**init["config"], "vocab_size": shape["vocab"], "max_seq_len": shape["seq_len"]}
    with torch.device("meta"):
        return float(import_class(model["class_path"])(**init).flops_per_token())


def pretrain(name: str, args: list[str], steps: int, warmup: float, run: Path, seed: int) -> tuple[dict, float]:
    """Fit arm ``name`` for ``steps`` steps keeping the checkpoints at :data:`FRACTIONS` of them; those
    checkpoints by fraction, and the seconds it took."""
    from lmforge.cli import main

    logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
              "init_args": {"save_dir": str(run), "name": name, "default_hp_metric": False}}
    quarter = steps // 4
    started = time.perf_counter()
    main(["fit", *args, f"--model.optimizer.warmup_steps={max(round(warmup * steps), 1)}",
          f"--trainer.max_steps={steps}", f"--trainer.val_check_interval={quarter}", "--trainer.limit_val_batches=10",
          "--trainer.check_val_every_n_epoch=null", "--trainer.accelerator=cpu", "--trainer.precision=32-true",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--sample.enabled=false",
          f"--seed_everything={seed}", f"--trainer.logger={json.dumps(logger)}",
          "--checkpoint.monitor=null", "--checkpoint.save_top_k=-1", f"--checkpoint.every_n_train_steps={quarter}",
          "--checkpoint.filename=step-{step}"])
    return checkpoints(run, name, steps), time.perf_counter() - started


def run_tokenizer(run: Path) -> Path:
    """The tokenizer the arms of ``run`` were trained with (their copies in their run folders, which must agree),
    for the arms ``--reuse`` adds. Not the cache's: its key holds the books' modification times, which a fresh copy of the
    data folder changes, and WordPiece training is not deterministic (the same vocabulary, other ids)."""
    from lmforge.tokenizer import Tokenizer

    found = {path: Tokenizer.from_file(str(path)).fingerprint for path in sorted(run.glob("*/version_0/tokenizer.json"))}
    if not found:
        sys.exit(f"--reuse {run}: no arm of it has a tokenizer.json (<arm>/version_0/tokenizer.json); pretrain an arm "
                 "into a new run instead.")
    if len(set(found.values())) > 1:
        sys.exit(f"--reuse {run}: its arms were trained with different tokenizers "
                 f"({', '.join(f'{p.parent.parent.name} {f}' for p, f in found.items())}); keep the arms of one "
                 "tokenizer and move the others away; a run with --reuse pretrains them again on the one kept.")
    return next(iter(found))


def checkpoints(run: Path, name: str, steps: int) -> dict[float, Path]:
    """Arm ``name``'s checkpoints in ``run`` by fraction of its ``steps``; a missing one ends the script."""
    folder = run / name / "version_0" / "checkpoints"
    ckpts = {f: folder / f"step-{round(f * steps)}.ckpt" for f in FRACTIONS}
    missing = [str(p) for p in ckpts.values() if not p.is_file()]
    if missing or not (run / name / "version_0" / "config.yaml").is_file():
        found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        sys.exit(f"{run} has no {', '.join(missing) or 'config.yaml'} of arm {name} ({steps} steps; found "
                 f"{found}): pass the shape and budget of the run that wrote it, or move {run / name} away to "
                 "pretrain the arm again.")
    return ckpts


def trained(folder: Path) -> dict:
    """What a pretraining run trained, from the config it saved: the task, the network's options, the schedule."""
    model = yaml.safe_load((folder / "version_0" / "config.yaml").read_text())["model"]
    config, optimizer = model["init_args"].get("config") or {}, model["init_args"]["optimizer"]
    keys = ("n_layer", "d_model", "pre_norm", "bias", "dropout", "nsp_head", "tie_embeddings", "generator_d_model",
            "generator_n_layer")
    return {"task": model["class_path"], **{k: config.get(k) for k in keys},
            **{k: optimizer[k] for k in ("lr", "schedule", "warmup_steps", "min_lr_ratio")}}


def finetune_recipes(run: Path, data: Path, shape: dict, a: argparse.Namespace,
                     tag: str = "") -> dict[str, tuple[Path, str]]:
    """The fine-tuning config of each of ``a.tasks`` (file, the metric the table reports), written
    into ``run`` as ``<task><tag>.yaml``."""
    trainer = {"accelerator": "cpu", "precision": "32-true", "check_val_every_n_epoch": None,
               "log_every_n_steps": 10, "enable_model_summary": False, "enable_progress_bar": False}
    optimizer = {"lr": a.finetune_lr, "weight_decay": 0.01, "betas": [0.9, 0.999], "min_lr_ratio": 0.0}
    seq_len = min(64, shape["seq_len"])
    sst2 = {"model": {"class_path": "lmforge.evaluation.FineTuneTask", "init_args": {
                "mode": a.finetune_mode, "pooling": "mean", "dropout": 0.1, "optimizer": optimizer, "warmup_ratio": 0.1}},
            "data": {"class_path": "lmforge.evaluation.LabeledText", "init_args": {
                "source": {"paths": str(data / "labeled" / "sst2" / "train.tsv"), "text_field": "sentence"},
                "validation": str(data / "labeled" / "sst2" / "dev.tsv"), "label_field": "label",
                "task_type": "classification", "seq_len": seq_len, "batch_size": 32}},
            "trainer": {**trainer, "max_steps": a.sst2_steps, "val_check_interval": a.sst2_steps}}
    jnlpba = data / "downstream" / "ner" / "jnlpba"
    ner = {"model": {"class_path": "lmforge.evaluation.TokenClassificationTask", "init_args": {
               "mode": a.finetune_mode, "dropout": 0.1, "optimizer": optimizer, "warmup_ratio": 0.1}},
           "data": {"class_path": "lmforge.evaluation.TaggedText", "init_args": {
               "source": {"paths": str(jnlpba / "dev.txt")}, "validation": str(jnlpba / "test.txt"), "scheme": "BIO",
               "seq_len": shape["seq_len"], "batch_size": 32}},
           "trainer": {**trainer, "max_steps": a.ner_steps, "val_check_interval": a.ner_steps},
           "checkpoint": {"monitor": "val/f1", "mode": "max"}}
    out = {}
    for task, recipe, metric in [t for t in (("sst2", sst2, "val/acc"), ("jnlpba", ner, "val/f1")) if t[0] in a.tasks]:
        path = run / f"{task}{tag}.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        out[task] = (path, metric)
    return out


def eval_tag(run: Path, a: argparse.Namespace) -> str:
    """What names this run's fine-tuning files in ``run``: the default settings' folders are
    ``eval-<task>[-curve]``, others carry their settings (``-probe-lr0.001``); a name ``run`` already
    holds (a ``--reuse`` with arms added) takes the first free ``-2``, ``-3``, ... after it."""
    tag = "" if (a.finetune_mode, a.finetune_lr) == ("full", 5e-4) else f"-{a.finetune_mode}-lr{a.finetune_lr:g}"
    taken = {p.name for p in run.iterdir()} if run.is_dir() else set()
    for n in itertools.count(1):
        found = tag + (f"-{n}" if n > 1 else "")
        names = [f"eval-{task}{suffix}{found}" for task in a.tasks for suffix in ("", "-curve")]
        if taken.isdisjoint(names + [f"{task}{found}.yaml" for task in a.tasks]):  # the folders, the recipe files
            return found


def scores(out: Path, metric: str) -> dict[str, list[float]]:
    """Each start's ``metric`` over its seeds, from ``lmforge evaluate``'s ``runs.csv``."""
    import csv

    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    found: dict[str, list[float]] = {}
    for row in rows:
        if row.get(metric):
            found.setdefault(row["start"], []).append(float(row[metric]))
    return found


def learned(run: Path, arms: list[str], step_tokens: int) -> list[str]:
    """What each arm's pretraining learned, at each validation (from its TensorBoard events): the
    masked-LM loss on the masked tokens (ELECTRA's: its generator's) beside what the unigram
    frequencies alone give, and ELECTRA's discriminator against always answering "original"."""
    import math

    import numpy as np

    from lmforge.data.shards import open_shard

    folder = next((run / "cache" / "shards").glob("*/meta.json")).parent
    read = {split: np.concatenate([open_shard(f).tokens for f in sorted(folder.glob(f"{split}-*.bin"))])
            for split in ("train", "val")}  # the shards' tokens, without their headers
    counts = np.bincount(read["train"], minlength=int(max(read["train"].max(), read["val"].max())) + 1) + 0.5
    unigram = float(-np.log(counts[read["val"]] / counts.sum()).mean())  # nats per validation token
    lines = [f"Unigram reference (the training split's token frequencies, no context): {unigram:.3f} nats per "
             "validation token.", "",
             "| arm | step | tokens | val MLM loss | val RTD loss | all \"original\" | val RTD AUC | embedding cos |",
             "|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        found = bench_report.scalars(run / arm / "version_0")
        mlm = dict(found.get("val/mlm_loss") or found.get("val/loss_mlm") or [])
        rtd, auc = dict(found.get("val/loss_rtd", [])), dict(found.get("val/auc_rtd", []))
        replaced = [v for _, v in found.get("train/replaced", [])]
        share = 0.15 * (sum(replaced) / len(replaced)) if replaced else math.nan  # replaced share of the tokens
        floor = -(share * math.log(share) + (1 - share) * math.log(1 - share)) if replaced else math.nan
        for step in sorted(k for k in mlm if k > 0):
            cells = [f"{rtd[step]:.3f}", f"{floor:.3f}", f"{auc[step]:.3f}"] if step in rtd else ["", "", ""]
            ckpt = run / arm / "version_0" / "checkpoints" / f"step-{step + 1}.ckpt"
            cells.append(f"{embedding_cosine(ckpt):.2f}" if ckpt.is_file() else "")
            lines.append(f"| {arm} | {step + 1} | {(step + 1) * step_tokens:,} | {mlm[step]:.3f} | " + " | ".join(cells)
                         + " |")
    return lines


def embedding_cosine(ckpt: Path, pairs: int = 4000) -> float:
    """The mean cosine similarity between the input embeddings of random pairs of distinct tokens
    (the specials left out): about 0 for a random initialisation; near 1 when pretraining has
    pushed every word vector one way (anisotropy), which a fine-tune must first undo."""
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    table = next(v for k, v in state.items() if k.endswith("wte.weight")).float()
    rows = torch.nn.functional.normalize(table[5:], dim=-1)  # BERT's specials: the first 5 ids
    picked = torch.randint(0, len(rows), (pairs, 2), generator=torch.Generator().manual_seed(0))
    picked = picked[picked[:, 0] != picked[:, 1]]
    return float((rows[picked[:, 0]] * rows[picked[:, 1]]).sum(-1).mean())


def report(results: dict, arms: list[str], budget: float, run: Path) -> list[str]:
    """The markdown table (a row per start, a column per task, mean ± sd over seeds, then the mean over
    the tasks and the seeds) and the plot of score against FLOPs."""
    from lmforge.evaluation.report import mean_std

    tasks = list(results["downstream"])
    lines = ["| start | pretraining FLOPs | seeds | " + " | ".join(tasks) + " | mean |",
             "|---|---|---|" + "---|" * (len(tasks) + 1)]
    starts = ["random init"] + [f"{arm} {f:g}" for arm in arms for f in FRACTIONS]
    for start in starts:
        flops = 0.0 if start == "random init" else float(start.split()[1]) * budget
        found = [results["downstream"][task]["scores"].get(start, []) for task in tasks]
        if not any(found):
            continue
        stats = [mean_std(f) for f in found]
        cells = [f"{100 * m:.1f} ± {100 * sd:.1f}" for m, sd in stats]
        mean = sum(m for m, _ in stats) / len(stats)
        lines.append(f"| {start} | {flops:.2e} | {len(found[0])} | " + " | ".join(cells) + f" | {100 * mean:.1f} |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        lines.append("(no plot: matplotlib is not installed)")
        return lines
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        found, metric = results["downstream"][task]["scores"], results["downstream"][task]["metric"]
        base = mean_std(found.get("random init", []))[0]
        ax.axhline(100 * base, color="grey", linestyle="--", label="random init")
        for arm in arms:
            means = [mean_std(found.get(f"{arm} {f:g}", []))[0] for f in FRACTIONS]
            ax.plot([f * budget for f in FRACTIONS], [100 * m for m in means], marker="o", label=arm)
        ax.set(title=f"{task} ({metric})", xlabel="pretraining FLOPs", ylabel=metric)
        ax.legend()
    fig.tight_layout()
    fig.savefig(run / "electra.png", dpi=120)
    lines.append(f"Plot: {run / 'electra.png'}")
    return lines


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    shape = SMOKE_SHAPE if a.smoke else {**SHAPE, "d_model": a.d_model, "n_layer": a.n_layer,
                                         "n_head": max(1, a.d_model // 64)}
    bench_report.threads_and_notice(a)
    for arm in a.arms:
        configs = [a.electra_config] if arm == "electra" and a.electra_config else ARMS[arm].configs
        missing = [c for c in configs if not (ROOT / c).is_file()]
        if missing:
            sys.exit(f"Arm {arm} needs {', '.join(missing)}, which is not in this checkout: leave the arm out "
                     f"(--arms {' '.join(x for x in a.arms if x != arm)}) or add the config.")
    if a.smoke:
        a.reference_steps, a.sst2_train, a.sst2_steps, a.ner_steps, a.seeds = 8, 20, 2, 2, 1
        base = standins.temporary_folder("lmforge-electra-smoke-")
        if a.data is None:
            a.data = str(base / "data")
            standins.write_books(Path(a.data) / "general" / "gutenberg")
            standins.write_sst2(Path(a.data) / "labeled" / "sst2")
            standins.write_downstream(Path(a.data) / "downstream")
    data = Path(a.data or DATA)
    books = sorted((data / "general" / "gutenberg").glob("*.txt"))
    if not books or not (data / "labeled" / "sst2" / "train.tsv").is_file() or not (
            data / "downstream" / "ner" / "jnlpba" / "dev.txt").is_file():
        sys.exit(f"The data is missing under {data}: see ../shared/data/README.md.")
    if a.reuse:
        run = Path(a.reuse).resolve()
        if not (run / "cache" / "shards").is_dir():
            sys.exit(f"--reuse {a.reuse}: not a folder of this script's runs (no cache/shards in it).")
    elif a.smoke:
        run = base / "run"
        run.mkdir()
    else:
        run = ROOT / "benchmarks" / ".runs" / f"electra-{time.strftime('%Y%m%d-%H%M%S')}"
        run.mkdir(parents=True)
        (run.parent / ".gitignore").write_text("*\n")
    os.environ["LMFORGE_CACHE_DIR"] = str(run / "cache")  # the shards and tokenizer, shared by the arms
    started = time.perf_counter()

    import random

    random.Random(a.seed).shuffle(books)
    before = itertools.accumulate((b.stat().st_size for b in books), initial=0)  # MB of the books before each
    chosen = [str(book) for book, mb in zip(books, before) if mb < a.corpus_mb * 1e6]
    size = sum(Path(b).stat().st_size for b in chosen)
    print(f"books {len(chosen)} ({size / 1e6:.1f} MB); arms {', '.join(a.arms)}", flush=True)
    data_args = ["--data=lmforge.data.TextCorpus", f"--data.source.paths={json.dumps(chosen)}",
                 # every arm reads the whole of the chosen books: no document limit carried over from an arm's config
                 "--data.max_documents=null",
                 "--data.txt_split=blank_line", "--data.val_fraction=0.02", "--data.tokenizer.kind=wordpiece",
                 f"--data.tokenizer.vocab_size={shape['vocab']}", "--data.tokenizer.specials=bert",
                 "--data.tokenizer.lowercase=true"]
    if a.reuse:
        data_args.append(f"--data.tokenizer.path={run_tokenizer(run)}")
    args = {arm: arm_args(arm, a, shape, data_args) for arm in a.arms}
    fpt = {arm: flops_per_token(args[arm], shape) for arm in a.arms}
    step_tokens = shape["seq_len"] * shape["batch_size"]
    budget = a.budget_flops or fpt[a.arms[0]] * step_tokens * a.reference_steps
    steps = {arm: max(4, 4 * round(budget / (fpt[arm] * step_tokens) / 4)) for arm in a.arms}  # quarters in whole steps
    results: dict = {"budget_flops": budget, "arms": {}, "downstream": {}}
    ckpts = {}
    for arm in a.arms:
        tokens = steps[arm] * step_tokens
        if a.reuse and (run / arm).exists():
            ckpts[arm], seconds = checkpoints(run, arm, steps[arm]), None
        else:
            ckpts[arm], seconds = pretrain(arm, args[arm], steps[arm], ARMS[arm].warmup, run, a.seed)
        results["arms"][arm] = {"flops_per_token": fpt[arm], "steps": steps[arm], "tokens": tokens,
                                "flops": fpt[arm] * tokens, "minutes": None, "trained": trained(run / arm)}
        if seconds is None:  # reused: nothing was pretrained
            continue
        results["arms"][arm].update(minutes=round(seconds / 60, 2), tokens_per_sec=round(tokens / seconds, 1))
        print(f"{arm}: {steps[arm]} steps, {tokens} tokens, {fpt[arm] * tokens:.3e} FLOPs in {seconds / 60:.1f} min "
              f"({tokens / seconds:.0f} tokens/s with validation and checkpoints)", flush=True)
    # each arm trained on the very same examples (the checkpoints' digest of the training blocks)
    import torch

    digests = {arm: torch.load(max(ckpts[arm].items())[1], map_location="cpu", weights_only=False)["TextCorpus"]
               ["identity"]["examples"] for arm in a.arms}
    assert len(set(digests.values())) == 1, f"the arms trained on different data: {digests}"
    print("\n" + "\n".join(learned(run, a.arms, step_tokens)) + "\n", flush=True)
    if not a.only_pretrain:
        from lmforge.commands.lightning import fit_metrics
        from lmforge.evaluation import evaluate

        # the headline first (random init and each arm's whole budget, --seeds seeds), then the curve's
        # earlier checkpoints (--curve-seeds): a run cut short still has the comparison at equal compute
        curve_seeds = a.seeds if a.curve_seeds is None else a.curve_seeds
        phases = [("", [f for f in FRACTIONS if f == 1.0], a.seeds, not a.no_random_init),
                  ("-curve", [f for f in FRACTIONS if f != 1.0], curve_seeds, False)][: 2 if curve_seeds else 1]
        tag = eval_tag(run, a)
        recipes = finetune_recipes(run, data, shape, a, tag)
        for suffix, fractions, seeds, random_baseline in phases:
            starts = [(f"{arm} {f:g}", str(ckpts[arm][f])) for arm in a.arms for f in fractions]
            for task, (recipe, metric) in recipes.items():
                out = run / f"eval-{task}{suffix}{tag}"
                evaluate([s for _, s in starts], recipe=[str(recipe)], metric=metric, seeds=seeds,
                         random_baseline=random_baseline, labels=[label for label, _ in starts], out=str(out),
                         fit=fit_metrics, train_sizes=[a.sst2_train] if task == "sst2" else None,
                         curve_steps=a.sst2_steps)
                found = results["downstream"].setdefault(task, {"metric": metric, "scores": {}})["scores"]
                found.update(scores(out, metric))
            print("\n" + "\n".join(report(results, a.arms, budget, run)) + "\n", flush=True)
    results.update(minutes=round((time.perf_counter() - started) / 60, 1), run=str(run), settings=vars(a))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
