"""Real-data check: a tiny BERT pretrained by masked LM, then unsupervised SimCSE, on STS-B dev.

What it checks, end to end through the real ``lmforge fit`` CLI (``lmforge.cli.main``, in
process) on real text:

1. MLM pretraining (``MaskedLMTask``, RoBERTa-style: ``nsp`` off, blocks packed across
   document boundaries, dynamic masking) of a tiny BERT (4 layers, width 128, 4 heads,
   WordPiece uncased vocab 8192 trained on the corpus) on a subset of the Project Gutenberg
   books, one document per blank-line paragraph (``txt_split: blank_line``).
2. Unsupervised SimCSE (``ContrastiveTask``, ``init_from`` the MLM run's ``last.ckpt``,
   dropout 0.1 as the only augmentation, temperature 0.05, batch 64) on the sentences of
   the same books, with ``sts_file`` = STS-B dev so ``val/sts_spearman`` is logged.
3. STS-B dev Spearman (x100) of cosine similarities of sentence embeddings, for
   (a) a randomly initialised encoder of the same shape (the floor),
   (b) the MLM checkpoint, mean-pooled (and CLS-pooled, for reference),
   (c) the SimCSE encoder (its ``last.ckpt``).
   The check passes when (c) beats (b, mean) by ``--min-gain`` points (default 5).

It prints a table and, as its last line, one JSON object with every figure, step count,
time and setting. Exit status 0 when the check passes, 1 when it does not, 2 when the data
is missing.

Run from the repository root (the data lives outside the repository, in ../shared/data):

    python benchmarks/simcse_sts.py                     # ~12-14 min on 2 CPU cores
    python benchmarks/simcse_sts.py --mlm-steps 60 --simcse-steps 30 --corpus-mb 2   # smoke, ~2 min

Runs go to a temporary folder that is deleted at the end; with ``--keep`` they go to
``benchmarks/.runs/simcse-<time>/`` (which ignores itself in git) for TensorBoard:
``tensorboard --logdir benchmarks/.runs``. The tokenizer cache of these runs
(``LMFORGE_CACHE_DIR``) lives in the run folder too, so every run trains its tokenizer
afresh and nothing is written to ``~/.cache/lmforge``.

Expected runtime with the defaults on 2 shared x86_64 cores: about 6.5 min of MLM (incl.
corpus reading and tokenizer training), 3.5 min of SimCSE and 1 min of evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--books", default="../shared/data/general/gutenberg", help="folder of Project Gutenberg .txt books")
    p.add_argument("--sts", default="../shared/data/sts/sts-dev.csv", help="STS-B dev file (7 tab-separated fields)")
    p.add_argument("--corpus-mb", type=float, default=8.0, help="use books (in a fixed shuffled order) up to this many MB")
    # MLM
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--mlm-seq-len", type=int, default=128)
    p.add_argument("--mlm-batch", type=int, default=32)
    p.add_argument("--mlm-steps", type=int, default=1000)
    p.add_argument("--mlm-lr", type=float, default=1e-3)
    p.add_argument("--mlm-warmup", type=int, default=100)
    p.add_argument("--nsp", action="store_true", help="BERT's next sentence prediction on (default: off, RoBERTa-style packing)")
    # SimCSE
    p.add_argument("--simcse-steps", type=int, default=400)
    p.add_argument("--simcse-lr", type=float, default=1e-4)
    p.add_argument("--simcse-batch", type=int, default=64)
    p.add_argument("--simcse-seq-len", type=int, default=48, help="sentences are cut to this many tokens incl. [CLS]/[SEP]")
    p.add_argument("--pooling", choices=["mean", "cls"], default="mean")
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--simcse-val-every", type=int, default=100)
    # budget and output
    p.add_argument("--max-minutes", type=float, default=8.0, help="hard cap of each fit (Lightning max_time)")
    p.add_argument("--min-gain", type=float, default=5.0, help="SimCSE must beat the MLM encoder by this many points")
    p.add_argument("--keep", action="store_true", help="keep the runs under benchmarks/.runs/ instead of a temporary folder")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads; 0: all cores on an idle machine, 1 when the load average says others are "
                        "computing (2 threads on 2 busy cores run up to 4x slower than 1)")
    p.add_argument("--mlm-ckpt", default=None, help="skip step 1 and start SimCSE from this MLM checkpoint (tuning)")
    return p.parse_args()


def fail(message: str) -> None:
    print(f"simcse_sts: error: {message}", file=sys.stderr)
    sys.exit(2)


def pick_books(folder: Path, megabytes: float, seed: int) -> list[Path]:
    """Books in a fixed shuffled order (fiction and non-fiction mixed), until ``megabytes``."""
    books = sorted(folder.glob("*.txt"))
    random.Random(seed).shuffle(books)
    chosen, total = [], 0
    for book in books:
        if total >= megabytes * 1e6:
            break
        chosen.append(book)
        total += book.stat().st_size
    return sorted(chosen)


def fit(args: list[str]) -> float:
    """``lmforge fit`` in process; returns its wall time in seconds."""
    from lmforge.cli import main

    start = time.perf_counter()
    main(["fit", *args])
    return time.perf_counter() - start


def logger_args(root: Path, name: str) -> list[str]:
    logger = {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": str(root), "name": name, "version": 0, "default_hp_metric": False},
    }
    return [f"--trainer.default_root_dir={root}", f"--trainer.logger={json.dumps(logger)}"]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a run's TensorBoard events: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}, purge_orphaned_data=False)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def sts_of(ckpt: Path | None, sts: str, pooling: str, shape_from: Path | None = None) -> tuple[float, float]:
    """STS-B dev Spearman x100 of an encoder (``ckpt``, or random init of ``shape_from``'s shape)
    and the seconds it took."""
    from lmforge.data.tokenizer import Tokenizer
    from lmforge.models.bert import BertConfig
    from lmforge.tasks import ContrastiveTask

    start = time.perf_counter()
    if ckpt is not None:
        task = ContrastiveTask(init_from=str(ckpt), pooling=pooling, sts_file=sts)
        task.tokenizer = Tokenizer.from_file(ckpt)
    else:
        stored = torch.load(shape_from, map_location="cpu", weights_only=True)["lmforge"]["model_config"]
        torch.manual_seed(0)
        task = ContrastiveTask(config=BertConfig(**stored), pooling=pooling, sts_file=sts)
        task.tokenizer = Tokenizer.from_file(shape_from)
    task.eval()
    value = task.sts_spearman()
    return 100 * value, time.perf_counter() - start


def main() -> None:
    a = parse_args()
    books_dir, sts = Path(a.books), Path(a.sts)
    load_at_start = os.getloadavg()
    if not books_dir.is_dir() or not any(books_dir.glob("*.txt")):
        fail(f"no Gutenberg books in '{books_dir}' (read relative to {Path.cwd()}): run from the repository root "
             "or pass --books FOLDER_OF_TXT_FILES.")
    if not sts.is_file():
        fail(f"STS-B dev file '{sts}' does not exist (read relative to {Path.cwd()}): pass --sts path/to/sts-dev.csv.")
    if a.mlm_ckpt and not Path(a.mlm_ckpt).is_file():
        fail(f"--mlm-ckpt '{a.mlm_ckpt}' does not exist: give the last.ckpt of an MLM run.")
    books = pick_books(books_dir, a.corpus_mb, a.seed)
    if a.threads <= 0:
        cores = os.cpu_count() or 1
        a.threads = 1 if os.getloadavg()[0] >= 1.0 else cores
    torch.set_num_threads(a.threads)
    corpus_mb = sum(b.stat().st_size for b in books) / 1e6

    if a.keep:
        runs = ROOT / "benchmarks" / ".runs"
        runs.mkdir(parents=True, exist_ok=True)
        (runs / ".gitignore").write_text("*\n")  # the folder ignores itself: nothing here is committed
        work = runs / time.strftime("simcse-%Y%m%d-%H%M%S")
        work.mkdir()
    else:
        work = Path(tempfile.mkdtemp(prefix="lmforge-simcse-"))
    os.environ["LMFORGE_CACHE_DIR"] = str(work / "cache")  # fresh tokenizer each run, ~/.cache untouched
    t_total = time.perf_counter()
    max_time = f"00:00:{int(a.max_minutes):02d}:{int(a.max_minutes % 1 * 60):02d}"
    common = [
        "--trainer.accelerator=cpu", "--trainer.precision=32-true", "--trainer.devices=1",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--trainer.gradient_clip_val=1.0", "--trainer.log_every_n_steps=10",
        "--trainer.check_val_every_n_epoch=null", f"--trainer.max_time={max_time}",
        "--sample.enabled=false", f"--seed_everything={a.seed}",
    ]
    data = [
        "--data=lmforge.data.TextCorpus", f"--data.paths={json.dumps([str(b) for b in books])}",
        "--data.txt_split=blank_line", "--data.val_fraction=0.02",
    ]
    print(f"[simcse_sts] {len(books)} books, {corpus_mb:.1f} MB; runs in {work}", flush=True)

    try:
        # -- 1. MLM pretraining -----------------------------------------------------------------
        mlm_args = [
            "--model=lmforge.tasks.MaskedLMTask",
            f"--model.config.n_layer={a.layers}", f"--model.config.n_head={a.heads}",
            f"--model.config.d_model={a.width}", "--model.config.dropout=0.1",
            f"--model.config.nsp_head={str(a.nsp).lower()}", f"--model.nsp={str(a.nsp).lower()}",
            f"--model.optimizer.lr={a.mlm_lr}", "--model.optimizer.betas=[0.9,0.98]",
            "--model.optimizer.weight_decay=0.01", f"--model.optimizer.warmup_steps={a.mlm_warmup}",
            *data, f"--data.seq_len={a.mlm_seq_len}", f"--data.batch_size={a.mlm_batch}",
            "--data.tokenizer.kind=wordpiece", f"--data.tokenizer.vocab_size={a.vocab}",
            "--data.tokenizer.family=bert", "--data.tokenizer.lowercase=true",
            *common, f"--trainer.max_steps={a.mlm_steps}",
            f"--trainer.val_check_interval={max(a.mlm_steps // 4, 1)}", "--trainer.limit_val_batches=20",
            *logger_args(work, "mlm"),
        ]
        if a.mlm_ckpt:
            t_mlm, mlm_ckpt = 0.0, Path(a.mlm_ckpt)
            mlm_curve = scalars(mlm_ckpt.parent.parent)
        else:
            print(f"[simcse_sts] 1/3 MLM pretraining ({a.threads} threads) ...", flush=True)
            t_mlm = fit(mlm_args)
            mlm_ckpt = work / "mlm" / "version_0" / "checkpoints" / "last.ckpt"
            mlm_curve = scalars(work / "mlm" / "version_0")
        mlm_steps = torch.load(mlm_ckpt, map_location="cpu", weights_only=True)["global_step"]

        # -- 2. unsupervised SimCSE ----------------------------------------------------------
        simcse_args = [
            "--model=lmforge.tasks.ContrastiveTask", f"--model.init_from={mlm_ckpt}",
            f"--model.config.dropout={a.dropout}", f"--model.pooling={a.pooling}",
            f"--model.temperature={a.temperature}", f"--model.sts_file={sts}",
            f"--model.optimizer.lr={a.simcse_lr}", "--model.optimizer.weight_decay=0.0",
            "--model.optimizer.warmup_steps=0",
            *data, f"--data.seq_len={a.simcse_seq_len}", f"--data.batch_size={a.simcse_batch}",
            *common, f"--trainer.max_steps={a.simcse_steps}",
            f"--trainer.val_check_interval={min(a.simcse_val_every, a.simcse_steps)}", "--trainer.limit_val_batches=5",
            *logger_args(work, "simcse"),
        ]
        print("[simcse_sts] 2/3 unsupervised SimCSE ...", flush=True)
        t_simcse = fit(simcse_args)
        simcse_ckpt = work / "simcse" / "version_0" / "checkpoints" / "last.ckpt"
        simcse_steps = torch.load(simcse_ckpt, map_location="cpu", weights_only=True)["global_step"]
        simcse_curve = scalars(work / "simcse" / "version_0")

        # -- 3. STS-B dev --------------------------------------------------------------------
        print("[simcse_sts] 3/3 STS-B dev evaluation ...", flush=True)
        rows = [
            ("random init (same shape)", "mean", *sts_of(None, str(sts), "mean", shape_from=mlm_ckpt)),
            ("MLM checkpoint", "mean", *sts_of(mlm_ckpt, str(sts), "mean")),
            ("MLM checkpoint", "cls", *sts_of(mlm_ckpt, str(sts), "cls")),
            ("SimCSE (from the MLM checkpoint)", a.pooling, *sts_of(simcse_ckpt, str(sts), a.pooling)),
        ]
        t_total = time.perf_counter() - t_total
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)

    random_sts, mlm_sts, mlm_cls_sts, simcse_sts = (r[2] for r in rows)
    gain = simcse_sts - mlm_sts
    passed = gain >= a.min_gain
    sts_curve = [(s, round(100 * v, 2)) for s, v in simcse_curve.get("val/sts_spearman", [])]
    mlm_val = mlm_curve.get("val/loss", [])
    mlm_acc = mlm_curve.get("val/mlm_acc", [])
    tps = mlm_curve.get("perf/tokens_per_sec", [])

    print()
    print(f"STS-B dev ({sts}), Spearman x100 of cosine similarities, {len(books)} Gutenberg books ({corpus_mb:.1f} MB)")
    print(f"{'encoder':<34} {'pooling':<8} {'Spearman':>9} {'eval s':>7}")
    for name, pooling, value, seconds in rows:
        print(f"{name:<34} {pooling:<8} {value:>9.2f} {seconds:>7.1f}")
    print(f"MLM: {mlm_steps} steps in {t_mlm:.0f} s (incl. corpus + tokenizer), val/loss "
          f"{mlm_val[0][1] if mlm_val else float('nan'):.3f} -> {mlm_val[-1][1] if mlm_val else float('nan'):.3f}, "
          f"val/mlm_acc {mlm_acc[-1][1] if mlm_acc else float('nan'):.3f}")
    print(f"SimCSE: {simcse_steps} steps in {t_simcse:.0f} s, val/sts_spearman by step: {sts_curve}")
    print(f"SimCSE - MLM(mean) = {gain:+.2f} points: {'PASS' if passed else 'FAIL'} (needs >= {a.min_gain}); "
          f"total {t_total / 60:.1f} min")
    result = {
        "check": "simcse_sts",
        "passed": passed,
        "sts_spearman_x100": {
            "random_init_mean": round(random_sts, 2), "mlm_mean": round(mlm_sts, 2),
            "mlm_cls": round(mlm_cls_sts, 2), f"simcse_{a.pooling}": round(simcse_sts, 2),
        },
        "gain_over_mlm_mean": round(gain, 2),
        "simcse_val_sts_curve": sts_curve,
        "mlm": {
            "steps": mlm_steps, "seconds": round(t_mlm, 1),
            "val_loss_by_step": [(s, round(v, 4)) for s, v in mlm_val],
            "val_mlm_acc_by_step": [(s, round(v, 4)) for s, v in mlm_acc],
            "tokens_per_sec_median": round(sorted(v for _, v in tps)[len(tps) // 2]) if tps else None,
        },
        "simcse": {"steps": simcse_steps, "seconds": round(t_simcse, 1)},
        "eval_seconds": round(sum(r[3] for r in rows), 1),
        "total_seconds": round(t_total, 1),
        "settings": {
            k: v for k, v in vars(a).items() if k not in ("keep",)
        } | {"books": [b.name for b in books], "corpus_mb": round(corpus_mb, 2), "nsp": a.nsp,
             "tokenizer": "wordpiece bert lowercase", "txt_split": "blank_line", "kept_runs": str(work) if a.keep else None},
        "machine": {
            "python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "platform": platform.machine(),
            "load_average_at_start": [round(x, 2) for x in load_at_start],
        },
    }
    print(json.dumps(result))
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
