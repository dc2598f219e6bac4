"""Real-data check: a tiny BERT pretrained by masked LM, then unsupervised SimCSE, on STS-B dev.

What it checks, end to end through the real ``lmforge fit`` CLI (``lmforge.cli.main``, in
process) on real text:

1. MLM pretraining (``MaskedLMTask``, RoBERTa-style: ``nsp`` off, blocks packed across
   document boundaries, dynamic masking) of a tiny BERT (4 layers, width 128, 4 heads,
   WordPiece uncased vocab 8192 trained on the corpus) on a subset of the Project Gutenberg
   books, one document per blank-line paragraph (``txt_split: blank_line``).
2. Unsupervised SimCSE (``ContrastiveTask``, ``init_from`` the MLM run's ``last.ckpt``,
   dropout 0.1 as the only augmentation, temperature 0.05, batch 128, mean pooling) on the
   sentences of the same books, cut to their first 10 tokens (``seq_len`` 12 with
   [CLS]/[SEP]), with ``--sts.file`` = STS-B dev so ``val/sts_spearman`` is logged at each
   validation. Short fragments and a large batch keep the dropout-positive task from being
   trivial for this tiny model: mean pooling averages dropout noise away over long
   sentences (with 30 tokens and batch 64 the loss is ~0.001 after 50 steps), and a 10-token
   fragment is told apart from 127 others only by its content words, which is what STS-B
   (median 15 tokens) rewards. The MLM learning rate is 1e-3: checkpoints trained at 2e-3
   reached a slightly lower MLM loss but were worse starting points for SimCSE.
3. STS-B dev Spearman (x100) of the cosine similarities of sentence embeddings, each
   encoder built as ``ContrastiveTask(init_from=ckpt, pooling=...)`` with the checkpoint's
   tokenizer attached and evaluated with ``sts_spearman()`` in eval mode:
   (a) a randomly initialised encoder of the same shape (a floor: mean pooling of random
   token vectors is a bag-of-words overlap measure, which is strong on STS-B),
   (b) the MLM checkpoint, mean-pooled (and CLS-pooled, for reference),
   (c) the SimCSE encoder (its ``last.ckpt``).
   The check passes when (c) beats (b, mean) by at least ``--min-gain`` points and the
   lower end of a 95% paired-bootstrap interval of that gain (1000 resamples of the
   1,500 pairs) is above zero.

It prints a table and, as its last line, one JSON object with every figure, step count,
time and setting. Exit status 0 when the check passes, 1 when it does not, 2 when the data
is missing.

Run from the repository root (the data lives outside the repository, in ../shared/data):

    python benchmarks/simcse_sts.py              # ~13 min on 2 shared CPU cores
    python benchmarks/simcse_sts.py --mlm-steps 60 --simcse-steps 30 --corpus-mb 2   # plumbing only, ~4 min
    python benchmarks/simcse_sts.py --smoke      # the plumbing on stand-in data, well under a minute

``--smoke`` runs all three steps through the same code on stand-ins written to a temporary folder
(``standins.py``: six generated books and 40 generated STS pairs) unless ``--books`` / ``--sts``
name real ones, with a tiny shape (1 layer, width 32, 2 heads, vocab 512, MLM 4 steps of 4 x 32
tokens, SimCSE 2 steps of 8 x 12 tokens); it needs no network and no ``../shared`` data. Its
figures are not meaningful and the check is not judged: it exits 0 whenever everything ran.

Runs go to a temporary folder that is deleted at the end; with ``--keep`` they go to
``benchmarks/.runs/simcse-<time>/`` (a folder that ignores itself in git) for TensorBoard:
``tensorboard --logdir benchmarks/.runs``. ``LMFORGE_CACHE_DIR`` points into the run
folder, so every run trains its tokenizer afresh (it is part of the timing) and nothing is
written to ``~/.cache/lmforge``. ``--mlm-ckpt`` skips step 1 (for tuning SimCSE).

Expected runtime with the defaults on 2 x86_64 cores shared with other jobs (load average
2-4, so torch runs 1 thread): about 6.5 min of MLM (corpus, tokenizer, 800 steps), 5 min of
SimCSE (corpus, 500 steps of 128 x 12 tokens) and 1 min of evaluation; on an idle machine
(2 threads) less.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported
import standins  # noqa: E402  (the stand-in data of --smoke)


# --smoke: a shape and step counts that run in seconds (explicit options still win)
SMOKE = {"layers": 1, "width": 32, "heads": 2, "vocab": 512, "mlm_seq_len": 32, "mlm_batch": 4, "mlm_steps": 4,
         "mlm_warmup": 1, "simcse_steps": 2, "simcse_batch": 8, "simcse_val_every": 2, "max_minutes": 5.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    p.add_argument("--mlm-batch", type=int, default=16)
    p.add_argument("--mlm-steps", type=int, default=800)
    p.add_argument("--mlm-lr", type=float, default=1e-3)
    p.add_argument("--mlm-warmup", type=int, default=100)
    p.add_argument("--nsp", action="store_true", help="BERT's next sentence prediction on (default: off, RoBERTa-style packing)")
    # SimCSE
    p.add_argument("--simcse-steps", type=int, default=500)
    p.add_argument("--simcse-lr", type=float, default=1e-3)
    p.add_argument("--simcse-batch", type=int, default=128)
    p.add_argument("--simcse-seq-len", type=int, default=12, help="sentences are cut to this many tokens incl. [CLS]/[SEP]")
    p.add_argument("--pooling", choices=["mean", "cls"], default="mean")
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--simcse-val-every", type=int, default=100)
    # budget and output
    p.add_argument("--max-minutes", type=float, default=10.0, help="hard cap of each fit (Lightning max_time)")
    p.add_argument("--min-gain", type=float, default=3.0, help="SimCSE must beat the MLM encoder by this many points")
    p.add_argument("--keep", action="store_true", help="keep the runs under benchmarks/.runs/ instead of a temporary folder")
    p.add_argument("--mlm-ckpt", default=None, help="skip step 1 and start SimCSE from this MLM checkpoint (tuning)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads; 0: all cores on an idle machine, 1 when the 1-min load average is >= 1 "
                        "(on 2 busy cores, 2 threads ran 1-4x slower than 1)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--smoke", action="store_true",
                   help="stand-in books and STS pairs, tiny shape, a few steps, no verdict: the plumbing only")
    a = p.parse_args(argv)
    if a.smoke:  # parse again with the smoke defaults: options given on the command line still win
        p.set_defaults(**SMOKE, books=None, sts=None)
        a = p.parse_args(argv)
        data = standins.temporary_folder("lmforge-simcse-smoke-")
        a.books = a.books or str(standins.write_books(data / "books"))
        a.sts = a.sts or str(standins.write_sts(data / "sts-dev.csv"))
    return a


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


def evaluate(ckpt: Path, sts: str, pooling: str, random_init: bool = False) -> dict:
    """STS-B dev Spearman x100 of the encoder of ``ckpt`` (or of a random encoder of its shape),
    its cosine similarities (for the bootstrap) and the seconds it took."""
    import torch.nn.functional as F

    from lmforge.evaluation.sts import read_sts, sts_spearman
    from lmforge.models.bert import BertConfig
    from lmforge.start import load_tokenizer
    from lmforge.tasks import ContrastiveTask

    start = time.perf_counter()
    if random_init:
        shape = torch.load(ckpt, map_location="cpu", weights_only=True)["lmforge"]["model_config"]
        torch.manual_seed(0)
        task = ContrastiveTask(config=BertConfig(**shape), pooling=pooling)
    else:
        task = ContrastiveTask(init_from=str(ckpt), pooling=pooling)
    task.tokenizer = load_tokenizer(str(ckpt))
    task.eval()
    pairs = read_sts(sts)
    value = 100 * sts_spearman(task.encode_texts, pairs)
    first, second, _ = pairs
    cosine = F.cosine_similarity(task.encode_texts(first), task.encode_texts(second))
    return {"spearman": value, "cosine": cosine, "seconds": time.perf_counter() - start}


def bootstrap_gain(new: torch.Tensor, old: torch.Tensor, gold: list[float], resamples: int = 1000) -> tuple[float, float]:
    """95% interval of Spearman(new) - Spearman(old), x100, resampling the pairs together."""
    from torchmetrics.functional import spearman_corrcoef

    g = torch.Generator().manual_seed(0)
    idx = torch.randint(len(gold), (len(gold), resamples), generator=g)  # (N, R): one resample per column
    target = torch.tensor(gold)[idx]
    gain = 100 * (spearman_corrcoef(new[idx], target) - spearman_corrcoef(old[idx], target))
    low, high = torch.quantile(gain, torch.tensor([0.025, 0.975])).tolist()
    return low, high


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    books_dir, sts = Path(a.books), Path(a.sts)
    load_at_start = os.getloadavg()
    if not books_dir.is_dir() or not any(books_dir.glob("*.txt")):
        fail(f"no Gutenberg books in '{books_dir}' (read relative to {Path.cwd()}): run from the repository root "
             "or pass --books FOLDER_OF_TXT_FILES.")
    if not sts.is_file():
        fail(f"STS-B dev file '{sts}' does not exist (read relative to {Path.cwd()}): pass --sts path/to/sts-dev.csv.")
    if a.mlm_ckpt and not Path(a.mlm_ckpt).is_file():
        fail(f"--mlm-ckpt '{a.mlm_ckpt}' does not exist: give the last.ckpt of an MLM run.")
    if a.threads <= 0:
        a.threads = 1 if load_at_start[0] >= 1.0 else (os.cpu_count() or 1)
    torch.set_num_threads(a.threads)
    books = pick_books(books_dir, a.corpus_mb, a.seed)
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
    start_all = time.perf_counter()
    minutes = int(a.max_minutes)
    max_time = f"00:00:{minutes:02d}:{int((a.max_minutes - minutes) * 60):02d}"
    common = [
        "--trainer.accelerator=cpu", "--trainer.precision=32-true", "--trainer.devices=1",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--trainer.gradient_clip_val=1.0", "--trainer.log_every_n_steps=10",
        "--trainer.check_val_every_n_epoch=null", f"--trainer.max_time={max_time}",
        "--sample.enabled=false", f"--seed_everything={a.seed}",
    ]
    data = [
        "--data=lmforge.data.TextCorpus", f"--data.source.paths={json.dumps([str(b) for b in books])}",
        "--data.txt_split=blank_line", "--data.val_fraction=0.02",
    ]
    if a.smoke:
        print("SMOKE RUN: stand-in data, tiny shape, a few steps -- checks that the benchmark runs; "
              "the figures are not meaningful and the check is not judged", flush=True)
    print(f"[simcse_sts] {len(books)} books, {corpus_mb:.1f} MB; {a.threads} torch thread(s); runs in {work}", flush=True)

    try:
        # -- 1. MLM pretraining -----------------------------------------------------------------
        if a.mlm_ckpt:
            t_mlm, mlm_ckpt = 0.0, Path(a.mlm_ckpt)
            mlm_run = mlm_ckpt.parent.parent
        else:
            print("[simcse_sts] 1/3 MLM pretraining ...", flush=True)
            t_mlm = fit([
                "--model=lmforge.tasks.MaskedLMTask",
                f"--model.config.n_layer={a.layers}", f"--model.config.n_head={a.heads}",
                f"--model.config.d_model={a.width}", "--model.config.dropout=0.1",
                f"--model.config.nsp_head={str(a.nsp).lower()}", f"--model.nsp={str(a.nsp).lower()}",
                f"--model.optimizer.lr={a.mlm_lr}", "--model.optimizer.betas=[0.9,0.98]",
                "--model.optimizer.weight_decay=0.01", f"--model.optimizer.warmup_steps={a.mlm_warmup}",
                *data, f"--data.seq_len={a.mlm_seq_len}", f"--data.batch_size={a.mlm_batch}",
                "--data.tokenizer.kind=wordpiece", f"--data.tokenizer.vocab_size={a.vocab}",
                "--data.tokenizer.specials=bert", "--data.tokenizer.lowercase=true",
                *common, f"--trainer.max_steps={a.mlm_steps}",
                f"--trainer.val_check_interval={max(a.mlm_steps // 4, 1)}", "--trainer.limit_val_batches=20",
                *logger_args(work, "mlm"),
            ])
            mlm_run = work / "mlm" / "version_0"
            mlm_ckpt = mlm_run / "checkpoints" / "last.ckpt"
        mlm_curve = scalars(mlm_run)
        mlm_steps = torch.load(mlm_ckpt, map_location="cpu", weights_only=True)["global_step"]

        # -- 2. unsupervised SimCSE ----------------------------------------------------------
        print("[simcse_sts] 2/3 unsupervised SimCSE ...", flush=True)
        t_simcse = fit([
            "--model=lmforge.tasks.ContrastiveTask", f"--model.init_from={mlm_ckpt}",
            f"--model.config.dropout={a.dropout}", f"--model.pooling={a.pooling}",
            f"--model.temperature={a.temperature}", f"--sts.file={sts}",
            f"--model.optimizer.lr={a.simcse_lr}", "--model.optimizer.weight_decay=0.0",
            "--model.optimizer.warmup_steps=0",
            *data, f"--data.seq_len={a.simcse_seq_len}", f"--data.batch_size={a.simcse_batch}",
            *common, f"--trainer.max_steps={a.simcse_steps}",
            f"--trainer.val_check_interval={min(a.simcse_val_every, a.simcse_steps)}", "--trainer.limit_val_batches=5",
            *logger_args(work, "simcse"),
        ])
        simcse_ckpt = work / "simcse" / "version_0" / "checkpoints" / "last.ckpt"
        simcse_steps = torch.load(simcse_ckpt, map_location="cpu", weights_only=True)["global_step"]
        simcse_curve = scalars(work / "simcse" / "version_0")

        # -- 3. STS-B dev --------------------------------------------------------------------
        print("[simcse_sts] 3/3 STS-B dev evaluation ...", flush=True)
        rows = {
            "random_init_mean": ("random init (same shape)", "mean", evaluate(mlm_ckpt, str(sts), "mean", random_init=True)),
            "mlm_mean": ("MLM checkpoint", "mean", evaluate(mlm_ckpt, str(sts), "mean")),
            "mlm_cls": ("MLM checkpoint", "cls", evaluate(mlm_ckpt, str(sts), "cls")),
            f"simcse_{a.pooling}": ("SimCSE from the MLM checkpoint", a.pooling, evaluate(simcse_ckpt, str(sts), a.pooling)),
        }
        t_total = time.perf_counter() - start_all
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)

    from lmforge.evaluation.sts import read_sts

    gold = read_sts(sts)[2]
    simcse, mlm = rows[f"simcse_{a.pooling}"][2], rows["mlm_mean"][2]
    gain = simcse["spearman"] - mlm["spearman"]
    low, high = bootstrap_gain(simcse["cosine"], mlm["cosine"], gold)
    passed = None if a.smoke else gain >= a.min_gain and low > 0  # a smoke run's figures judge nothing
    sts_curve = [(s, round(100 * v, 2)) for s, v in simcse_curve.get("val/sts_spearman", [])]
    # MaskedLMTask logs the token-weighted MLM loss as val/mlm_loss (older versions: val/loss)
    mlm_val = mlm_curve.get("val/mlm_loss") or mlm_curve.get("val/loss", [])
    mlm_acc = mlm_curve.get("val/mlm_acc", [])
    tps = sorted(v for _, v in mlm_curve.get("perf/tokens_per_sec", []))
    nan = float("nan")

    print()
    print(f"STS-B dev ({len(gold)} pairs), Spearman x100 of cosine similarities; "
          f"{len(books)} Gutenberg books ({corpus_mb:.1f} MB)")
    print(f"| {'encoder':<32} | {'pooling':<7} | {'Spearman':>8} | {'eval s':>6} |")
    for name, pooling, r in rows.values():
        print(f"| {name:<32} | {pooling:<7} | {r['spearman']:>8.2f} | {r['seconds']:>6.1f} |")
    print(f"MLM: {mlm_steps} steps in {t_mlm:.0f} s (with corpus + tokenizer), val MLM loss by step "
          f"{[(s, round(v, 3)) for s, v in mlm_val]}, val/mlm_acc {mlm_acc[-1][1] if mlm_acc else nan:.3f}")
    print(f"SimCSE: {simcse_steps} steps in {t_simcse:.0f} s, val/sts_spearman by step: {sts_curve}")
    print(f"SimCSE - MLM(mean) = {gain:+.2f} points (95% paired bootstrap {low:+.2f} .. {high:+.2f}): "
          f"{'not judged (smoke)' if passed is None else 'PASS' if passed else 'FAIL'} "
          f"(needs >= {a.min_gain} and a positive lower bound); "
          f"total {t_total / 60:.1f} min")
    result = {
        "check": "simcse_sts",
        "passed": passed,
        "sts_spearman_x100": {key: round(r["spearman"], 2) for key, (_, _, r) in rows.items()},
        "gain_over_mlm_mean": round(gain, 2),
        "gain_95ci": [round(low, 2), round(high, 2)],
        "simcse_val_sts_by_step": sts_curve,
        "mlm": {
            "steps": mlm_steps, "seconds": round(t_mlm, 1),
            "val_mlm_loss_by_step": [(s, round(v, 4)) for s, v in mlm_val],
            "val_mlm_acc_by_step": [(s, round(v, 4)) for s, v in mlm_acc],
            "tokens_per_sec_median": round(tps[len(tps) // 2]) if tps else None,
        },
        "simcse": {"steps": simcse_steps, "seconds": round(t_simcse, 1)},
        "eval_seconds": round(sum(r["seconds"] for _, _, r in rows.values()), 1),
        "total_seconds": round(t_total, 1),
        "settings": {k: v for k, v in vars(a).items() if k != "keep"} | {
            "books": [b.name for b in books], "corpus_mb": round(corpus_mb, 2),
            "tokenizer": "wordpiece, bert specials, lowercase", "txt_split": "blank_line",
            "kept_runs": str(work) if a.keep else None,
        },
        "machine": {
            "python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "platform": platform.machine(), "load_average_at_start": [round(x, 2) for x in load_at_start],
        },
    }
    print(json.dumps(result))
    sys.exit(0 if passed is not False else 1)


if __name__ == "__main__":
    main()
