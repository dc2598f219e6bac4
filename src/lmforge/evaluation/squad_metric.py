"""Exact match and F1 under the official SQuAD evaluation rules (v1.1 and v2.0).

An answer is compared after normalisation: lowercase, punctuation removed, the articles
"a", "an" and "the" removed, whitespace collapsed. A question scores the maximum over its gold
answers; an unanswerable one (SQuAD 2.0: no gold answer) has the empty answer as its only gold,
so only an empty prediction scores. F1 is over the bags of normalised tokens. With no-answer
probabilities, a prediction whose probability is above the threshold counts as "no answer";
:func:`best_thresholds` picks the threshold that maximises each score on a validation set, as
the official v2.0 script reports ``best_exact`` and ``best_f1``.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """``text`` lowercased, without punctuation and articles, its whitespace collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _golds(answers: Sequence[str]) -> list[str]:
    """The gold answers that survive normalisation; none means unanswerable (the empty answer)."""
    return [a for a in answers if normalize_answer(a)] or [""]


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer, else 0.0.

    Args:
        prediction: The predicted answer text ("" for no answer).
        answers: The gold answer texts (none: the question is unanswerable).
    """
    predicted = normalize_answer(prediction)
    return float(max(predicted == normalize_answer(gold) for gold in _golds(answers)))


def _token_f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)  # both empty: a right "no answer"
    shared = sum((Counter(predicted) & Counter(expected)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(expected)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, answers: Sequence[str]) -> float:
    """The best token-bag F1 of the prediction against any gold answer.

    Args:
        prediction: The predicted answer text ("" for no answer).
        answers: The gold answer texts (none: the question is unanswerable).
    """
    return max(_token_f1(prediction, gold) for gold in _golds(answers))


def squad_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
                 no_answer_probs: Mapping[str, float] | None = None, threshold: float = 1.0) -> dict[str, float]:
    """``exact`` and ``f1`` (percent) over every question of ``references``, with the
    ``HasAns_*`` and ``NoAns_*`` breakdowns (SQuAD 2.0) and their counts.

    Args:
        predictions: Question id -> predicted answer text; a question missing here counts as
            answered with "".
        references: Question id -> its gold answer texts (empty for an unanswerable question).
        no_answer_probs: Question id -> the model's probability that there is no answer.
        threshold: Above it, the prediction is taken to be "no answer".
    """
    exact, f1 = _per_question(predictions, references, no_answer_probs, threshold)
    scores = _totals(exact, f1, list(references))
    for name, keep in (("HasAns", True), ("NoAns", False)):
        ids = [q for q, answers in references.items() if bool([a for a in answers if normalize_answer(a)]) == keep]
        if ids:
            scores.update({f"{name}_{k}": v for k, v in _totals(exact, f1, ids).items()})
    return scores


def best_thresholds(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
                    no_answer_probs: Mapping[str, float]) -> dict[str, float]:
    """The no-answer thresholds that maximise exact match and F1 on these questions, and those
    maxima (``best_exact``, ``best_exact_thresh``, ``best_f1``, ``best_f1_thresh``), as the
    official SQuAD 2.0 script searches them: every question's no-answer probability is tried.

    Args:
        predictions: Question id -> predicted answer text (the best non-empty span).
        references: Question id -> its gold answer texts (empty for an unanswerable question).
        no_answer_probs: Question id -> the probability that there is no answer.
    """
    exact, f1 = _per_question(predictions, references, None, 1.0)
    out: dict[str, float] = {}
    for name, scores in (("exact", exact), ("f1", f1)):
        best, best_threshold = _best(scores, predictions, references, no_answer_probs)
        out[f"best_{name}"], out[f"best_{name}_thresh"] = best, best_threshold
    return out


def _per_question(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
                  no_answer_probs: Mapping[str, float] | None, threshold: float) -> tuple[dict, dict]:
    exact, f1 = {}, {}
    for qid, answers in references.items():
        predicted = predictions.get(qid, "")
        if no_answer_probs is not None and no_answer_probs.get(qid, 0.0) > threshold:
            predicted = ""
        exact[qid], f1[qid] = exact_match(predicted, answers), f1_score(predicted, answers)
    return exact, f1


def _totals(exact: Mapping[str, float], f1: Mapping[str, float], ids: list[str]) -> dict[str, float]:
    n = len(ids)
    return {"exact": 100.0 * sum(exact[q] for q in ids) / max(n, 1),
            "f1": 100.0 * sum(f1[q] for q in ids) / max(n, 1), "total": float(n)}


def _best(scores: Mapping[str, float], predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
          no_answer_probs: Mapping[str, float]) -> tuple[float, float]:
    """Start from answering nothing (every unanswerable question right), then raise the
    threshold question by question in order of no-answer probability, answering one more each
    time; keep the best total."""
    unanswerable = {q for q, answers in references.items() if not [a for a in answers if normalize_answer(a)]}
    current = best = float(len(unanswerable))
    # answering nothing: below every question's score (the official script's 0.0 is that for
    # probabilities; a score difference, as BERT's null_score_diff, may be negative)
    best_threshold = min(no_answer_probs.get(q, 0.0) for q in references) - 1.0 if references else 0.0
    for qid in sorted(references, key=lambda q: no_answer_probs.get(q, 0.0)):
        if qid in unanswerable:
            current -= 1.0 if predictions.get(qid, "") else 0.0  # answering it loses its point
        else:
            current += scores[qid]
        if current > best:
            best, best_threshold = current, no_answer_probs.get(qid, 0.0)
    return 100.0 * best / max(len(references), 1), best_threshold


def bioasq_scores(ranked: Mapping[str, Sequence[str]], references: Mapping[str, Sequence[str]],
                  top: int = 5) -> dict[str, float]:
    """BioASQ's factoid measures (percent) over the questions with a gold answer: ``strict_acc``
    (the first answer is a gold one), ``lenient_acc`` (one of the first ``top`` is) and ``mrr``
    (the mean of 1 / the rank of the first gold answer among the first ``top``, 0 if none);
    answers compare ignoring case and surrounding spaces, as BioASQ's evaluation does.

    Args:
        ranked: Question id -> its answers, best first.
        references: Question id -> its gold answers (synonyms).
        top: Answers considered per question (BioASQ: 5).
    """
    strict = lenient = reciprocal = 0.0
    scored = [q for q, gold in references.items() if gold]
    for qid in scored:
        gold = {g.strip().lower() for g in references[qid]}
        rank = next((i for i, a in enumerate(ranked.get(qid, [])[:top], start=1) if a.strip().lower() in gold), None)
        strict += rank == 1
        lenient += rank is not None
        reciprocal += 1.0 / rank if rank else 0.0
    n = max(len(scored), 1)
    return {"strict_acc": 100.0 * strict / n, "lenient_acc": 100.0 * lenient / n, "mrr": 100.0 * reciprocal / n}
