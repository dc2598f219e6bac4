"""SQuAD-layout files as the official downloads write them (v1.1 answers, v2.0 is_impossible
with plausible_answers): one record per question, and the refusals of a wrong answer_start, a
duplicate id, a file that is not SQuAD layout or not UTF-8."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.errors import UserError
from lmforge.data.tokenizer import TokenizerSpec, train_tokenizer
from lmforge.evaluation.squad_data import Question, best_span, read_squad, windows

CONTEXT = "The Eiffel Tower was completed in 1889. It is in Paris."


def squad(path: Path, qas: list[dict], version: str = "v2.0") -> Path:
    path.write_text(json.dumps({"version": version, "data": [
        {"title": "Eiffel_Tower", "paragraphs": [{"context": CONTEXT, "qas": qas}]}]}), encoding="utf-8")
    return path


def test_answerable_and_unanswerable_questions_are_read_with_their_offsets(tmp_path: Path) -> None:
    path = squad(tmp_path / "dev.json", [
        {"id": "q1", "question": "When?", "answers": [{"text": "1889", "answer_start": 34},
                                                       {"text": "in 1889", "answer_start": 31}], "is_impossible": False},
        {"id": "q2", "question": "Who built it?", "answers": [], "is_impossible": True,
         "plausible_answers": [{"text": "Paris", "answer_start": 49}]},
    ])
    q1, q2 = read_squad(path)
    assert (q1.id, q1.answers, q1.starts, q1.title) == ("q1", ("1889", "in 1889"), (34, 31), "Eiffel_Tower")
    assert q1.answerable and not q2.answerable and q2.answers == ()  # plausible answers are not gold


@pytest.mark.parametrize("qas, said", [
    ([{"id": "q1", "question": "When?", "answers": [{"text": "1889", "answer_start": 30}]}],
     "question 'q1': answer '1889' has answer_start 30, which does not point at it (the text is at 34)"),
    ([{"id": "q1", "question": "When?", "answers": [{"text": "1890", "answer_start": 34}]}],
     "(the text is not in the context): fix its answer_start."),
    ([{"id": "q1", "question": "A?", "answers": []}, {"id": "q1", "question": "B?", "answers": []}],
     "has question id 'q1' twice"),
])
def test_a_wrong_offset_or_a_repeated_id_is_refused_by_id(tmp_path: Path, qas: list[dict], said: str) -> None:
    with pytest.raises(UserError, match="dev.json") as refused:
        read_squad(squad(tmp_path / "dev.json", qas))
    assert said in str(refused.value)


def test_a_file_that_is_not_squad_layout_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"questions": []}')
    (tmp_path / "b.json").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(UserError, match="has no `data` list of articles"):
        read_squad(tmp_path / "a.json")
    with pytest.raises(UserError, match="is not a UTF-8 JSON file"):
        read_squad(tmp_path / "b.json")
    with pytest.raises(UserError, match="does not exist"):
        read_squad(tmp_path / "absent.json")


LONG = " ".join(f"Sentence {i} says the tower is {i} metres tall." for i in range(40))


def bert_tokenizer():
    return train_tokenizer([LONG, CONTEXT], TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=140,
                                                          min_frequency=1))


def test_a_long_context_is_cut_into_overlapping_pieces_that_cover_all_of_it() -> None:
    answer = "37 metres"
    tokenizer = bert_tokenizer()
    question = Question("q", "How tall?", LONG, (answer,), (LONG.index(answer),))
    pieces = windows([question], tokenizer, seq_len=64, stride=16)
    context_ids = tokenizer.encode(LONG)
    assert len(pieces) > 3 and all(len(p.input_ids) <= 64 for p in pieces)
    spans = [[s for s in p.offsets if s is not None] for p in pieces]
    # every context token is in some piece, and neighbours share exactly `stride` tokens
    assert sorted({s for piece in spans for s in piece}) == sorted(set(map(tuple, tokenizer.backend.encode(
        LONG, add_special_tokens=False).offsets))) and sum(map(len, spans)) == len(context_ids) + 16 * (len(pieces) - 1)
    assert all(a[-16:] == b[:16] for a, b in zip(spans, spans[1:]))
    labelled = [p for p in pieces if p.start]
    assert labelled, "the answer is labelled in the piece(s) that hold it whole"
    for p in labelled:
        assert LONG[p.offsets[p.start][0]:p.offsets[p.end][1]] == answer
    assert all(p.start == p.end == 0 for p in pieces if p not in labelled)  # elsewhere: [CLS]


def test_the_best_span_is_cut_from_the_original_text_by_offsets() -> None:
    tokenizer = bert_tokenizer()
    q = Question("q", "How tall?", LONG, ("37 metres",), (LONG.index("37 metres"),))
    pieces = windows([q], tokenizer, seq_len=64, stride=16)
    target = next(p for p in pieces if p.start)
    starts = [[0.0] * len(p.input_ids) for p in pieces]
    ends = [[0.0] * len(p.input_ids) for p in pieces]
    k = pieces.index(target)
    starts[k][target.start], ends[k][target.end] = 5.0, 4.0
    starts[0][0], ends[0][0] = 1.0, 1.0  # no-answer score of the first piece
    text, score, null = best_span(starts, ends, pieces, LONG)
    assert (text, score) == ("37 metres", 9.0) and null == 0.0  # the lowest [CLS] score over the pieces
