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
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

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
    records = [(qa, paragraph.get("context", ""), article.get("title", ""))
               for article in articles for paragraph in article.get("paragraphs", []) for qa in paragraph.get("qas", [])]
    return checked_questions(records, f"'{path}'")


def checked_questions(records: list[tuple[dict, str, str]], where: str) -> list[Question]:
    """The questions of ``(qa, context, title)`` records, every offset and id checked: ``qa`` is
    a ``qas`` entry of the SQuAD layout, or a hub row with ``answers: {text: [...],
    answer_start: [...]}`` (``rajpurkar/squad``, ``rajpurkar/squad_v2``).

    Args:
        records: Each question's entry, its paragraph's context and its article's title.
        where: The source, for messages (``'dev.json'``, ``rajpurkar/squad_v2:validation``).
    """
    questions: list[Question] = []
    seen: set[str] = set()
    for qa, context, title in records:
        question = _question(qa, context, title, where)
        if question.id in seen:
            raise UserError(f"{where} has question id '{question.id}' twice: ids must be unique (they key the "
                            "predictions).")
        seen.add(question.id)
        questions.append(question)
    if not questions:
        raise UserError(f"{where} holds no questions: give a SQuAD-layout file with paragraphs and qas.")
    return questions


def _answers(qa: dict) -> list[tuple[object, object]]:
    """``(text, answer_start)`` of each gold answer: a list of objects (SQuAD files) or two columns (the hub's)."""
    if qa.get("is_impossible"):
        return []
    answers = qa.get("answers") or []
    if isinstance(answers, dict):
        return list(zip(answers.get("text", []), answers.get("answer_start", [])))
    return [(a.get("text", ""), a.get("answer_start")) for a in answers]


def _question(qa: dict, context: str, title: str, where: str) -> Question:
    qid = str(qa.get("id", ""))
    if not qid or not isinstance(qa.get("question"), str):
        raise UserError(f"{where} has a question without `id` or `question` text ({str(qa)[:80]}): every qas entry "
                        "needs both.")
    texts, starts = [], []
    for text, start in _answers(qa):
        if not isinstance(start, int) or not isinstance(text, str) or context[start:start + len(text)] != text:
            found = context.find(text) if isinstance(text, str) and text else -1
            hint = f"the text is at {found}" if found >= 0 else "the text is not in the context"
            raise UserError(f"{where} question '{qid}': answer {text!r} has answer_start {start}, which does not "
                            f"point at it ({hint}): fix its answer_start.")
        texts.append(text)
        starts.append(start)
    return Question(qid, qa["question"], context, tuple(texts), tuple(starts), title)


@dataclass(frozen=True)
class Window:
    """One input of a question: the question and a piece of its context in the tokenizer's pair
    template (BERT ``[CLS] question [SEP] piece [SEP]``, RoBERTa ``<s> question </s></s> piece </s>``).

    Args:
        question: Index of its question in the list windowed.
        input_ids: The token ids.
        token_type_ids: The template's token types (BERT: 0 up to the first ``[SEP]``, 1 after).
        offsets: Per token, its ``(start, end)`` characters in the context; ``None`` outside the context piece.
        start: The answer's first token (training labels), 0 (the first token, ``[CLS]``: "no
            answer here") when the answer is not wholly in this piece or there is none.
        end: The answer's last token, 0 likewise.
    """

    question: int
    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...]
    offsets: tuple[tuple[int, int] | None, ...]
    start: int = 0
    end: int = 0


@dataclass(frozen=True)
class _Template:
    """Where the tokenizer's pair template puts its special tokens around two texts, and their types."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    types: tuple[tuple[int, ...], int, tuple[int, ...], int, tuple[int, ...]]  # prefix, first, middle, second, suffix

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> _Template:
        backend = tokenizer.backend
        if backend.num_special_tokens_to_add(True) == 0:
            raise UserError("Question answering reads the question and its context in the tokenizer's pair template "
                            "(BERT's [CLS] q [SEP] c [SEP]), and this tokenizer has none: start from an encoder "
                            "(BERT, RoBERTa) with its tokenizer.")
        first, second = backend.encode("a", add_special_tokens=False), backend.encode("b c", add_special_tokens=False)
        framed = backend.post_process(first, second, add_special_tokens=True)
        n1, n2, ids, types = len(first.ids), len(second.ids), framed.ids, framed.type_ids
        specials = len(ids) - n1 - n2
        # the texts sit between the special tokens: find where the first one starts
        at = next(i for i in range(specials + 1) if ids[i:i + n1] == first.ids
                  and any(ids[j:j + n2] == second.ids for j in range(i + n1, len(ids) - n2 + 1)))
        then = next(j for j in range(at + n1, len(ids) - n2 + 1) if ids[j:j + n2] == second.ids)
        return cls(tuple(ids[:at]), tuple(ids[at + n1:then]), tuple(ids[then + n2:]),
                   (tuple(types[:at]), types[at], tuple(types[at + n1:then]), types[then], tuple(types[then + n2:])))

    @property
    def specials(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    def frame(self, question: list[int], piece: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], int]:
        """Ids and token types of one window, and where its context piece starts."""
        pre, t1, mid, t2, suf = self.types
        ids = (*self.prefix, *question, *self.middle, *piece, *self.suffix)
        types = (*pre, *[t1] * len(question), *mid, *[t2] * len(piece), *suf)
        return ids, types, len(self.prefix) + len(question) + len(self.middle)


def windows(questions: list[Question], tokenizer: Tokenizer, seq_len: int, stride: int = 128,
            max_question_tokens: int = 64) -> list[Window]:
    """Every question with its context cut into pieces that fit ``seq_len``, consecutive pieces
    sharing ``stride`` context tokens, so that no part of a context is ever left out (BERT's
    "doc stride"). Each piece knows the characters of its context tokens, to map a predicted span
    back to the original text, and where the first gold answer lies in it.

    Args:
        questions: Read by :func:`read_squad`.
        tokenizer: An encoder tokenizer with a pair template (BERT, RoBERTa).
        seq_len: Longest input.
        stride: Context tokens shared by consecutive pieces.
        max_question_tokens: Longer questions are cut to this many tokens.
    """
    template = _Template.of(tokenizer)
    asked = tokenizer.encode_batch([q.question for q in questions])
    contexts = {c: tokenizer.backend.encode(c, add_special_tokens=False) for c in dict.fromkeys(q.context for q in questions)}
    out: list[Window] = []
    for index, (q, question) in enumerate(zip(questions, asked)):
        question = question[:max_question_tokens]
        context = contexts[q.context]
        room = seq_len - len(question) - template.specials
        if room <= stride:
            raise UserError(f"seq_len={seq_len} leaves {room} context tokens per window after question '{q.id}', "
                            f"not more than stride={stride}: raise seq_len or lower the stride.")
        begin = 0
        while True:
            stop = min(begin + room, len(context.ids))
            ids, types, at = template.frame(question, tuple(context.ids[begin:stop]))
            offsets = (None,) * at + tuple(map(tuple, context.offsets[begin:stop])) + (None,) * len(template.suffix)
            out.append(Window(index, ids, types, offsets, *_answer_tokens(q, offsets)))
            if stop == len(context.ids):
                break
            begin = stop - stride
    return out


def _answer_tokens(q: Question, offsets: tuple[tuple[int, int] | None, ...]) -> tuple[int, int]:
    """The first and last token of the first gold answer, when the piece holds all of it; else (0, 0)."""
    if not q.answers:
        return 0, 0
    first, last = q.starts[0], q.starts[0] + len(q.answers[0])
    covering = [i for i, span in enumerate(offsets) if span is not None and span[0] < last and span[1] > first]
    if covering and offsets[covering[0]][0] <= first and offsets[covering[-1]][1] >= last:
        return covering[0], covering[-1]
    return 0, 0


def top_spans(start_logits: torch.Tensor, end_logits: torch.Tensor, in_context: torch.Tensor,
              max_answer_tokens: int = 30, n_best: int = 20, k: int = 1) -> tuple[torch.Tensor, ...]:
    """The ``k`` best answer spans of each window, BERT's n-best rule: among the ``n_best``
    highest start and the ``n_best`` highest end scores of all its tokens, the spans with start
    and end in the context, end not before start and at most ``max_answer_tokens`` tokens, by start + end score.
    Returns ``scores``, ``starts``, ``ends`` ``(W, k)`` (score ``-inf`` where a window has fewer
    valid spans) and the no-answer score ``(W,)``: the first token's (``[CLS]``) start + end.

    Args:
        start_logits: ``(W, T)`` start scores.
        end_logits: ``(W, T)`` end scores.
        in_context: ``(W, T)`` whether each token is a context token.
        max_answer_tokens: Longest answer.
        n_best: Start and end candidates per window.
        k: Spans kept per window.
    """
    n = min(n_best, start_logits.size(1))
    # BERT's rule: the best starts and ends among all tokens, those outside the context then dropped
    start_scores, start_at = start_logits.topk(n, dim=1)  # (W, n)
    end_scores, end_at = end_logits.topk(n, dim=1)
    length = end_at[:, None, :] - start_at[:, :, None]  # (W, n, n)
    valid = ((length >= 0) & (length < max_answer_tokens) & in_context.gather(1, start_at)[:, :, None]
             & in_context.gather(1, end_at)[:, None, :])
    grid = (start_scores[:, :, None] + end_scores[:, None, :]).masked_fill(~valid, float("-inf")).flatten(1)
    scores, best = grid.topk(min(k, grid.size(1)), dim=1)  # (W, k)
    starts, ends = start_at.gather(1, best // n), end_at.gather(1, best % n)
    return scores, starts, ends, start_logits[:, 0] + end_logits[:, 0]


def best_span(start_logits: list[list[float]], end_logits: list[list[float]], pieces: list[Window], context: str,
              max_answer_tokens: int = 30, n_best: int = 20) -> tuple[str, float, float]:
    """The answer of one question from its pieces' start/end scores (:func:`top_spans`): the best
    span over all pieces, its text cut from the original ``context`` by character offsets, its
    score, and the no-answer score (the lowest over the pieces, as BERT's reference code takes it).

    Args:
        start_logits: Per piece, the start score of each token.
        end_logits: Per piece, the end score of each token.
        pieces: The question's windows, in order.
        context: The question's context.
        max_answer_tokens: Longest answer considered.
        n_best: Start and end candidates tried per piece (the highest scoring).
    """
    best_text, best_score, null = "", float("-inf"), float("inf")
    for starts, ends, piece in zip(start_logits, end_logits, pieces):
        mask = torch.tensor([[span is not None for span in piece.offsets]])
        scores, first, last, no_answer = top_spans(torch.tensor([starts], dtype=torch.float64),
                                                   torch.tensor([ends], dtype=torch.float64), mask,
                                                   max_answer_tokens, n_best)
        null = min(null, float(no_answer))
        if float(scores[0, 0]) > best_score:
            best_score = float(scores[0, 0])
            best_text = context[piece.offsets[int(first[0, 0])][0]:piece.offsets[int(last[0, 0])][1]]
    return best_text, best_score, null


def snippet_group(qid: str) -> str:
    """The question a BioBERT-converted BioASQ entry belongs to: ``<question>_<snippet number>`` → ``<question>``."""
    match = re.fullmatch(r"(.+)_\d+", qid)
    return match.group(1) if match else qid


def ranked_answers(questions: list[Question], question: torch.Tensor, scores: torch.Tensor, starts: torch.Tensor,
                   ends: torch.Tensor, null: torch.Tensor, merge_snippets: bool = False) -> dict[str, tuple]:
    """Per question id: its distinct candidate answers ``[(text, score)]`` best first, gathered
    over all its windows and cut from its context, its no-answer score (the lowest of its
    windows'; ``inf`` for a question no window answered) and its gold answers.

    Args:
        questions: The split's questions, numbered as the windows' ``question`` numbers them.
        question: ``(W,)`` each window's question number.
        scores: ``(W, k)`` each window's best span scores (:func:`top_spans`; ``-inf``: none).
        starts: ``(W, k)`` their first characters in the context.
        ends: ``(W, k)`` their ends (exclusive).
        null: ``(W,)`` each window's no-answer score.
        merge_snippets: Rank the entries ``<question>_<n>`` of one question together (BioASQ as
            BioBERT converts it: one entry per snippet); answers then compare ignoring case.
    """
    candidates: dict[int, list[tuple[float, str]]] = {}
    lowest: dict[int, float] = {}
    for q, row, first, last, no in zip(question.tolist(), scores.tolist(), starts.tolist(), ends.tolist(),
                                       null.tolist()):
        context = questions[q].context
        lowest[q] = min(lowest.get(q, math.inf), no)
        candidates.setdefault(q, []).extend((s, context[a:b]) for s, a, b in zip(row, first, last) if s > -math.inf)
    grouped: dict[str, tuple[list, float, list]] = {}
    for index, q in enumerate(questions):
        key = snippet_group(q.id) if merge_snippets else q.id
        found, no, gold = grouped.get(key, ([], math.inf, []))
        grouped[key] = (found + candidates.get(index, []), min(no, lowest.get(index, math.inf)),
                        gold + [a for a in q.answers if a not in gold])
    out = {}
    for key, (found, no, gold) in grouped.items():
        ranked, seen = [], set()
        for score, text in sorted(found, key=lambda c: -c[0]):
            same = text.lower() if merge_snippets else text
            if same not in seen:
                seen.add(same)
                ranked.append((text, score))
        out[key] = (ranked, no, gold)
    return out
