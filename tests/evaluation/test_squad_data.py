"""SQuAD-layout files as the official downloads write them (v1.1 answers, v2.0 is_impossible
with plausible_answers): one record per question, and the refusals of a wrong answer_start, a
duplicate id, a file that is not SQuAD layout or not UTF-8."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.errors import UserError
from lmforge.evaluation.squad_data import read_squad

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
