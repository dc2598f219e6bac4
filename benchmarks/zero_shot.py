"""Zero-shot scoring of decoders: lmforge's scorer against lm-evaluation-harness (HF backend), on
the same models and the same requests: equal log-likelihoods, choices and generations, and faster.

Models, both ``transformers`` folders (lm-eval's HF backend reads nothing else):

- ``trained``: the quick start (``configs/quickstart.yaml``, a 1 M-parameter Llama-family decoder)
  trained here by ``lmforge fit`` for ``--steps`` steps, then ``lmforge export`` of its last.ckpt;
- ``llama``: ``transformers.LlamaForCausalLM`` with random weights (seed 0) saved by
  ``save_pretrained``, beside a byte-level BPE tokenizer trained on the benchmark's text and
  saved as ``PreTrainedTokenizerFast`` with ``<s>``/``</s>`` and a post-processor that puts
  ``<s>`` first, as Llama tokenizers do (so lm-eval adds BOS to every request).

Tasks, from ``../shared/data`` (written as JSON lines to the run folder; each is described twice,
as an lm-eval task YAML read through ``TaskManager(include_path=...)`` and as an lmforge task file):

- ``sentiment``: SST-2 dev, ``"Review: {sentence}\\nSentiment:"`` with the choices ``negative`` /
  ``positive`` (one token each after the space): multiple choice, acc and acc_norm;
- ``completion``: SST-2 dev sentences cut in half, ``"Review: {first half}"`` with 4 endings: the
  sentence's own and those of 3 other sentences (seeded), in a seeded order: multi-token
  choices, the case the speed target is judged on;
- ``squad``: the answerable questions of the SQuAD 2.0 dev articles,
  ``"Context: {context}\\nQuestion: {question}\\nAnswer:"``, greedy until ``"\\n"`` or
  ``--max-tokens`` tokens: exact match against any gold answer (SQuAD's normalisation).

lm-eval runs each task with ``log_samples``: its requests (context, continuation), their
log-likelihoods and is_greedy flags, its generations and its own metrics. lmforge scores the
SAME requests through ``open_scorer(folder).loglikelihood`` / ``.generate`` (the contexts and
continuations lm-eval logged), and separately renders them itself: ``lmforge evaluate`` on a suite
of the three lmforge task files, whose ``requests/<task>/*.jsonl`` must hold the same contexts and
continuations. Printed per model and task: max |log-likelihood difference| (target < 1e-4), the
items whose chosen answer differs (target 0, every item, not only the accuracy), the generations
that differ (target 0), both sides' accuracy / exact match, and requests/s: lm-eval's
``HFLM.loglikelihood`` on the requests at batch sizes 1, 8 and 32 (its best is the baseline)
against lmforge's ``Scorer.loglikelihood`` (batch ``--lmforge-batch``), median of ``--repeats``
interleaved rounds, in one process, fp32 on the CPU (target: lmforge >= 1.5x lm-eval's best on
``completion``). Generation is timed once per side (lm-eval at ``--gen-batch``).

    python benchmarks/zero_shot.py                 # ~15 min on 2 shared CPU cores (100 items, 300 steps)
    python benchmarks/zero_shot.py --limit 50 --models llama --tasks completion
    python benchmarks/zero_shot.py --reference-only   # lm-eval alone: its metrics and speeds
    python benchmarks/zero_shot.py --reference none   # lmforge alone (no lm-eval installed)
    python benchmarks/zero_shot.py --smoke         # stand-ins, 6 items, 2 training steps: the plumbing

lm-eval (``pip install lm-eval accelerate``; its HF backend imports accelerate) is the reference,
not a dependency of lmforge or of its tests (``tests/test_benchmarks.py`` runs ``--smoke --reference none``):
with ``--reference none`` only lmforge runs, and the checks are its own consistency: the same
log-likelihoods and generations at batch 1 as at ``--lmforge-batch``, and ``lmforge evaluate``'s
requests equal to the benchmark's own rendering of the prompts. ``--smoke`` writes stand-ins of
SST-2 and SQuAD to a temporary folder (``standins.py``) unless ``--data`` names the real folder;
it needs no network and no ``../shared`` data, and its figures are not meaningful.

Runs go to ``benchmarks/.runs/zero-shot-<time>/`` (ignored by git; smoke: a temporary folder).
Every figure is printed, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import string
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported
import standins  # noqa: E402  (the stand-in data of --smoke)

TASKS = ("sentiment", "completion", "squad")
MODELS = ("trained", "llama")
JUDGED = "completion"  # the speed target is judged on the multi-token choices


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--limit", type=int, default=None, help="items per task (default 100; smoke 6)")
    p.add_argument("--steps", type=int, default=None, help="training steps of the quick start (default 300; smoke 2)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved timed rounds (default 3; smoke 1)")
    p.add_argument("--batch-sizes", default="1,8,32", help="lm-eval's batch sizes; its best is the baseline")
    p.add_argument("--lmforge-batch", type=int, default=32, help="lmforge's scorer batch")
    p.add_argument("--gen-batch", type=int, default=8, help="lm-eval's batch for generation")
    p.add_argument("--max-tokens", type=int, default=16, help="squad: longest answer generated")
    p.add_argument("--shots", type=int, default=0,
                   help="solved examples before each multiple-choice item (lm-eval's num_fewshot; drawn from the "
                        "task's own items with seed 1234, never the item)")
    p.add_argument("--reference", choices=("lm-eval", "none"), default="lm-eval",
                   help="none: lmforge alone, checked against itself (lm-eval not needed)")
    p.add_argument("--reference-only", action="store_true",
                   help="lm-eval alone: its requests, metrics and speeds (no lmforge scorer needed)")
    p.add_argument("--data", default=None, help=f"the data folder (default {DATA}; smoke: stand-ins)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="stand-in data, 6 items, 2 training steps: the plumbing only")
    a = p.parse_args(argv)
    a.limit = a.limit or (6 if a.smoke else 100)
    a.steps = a.steps or (2 if a.smoke else 300)
    a.repeats = a.repeats or (1 if a.smoke else 3)
    a.batch_sizes = [int(b) for b in a.batch_sizes.split(",")]
    if a.reference_only and a.reference == "none":
        p.error("--reference-only needs --reference lm-eval")
    a.tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    a.models = [m.strip() for m in a.models.split(",") if m.strip()]
    for given, known in ((a.tasks, TASKS), (a.models, MODELS)):
        unknown = [x for x in given if x not in known]
        if unknown:
            p.error(f"unknown {unknown}: use {', '.join(known)}")
    return a


# -- data: JSON lines, and each task as an lm-eval YAML and an lmforge task file ----------------------

@dataclass
class Task:
    """One task's items and the files both sides read."""

    name: str
    kind: str  # multiple_choice | generate
    docs: list[dict]
    jsonl: Path
    prompt: str  # the lmforge template; the lm-eval one is the same with {{ }}
    choices: list[str] | str = field(default_factory=list)  # a fixed list, or the field holding each item's

    def contexts(self) -> list[str]:
        """Each item's context, rendered here (what both task files must render)."""
        return [self.prompt.format_map(doc) for doc in self.docs]

    def continuations(self, doc: dict) -> list[str]:
        return [" " + c for c in (doc[self.choices] if isinstance(self.choices, str) else self.choices)]

    def texts(self, doc: dict) -> list[str]:
        """The item's text (what the stand-in Llama's tokenizer is trained on)."""
        return [self.prompt.format_map(doc), *(doc["answers"] if self.kind == "generate" else self.continuations(doc))]


def read_sst2(folder: Path) -> list[tuple[str, int]]:
    lines = (folder / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [(s.strip(), int(y)) for s, y in (ln.rsplit("\t", 1) for ln in lines if ln.strip())]


def completion_docs(sentences: list[tuple[str, int]], n: int, seed: int = 0) -> list[dict]:
    """The first ``n`` sentences of 6 or more words, cut in half; 4 endings each (its own and 3
    others'), shuffled with ``seed``; ``gold`` is the index of its own."""
    rng = random.Random(seed)
    halves = [(" ".join(w[: len(w) // 2]), " ".join(w[len(w) // 2:])) for w in (s.split() for s, _ in sentences)
              if len(w) >= 6]
    docs = []
    for i, (prefix, ending) in enumerate(halves[:n]):
        others = rng.sample([e for j, (_, e) in enumerate(halves) if j != i and e != ending], 3)
        endings = [ending, *others]
        rng.shuffle(endings)
        docs.append({"prefix": prefix, "endings": endings, "gold": endings.index(ending)})
    return docs


def squad_docs(path: Path, n: int) -> list[dict]:
    """The first ``n`` answerable questions: context, question, answers (their texts, deduplicated in order)."""
    docs = []
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                if not qa.get("is_impossible") and qa["answers"]:
                    answers = list(dict.fromkeys(x["text"] for x in qa["answers"]))
                    docs.append({"context": paragraph["context"], "question": qa["question"], "answers": answers})
    return docs[:n]


def standin_squad(path: Path, paragraphs: int = 4, seed: int = 0) -> Path:
    """A SQuAD 2.0 file of random paragraphs, each with an answerable question (a word span of it)
    and an unanswerable one."""
    rng = random.Random(seed)
    data = []
    for i in range(paragraphs):
        context = " ".join(standins.sentence(rng) for _ in range(3))
        words = context.split()
        k = rng.randrange(len(words) - 2)
        answer = " ".join(words[k:k + 2]).rstrip(".")
        data.append({"title": f"p{i}", "paragraphs": [{"context": context, "qas": [
            {"id": f"{i}a", "question": f"What {rng.choice(standins.WORDS)} was it?", "is_impossible": False,
             "answers": [{"text": answer, "answer_start": context.index(answer)}]},
            {"id": f"{i}b", "question": "Who was it?", "is_impossible": True, "answers": [], "plausible_answers": []},
        ]}]})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": "v2.0", "data": data}), encoding="utf-8")
    return path


def data_folder(a: argparse.Namespace, work: Path) -> Path:
    if a.data:
        return Path(a.data)
    if not a.smoke:
        return DATA
    folder = work / "standins"
    standins.write_sst2(folder / "labeled" / "sst2")
    standin_squad(folder / "qa" / "squad-v2.0-dev-5articles.json")
    return folder


def make_tasks(a: argparse.Namespace, data: Path, work: Path) -> dict[str, Task]:
    sst2 = read_sst2(data / "labeled" / "sst2")
    build = {
        "sentiment": lambda: Task("sentiment", "multiple_choice",
                                  [{"sentence": s, "label": y} for s, y in sst2[: a.limit]], Path(),
                                  "Review: {sentence}\nSentiment:", ["negative", "positive"]),
        "completion": lambda: Task("completion", "multiple_choice", completion_docs(sst2, a.limit), Path(),
                                   "Review: {prefix}", "endings"),
        "squad": lambda: Task("squad", "generate", squad_docs(data / "qa" / "squad-v2.0-dev-5articles.json", a.limit),
                              Path(), "Context: {context}\nQuestion: {question}\nAnswer:"),
    }
    tasks = {}
    for name in a.tasks:
        task = build[name]()
        task.jsonl = work / "data" / f"{name}.jsonl"
        task.jsonl.parent.mkdir(parents=True, exist_ok=True)
        task.jsonl.write_text("".join(json.dumps(d) + "\n" for d in task.docs), encoding="utf-8")
        tasks[name] = task
    return tasks


def jinja(template: str) -> str:
    return re.sub(r"\{(\w+)\}", r"{{\1}}", template)


def lmeval_yaml(task: Task, a: argparse.Namespace) -> dict:
    """The lm-eval task config (``dataset_path: json`` over the task's JSON lines)."""
    config = {"task": f"zs_{task.name}", "dataset_path": "json",
              "dataset_kwargs": {"data_files": {"test": str(task.jsonl)}}, "test_split": "test",
              "doc_to_text": jinja(task.prompt), "target_delimiter": " "}
    if task.kind == "multiple_choice":
        fixed = isinstance(task.choices, list)
        config.update(output_type="multiple_choice", doc_to_choice=task.choices,
                      doc_to_target="label" if fixed else "gold",
                      metric_list=[{"metric": "acc"}, {"metric": "acc_norm"}])
        if a.shots:
            config.update(num_fewshot=a.shots, fewshot_split="test")
    else:
        config.update(output_type="generate_until", doc_to_target="answers",
                      generation_kwargs={"until": ["\n"], "max_gen_toks": a.max_tokens, "do_sample": False},
                      # SQuAD's normalisation, as far as lm-eval's exact_match goes
                      metric_list=[{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                                    "ignore_case": True, "ignore_punctuation": True,
                                    "regexes_to_ignore": ["(?i)\\b(a|an|the)\\b", "\\s+"]}])
    return config


def lmforge_yaml(task: Task, a: argparse.Namespace) -> dict:
    """The lmforge task file (spec of issue 25, section 2) that renders the same requests."""
    config = {"kind": task.kind, "data": {"path": str(task.jsonl), "split": "train"},
              "prompt": task.prompt, "target_delimiter": " ", "shots": 0}
    if task.kind == "multiple_choice":
        fixed = isinstance(task.choices, list)
        config.update(choices=task.choices, gold="label" if fixed else "gold", shots=a.shots, seed=1234)
        config["data"]["shot_split"] = "train"  # the file's one split: the item itself is never drawn
    else:
        config.update(answers="answers", until=["\n"], max_tokens=a.max_tokens,
                      normalize=["strip", "lower", "punctuation", "articles"])
    return config


def write_task_files(tasks: dict[str, Task], a: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    """The lm-eval include folder and the lmforge suite (one scoring task per task file)."""
    import yaml

    lmeval, lmforge = work / "lm_eval_tasks", work / "lmforge_tasks"
    lmeval.mkdir(exist_ok=True)
    lmforge.mkdir(exist_ok=True)
    suite = {"tasks": {}}
    for name, task in tasks.items():
        (lmeval / f"zs_{name}.yaml").write_text(yaml.safe_dump(lmeval_yaml(task, a), sort_keys=False))
        (lmforge / f"{name}.yaml").write_text(yaml.safe_dump(lmforge_yaml(task, a), sort_keys=False))
        suite["tasks"][name] = {"kind": task.kind, "task": f"{name}.yaml"}
    (lmforge / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    return lmeval, lmforge / "suite.yaml"


# -- models -----------------------------------------------------------------------------------------

def lmforge_command(*args: str, cwd: Path) -> float:
    """Run the ``lmforge`` command; its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lmforge", *args], cwd=cwd, check=True,
                   env={**os.environ, "LMFORGE_CACHE_DIR": str(cwd / "cache")})
    return time.perf_counter() - start


def trained_folder(work: Path, steps: int, smoke: bool) -> tuple[Path, dict]:
    """The quick start trained for ``steps`` steps and exported: the folder, and what it took (a
    smoke run trains its tokenizer on 100 documents of the corpus, not all 700)."""
    run = work / "quickstart"
    run.mkdir(exist_ok=True)
    every = max(1, min(100, steps))
    fit_s = lmforge_command("fit", "-c", str(ROOT / "configs" / "quickstart.yaml"), f"--trainer.max_steps={steps}",
                            f"--trainer.val_check_interval={every}", "--trainer.num_sanity_val_steps=0",
                            "--trainer.limit_val_batches=2", "--trainer.enable_progress_bar=false",
                            "--zeroshot.tasks=[]",  # the quick start's probe: not what is measured here
                            *(["--data.init_args.max_documents=100"] if smoke else []), cwd=run)
    ckpt = run / "logs" / "quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    folder = run / "hf"
    lmforge_command("export", f"--ckpt_path={ckpt}", f"--to={folder}", cwd=run)
    return folder, {"steps": steps, "fit_seconds": round(fit_s, 1), "checkpoint": str(ckpt)}


def llama_folder(folder: Path, texts: Sequence[str], seed: int = 0) -> tuple[Path, dict]:
    """A random ``LlamaForCausalLM`` saved by ``transformers``, with a byte-level BPE tokenizer
    trained on ``texts`` that puts ``<s>`` first, as Llama tokenizers do."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=2048, special_tokens=["<s>", "</s>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                           show_progress=False))
    bos = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", bos)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", model_max_length=512)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=backend.get_vocab_size(), hidden_size=128, intermediate_size=384,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=bos, eos_token_id=backend.token_to_id("</s>"), tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, {"seed": seed, "vocab": backend.get_vocab_size(), "layers": 4, "width": 128, "max_length": 512}


def model_folders(a: argparse.Namespace, tasks: dict[str, Task], work: Path) -> dict[str, tuple[Path, dict]]:
    folders = {}
    for name in a.models:
        print(f"== model {name}", flush=True)
        if name == "trained":
            folders[name] = trained_folder(work, a.steps, a.smoke)
        else:
            texts = [text for task in tasks.values() for doc in task.docs for text in task.texts(doc)]
            folders[name] = llama_folder(work / "llama", texts)
    return folders


# -- the requests and answers of one side -----------------------------------------------------------

@dataclass
class Answers:
    """One side's requests and answers on one task."""

    questions: list[tuple[str, list[str]]] = field(default_factory=list)  # (context, continuations) per item
    scores: list[list[tuple[float, bool]]] = field(default_factory=list)  # (log-likelihood, is_greedy) per continuation
    contexts: list[str] = field(default_factory=list)  # generate: per item
    generated: list[str] = field(default_factory=list)
    reported: dict[str, float] = field(default_factory=dict)  # the metrics the side computed itself

    @property
    def requests(self) -> int:
        return sum(len(c) for _, c in self.questions) + len(self.contexts)


def own_requests(task: Task) -> Answers:
    """The requests as this benchmark renders them (``--reference none``'s requests)."""
    if task.kind == "generate":
        return Answers(contexts=task.contexts())
    return Answers(questions=[(c, task.continuations(d)) for c, d in zip(task.contexts(), task.docs)])


def squad_normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def metrics(task: Task, answers: Answers) -> dict[str, float]:
    """acc / acc_norm (log-likelihood per character of the choice, as lm-eval) or exact match, computed
    the same way for both sides."""
    if task.kind == "generate":
        hits = [any(squad_normalize(g) == squad_normalize(t) for t in doc["answers"])
                for g, doc in zip(answers.generated, task.docs)]
        return {"exact_match": sum(hits) / max(len(hits), 1)}
    acc = norm = 0
    for (_, continuations), scores, doc in zip(answers.questions, answers.scores, task.docs):
        gold = doc["label"] if "label" in doc else doc["gold"]
        acc += choice(scores) == gold
        norm += choice(scores, [len(c) - 1 for c in continuations]) == gold  # without the delimiter
    return {"acc": acc / max(len(task.docs), 1), "acc_norm": norm / max(len(task.docs), 1)}


def choice(scores: list[tuple[float, bool]], lengths: list[int] | None = None) -> int:
    values = [s / (lengths[i] if lengths else 1) for i, (s, _) in enumerate(scores)]
    return max(range(len(values)), key=values.__getitem__)  # the first of equal ones, as numpy's argmax


# -- lm-evaluation-harness (the reference) ----------------------------------------------------------

def lmeval_model(folder: Path, batch_size: int):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(folder), device="cpu", dtype="float32", batch_size=batch_size)


def lmeval_answers(lm, tasks: dict[str, Task], include: Path) -> dict[str, Answers]:
    """lm-eval's evaluation of every task with ``log_samples``: its requests, answers and metrics."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    out = simple_evaluate(model=lm, tasks=[f"zs_{n}" for n in tasks], task_manager=TaskManager(include_path=str(include)),
                          log_samples=True, bootstrap_iters=0, verbosity="ERROR")
    answers = {}
    for name, task in tasks.items():
        samples = sorted(out["samples"][f"zs_{name}"], key=lambda s: s["doc_id"])
        reported = {k.split(",")[0]: float(v) for k, v in out["results"][f"zs_{name}"].items()
                    if k.endswith(",none") and "stderr" not in k}
        if task.kind == "generate":
            answers[name] = Answers(contexts=[s["arguments"][0][0] for s in samples],
                                    generated=[s["resps"][0][0] for s in samples], reported=reported)
        else:
            answers[name] = Answers(questions=[(s["arguments"][0][0], [c for _, c in s["arguments"]]) for s in samples],
                                    scores=[[tuple(r[0]) for r in s["resps"]] for s in samples], reported=reported)
    return answers


def lmeval_loglikelihood(lm, questions: list[tuple[str, list[str]]], batch_size: int) -> tuple[list, float]:
    """``HFLM.loglikelihood`` on every (context, continuation) at ``batch_size``: the flat answers, seconds."""
    from lm_eval.api.instance import Instance

    requests = [Instance("loglikelihood", {}, (context, c), i)
                for i, (context, continuations) in enumerate(questions) for c in continuations]
    lm.batch_size_per_gpu = batch_size  # what HFLM's `batch_size` property reads
    start = time.perf_counter()
    out = lm.loglikelihood(requests, disable_tqdm=True)
    return out, time.perf_counter() - start


def lmeval_generate(lm, contexts: list[str], a: argparse.Namespace) -> tuple[list[str], float]:
    from lm_eval.api.instance import Instance

    kwargs = {"until": ["\n"], "max_gen_toks": a.max_tokens, "do_sample": False}
    requests = [Instance("generate_until", {}, (c, dict(kwargs)), i) for i, c in enumerate(contexts)]
    lm.batch_size_per_gpu = a.gen_batch
    start = time.perf_counter()
    out = lm.generate_until(requests, disable_tqdm=True)
    return out, time.perf_counter() - start


# -- lmforge (issue 25's scorer and task files) ------------------------------------------------------

def lmforge_open_scorer() -> Callable[..., Any]:
    """lmforge's ``open_scorer`` (``lmforge.evaluation.likelihood``, issue 25 spec section 1)."""
    from lmforge.evaluation.likelihood import open_scorer

    return open_scorer


def lmforge_loglikelihood(scorer, questions: list[tuple[str, list[str]]]) -> tuple[list[list[tuple[float, bool]]], float]:
    start = time.perf_counter()
    out = scorer.loglikelihood(questions)
    return [[(float(s), bool(g)) for s, g in q] for q in out], time.perf_counter() - start


def lmforge_generate(scorer, contexts: list[str], a: argparse.Namespace) -> tuple[list[str], float]:
    start = time.perf_counter()
    out = scorer.generate(contexts, until=["\n"], max_tokens=a.max_tokens)
    return list(out), time.perf_counter() - start


def lmforge_evaluate(model: str, folder: Path, suite: Path, tasks: dict[str, Task], a: argparse.Namespace,
                     work: Path) -> dict[str, list[dict]]:
    """``lmforge evaluate`` on the suite of the lmforge task files (lmforge renders the prompts
    itself): the lines of each task's ``requests/<task>/<start>.jsonl``."""
    out = work / f"evaluate-{model}"
    lmforge_command("evaluate", f"--suite={suite}", f"--starts=[{folder}]", f"--out={out}", f"--limit={a.limit}",
                    "--random_baseline=false", f"--batch_size={a.lmforge_batch}", "--device=cpu", cwd=work)
    lines = {}
    for name in tasks:
        files = sorted((out / "requests" / name).glob("*.jsonl"))
        if len(files) != 1:
            raise SystemExit(f"lmforge evaluate wrote {len(files)} request files under {out / 'requests' / name}, not 1")
        lines[name] = [json.loads(line) for line in files[0].read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines


def evaluate_answers(task: Task, lines: list[dict]) -> Answers:
    """``lmforge evaluate``'s requests file as answers (spec section 3's line layouts)."""
    if task.kind == "generate":
        return Answers(contexts=[r["context"] for r in lines], generated=[r["generated"] for r in lines],
                       reported={"exact_match": sum(r["exact_match"] for r in lines) / max(len(lines), 1)})
    items: dict[int, Answers] = {}
    for r in lines:  # one line per (item, choice), in order
        item = items.setdefault(r["item"], Answers(questions=[(r["context"], [])], scores=[[]]))
        item.questions[0][1].append(r["continuation"])
        item.scores[0].append((float(r["loglikelihood"]), bool(r["is_greedy"])))
    return Answers(questions=[items[i].questions[0] for i in sorted(items)], scores=[items[i].scores[0] for i in sorted(items)])


# -- one model: the same requests through both sides, timed in interleaved rounds ---------------------

Runner = Callable[[Any], tuple[list, float]]  # the requests -> (answers, seconds)


def timed_rounds(runners: dict[str, Runner], requests: Any, count: int, repeats: int) -> tuple[dict, dict]:
    """Every runner on the same requests, ``repeats`` rounds, the order rotated each round: the
    median requests/s of each, and its last answers."""
    speeds: dict[str, list[float]] = {label: [] for label in runners}
    last = {}
    labels = list(runners)
    for r in range(repeats):
        for label in labels[r % len(labels):] + labels[: r % len(labels)]:
            last[label], seconds = runners[label](requests)
            speeds[label].append(count / max(seconds, 1e-9))
    return {label: statistics.median(v) for label, v in speeds.items()}, last


def nested(flat: list, questions: list[tuple[str, list[str]]]) -> list[list[tuple[float, bool]]]:
    out, k = [], 0
    for _, continuations in questions:
        out.append([(float(s), bool(g)) for s, g in flat[k : k + len(continuations)]])
        k += len(continuations)
    return out


def compare_choices(task: Task, ref: Answers, ours: Answers) -> dict:
    """Log-likelihood differences, is_greedy and chosen answers (raw and per character) that differ."""
    diffs = [abs(r[0] - o[0]) for rq, oq in zip(ref.scores, ours.scores) for r, o in zip(rq, oq)]
    greedy = sum(r[1] != o[1] for rq, oq in zip(ref.scores, ours.scores) for r, o in zip(rq, oq))
    lengths = [[len(c) - 1 for c in cs] for _, cs in ref.questions]
    differ = sum(choice(r) != choice(o) or choice(r, n) != choice(o, n) for r, o, n in zip(ref.scores, ours.scores, lengths))
    return {"max_abs_diff": max(diffs, default=0.0), "greedy_differ": greedy, "choices_differ": differ}


def score_choices(task: Task, ref: Answers, runners: dict[str, Runner], ours_label: str, a: argparse.Namespace) -> dict:
    """A multiple-choice task: the reference's answers against lmforge's on the same requests, and the speeds."""
    speeds, last = timed_rounds(runners, ref.questions, ref.requests, a.repeats)
    ours = Answers(questions=ref.questions, scores=nested(last[ours_label], ref.questions))
    if not ref.scores:  # --reference none: lmforge at batch 1 is the reference
        ref.scores = nested(last["lmforge b1"], ref.questions)
    return {"requests": ref.requests, "lmforge_requests": sum(len(s) for s in ours.scores),
            **compare_choices(task, ref, ours), "reference": metrics(task, ref), "lmforge": metrics(task, ours),
            "reference_reported": ref.reported, "requests_per_s": speeds}


def score_generation(task: Task, ref: Answers, runners: dict[str, Runner], ours_label: str) -> dict:
    """The generation task: one timed run of each runner on the same contexts."""
    speeds, last = timed_rounds(runners, ref.contexts, len(ref.contexts), 1)
    ours = Answers(contexts=ref.contexts, generated=last[ours_label])
    if not ref.generated:
        ref.generated = last["lmforge b1"]
    timed_ref = [v for k, v in last.items() if k != ours_label][0]
    return {"requests": len(ref.contexts), "lmforge_requests": len(ours.generated),
            "generations_differ": sum(r != o for r, o in zip(ref.generated, ours.generated)),
            "reference_timed_run_differs": sum(r != o for r, o in zip(ref.generated, timed_ref)),
            "examples": [{"reference": r, "lmforge": o} for r, o in list(zip(ref.generated, ours.generated))[:3]],
            "reference": metrics(task, ref), "lmforge": metrics(task, ours), "reference_reported": ref.reported,
            "requests_per_s": speeds}


def runners_for(lm, scorer, reference_scorer, kind: str, a: argparse.Namespace) -> tuple[dict[str, Runner], str]:
    """The timed runners of one task kind, and the label of lmforge's."""
    ours = f"lmforge b{a.lmforge_batch}"
    if kind == "generate":
        run_ours = lambda c: lmforge_generate(scorer, c, a)  # noqa: E731
        if lm is None:
            return {"lmforge b1": lambda c: lmforge_generate(reference_scorer, c, a), ours: run_ours}, ours
        return {f"lm-eval b{a.gen_batch}": lambda c: lmeval_generate(lm, c, a), ours: run_ours}, ours

    def flat(q):
        answers, seconds = lmforge_loglikelihood(scorer, q)
        return [s for item in answers for s in item], seconds

    if lm is None:
        def flat1(q):
            answers, seconds = lmforge_loglikelihood(reference_scorer, q)
            return [s for item in answers for s in item], seconds
        return {"lmforge b1": flat1, ours: flat}, ours
    runners = {f"lm-eval b{b}": (lambda q, b=b: lmeval_loglikelihood(lm, q, b)) for b in a.batch_sizes}
    return {**runners, ours: flat}, ours


def render_check(task: Task, ref: Answers, rendered: Answers) -> dict:
    """``lmforge evaluate``'s own requests (from its task file) against the reference's: items whose
    context or continuations differ, and the largest log-likelihood difference."""
    if task.kind == "generate":
        differ = sum(r != o for r, o in zip(ref.contexts, rendered.contexts))
        return {"items": len(rendered.contexts), "requests_differ": differ + abs(len(ref.contexts) - len(rendered.contexts)),
                "lmforge_reported": rendered.reported}
    differ = sum(r != o for r, o in zip(ref.questions, rendered.questions)) + abs(len(ref.questions) - len(rendered.questions))
    diffs = [abs(r[0] - o[0]) for rq, oq in zip(ref.scores, rendered.scores) for r, o in zip(rq, oq)]
    return {"items": len(rendered.questions), "requests_differ": differ, "max_abs_diff": max(diffs, default=0.0),
            "lmforge_reported": metrics(task, rendered)}


def lmeval_alone(lm, tasks: dict[str, Task], references: dict[str, Answers], a: argparse.Namespace) -> dict:
    """``--reference-only``: lm-eval's metrics and speeds, without lmforge."""
    results = {}
    for name, task in tasks.items():
        ref = references[name]
        if task.kind == "generate":
            runners = {f"lm-eval b{a.gen_batch}": lambda c: lmeval_generate(lm, c, a)}
            speeds, last = timed_rounds(runners, ref.contexts, len(ref.contexts), 1)
            extra = {"reference_timed_run_differs": sum(r != o for r, o in zip(ref.generated, last[f"lm-eval b{a.gen_batch}"])),
                     "examples": ref.generated[:3]}
        else:
            runners = {f"lm-eval b{b}": (lambda q, b=b: lmeval_loglikelihood(lm, q, b)) for b in a.batch_sizes}
            speeds, last = timed_rounds(runners, ref.questions, ref.requests, a.repeats)
            logged = [s for q in ref.scores for s in q]
            extra = {f"max_abs_diff_{label}_vs_logged": max(abs(x[0] - y[0]) for x, y in zip(flat, logged))
                     for label, flat in last.items()}
        results[name] = {"requests": ref.requests, "reference": metrics(task, ref), "reference_reported": ref.reported,
                         "requests_per_s": speeds, **extra}
    return results


def run_model(model: str, folder: Path, tasks: dict[str, Task], include: Path, suite: Path, a: argparse.Namespace,
              work: Path) -> dict:
    """Both sides on one model folder: every task's comparison, and lmforge evaluate's rendering."""
    open_scorer = None if a.reference_only else lmforge_open_scorer()
    lm = reference_scorer = None
    if a.reference == "lm-eval":
        lm = lmeval_model(folder, max(a.batch_sizes))
        references = lmeval_answers(lm, tasks, include)
        for name, task in tasks.items():  # this benchmark's own (zero-shot) rendering, checked against lm-eval's
            if a.shots and task.kind == "multiple_choice":
                continue  # shots are drawn by lm-eval and by lmforge evaluate, compared with each other below
            own = own_requests(task)
            if (own.questions, own.contexts) != (references[name].questions, references[name].contexts):
                raise SystemExit(f"{name}: lm-eval rendered other requests than this benchmark's templates")
        if a.reference_only:
            return lmeval_alone(lm, tasks, references, a)
    else:
        references = {name: own_requests(task) for name, task in tasks.items()}
        reference_scorer = open_scorer(str(folder), device="cpu", batch_size=1)
    scorer = open_scorer(str(folder), device="cpu", batch_size=a.lmforge_batch)
    warm = next(([q[0]] for r in references.values() for q in [r.questions] if q), [])
    for s in (scorer, reference_scorer):  # untimed, as lm-eval's model has run its evaluation already
        if s is not None and warm:
            s.loglikelihood(warm)
    results = {}
    for name, task in tasks.items():
        print(f"-- {name}: {references[name].requests} requests", flush=True)
        runners, ours = runners_for(lm, scorer, reference_scorer, task.kind, a)
        if task.kind == "generate":
            results[name] = score_generation(task, references[name], runners, ours)
        else:
            results[name] = score_choices(task, references[name], runners, ours, a)
    rendered = lmforge_evaluate(model, folder, suite, tasks, a, work)
    for name, task in tasks.items():
        results[name]["evaluate"] = render_check(task, references[name], evaluate_answers(task, rendered[name]))
    return results


# -- report -------------------------------------------------------------------------------------------

def verdict(name: str, result: dict, a: argparse.Namespace) -> dict:
    """The targets of this task: each met (True/False), or None where not judged (smoke, no lm-eval)."""
    judged = not a.smoke and a.reference == "lm-eval"
    speeds = result["requests_per_s"]
    ours = speeds[f"lmforge b{a.lmforge_batch}"]
    baseline = max(v for k, v in speeds.items() if not k.startswith("lmforge")) if a.reference == "lm-eval" else \
        speeds["lmforge b1"]
    result["speed_ratio"] = ours / baseline
    targets = {"requests_differ_0": result["evaluate"]["requests_differ"] == 0}
    if "max_abs_diff" in result:
        targets.update(max_abs_diff_below_1e4=result["max_abs_diff"] < 1e-4, choices_differ_0=result["choices_differ"] == 0)
    else:
        targets["generations_differ_0"] = result["generations_differ"] == 0
    if name == JUDGED and a.reference == "lm-eval":
        targets["speed_1_5x"] = result["speed_ratio"] >= 1.5
    return {k: (v if judged else None) for k, v in targets.items()}


def report_reference(results: dict[str, dict]) -> None:
    print("\n| model | task | requests | lm-eval metric (this benchmark's) | lm-eval's own | lm-eval requests/s |")
    print("|---|---|---|---|---|---|")
    for model, tasks in results.items():
        for name, r in tasks.items():
            print(f"| {model} | {name} | {r['requests']} | {r['reference']} | {r['reference_reported']} "
                  f"| {', '.join(f'{k} {v:.1f}' for k, v in r['requests_per_s'].items())} |")


def report(results: dict[str, dict], a: argparse.Namespace) -> None:
    if a.reference_only:
        return report_reference(results)
    ref = "lm-eval" if a.reference == "lm-eval" else "lmforge b1"
    print(f"\n| model | task | requests (ref / lmforge) | max abs diff | greedy differ | choices / generations differ "
          f"| evaluate's requests differ | {ref} metric | lmforge metric | {ref} best req/s | lmforge req/s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model, tasks in results.items():
        for name, r in tasks.items():
            speeds = r["requests_per_s"]
            ours = speeds.pop(f"lmforge b{a.lmforge_batch}")
            best = max(speeds, key=speeds.get)
            speeds[f"lmforge b{a.lmforge_batch}"] = ours
            fmt = lambda m: ", ".join(f"{k} {100 * v:.1f}" for k, v in m.items())  # noqa: E731
            print(f"| {model} | {name} | {r['requests']} / {r['lmforge_requests']} | {r.get('max_abs_diff', float('nan')):.2e} "
                  f"| {r.get('greedy_differ', '-')} | {r.get('choices_differ', r.get('generations_differ'))} "
                  f"| {r['evaluate']['requests_differ']} | {fmt(r['reference'])} | {fmt(r['lmforge'])} "
                  f"| {speeds[best]:.1f} ({best}) | {ours:.1f} | {r['speed_ratio']:.2f} |")
    if a.reference == "lm-eval":
        print("\nlm-eval's own metrics, for the record (its exact_match drops all spaces): "
              + "; ".join(f"{m}/{t}: {r['reference_reported']}" for m, ts in results.items() for t, r in ts.items()))
    print("lmforge evaluate's own (from its requests files): "
          + "; ".join(f"{m}/{t}: {r['evaluate']['lmforge_reported']}" for m, ts in results.items() for t, r in ts.items()))
    for model, tasks in results.items():
        for name, r in tasks.items():
            print(f"{model}/{name}: targets {r['targets']}")


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    if a.smoke:
        print("SMOKE RUN: stand-in data, tiny models, a few items; the figures are not meaningful.")
        work = standins.temporary_folder("lmforge-zero-shot-")
    else:
        work = ROOT / "benchmarks" / ".runs" / f"zero-shot-{time.strftime('%Y%m%d-%H%M%S')}"
        work.mkdir(parents=True)
    print(f"Run folder: {work}; reference: {a.reference}; {a.threads} threads", flush=True)
    tasks = make_tasks(a, data_folder(a, work), work)
    include, suite = write_task_files(tasks, a, work)
    folders = model_folders(a, tasks, work)
    results = {}
    for model, (folder, about) in folders.items():
        print(f"== scoring with {model} ({about})", flush=True)
        results[model] = run_model(model, folder, tasks, include, suite, a, work)
        for name, r in results[model].items():
            if a.reference_only:
                continue
            if r["requests"] != r["lmforge_requests"]:
                raise SystemExit(f"{model}/{name}: {r['requests']} reference requests, {r['lmforge_requests']} lmforge answers")
            r["targets"] = verdict(name, r, a)
    report(results, a)
    print(json.dumps({"smoke": a.smoke, "reference": a.reference, "limit": a.limit, "repeats": a.repeats,
                      "models": {m: about for m, (_, about) in folders.items()}, "results": results}))


if __name__ == "__main__":
    main()
