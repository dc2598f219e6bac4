"""Domain vocabulary for continued pretraining: how well a tokenizer covers a corpus, and
adding the domain's most fragmented words to it (BioBERT-style domain adaptation).

A *word* here is a pre-token: a piece of normalized text exactly as the tokenizer's own
pre-tokenizer cuts it before the subword model sees it (BERT: words and punctuation split
apart; byte-level BPE: a word with the space before it, ``" protein"``; Metaspace: text
between spaces). Pre-tokens without a letter or digit (punctuation, whitespace) are not
counted. So the numbers are those of the real tokenization, and a word added by
:func:`extend_tokenizer` is exactly the unit the tokenizer encodes.

Typical use::

    report = coverage(tokenizer, corpus.documents(), top=100)
    print(format_report(report))
    extended, pieces = extend_tokenizer(tokenizer, domain_words(report, 100))
    weight = init_new_embeddings(model.embed.weight, pieces)
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import tokenizers
import torch
from tokenizers import AddedToken

from lmforge.tokenizer import Tokenizer
from lmforge.errors import UserError

ENCODE_BATCH = 4096  # distinct words encoded per call


class FragmentedWord(NamedTuple):
    """A frequent word that the tokenizer splits into several pieces.

    Args:
        word: The word as it reads in normalized text (lowercased by an uncased tokenizer).
        count: How often it occurs in the corpus.
        pieces: The subword tokens it is encoded as, spelled as in the vocabulary.
    """

    word: str
    count: int
    pieces: list[str]

    @property
    def saving(self) -> int:
        """Tokens the corpus would lose if the word were one token: ``count * (pieces - 1)``."""
        return self.count * (len(self.pieces) - 1)


@dataclass
class CoverageReport:
    """How a tokenizer splits the words of a corpus (see :func:`coverage`).

    Args:
        vocab_size: Size of the measured tokenizer's vocabulary, added tokens included.
        documents: Documents read.
        words: Word occurrences (running words of text).
        distinct_words: Different words.
        pieces: Subword tokens of all word occurrences together.
        split_words: Word occurrences encoded as two or more pieces.
        unknown_pieces: Pieces that are the unknown token; ``None`` when the tokenizer has none.
        top: The most fragmented frequent words, most tokens saved first.
        top_limit: How many words ``top`` was allowed to hold.
        min_count: How often a word had to occur to enter ``top``.
    """

    vocab_size: int
    documents: int
    words: int
    distinct_words: int
    pieces: int
    split_words: int
    unknown_pieces: int | None
    top: list[FragmentedWord]
    top_limit: int
    min_count: int

    @property
    def pieces_per_word(self) -> float:
        """Mean subword pieces per word occurrence (each word weighted by its frequency)."""
        return self.pieces / self.words if self.words else 0.0

    @property
    def split_fraction(self) -> float:
        """Fraction of word occurrences split into two or more pieces."""
        return self.split_words / self.words if self.words else 0.0

    @property
    def unknown_rate(self) -> float | None:
        """Fraction of pieces that are the unknown token, or ``None`` without one."""
        if self.unknown_pieces is None:
            return None
        return self.unknown_pieces / self.pieces if self.pieces else 0.0


def coverage(tokenizer: Tokenizer, documents: Iterable[str], top: int = 20, min_count: int = 2) -> CoverageReport:
    """Measure how finely ``tokenizer`` cuts the words of ``documents``.

    Documents are read one at a time (a lazy iterator keeps memory to the distinct words);
    each distinct word is encoded once, in batches.

    Args:
        tokenizer: The tokenizer to measure.
        documents: The corpus, e.g. ``corpus.documents()``.
        top: How many of the most fragmented words to report.
        min_count: Occurrences a word needs to be reported as fragmented.
    """
    backend = tokenizer.backend
    counts: Counter[str] = Counter()  # pre-token -> occurrences
    texts: dict[str, str] = {}  # pre-token -> the text it covers, as first seen
    n_docs = 0
    for doc in documents:
        n_docs += 1
        for pre, text in _pre_tokens(backend, doc):
            if pre not in counts:
                if not any(c.isalnum() for c in text):
                    continue
                texts[pre] = text
            counts[pre] += 1
    unk_id = tokenizer.role_id("unk")
    total_words = total_pieces = split = unknown = 0
    candidates: list[tuple[str, FragmentedWord]] = []
    distinct = list(counts.items())
    for start in range(0, len(distinct), ENCODE_BATCH):
        chunk = distinct[start : start + ENCODE_BATCH]
        encodings = backend.encode_batch([texts[pre] for pre, _ in chunk], add_special_tokens=False)
        for (pre, count), encoding in zip(chunk, encodings):
            n = len(encoding.ids)
            total_words += count
            total_pieces += count * n
            split += count if n > 1 else 0
            if unk_id is not None:
                unknown += count * encoding.ids.count(unk_id)
            if n > 1 and count >= min_count:
                candidates.append((pre, FragmentedWord(texts[pre].strip(), count, list(encoding.tokens))))
    ranked: list[FragmentedWord] = []
    for pre, candidate in sorted(candidates, key=lambda c: _rank(c[1])):
        if len(ranked) == top:
            break
        # only the form a word is added as (byte-level BPE: "Ġprotein", the word after a space,
        # not the "protein" that starts a line), which also lists each word once
        if _addable_as(backend, candidate.word, pre):
            ranked.append(candidate)
    return CoverageReport(
        vocab_size=tokenizer.vocab_size, documents=n_docs, words=total_words, distinct_words=len(counts),
        pieces=total_pieces, split_words=split, unknown_pieces=unknown if unk_id is not None else None,
        top=ranked, top_limit=top, min_count=min_count,
    )


def _rank(word: FragmentedWord) -> tuple[int, int, str]:
    """Most tokens saved first; ties by frequency, then alphabetically (a stable order)."""
    return -word.saving, -word.count, word.word


def _pre_tokens(backend: tokenizers.Tokenizer, text: str) -> list[tuple[str, str]]:
    """``(pre-token, its text)`` of ``text``: the pre-token as the subword model sees it
    (``Ġprotein``) and the normalized text it covers (``" protein"``). Without a
    pre-tokenizer, words are what whitespace separates."""
    normalized = backend.normalizer.normalize_str(text) if backend.normalizer is not None else text
    if backend.pre_tokenizer is None:
        return [(word, word) for word in normalized.split()]
    return [(pre, normalized[a:b]) for pre, (a, b) in backend.pre_tokenizer.pre_tokenize_str(normalized)]


def _word_form(backend: tokenizers.Tokenizer, word: str) -> str:
    """The pre-token ``word`` becomes in running text, after another word and a space.

    Raises:
        UserError: When the tokenizer would cut ``word`` into several words.
    """
    pre = _pre_tokens(backend, "a " + word)
    if len(pre) != 2 or not word.strip():
        parts = ", ".join(repr(text.strip()) for _, text in pre[1:]) or "nothing"
        raise UserError(f"'{word}' is not a single word for this tokenizer (it reads {parts}): give words "
                        "without spaces or punctuation that the tokenizer splits off.")
    return pre[1][0]


def _addable_as(backend: tokenizers.Tokenizer, word: str, pre_token: str) -> bool:
    """Whether :func:`extend_tokenizer` would add ``word`` as ``pre_token``."""
    try:
        return _word_form(backend, word) == pre_token
    except UserError:
        return False


def format_report(report: CoverageReport, rows: int | None = None) -> str:
    """``report`` as a plain-text table.

    Args:
        report: What :func:`coverage` measured.
        rows: Show at most this many fragmented words (all of ``report.top`` when unset).
    """
    unknown = (f"{'none':>12}   (no unknown token)" if report.unknown_rate is None
               else f"{report.unknown_pieces:>12,}   ({report.unknown_rate:.3%})")
    lines = [
        f"Coverage of {report.documents:,} documents by a tokenizer of {report.vocab_size:,} tokens",
        f"  words               {report.words:>12,}   ({report.distinct_words:,} distinct)",
        f"  pieces              {report.pieces:>12,}",
        f"  pieces per word     {report.pieces_per_word:>12.3f}",
        f"  words split in 2+   {report.split_fraction:>12.2%}   ({report.split_words:,})",
        f"  unknown pieces      {unknown}",
    ]
    top = report.top if rows is None else report.top[:rows]
    if not top:
        lines.append(f"\nNo word occurring {report.min_count}+ times is split into several pieces.")
        return "\n".join(lines)
    width = max(4, *(len(w.word) for w in top))
    lines += [
        "",
        f"Most fragmented words occurring {report.min_count}+ times, by tokens saved as one token:",
        f"  {'word':<{width}}  {'count':>8}  {'pieces':>6}  {'saved':>9}  split",
    ]
    lines += [f"  {w.word:<{width}}  {w.count:>8,}  {len(w.pieces):>6}  {w.saving:>9,}  {' '.join(w.pieces)}" for w in top]
    return "\n".join(lines)


def domain_words(report: CoverageReport, n: int) -> list[str]:
    """The ``n`` words most worth adding to the vocabulary: those that save the most tokens.

    Fewer come back when fewer words qualify (``min_count`` occurrences, two or more pieces).

    Args:
        report: What :func:`coverage` measured, with ``top`` at least ``n``.
        n: How many words to return.

    Raises:
        ValueError: When ``report`` was measured with a ``top`` smaller than ``n``.
    """
    if n > report.top_limit:
        raise ValueError(f"The report holds at most {report.top_limit} words: measure coverage with top >= {n}.")
    return [w.word for w in report.top[:n]]


def extend_tokenizer(tokenizer: Tokenizer, words: list[str]) -> tuple[Tokenizer, list[list[int]]]:
    """A copy of ``tokenizer`` with each of ``words`` as one new token, and how the old one split them.

    The new tokens take ids ``vocab_size``, ``vocab_size + 1``, ... in the order of ``words``.
    A word becomes one token where it stands as a word in running text; text without the
    words, and longer words that contain one (``proteins`` for ``protein``), encode as before.

    * WordPiece (BERT): each word is an added token that matches whole words only
      (``single_word``) in normalized text. Putting it into the WordPiece vocabulary instead
      would change every longer word it begins, since WordPiece takes the longest prefix.
    * BPE (byte-level or Metaspace): the word's in-context pre-token (``Ġprotein``, i.e.
      ``" protein"``; ``▁protein``) goes into the vocabulary and the model looks a whole
      pre-token up there before merging (``ignore_merges``). No merge is added, so
      ``Ġproteins`` still merges as before. A byte-level word is added with its leading
      space, the form it has in running text; at the start of a text or after an opening
      bracket it stays in pieces.
    * Unigram and other models are refused: a new piece would change how longer words are cut.

    Args:
        tokenizer: The tokenizer to extend; it is left unchanged.
        words: The words to add, as :func:`domain_words` returns them (normalized the way
            the tokenizer normalizes, e.g. lowercased, before they are added).

    Returns:
        The extended tokenizer, and for each new word the old tokenizer's ids of its pieces
        (average their embeddings to initialise the new row: :func:`init_new_embeddings`).

    Raises:
        UserError: For a word that is already one token, repeated, or not a single word,
            and for a tokenizer model that cannot be extended.
    """
    data = json.loads(tokenizer.to_str())
    model_type = data["model"]["type"]
    if model_type not in EXTENDERS:
        raise UserError(f"Cannot add words to a {model_type} tokenizer: domain words can be added to WordPiece "
                        "(BERT) and BPE (GPT) tokenizers only.")
    backend = tokenizer.backend
    vocab = backend.get_vocab(with_added_tokens=True)
    if max(vocab.values(), default=-1) + 1 != tokenizer.vocab_size:
        raise UserError("The tokenizer's token ids have gaps, so new ids cannot follow them: use a tokenizer "
                        "whose ids run from 0 to vocab_size - 1.")
    forms: list[str] = []
    for word in words:
        form = _word_form(backend, word)
        if form in vocab:
            raise UserError(f"'{word}' is already one token ({form!r}, id {vocab[form]}): leave it out of the words.")
        if form in forms:
            raise UserError(f"'{word}' is given twice (as {form!r}): give each word once.")
        forms.append(form)
    pieces = [[t.id for t in backend.model.tokenize(form)] for form in forms]
    extended = EXTENDERS[model_type](data, forms, tokenizer.vocab_size)
    extended = Tokenizer.from_str(extended.to_str())  # the saved form, bit for bit
    for i, form in enumerate(forms):
        if extended.backend.token_to_id(form) != tokenizer.vocab_size + i:  # an invariant, not user input
            raise RuntimeError(f"{form!r} got id {extended.backend.token_to_id(form)}, not {tokenizer.vocab_size + i}.")
    return extended, pieces


def _add_wordpiece(data: dict[str, Any], forms: list[str], first_id: int) -> tokenizers.Tokenizer:
    backend = tokenizers.Tokenizer.from_str(json.dumps(data))
    # normalized=True: matched in normalized text, so an uncased tokenizer adds "protein" for "Protein" too
    backend.add_tokens([AddedToken(form, single_word=True, normalized=True, special=False) for form in forms])
    return backend


def _add_bpe(data: dict[str, Any], forms: list[str], first_id: int) -> tokenizers.Tokenizer:
    model = data["model"]
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise UserError("Cannot add words to a BPE tokenizer with a subword prefix or end-of-word suffix: "
                        "use a byte-level or Metaspace BPE tokenizer.")
    if not model.get("ignore_merges"):
        changed = _whole_lookups_that_change(data)
        if changed:
            warnings.warn(
                f"{len(changed)} tokens of this BPE vocabulary are not what merging their own spelling gives "
                f"(e.g. {', '.join(map(repr, changed[:5]))}); with whole-word lookup a word spelled exactly like one "
                "encodes as that token now.",
                stacklevel=3,
            )
        model["ignore_merges"] = True
    for i, form in enumerate(forms):
        model["vocab"][form] = first_id + i
    return tokenizers.Tokenizer.from_str(json.dumps(data))


def _whole_lookups_that_change(data: dict[str, Any]) -> list[str]:
    """Vocabulary tokens that can be a whole pre-token but that the merges do not build from
    their own spelling: ``ignore_merges`` changes how exactly those pre-tokens encode."""
    vocab: dict[str, int] = data["model"]["vocab"]
    added = {t["content"] for t in data.get("added_tokens", [])}
    bare = {**data, "model": {**data["model"], "dropout": None}, "normalizer": None, "pre_tokenizer": None,
            "post_processor": None, "decoder": None, "added_tokens": []}
    merger = tokenizers.Tokenizer.from_str(json.dumps(bare))
    tokens = [t for t in vocab if t not in added]
    encodings = merger.encode_batch(tokens, add_special_tokens=False)
    unbuilt = [t for t, e in zip(tokens, encodings) if e.ids != [vocab[t]]]
    if not unbuilt:
        return []
    full = tokenizers.Tokenizer.from_str(json.dumps(data))
    return [t for t in unbuilt if [p for p, _ in _pre_tokens(full, full.decode([vocab[t]]))] == [t]]


EXTENDERS = {"WordPiece": _add_wordpiece, "BPE": _add_bpe}


def init_new_embeddings(weight: torch.Tensor, pieces: list[list[int]]) -> torch.Tensor:
    """An embedding matrix with one new row per added word: the mean of its old pieces' rows.

    The new rows go at ids ``V``, ``V + 1``, ...: ``V`` must be the old tokenizer's
    ``vocab_size``, as it is for every lmforge model.

    Args:
        weight: The old embeddings ``(V, C)``; left unchanged.
        pieces: For each new token, the old ids of its pieces (from :func:`extend_tokenizer`).

    Returns:
        A new ``(V + len(pieces), C)`` tensor: the old rows, then the new ones.
    """
    vocab_size = weight.shape[0]
    for i, ids in enumerate(pieces):
        if not ids or min(ids) < 0 or max(ids) >= vocab_size:
            raise ValueError(f"New token {i} has pieces {ids}: each needs at least one id below {vocab_size}.")
    old = weight.detach()
    rows = [old[ids].float().mean(dim=0).to(old.dtype) for ids in pieces]  # (C,) each, averaged in fp32
    if not rows:
        return old.clone()
    return torch.cat([old, torch.stack(rows)], dim=0)  # (V + N, C)


def extension_pieces(old: Tokenizer, new: Tokenizer) -> list[list[int]] | None:
    """If ``new`` is ``old`` extended -- by domain words (:func:`extend_tokenizer`), then by
    special tokens such as entity markers (:meth:`Tokenizer.with_special_tokens`) -- each new
    token's old pieces (for :func:`init_new_embeddings`); else ``None``.

    Checked by rebuilding: the new tokens, added to ``old`` again, must give exactly ``new``
    (same fingerprint), so a tokenizer that merely shares a prefix of ids is not taken for an
    extension.
    """
    if new.vocab_size <= old.vocab_size:
        return None
    if any(new.backend.id_to_token(i) != old.backend.id_to_token(i) for i in range(old.vocab_size)):
        return None
    special = set(new.special_tokens())
    tokens = [new.backend.id_to_token(i) for i in range(old.vocab_size, new.vocab_size)]
    words = [new.decode([i], skip_special_tokens=False).strip()
             for i, token in enumerate(tokens, start=old.vocab_size) if token not in special]
    markers = [token for token in tokens if token in special]
    try:
        rebuilt, pieces = extend_tokenizer(old, words) if words else (old, [])
    except (UserError, ValueError):
        return None
    rebuilt = rebuilt.with_special_tokens(markers)
    fallback = old.role_id("unk") or 0
    pieces += [old.encode(marker) or [fallback] for marker in markers]  # "<<" starts as the mean of "<" and "<"
    return pieces if rebuilt.fingerprint == new.fingerprint else None
