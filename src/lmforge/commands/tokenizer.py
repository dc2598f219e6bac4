"""``lmforge tokenizer train|coverage``: train a tokenizer on a corpus, or measure and extend one."""

from __future__ import annotations

from pathlib import Path

from jsonargparse import CLI

from lmforge.cache import atomic_write_text
from lmforge.commands.messages import LmforgeParser
from lmforge.data.documents import TxtSplit
from lmforge.data.corpora import BundledCorpus, TextCorpus
from lmforge.data.source import DataSource
from lmforge.data.tokenizer import Specials, TokenizerKind, TokenizerSpec, train_tokenizer
from lmforge.errors import UserError
from lmforge.start import load_tokenizer


def _corpus(source: DataSource, txt_split: TxtSplit, max_documents: int | None) -> TextCorpus | BundledCorpus:
    """The corpus the tool subcommands read: local files, a hub dataset, else the bundled corpus."""
    if source.is_local or source.hf_dataset:
        return TextCorpus(source=source, txt_split=txt_split, max_documents=max_documents)
    return BundledCorpus(max_documents=max_documents)


def train(
    out: str = "tokenizer.json",
    source: DataSource = DataSource(),
    txt_split: TxtSplit = "file",
    max_documents: int | None = None,
    kind: TokenizerKind = "byte_level_bpe",
    vocab_size: int = 8192,
    specials: Specials = "gpt",
    min_frequency: int = 2,
    lowercase: bool = False,
    overwrite: bool = False,
) -> None:
    """Train a tokenizer on a corpus and write its tokenizer.json.

    With neither ``source.paths`` nor ``source.hf_dataset``, it trains on the bundled corpus.

    Args:
        out: Where to write the tokenizer.json.
        source: Local files, folders or globs (.jsonl, .json, .parquet, .csv, or plain UTF-8 text
            of any other extension such as .txt or WikiText's .raw; .gz allowed), or a hub dataset.
        txt_split: A plain-text file is one document (``file``) or one per blank-line block.
        max_documents: Train on at most this many documents.
        kind: byte_level_bpe, bpe, wordpiece or unigram.
        vocab_size: Vocabulary size, special tokens included.
        specials: Which special tokens to reserve: gpt (also for a Llama), bert, roberta, t5 or elmo.
        min_frequency: Minimum count for a merge/word to enter the vocabulary.
        lowercase: Lowercase text first (uncased models).
        overwrite: Replace ``out`` if it exists.
    """
    target = Path(out)
    if target.exists() and not overwrite:
        raise UserError(f"'{target}' already exists: choose another --out or pass --overwrite true.")
    corpus = _corpus(source, txt_split, max_documents)
    docs = list(corpus.documents())
    if not docs:
        raise UserError(f"Corpus {corpus.name} has no text to train a tokenizer on.")
    spec = TokenizerSpec(kind=kind, vocab_size=vocab_size, specials=specials, min_frequency=min_frequency, lowercase=lowercase)
    tokenizer = train_tokenizer(docs, spec)
    atomic_write_text(target, tokenizer.to_str())  # never a half-written tokenizer.json
    print(
        f"Wrote {target}: {kind}, {tokenizer.vocab_size} tokens, trained on {len(docs)} documents of {corpus.name}; "
        f"special tokens {' '.join(tokenizer.special_tokens())}"
    )


def coverage(
    *,
    tokenizer: str,
    source: DataSource = DataSource(),
    txt_split: TxtSplit = "file",
    max_documents: int | None = None,
    top: int = 20,
    min_count: int = 2,
    add: int = 0,
    out: str | None = None,
    overwrite: bool = False,
) -> None:
    """Measure how finely a tokenizer cuts a corpus's words, and optionally add the domain's words to it.

    It prints the pieces per word, the share of words split in several pieces and the most
    fragmented frequent words. With ``add``, the words that save the most tokens become
    new tokens (ids after the old ones) in a tokenizer.json written to ``out``; give the
    model one new embedding row per word (``lmforge.data.vocab.init_new_embeddings``).
    With neither ``source.paths`` nor ``source.hf_dataset``, it measures the bundled corpus.

    Args:
        tokenizer: The tokenizer.json, or an lmforge .ckpt that carries its tokenizer.
        source: Local files, folders or globs (.jsonl, .json, .parquet, .csv, or plain UTF-8 text
            of any other extension such as .txt or WikiText's .raw; .gz allowed), or a hub dataset.
        txt_split: A plain-text file is one document (``file``) or one per blank-line block.
        max_documents: Read at most this many documents.
        top: How many of the most fragmented words to list.
        min_count: Occurrences a word needs to be listed (and added).
        add: Add this many of the most fragmented words to the vocabulary (0: add none).
        out: Where to write the extended tokenizer.json (needed with ``add``).
        overwrite: Replace ``out`` if it exists.
    """
    from lmforge.data.vocab import coverage as measure, domain_words, extend_tokenizer, format_report

    if top < 0 or min_count < 1 or add < 0:
        raise UserError(f"top={top}, min_count={min_count}, add={add}: use top >= 0, min_count >= 1 and add >= 0.")
    target = Path(out) if out else None
    if add and target is None:
        raise UserError(f"--add {add} writes a new tokenizer.json: say where with --out.")
    if target is not None and target.exists() and not overwrite:
        raise UserError(f"'{target}' already exists: choose another --out or pass --overwrite true.")
    tok = load_tokenizer(tokenizer)
    corpus = _corpus(source, txt_split, max_documents)
    report = measure(tok, corpus.documents(), top=max(top, add), min_count=min_count)
    if not report.words:
        raise UserError(f"Corpus {corpus.name} has no words to measure.")
    print(f"{corpus.name}, tokenizer {tokenizer}:")
    print(format_report(report, rows=top))
    if not add:
        return
    words = domain_words(report, add)
    if not words:
        raise UserError(f"No word occurs {min_count}+ times in several pieces, so there is nothing to add: "
                        "lower --min_count or measure a larger corpus.")
    extended, _ = extend_tokenizer(tok, words)
    assert target is not None
    atomic_write_text(target, extended.to_str())  # never a half-written tokenizer.json
    fewer = f" (only {len(words)} words qualify)" if len(words) < add else ""
    print(f"\nWrote {target}: added {len(words)} words{fewer} as ids {tok.vocab_size}..{extended.vocab_size - 1}, "
          f"{extended.vocab_size} tokens in all: {' '.join(words)}")


def tokenizer(argv: list[str]) -> None:
    """``lmforge tokenizer <train|coverage> ...``"""
    CLI({"train": train, "coverage": coverage}, args=argv, prog="lmforge tokenizer", parser_class=LmforgeParser,
        description="Train a tokenizer on a corpus (train), or measure and extend one (coverage).")
