"""The official SQuAD rules on hand cases: normalisation (case, punctuation, articles,
whitespace), the maximum over several gold answers, token-bag F1, unanswerable questions, the
HasAns/NoAns breakdown, the no-answer threshold and the search for the best one."""

from __future__ import annotations

import pytest

from lmforge.evaluation.squad_metric import (
    best_thresholds, exact_match, f1_score, normalize_answer, squad_scores,
)


def test_normalisation_drops_case_punctuation_articles_and_extra_spaces() -> None:
    assert normalize_answer("  The Eiffel-Tower, in  PARIS! ") == "eiffeltower in paris"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # an article only as a whole word


def test_exact_match_and_f1_take_the_best_gold_answer() -> None:
    golds = ["Denver Broncos", "the Broncos"]
    assert exact_match("broncos", golds) == 1.0  # "the Broncos" normalises to "broncos"
    assert exact_match("Denver", golds) == 0.0
    # "Denver" against "Denver Broncos": precision 1, recall 1/2 -> 2/3; against "broncos": 0
    assert f1_score("Denver", golds) == pytest.approx(2 / 3)
    # repeated tokens count as a bag: "broncos broncos" shares one token with "broncos"
    assert f1_score("Broncos Broncos", ["Broncos"]) == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_an_unanswerable_question_scores_only_the_empty_answer() -> None:
    assert exact_match("", []) == 1.0 and f1_score("", []) == 1.0
    assert exact_match("Paris", []) == 0.0 and f1_score("Paris", []) == 0.0
    assert f1_score("", ["Paris"]) == 0.0  # no answer to an answerable question


def test_scores_in_percent_with_has_and_no_answer_breakdowns_and_a_threshold() -> None:
    references = {"a": ["Paris"], "b": ["1889", "in 1889"], "c": [], "d": []}
    predictions = {"a": "Paris", "b": "1890", "c": "", "d": "London"}
    scores = squad_scores(predictions, references)
    assert scores["exact"] == 50.0 and scores["total"] == 4  # a and c right
    assert (scores["HasAns_exact"], scores["HasAns_total"]) == (50.0, 2)
    assert (scores["NoAns_exact"], scores["NoAns_total"]) == (50.0, 2)
    # d's no-answer probability 0.9 is above the threshold: its "London" becomes "no answer"
    thresholded = squad_scores(predictions, references, {"a": 0.1, "b": 0.2, "c": 0.8, "d": 0.9}, threshold=0.5)
    assert thresholded["exact"] == 75.0 and thresholded["NoAns_exact"] == 100.0


def test_the_best_threshold_is_searched_over_the_no_answer_probabilities() -> None:
    references = {"a": ["Paris"], "b": ["1889"], "c": [], "d": []}
    predictions = {"a": "Paris", "b": "1890", "c": "Rome", "d": "London"}  # best non-empty spans
    probs = {"a": 0.1, "b": 0.3, "c": 0.6, "d": 0.7}
    best = best_thresholds(predictions, references, probs)
    # answering only a (threshold 0.1: b, c, d become "no answer"): a, c, d right -> 75%
    assert best["best_exact"] == 75.0 and best["best_exact_thresh"] == 0.1
    assert squad_scores(predictions, references, probs, threshold=best["best_exact_thresh"])["exact"] == 75.0
    # when answering nothing is best, the threshold says "no answer" to every question, whatever the
    # sign of the scores (BERT's score differences may be negative)
    differences = {"a": -2.0, "b": -1.0, "c": 0.5, "d": 1.0}
    wrong = {"a": "Rome", "b": "1890", "c": "Rome", "d": "London"}
    nothing = best_thresholds(wrong, references, differences)
    assert nothing["best_exact"] == 50.0 and nothing["best_exact_thresh"] < -2.0
    assert squad_scores(wrong, references, differences, threshold=nothing["best_exact_thresh"])["exact"] == 50.0
