"""SQuAD-layout question answering data (v1.1, v2.0, and BioASQ factoid questions converted to
it, as BioBERT fine-tunes them): the JSON file read into one record per question, checked.

The layout is ``{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
"answers": [{"text", "answer_start"}], "is_impossible"?}]}]}]}``. Every answer's
``answer_start`` must point at its ``text`` in the context, and every question id must be
unique: both are refused in one sentence naming the file and the id, since a wrong offset
silently trains the span head on the wrong words. :func:`windows` cuts each question's context
into overlapping pieces that fit the model (never dropping any of it) and :func:`best_span`
maps the pieces' start/end scores back to a span of the original text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import UserError
from lmforge.tokenizer import Tokenizer


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


@dataclass(frozen=True)
class Window:
    """One input of a question: ``[CLS] question [SEP] context piece [SEP]``.

    Args:
        question: Index of its question in the list windowed.
        input_ids: The token ids.
        token_type_ids: 0 for ``[CLS]``, the question and its ``[SEP]``; 1 for the context piece and the last ``[SEP]``.
        offsets: Per token, its ``(start, end)`` characters in the context; ``None`` outside the context piece.
        start: The answer's first token (training labels), 0 (``[CLS]``) when the answer is not
            wholly in this piece or there is none.
        end: The answer's last token, 0 likewise.
    """

    question: int
    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...]
    offsets: tuple[tuple[int, int] | None, ...]
    start: int = 0
    end: int = 0


def windows(questions: list[Question], tokenizer: Tokenizer, seq_len: int, stride: int = 128,
            max_question_tokens: int = 64) -> list[Window]:
    """Every question with its context cut into pieces that fit ``seq_len``, consecutive pieces
    sharing ``stride`` context tokens, so that no part of a context is ever left out (BERT's
    "doc stride"). Each piece knows the characters of its context tokens, to map a predicted span
    back to the original text, and where the first gold answer lies in it.

    Args:
        questions: Read by :func:`read_squad`.
        tokenizer: An encoder tokenizer with ``cls``, ``sep`` tokens (BERT, RoBERTa).
        seq_len: Longest input.
        stride: Context tokens shared by consecutive pieces.
        max_question_tokens: Longer questions are cut to this many tokens.
    """
    ids = tokenizer.require(["cls", "sep"], "question answering", "use a BERT or RoBERTa tokenizer.")
    out: list[Window] = []
    for index, q in enumerate(questions):
        question = tokenizer.encode(q.question)[:max_question_tokens]
        context = tokenizer.backend.encode(q.context, add_special_tokens=False)
        room = seq_len - len(question) - 3
        if room <= stride:
            raise UserError(f"seq_len={seq_len} leaves {room} context tokens per window after question '{q.id}', "
                            f"not more than stride={stride}: raise seq_len or lower the stride.")
        head = [ids["cls"], *question, ids["sep"]]
        begin = 0
        while True:
            stop = min(begin + room, len(context.ids))
            piece = (tuple(context.ids[begin:stop]), tuple(map(tuple, context.offsets[begin:stop])))
            out.append(_window(index, q, head, piece, ids["sep"]))
            if stop == len(context.ids):
                break
            begin = stop - stride
    return out


def _window(index: int, q: Question, head: list[int], piece: tuple[tuple, tuple], sep: int) -> Window:
    piece_ids, piece_offsets = piece
    input_ids = (*head, *piece_ids, sep)
    offsets = (None,) * len(head) + piece_offsets + (None,)
    start = end = 0
    if q.answers:
        first, last = q.starts[0], q.starts[0] + len(q.answers[0])
        covering = [i for i, span in enumerate(offsets) if span is not None and span[0] < last and span[1] > first]
        if covering and offsets[covering[0]][0] <= first and offsets[covering[-1]][1] >= last:
            start, end = covering[0], covering[-1]
    types = (0,) * len(head) + (1,) * (len(piece_ids) + 1)
    return Window(index, input_ids, types, offsets, start, end)


def best_span(start_logits: list[list[float]], end_logits: list[list[float]], pieces: list[Window], context: str,
              max_answer_tokens: int = 30, n_best: int = 20) -> tuple[str, float, float]:
    """The answer of one question from its pieces' start/end scores: the best span over all
    pieces (start and end in the context, end not before start, at most ``max_answer_tokens``
    tokens), its text cut from the original ``context`` by character offsets, its score, and
    the no-answer score (the lowest ``[CLS]`` start + end score over the pieces).

    Args:
        start_logits: Per piece, the start score of each token.
        end_logits: Per piece, the end score of each token.
        pieces: The question's windows, in order.
        context: The question's context.
        max_answer_tokens: Longest answer considered.
        n_best: Start and end candidates tried per piece (the highest scoring).
    """
    best_text, best_score = "", float("-inf")
    null = float("inf")
    for starts, ends, piece in zip(start_logits, end_logits, pieces):
        null = min(null, starts[0] + ends[0])
        top_starts = sorted(range(len(starts)), key=lambda i: -starts[i])[:n_best]
        top_ends = sorted(range(len(ends)), key=lambda i: -ends[i])[:n_best]
        for i in top_starts:
            for j in top_ends:
                if piece.offsets[i] is None or piece.offsets[j] is None or not 0 <= j - i < max_answer_tokens:
                    continue
                if starts[i] + ends[j] > best_score:
                    best_score = starts[i] + ends[j]
                    best_text = context[piece.offsets[i][0]:piece.offsets[j][1]]
    return best_text, best_score, null
