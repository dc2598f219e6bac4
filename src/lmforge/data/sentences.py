"""A simple, predictable sentence splitter for objectives that need sentences (NSP, SimCSE).

The rule, in full:

1. Blank lines end a sentence (paragraphs never run together); single line breaks inside a
   paragraph are spaces.
2. A sentence ends after ``.``, ``!`` or ``?`` (and any closing quotes or brackets right
   after it) when whitespace follows and the next character is an uppercase letter, a
   digit, or an opening quote or bracket.
3. Not after a known abbreviation (``e.g.``, ``i.e.``, ``et al.``, ``vs.``, ``Fig.``, ``approx.``,
   ``Dr.``, ``No.``, ``U.S.``, ...: :data:`ABBREVIATIONS`), matched as it is written or with its
   first letter capitalised, so ``MS.`` (an acronym) and ``ms.`` (milliseconds) end sentences
   while ``Ms.`` does not; not after a single capital initial (``J. R. R. Tolkien``, ``E. coli``)
   unless a lowercase word or a number that is not a year comes before it and is not one of a
   few words that introduce names (``by``, ``and``, ``of``, ...): ``vitamin D.``, ``group A.``,
   ``50 W.`` end sentences; not after a lone ``.`` of a spaced ellipsis (``. . .``), nor after a
   list number that follows a sentence end (``... effects. 4. Muscarinic ...``).

No model, no language data: it errs towards longer sentences, which is harmless for
sentence-pair pretraining. On 3,357 MEDLINE abstracts (``benchmarks/libraries.py``) it makes
fewer errors than NLTK's Punkt (trained on the same abstracts), pysbd and sentencex.

:func:`sentence_examples` turns documents into a sentence objective's examples.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmforge.batching import Objective
    from lmforge.tokenizer import Tokenizer

# as usually written; a word matches one as written or with its first letter capitalised
ABBREVIATIONS = frozenset(
    "e.g i.e etc vs cf al viz approx ca resp fig figs eq eqs vol pp ed eds "  # prose, citations, figures
    "Mr Mrs Ms Dr Prof Sr Jr St No Nos Dept Inc Ltd Co Corp U.S U.K".split()  # titles, names, places
)

_BOUNDARY = re.compile(r"""([.!?]['")\]]*)\s+(?=[A-Z0-9"'(\[])""")


# words after which a capital letter is an initial ("by J. Smith"), not a name's last letter
_BEFORE_INITIAL = frozenset("a an and at by for from in including of on or the to with".split())
_LIST_NUMBER = re.compile(r"\d{1,2}\.")
_UNIT_OR_NAME = re.compile(r"[a-z][a-z'-]*|\d+(?:[.,]\d+)*")  # "lipid A.", "50 W.", "degrees C."
_YEAR = re.compile(r"1[89]\d\d|20\d\d")  # "In 1957 J. Leigh"


def _ends_with_abbreviation(text: str) -> bool:
    """Whether the candidate sentence ``text`` stops at a word that does not end a sentence (rule 3)."""
    words = text.split() or [""]
    last, before = words[-1], words[-2] if len(words) > 1 else ""
    word = last.rstrip(".").lstrip("(\"'[")
    if not word:  # a lone "." of a spaced ellipsis ". . ."
        return True
    if _LIST_NUMBER.fullmatch(last) and (not before or before[-1] in ".!?"):  # "... effects. 4. Muscarinic"
        return True
    if len(word) == 1 and word.isupper():  # an initial, unless it names a thing: "vitamin D.", "50 W."
        names_a_thing = word == last[:1] and _UNIT_OR_NAME.fullmatch(before) and before not in _BEFORE_INITIAL
        return not names_a_thing or bool(_YEAR.fullmatch(before))
    return word in ABBREVIATIONS or word[0].lower() + word[1:] in ABBREVIATIONS


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
