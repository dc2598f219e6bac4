"""SQuAD-layout question answering data (v1.1, v2.0, and BioASQ factoid questions converted to
it, as BioBERT fine-tunes them): the JSON file read into one record per question, checked.

The layout is ``{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
"answers": [{"text", "answer_start"}], "is_impossible"?}]}]}]}``. Every answer's
``answer_start`` must point at its ``text`` in the context, and every question id must be
unique: both are refused in one sentence naming the file and the id, since a wrong offset
silently trains the span head on the wrong words.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import UserError


@dataclass(frozen=True)
class Question:
    """One question over one context.

    Args:
        id: The question's id (the key of the official prediction file).
        question: The question text.
        context: The paragraph it is asked about.
        answers: The gold answers' texts (empty: unanswerable, SQuAD 2.0).
        starts: Each answer's character offset in ``context``.
        title: The article's title.
    """

    id: str
    question: str
    context: str
    answers: tuple[str, ...]
    starts: tuple[int, ...]
    title: str = ""

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


def read_squad(path: str | Path) -> list[Question]:
    """The questions of a SQuAD-layout JSON file, in file order, every offset and id checked.

    Args:
        path: The ``.json`` file (``train-v2.0.json``, ``dev-v1.1.json``, a BioASQ file in SQuAD layout).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"SQuAD file '{path}' does not exist: give a .json file in SQuAD layout.")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"'{path}' is not a UTF-8 JSON file ({type(err).__name__}): give a SQuAD-layout .json.") from err
    articles = spec.get("data") if isinstance(spec, dict) else None
    if not isinstance(articles, list):
        raise UserError(f"'{path}' has no `data` list of articles: it is not in SQuAD layout.")
    questions: list[Question] = []
    seen: set[str] = set()
    for article in articles:
        for paragraph in article.get("paragraphs", []):
            for qa in paragraph.get("qas", []):
                question = _question(qa, paragraph.get("context", ""), article.get("title", ""), path)
                if question.id in seen:
                    raise UserError(f"'{path}' has question id '{question.id}' twice: ids must be unique (they key "
                                    "the predictions).")
                seen.add(question.id)
                questions.append(question)
    if not questions:
        raise UserError(f"'{path}' holds no questions: give a SQuAD-layout file with paragraphs and qas.")
    return questions


def _question(qa: dict, context: str, title: str, path: Path) -> Question:
    qid = str(qa.get("id", ""))
    if not qid or not isinstance(qa.get("question"), str):
        raise UserError(f"'{path}' has a question without `id` or `question` text ({str(qa)[:80]}): every qas entry "
                        "needs both.")
    answers = [] if qa.get("is_impossible") else qa.get("answers", [])
    texts, starts = [], []
    for answer in answers:
        text, start = answer.get("text", ""), answer.get("answer_start")
        if not isinstance(start, int) or context[start:start + len(text)] != text:
            found = context.find(text) if text else -1
            hint = f"the text is at {found}" if found >= 0 else "the text is not in the context"
            raise UserError(f"'{path}' question '{qid}': answer {text!r} has answer_start {start}, which does not "
                            f"point at it ({hint}): fix its answer_start.")
        texts.append(text)
        starts.append(start)
    return Question(qid, qa["question"], context, tuple(texts), tuple(starts), title)
