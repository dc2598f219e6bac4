"""Scoring a decoder on a zero/few-shot task file (:mod:`lmforge.evaluation.prompt_tasks`): the
requests go to a scorer (:mod:`lmforge.evaluation.likelihood`), the metrics are
lm-evaluation-harness's for the task's output type, and every request is kept as a record
(the lines of ``<out>/requests/<task>/<start>.jsonl``).

- ``multiple_choice``: ``acc`` (the right choice has the highest log-likelihood) and ``acc_norm``
  (the highest log-likelihood per character of the choice);
- ``loglikelihood``: ``acc`` (greedy decoding produces the continuation) and ``perplexity``
  (``exp`` of minus the mean log-likelihood of the continuations);
- ``generate``: ``exact_match`` (the greedy answer equals one of the answers, both normalised);
- ``perplexity``: ``word_perplexity``, ``byte_perplexity``, ``bits_per_byte`` and
  ``token_perplexity`` over all texts (words counted as lm-eval does: ``re.split(r"\\s+")``).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from lmforge.evaluation.prompt_tasks import Item, PromptTask, load_items

if TYPE_CHECKING:
    from lmforge.evaluation.likelihood import Scorer

Scored = tuple[dict[str, float], list[dict]]  # (metrics, one record per request)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
NORMALIZE: dict[str, Callable[[str], str]] = {
    "strip": str.strip,
    "lower": str.lower,
    "punctuation": lambda s: s.translate(_PUNCTUATION),
    "articles": lambda s: " ".join(_ARTICLES.sub(" ", s).split()),
}


def score_task(task: PromptTask, scorer: Scorer, items: Sequence[Item] | None = None) -> Scored:
    """Score ``task`` with ``scorer``: its metrics and one record per request.

    Args:
        task: A task file read by :func:`lmforge.evaluation.prompt_tasks.read_task`.
        scorer: Log-likelihoods and greedy generation of one model (``open_scorer``).
        items: The task's rendered items (default: :func:`load_items` of ``task``), for a caller
            that renders once and scores several models.
    """
    items = list(load_items(task) if items is None else items)
    return BY_KIND[task.kind](task, scorer, items)


def _argmax(values: Sequence[float]) -> int:
    """The first index of the largest value (numpy's argmax, which lm-eval uses)."""
    return max(range(len(values)), key=values.__getitem__)


def _choice_requests(scorer: Scorer, items: list[Item]) -> tuple[list[list[tuple[float, bool]]], list[dict]]:
    """Every (context, continuation) of every item in one call (the scorer shares each item's
    context among its continuations); the results and one record per continuation."""
    results = scorer.loglikelihood([(item.context, item.continuations) for item in items])
    records = [{"item": i, "choice": j, "context": item.context, "continuation": continuation,
                "loglikelihood": float(ll), "is_greedy": bool(greedy), "gold": item.gold}
               for i, (item, scores) in enumerate(zip(items, results, strict=True))
               for j, (continuation, (ll, greedy)) in enumerate(zip(item.continuations, scores, strict=True))]
    return results, records


def multiple_choice(task: PromptTask, scorer: Scorer, items: list[Item]) -> Scored:
    """``acc`` and ``acc_norm``, as lm-eval's ``multiple_choice`` output type.

    Args:
        task: The task.
        scorer: The model's scorer.
        items: The rendered items.
    """
    results, records = _choice_requests(scorer, items)
    right = right_norm = 0
    for item, scores in zip(items, results):
        lls = [ll for ll, _ in scores]
        # an empty choice: numpy's division by zero, which lm-eval's acc_norm never picks
        per_char = [ll / len(c) if c else -math.inf for ll, c in zip(lls, item.choices)]
        right += _argmax(lls) == item.gold
        right_norm += _argmax(per_char) == item.gold
    return {"acc": right / len(items), "acc_norm": right_norm / len(items)}, records


def loglikelihood(task: PromptTask, scorer: Scorer, items: list[Item]) -> Scored:
    """``acc`` (greedy decoding produces the continuation) and ``perplexity``, as lm-eval's
    ``loglikelihood`` output type (LAMBADA).

    Args:
        task: The task.
        scorer: The model's scorer.
        items: The rendered items (one continuation each).
    """
    results, records = _choice_requests(scorer, items)
    lls = [scores[0][0] for scores in results]
    greedy = [scores[0][1] for scores in results]
    return {"acc": sum(greedy) / len(items), "perplexity": math.exp(-sum(lls) / len(lls))}, records


def normalized(text: str, steps: Sequence[str]) -> str:
    """``text`` after the normalisation steps named (keys of :data:`NORMALIZE`), in order.

    Args:
        text: A prediction or an answer.
        steps: The task's ``normalize``.
    """
    for step in steps:
        text = NORMALIZE[step](text)
    return text


def generate(task: PromptTask, scorer: Scorer, items: list[Item]) -> Scored:
    """``exact_match``: the greedy answer, normalised, equals one of the answers, normalised.

    Args:
        task: The task.
        scorer: The model's scorer.
        items: The rendered items.
    """
    generated = scorer.generate([item.context for item in items], list(task.until), task.max_tokens)
    records = []
    for i, (item, text) in enumerate(zip(items, generated, strict=True)):
        answers = {normalized(a, task.normalize) for a in item.answers}
        records.append({"item": i, "context": item.context, "generated": text, "answers": list(item.answers),
                        "exact_match": int(normalized(text, task.normalize) in answers)})
    return {"exact_match": sum(r["exact_match"] for r in records) / len(items)}, records


def perplexity(task: PromptTask, scorer: Scorer, items: list[Item]) -> Scored:
    """Word, byte and token perplexity and bits per byte over all texts, as lm-eval's
    ``loglikelihood_rolling`` output type.

    Args:
        task: The task.
        scorer: The model's scorer.
        items: The rendered items (one text each).
    """
    results = scorer.rolling_loglikelihood([item.text for item in items], overlap=task.overlap)
    records = [{"item": i, "loglikelihood": float(ll), "tokens": int(tokens), "bytes": len(item.text.encode("utf-8")),
                "words": len(re.split(r"\s+", item.text))}
               for i, (item, (ll, tokens)) in enumerate(zip(items, results, strict=True))]
    total = -sum(r["loglikelihood"] for r in records)  # nats
    words, size, tokens = (sum(r[k] for r in records) for k in ("words", "bytes", "tokens"))
    return {"word_perplexity": math.exp(total / words), "byte_perplexity": math.exp(total / size),
            "bits_per_byte": total / size / math.log(2), "token_perplexity": math.exp(total / tokens)}, records


BY_KIND: dict[str, Callable[[PromptTask, Scorer, list[Item]], Scored]] = {
    "multiple_choice": multiple_choice, "loglikelihood": loglikelihood, "generate": generate, "perplexity": perplexity,
}
METRICS = {"multiple_choice": ("acc", "acc_norm"), "loglikelihood": ("acc", "perplexity"),
           "generate": ("exact_match",), "perplexity": ("word_perplexity", "byte_perplexity", "bits_per_byte",
                                                        "token_perplexity")}
