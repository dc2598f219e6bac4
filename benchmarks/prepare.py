"""Corpus preparation: speed against ``datasets.map``, memory against corpus size, data wait in training.

Corpus: the Project Gutenberg books (``*.txt``) of ``../shared/data/general/gutenberg`` (``--corpus``),
one document per file, read by ``TextCorpus``. Tokenizer: a byte-level BPE of 8192 tokens
trained once on the corpus (not timed) and used by every variant.

1. Speed, in MB of text per second (UTF-8 bytes of the files / wall seconds), each variant
   in its own fresh subprocess so that nothing is cached, interleaved for ``--rounds``
   rounds (median reported):
   (a) ``lmforge prepare``: ``TextCorpus.prepare`` into an empty cache folder -- reading the
       files, the validation split, tokenizing (``tokenizers`` batch encoding on every
       core), writing uint16 shards and document offsets.
   (b) ``datasets``: the same documents read the same way (``iter_local``) into
       ``Dataset.from_dict``, then ``Dataset.map(batched=True, num_proc=2)`` with the same
       tokenizer returning ``input_ids``, written to an empty cache folder -- the recipe of
       the Hugging Face example scripts (run_clm/run_mlm). Target: (a)/(b) >= 1.5.
2. Peak memory (the subprocess's peak RSS, VmHWM) of (a) on the corpus and on 10 copies of it
   (``paths`` naming the folder ten times: 10x the documents). Target: within 1.2x.
3. Data wait: ``lmforge fit`` of the tiny GPT (``configs/gpt/tiny.yaml`` shape) on the
   prepared shards for ``--steps`` steps with Lightning's SimpleProfiler; the share of time
   in ``train_dataloader_next`` (fetching and collating the next batch) over that plus
   ``run_training_batch``. Target: < 2%.

Run: ``python benchmarks/prepare.py`` (about 10 minutes on 2 cores).

``python benchmarks/prepare.py --smoke`` runs the same steps in seconds on six small stand-in books
written to a temporary folder (``standins.py``; no ``../shared`` data), a 512-token tokenizer, 1
round, 2 copies and 5 training steps: it checks that the benchmark runs, and its figures and
verdicts mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported
import standins  # noqa: E402  (the stand-in data of --smoke)

DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "general" / "gutenberg"


def _corpus_bytes(paths: list[str]) -> int:
    from lmforge.data.documents import expand_paths

    return sum(p.stat().st_size for p in expand_paths(paths))


# -- variants, each run in a fresh subprocess ------------------------------------------------------
def run_lmforge(paths: list[str], tokenizer: str, workdir: str) -> dict:
    from lmforge.data import DataSource, TextCorpus, TokenizerSpec

    start = time.perf_counter()
    corpus = TextCorpus(source=DataSource(paths=paths), tokenizer=TokenizerSpec(path=tokenizer), cache_dir=workdir)
    prepared = corpus.prepare(progress=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens": prepared.num_tokens("train") + prepared.num_tokens("val")}


def run_datasets(paths: list[str], tokenizer: str, workdir: str) -> dict:
    import datasets
    import tokenizers

    from lmforge.data.documents import iter_local

    datasets.disable_progress_bars()
    start = time.perf_counter()
    tok = tokenizers.Tokenizer.from_file(tokenizer)

    def tokenize(batch: dict) -> dict:
        return {"input_ids": [e.ids for e in tok.encode_batch(batch["text"], add_special_tokens=False)]}

    ds = datasets.Dataset.from_dict({"text": list(iter_local(paths))})
    out = ds.map(tokenize, batched=True, num_proc=2, remove_columns=["text"],
                 cache_file_name=str(Path(workdir) / "tokenized.arrow"))
    tokens = sum(len(ids) for ids in out.with_format("numpy")["input_ids"])
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens": int(tokens)}


def run_variant(args: argparse.Namespace) -> None:
    fn = {"lmforge": run_lmforge, "datasets": run_datasets}[args.variant]
    with tempfile.TemporaryDirectory() as workdir:
        result = fn(json.loads(args.paths), args.tokenizer, workdir)
    # VmHWM (this process image's peak RSS): ru_maxrss would carry the parent's RSS over the exec
    status = Path("/proc/self/status").read_text()
    result["max_rss_mb"] = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024
    print("RESULT " + json.dumps(result))


def subprocess_run(variant: str, paths: list[str], tokenizer: str) -> dict:
    cmd = [sys.executable, __file__, "--variant", variant, "--paths", json.dumps(paths), "--tokenizer", tokenizer]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{out.stderr[-3000:]}")
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


# -- data wait in training --------------------------------------------------------------------------
def data_wait_share(paths: list[str], tokenizer: str, steps: int) -> dict:
    import lightning as L
    from lightning.pytorch.profilers import SimpleProfiler

    from lmforge.data import DataSource, TextCorpus, TokenizerSpec
    from lmforge.models import GPTConfig
    from lmforge.start import connect
    from lmforge.tasks import CausalLMTask, OptimizerConfig

    with tempfile.TemporaryDirectory() as workdir:
        dm = TextCorpus(source=DataSource(paths=paths),
                        tokenizer=TokenizerSpec(path=tokenizer), seq_len=64, batch_size=8,
                        cache_dir=workdir)
        task = CausalLMTask(config=GPTConfig(vocab_size=dm.vocab_size, max_seq_len=64, n_layer=2, n_head=2,
                                             d_model=64, dropout=0.0),
                            optimizer=OptimizerConfig(lr=3e-3, warmup_steps=5))
        connect(task, dm)
        profiler = SimpleProfiler(dirpath=workdir, filename="profile")  # its report to a file, not stdout
        trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            profiler=profiler, default_root_dir=workdir)
        trainer.fit(task, dm)
        durations = profiler.recorded_durations
        fetch = durations["[_TrainingEpochLoop].train_dataloader_next"][1:]  # the first includes worker start
        step = durations["run_training_batch"][1:]
    return {"fetch_ms": 1000 * statistics.median(fetch), "step_ms": 1000 * statistics.median(step),
            "share": sum(fetch) / (sum(fetch) + sum(step))}


def verdict(passed: bool, smoke: bool) -> str:
    """PASS or FAIL against a target; a smoke run's tiny figures are not judged."""
    return "not judged (smoke)" if smoke else "PASS" if passed else "FAIL"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``--smoke`` fills in its own defaults where no value was given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=None, help=f"folder of .txt books (default {DEFAULT_CORPUS})")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds of (a) and (b) (default 3; smoke 1)")
    parser.add_argument("--steps", type=int, default=None, help="training steps of the data-wait run (default 300; smoke 5)")
    parser.add_argument("--copies", type=int, default=None, help="copies of the corpus for peak memory (default 10; smoke 2)")
    parser.add_argument("--vocab", type=int, default=None, help="tokenizer vocabulary (default 8192; smoke 512)")
    parser.add_argument("--smoke", action="store_true",
                        help="stand-in books in a temporary folder, tiny settings: the plumbing only, seconds")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = {"rounds": 1, "steps": 5, "copies": 2, "vocab": 512} if args.smoke else \
        {"rounds": 3, "steps": 300, "copies": 10, "vocab": 8192}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step's fetch includes the loader's start)")
    if args.corpus is None:
        args.corpus = str(standins.write_books(standins.temporary_folder("lmforge-prepare-smoke-") / "books")
                          if args.smoke and not args.variant else DEFAULT_CORPUS)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.variant:
        run_variant(args)
        return

    import torch

    from lmforge.data import DataSource, TokenizerSpec, train_tokenizer
    from lmforge.data.documents import iter_local

    if not Path(args.corpus).is_dir():
        sys.exit(f"Corpus folder '{args.corpus}' not found: pass --corpus.")
    paths = [str(Path(args.corpus) / "*.txt")]  # the books, not the folder's MANIFEST.json
    mb = _corpus_bytes(paths) / 1e6
    if args.smoke:
        print("SMOKE RUN: stand-in books, tiny settings -- checks that the benchmark runs; "
              "the figures and verdicts are not meaningful")
    print(f"corpus {args.corpus}: {mb:.1f} MB, {os.cpu_count()} CPUs, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = str(Path(tmp) / "tokenizer.json")
        train_tokenizer(iter_local(paths), TokenizerSpec(vocab_size=args.vocab)).save(tokenizer)

        speeds: dict[str, list[float]] = {"lmforge": [], "datasets": []}
        tokens: dict[str, int] = {}
        rss_1x: list[float] = []
        for r in range(args.rounds):
            order = ["lmforge", "datasets"] if r % 2 == 0 else ["datasets", "lmforge"]
            for variant in order:
                result = subprocess_run(variant, paths, tokenizer)
                speeds[variant].append(mb / result["seconds"])
                tokens[variant] = result["tokens"]
                if variant == "lmforge":
                    rss_1x.append(result["max_rss_mb"])
                print(f"round {r}: {variant:8s} {mb / result['seconds']:6.2f} MB/s  ({result['seconds']:.1f} s, "
                      f"{result['tokens']:,} tokens, max RSS {result['max_rss_mb']:.0f} MB)", flush=True)
        med = {k: statistics.median(v) for k, v in speeds.items()}
        ratio = statistics.median(a / b for a, b in zip(speeds["lmforge"], speeds["datasets"]))
        print(f"\n1. speed: lmforge prepare {med['lmforge']:.2f} MB/s, datasets.map(num_proc=2) "
              f"{med['datasets']:.2f} MB/s; per-round ratio median {ratio:.2f}x (target >= 1.5): "
              f"{verdict(ratio >= 1.5, args.smoke)}")
        print(f"   tokens: lmforge {tokens['lmforge']:,} (with one end-of-document per document), "
              f"datasets {tokens['datasets']:,}")

        big = subprocess_run("lmforge", paths * args.copies, tokenizer)
        peak_ratio = big["max_rss_mb"] / statistics.median(rss_1x)
        print(f"2. peak memory: 1x {statistics.median(rss_1x):.0f} MB, {args.copies}x {big['max_rss_mb']:.0f} MB "
              f"({mb * args.copies / big['seconds']:.2f} MB/s): ratio {peak_ratio:.2f} (target <= 1.2): "
              f"{verdict(peak_ratio <= 1.2, args.smoke)}")

        wait = data_wait_share(paths, tokenizer, args.steps)
        print(f"3. data wait, tiny GPT: fetch {wait['fetch_ms']:.2f} ms, step {wait['step_ms']:.1f} ms (medians); "
              f"share {100 * wait['share']:.2f}% (target < 2%): {verdict(wait['share'] < 0.02, args.smoke)}")


if __name__ == "__main__":
    main()
