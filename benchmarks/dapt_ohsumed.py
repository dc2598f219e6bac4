"""Real-data check: does pretraining help downstream, and does domain-adaptive pretraining help more?

End to end through the real CLI (``lmforge fit`` and ``lmforge evaluate``, in process), on
the real text of ``../shared/data``:

1. General pretraining: a tiny BERT (4 layers, width 128, 4 heads, WordPiece uncased 8192
   trained on the books) by masked LM on ~8 MB of Project Gutenberg books
   (``general/gutenberg``), one document per paragraph.
2. Domain-adaptive pretraining (DAPT, BioBERT-style): ``init_from`` step 1's checkpoint,
   the same masked LM continued on the OHSUMED abstracts (``biomed/ohsumed_train.jsonl``)
   MINUS a held-out evaluation split (20% of the abstracts, by a hash of their id): the
   pretraining never sees the evaluation text.
3. ``lmforge evaluate --recipe`` on OHSUMED classification (23 MeSH disease classes; fine-tuned on the
   non-held-out abstracts, evaluated on the held-out ones): random init vs general vs
   general+domain, 3 seeds each, full fine-tuning, mean pooling.
4. ``lmforge evaluate --recipe`` on SST-2 (``labeled/sst2``; fine-tuned on a fixed sample of the
   training sentences, evaluated on dev): random init vs general, 3 seeds.

It prints both tables (mean ± std over seeds) and a final JSON line with every figure.

    python benchmarks/dapt_ohsumed.py            # ~30 min on 2 shared CPU cores
    python benchmarks/dapt_ohsumed.py --quick    # plumbing only on the real data, ~5 min
    python benchmarks/dapt_ohsumed.py --smoke    # plumbing only on stand-in data, seconds

Runs go to ``benchmarks/.runs/dapt-<time>/`` (ignored by git): TensorBoard with
``tensorboard --logdir benchmarks/.runs/dapt-<time>``.

``--smoke`` runs every step through the same code on stand-ins of the data folder's layout written
to a temporary folder (``standins.py``: six generated books, 60 abstracts of 4 classes, 60 + 30
SST-2 sentences) unless ``--data`` names a real one, with a tiny BERT (1 layer, width 32, 2 heads,
vocab 512, MLM blocks of 32 x 4), 3 + 2 pretraining steps, 2 fine-tuning steps per run and 1 seed;
its runs go to that temporary folder too. It needs no network and no ``../shared`` data; its
figures are not meaningful.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported
import standins  # noqa: E402  (the stand-in data of --smoke)

# the pretrained BERT and its masked-LM blocks; --smoke's is tiny
SHAPE = {"n_layer": 4, "n_head": 4, "d_model": 128, "vocab": 8192, "seq_len": 128, "batch_size": 16}
SMOKE_SHAPE = {"n_layer": 1, "n_head": 2, "d_model": 32, "vocab": 512, "seq_len": 32, "batch_size": 4}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help=f"the data folder (default {DATA}; smoke: stand-ins)")
    p.add_argument("--corpus-mb", type=float, default=8.0)
    p.add_argument("--general-steps", type=int, default=800)
    p.add_argument("--domain-steps", type=int, default=400)
    p.add_argument("--ohsumed-steps", type=int, default=400)
    p.add_argument("--sst2-steps", type=int, default=300)
    p.add_argument("--sst2-train", type=int, default=8000, help="training sentences sampled from SST-2 train")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tiny step counts: checks the plumbing only")
    p.add_argument("--smoke", action="store_true",
                   help="stand-in data, tiny model, a few steps, 1 seed: the plumbing only, no shared data")
    p.add_argument("--seed", type=int, default=1234)
    return p.parse_args(argv)


def fit(args: list[str]) -> float:
    from lmforge.cli import main

    start = time.perf_counter()
    main(["fit", *args])
    return time.perf_counter() - start


def common(run: Path, name: str, seed: int) -> list[str]:
    logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
              "init_args": {"save_dir": str(run), "name": name, "default_hp_metric": False}}
    return ["--trainer.accelerator=cpu", "--trainer.precision=32-true", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--trainer.gradient_clip_val=1.0",
            "--trainer.check_val_every_n_epoch=null", "--trainer.limit_val_batches=20", "--sample.enabled=false",
            f"--seed_everything={seed}", f"--trainer.logger={json.dumps(logger)}"]


def mlm(model_args: list[str], data_args: list[str], steps: int, lr: float, run: Path, name: str, seed: int,
        shape: dict) -> Path:
    seconds = fit(["--model=lmforge.tasks.MaskedLMTask", *model_args, f"--model.optimizer.lr={lr}",
                   "--model.optimizer.betas=[0.9,0.98]", "--model.optimizer.weight_decay=0.01",
                   f"--model.optimizer.warmup_steps={max(steps // 8, 1)}", *data_args,
                   f"--data.seq_len={shape['seq_len']}", f"--data.batch_size={shape['batch_size']}",
                   *common(run, name, seed), f"--trainer.max_steps={steps}",
                   f"--trainer.val_check_interval={max(steps // 4, 1)}"])
    ckpt = run / name / "version_0" / "checkpoints" / "last.ckpt"
    print(f"{name}: {steps} steps in {seconds / 60:.1f} min -> {ckpt}", flush=True)
    return ckpt


def held_out(doc_id: str) -> bool:
    return int(hashlib.sha256(f"ohsumed-eval:{doc_id}".encode()).hexdigest()[:8], 16) / 16**8 < 0.2


def finetune_recipe(path: Path, train: Path, val: Path, text_field: str, seq_len: int, steps: int) -> Path:
    recipe = {
        "model": {"class_path": "lmforge.evaluation.FineTuneTask", "init_args": {
            "mode": "full", "pooling": "mean", "dropout": 0.1,
            "optimizer": {"lr": 5.0e-4, "weight_decay": 0.01, "betas": [0.9, 0.999]}, "warmup_ratio": 0.1}},
        "data": {"class_path": "lmforge.evaluation.LabeledText", "init_args": {
            "source": {"paths": str(train), "text_field": text_field}, "validation": str(val), "label_field": "label",
            "task_type": "classification", "seq_len": seq_len, "batch_size": 32}},
        "trainer": {"accelerator": "cpu", "precision": "32-true", "max_steps": steps,
                    "val_check_interval": steps, "check_val_every_n_epoch": None, "log_every_n_steps": 10,
                    "enable_model_summary": False},
    }
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def summary(out: Path) -> dict:
    """Mean and sample std over seeds of every val/ metric, per start (the runs of ``runs.csv``)."""
    from lmforge.evaluation.report import mean_std

    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    metrics = [k for k in runs[0] if k.startswith("val/")]
    result = {}
    for start in dict.fromkeys(r["start"] for r in runs):
        mine = [r for r in runs if r["start"] == start]
        result[start] = {f"{m} {part}": value for m in metrics
                         for part, value in zip(("mean", "std"), mean_std([float(r[m]) for r in mine if r[m]]))}
    return result


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    if a.quick:
        a.general_steps, a.domain_steps, a.ohsumed_steps, a.sst2_steps, a.corpus_mb = 40, 20, 20, 20, 1.0
    shape = SMOKE_SHAPE if a.smoke else SHAPE
    if a.smoke:
        print("SMOKE RUN: stand-in data, tiny model, a few steps -- checks that the benchmark runs; "
              "the figures are not meaningful", flush=True)
        a.general_steps, a.domain_steps, a.ohsumed_steps, a.sst2_steps, a.seeds = 3, 2, 2, 2, 1
        base = standins.temporary_folder("lmforge-dapt-smoke-")
        if a.data is None:
            a.data = str(base / "data")
            standins.write_books(Path(a.data) / "general" / "gutenberg")
            standins.write_ohsumed(Path(a.data) / "biomed" / "ohsumed_train.jsonl")
            standins.write_sst2(Path(a.data) / "labeled" / "sst2")
    data = Path(a.data or DATA)
    books = sorted((data / "general" / "gutenberg").glob("*.txt"))
    ohsumed = data / "biomed" / "ohsumed_train.jsonl"
    sst2 = data / "labeled" / "sst2"
    if not books or not ohsumed.is_file() or not (sst2 / "train.tsv").is_file():
        sys.exit(f"The data is missing under {data}: see ../shared/data/README.md.")
    if a.smoke:
        run = base / "run"
        run.mkdir()
    else:
        run = ROOT / "benchmarks" / ".runs" / f"dapt-{time.strftime('%Y%m%d-%H%M%S')}"
        run.mkdir(parents=True)
        (run.parent / ".gitignore").write_text("*\n")
    os.environ["LMFORGE_CACHE_DIR"] = str(run / "cache")
    started = time.perf_counter()

    # the data of every step, written once
    rng = random.Random(a.seed)
    rng.shuffle(books)
    chosen, size = [], 0
    for book in books:
        if size >= a.corpus_mb * 1e6:
            break
        chosen.append(str(book))
        size += book.stat().st_size
    rows = [json.loads(line) for line in ohsumed.read_text(encoding="utf-8").splitlines() if line.strip()]
    evaluation = [r for r in rows if held_out(r["id"])]
    train = [r for r in rows if not held_out(r["id"])]
    for name, part in (("ohsumed_train.jsonl", train), ("ohsumed_eval.jsonl", evaluation)):
        with open(run / name, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in part)
    assert not {r["text"] for r in evaluation} & {r["text"] for r in train}
    sst_lines = (sst2 / "train.tsv").read_text(encoding="utf-8").splitlines()
    sst_sample = random.Random(a.seed).sample(sst_lines[1:], min(a.sst2_train, len(sst_lines) - 1))
    (run / "sst2_train.tsv").write_text("\n".join([sst_lines[0], *sst_sample]) + "\n", encoding="utf-8")
    print(f"books {len(chosen)} ({size / 1e6:.1f} MB); OHSUMED {len(train)} train / {len(evaluation)} held-out "
          f"abstracts; SST-2 {len(sst_sample)} train sentences", flush=True)

    model = [f"--model.config.{key}={shape[key]}" for key in ("n_layer", "n_head", "d_model")]
    model += ["--model.config.dropout=0.1", "--model.config.nsp_head=false", "--model.nsp=false"]
    general = mlm(model, ["--data=lmforge.data.TextCorpus", f"--data.source.paths={json.dumps(chosen)}",
                          "--data.txt_split=blank_line", "--data.val_fraction=0.02", "--data.tokenizer.kind=wordpiece",
                          f"--data.tokenizer.vocab_size={shape['vocab']}", "--data.tokenizer.specials=bert",
                          "--data.tokenizer.lowercase=true"],
                  a.general_steps, 1e-3, run, "general", a.seed, shape)
    domain = mlm([f"--model.init_from={general}", "--model.config.dropout=0.1"],
                 ["--data=lmforge.data.TextCorpus", f"--data.source.paths={run / 'ohsumed_train.jsonl'}",
                  "--data.val_fraction=0.05"],
                 a.domain_steps, 5e-4, run, "domain", a.seed, shape)

    from lmforge.commands.lightning import fit_metrics
    from lmforge.evaluation import evaluate

    results = {}
    oh = finetune_recipe(run / "ohsumed.yaml", run / "ohsumed_train.jsonl", run / "ohsumed_eval.jsonl", "text",
                         shape["seq_len"], a.ohsumed_steps)  # the pretrained network's positions
    evaluate([str(general), str(domain)], recipe=[str(oh)], seeds=a.seeds, labels=["general", "general+domain"],
             out=str(run / "eval-ohsumed"), fit=fit_metrics)
    results["ohsumed"] = summary(run / "eval-ohsumed")
    sst = finetune_recipe(run / "sst2.yaml", run / "sst2_train.tsv", sst2 / "dev.tsv", "sentence", min(64, shape["seq_len"]),
                          a.sst2_steps)
    evaluate([str(general)], recipe=[str(sst)], seeds=a.seeds, labels=["general"], out=str(run / "eval-sst2"),
             fit=fit_metrics)
    results["sst2"] = summary(run / "eval-sst2")
    results.update(minutes=round((time.perf_counter() - started) / 60, 1), run=str(run), settings=vars(a))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
