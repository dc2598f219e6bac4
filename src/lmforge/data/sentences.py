"""A simple, predictable sentence splitter for objectives that need sentences (NSP, SimCSE).

The rule, in full:

1. Blank lines end a sentence (paragraphs never run together); single line breaks inside a
   paragraph are spaces.
2. A sentence ends after ``.``, ``!`` or ``?`` (and any closing quotes or brackets right
   after it) when whitespace follows and the next character is an uppercase letter, a
   digit, or an opening quote or bracket.
3. Not after a known abbreviation (``e.g.``, ``i.e.``, ``etc.``, ``Mr.``, ``Dr.``, ``vs.``,
   ``Fig.``, ...) or a single capital initial (``J. R. R. Tolkien``).

No model, no language data: it errs towards longer sentences, which is harmless for
sentence-pair pretraining.

:func:`sentence_examples` turns documents into a sentence objective's examples.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmforge.batching import Objective
    from lmforge.tokenizer import Tokenizer

ABBREVIATIONS = frozenset(
    "e.g i.e etc vs cf al mr mrs ms dr prof sr jr st fig figs eq eqs no vol pp ed eds approx dept inc ltd co corp".split()
)

_BOUNDARY = re.compile(r"""([.!?]['")\]]*)\s+(?=[A-Z0-9"'(\[])""")


def _ends_with_abbreviation(text: str) -> bool:
    last = text.rsplit(None, 1)[-1] if text.strip() else ""
    word = last.rstrip(".").lstrip("(\"'[").lower()
    return word in ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def split_sentences(text: str) -> list[str]:
    """Split a document into sentences by the rule in this module's docstring.

    Args:
        text: A document.
    """
    sentences: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = " ".join(paragraph.split())
        start = 0
        for match in _BOUNDARY.finditer(paragraph):
            candidate = paragraph[start : match.end(1)]
            if _ends_with_abbreviation(candidate):
                continue
            sentences.append(candidate)
            start = match.end()
        if paragraph[start:].strip():
            sentences.append(paragraph[start:].strip())
    return [s for s in sentences if s]


def sentence_examples(documents: list[str], tokenizer: Tokenizer, objective: Objective, seq_len: int,
                      seed: int) -> list[Any]:
    """The examples a sentence objective (NSP) builds from each document's tokenized sentences.

    Args:
        documents: The documents.
        tokenizer: Tokenizes the sentences (all of them in one batch).
        objective: Builds the examples (:meth:`~lmforge.batching.Objective.build_examples`).
        seq_len: Tokens per example.
        seed: Seed of the objective's random choices.
    """
    sentences = [split_sentences(doc) for doc in documents]
    ids = iter(tokenizer.encode_batch([s for doc in sentences for s in doc]))
    tokenized = [[next(ids) for _ in doc] for doc in sentences]
    return objective.build_examples(tokenized, seq_len, seed)
