"""The reference side of the QA parity benchmark (``benchmarks/qa_reference.py``) on a tiny
stand-in BERT and a stand-in SQuAD 2.0 file: the article splits, windows equal to lmforge's,
decoding equal to lmforge's ``best_span``, and a real ``transformers`` fine-tune end to end."""

from __future__ import annotations

import importlib.util
import math
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conftest import ROOT
from lmforge.evaluation.squad_data import Window, best_span, read_squad, windows
from lmforge.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def qa() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lmforge_benchmark_qa_reference", ROOT / "benchmarks" / "qa_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def files(qa: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny random BERT folder and a 5-article stand-in SQuAD 2.0 file."""
    base = tmp_path_factory.mktemp("qa-reference")
    return qa.standins.tiny_bert_folder(base / "model"), qa.write_tiny_squad(base / "squad.json")


def test_articles_split_in_file_order_and_round_trip_through_files(qa: ModuleType, files: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:
    _, squad = files
    splits = qa.split_articles(squad)
    assert [{q.title for q in splits[k]} for k in ("train", "threshold", "test")] == [
        {"Article_0", "Article_1", "Article_2"}, {"Article_3"}, {"Article_4"}]
    assert all(any(not q.answerable for q in v) for v in splits.values())
    answerable = qa.split_articles(squad, answerable_only=True)
    assert {k: len(v) for k, v in answerable.items()} == {k: sum(q.answerable for q in v) for k, v in splits.items()}
    paths = qa.write_splits(splits, tmp_path / "splits")
    assert {k: read_squad(p) for k, p in paths.items()} == splits  # same questions, answers, offsets, titles


def test_windows_and_labels_are_lmforges(qa: ModuleType, files: tuple[Path, Path]) -> None:
    from transformers import AutoTokenizer

    folder, squad = files
    questions = qa.split_articles(squad)["train"]
    features = qa.encode(AutoTokenizer.from_pretrained(folder), questions, 64, 16)
    pieces = windows(questions, Tokenizer.from_file(folder / "tokenizer.json"), 64, 16)
    assert len(features) > len(questions)  # the long contexts take several windows
    assert [(f.question, f.input_ids, f.token_type_ids, f.offsets, f.start, f.end) for f in features] == [
        (p.question, list(p.input_ids), list(p.token_type_ids), list(p.offsets), p.start, p.end) for p in pieces]
    assert any(f.start for f in features)
    for f in features:
        if f.start:
            q = questions[f.question]
            assert q.context[f.offsets[f.start][0]:f.offsets[f.end][1]] == q.answers[0]


def test_decoding_equals_lmforges_best_span(qa: ModuleType) -> None:
    rng = random.Random(0)
    context = "x" * 400
    for _ in range(20):
        pieces, starts, ends = [], [], []
        for _ in range(rng.randint(1, 3)):
            n = rng.randint(8, 40)
            head = rng.randint(2, 6)  # [CLS] question [SEP]: outside the context
            offsets = [None] * head + [(3 * k, 3 * k + 2) for k in range(n - head - 1)] + [None]
            pieces.append(Window(0, (0,) * n, (0,) * n, tuple(offsets)))
            starts.append([rng.gauss(0, 2) for _ in range(n)])
            ends.append([rng.gauss(0, 2) for _ in range(n)])
        ours = qa.decode(starts, ends, [list(p.offsets) for p in pieces], context, max_answer_tokens=5, n_best=6)
        theirs = best_span(starts, ends, pieces, context, max_answer_tokens=5, n_best=6)
        assert ours[0] == theirs[0] and math.isclose(ours[1], theirs[1]) and math.isclose(ours[2], theirs[2])


def test_the_loop_fine_tunes_transformers_bert_and_answers_from_the_context(qa: ModuleType,
                                                                             files: tuple[Path, Path]) -> None:
    folder, squad = files
    splits = qa.split_articles(squad)
    run = qa.run_reference(folder, splits, seed=0, seq_len=64, doc_stride=16, batch_size=4, epochs=2, threads=1)
    assert run["network"] == "BertForQuestionAnswering" and math.isfinite(run["last_loss"])
    assert run["windows"] > len(splits["train"]) and run["steps"] == 2 * math.ceil(run["windows"] / 4)
    assert run["tokens_per_s"] > 0 and run["threshold"] == run["threshold_split"]["best_f1_thresh"]
    contexts = {q.id: q.context for q in splits["test"]}
    assert set(run["predictions"]) == set(contexts)
    assert all(text and text in contexts[qid] for qid, text in run["predictions"].items())
    assert run["test"]["HasAns_total"] + run["test"]["NoAns_total"] == len(contexts)
    # the seed fixes the head and the order: the same run again gives the same answers
    again = qa.run_reference(folder, splits, seed=0, seq_len=64, doc_stride=16, batch_size=4, epochs=2, threads=1)
    assert again["predictions"] == run["predictions"] and again["test"] == run["test"]


def test_answerable_only_never_answers_null(qa: ModuleType, files: tuple[Path, Path]) -> None:
    folder, squad = files
    splits = qa.split_articles(squad, answerable_only=True)
    order = [[[0, 1, 2, 3]], [[3, 2]]]  # an explicit order (lmforge's, in the benchmark) is followed
    run = qa.run_reference(folder, splits, seed=1, seq_len=64, doc_stride=16, threads=1, order=order)
    assert run["threshold"] is None and run["steps"] == 2 and "NoAns_f1" not in run["test"]
    assert all(run["predictions"].values()) and run["test_answering_all"] == run["test"]
