"""Tool subcommands beside fit/validate/test/predict: ``lmforge tokenizer train``."""

from __future__ import annotations

from pathlib import Path

from jsonargparse import CLI

from lmforge.data.documents import TxtSplit
from lmforge.data.text import BundledCorpus, TextCorpus
from lmforge.data.tokenizer import Family, TokenizerKind, TokenizerSpec, special_tokens_of, train_tokenizer
from lmforge.errors import UserError


def train(
    out: str = "tokenizer.json",
    paths: str | list[str] | None = None,
    hf_dataset: str | None = None,
    hf_config: str | None = None,
    hf_split: str = "train",
    text_field: str = "text",
    txt_split: TxtSplit = "file",
    max_documents: int | None = None,
    kind: TokenizerKind = "byte_level_bpe",
    vocab_size: int = 8192,
    family: Family = "gpt",
    min_frequency: int = 2,
    lowercase: bool = False,
    overwrite: bool = False,
) -> None:
    """Train a tokenizer on a corpus and write its tokenizer.json.

    With neither ``paths`` nor ``hf_dataset``, it trains on the bundled corpus.

    Args:
        out: Where to write the tokenizer.json.
        paths: Local text files, folders or globs (.txt, .jsonl, .json, .parquet, .csv, .gz).
        hf_dataset: A Hugging Face dataset name instead of local files.
        hf_config: The dataset's configuration.
        hf_split: The dataset's split.
        text_field: Column holding the text.
        txt_split: A .txt file is one document (``file``) or one per blank-line block.
        max_documents: Train on at most this many documents.
        kind: byte_level_bpe, bpe, wordpiece or unigram.
        vocab_size: Vocabulary size, special tokens included.
        family: Whose special tokens to reserve: gpt, bert, roberta, t5 or elmo.
        min_frequency: Minimum count for a merge/word to enter the vocabulary.
        lowercase: Lowercase text first (uncased models).
        overwrite: Replace ``out`` if it exists.
    """
    target = Path(out)
    if target.exists() and not overwrite:
        raise UserError(f"'{target}' already exists: choose another --out or pass --overwrite true.")
    if paths or hf_dataset:
        corpus = TextCorpus(paths=paths, hf_dataset=hf_dataset, hf_config=hf_config, hf_split=hf_split,
                            text_field=text_field, txt_split=txt_split, max_documents=max_documents)
    else:
        corpus = BundledCorpus(max_documents=max_documents)
    docs = corpus.load_documents()[:max_documents]
    if not docs:
        raise UserError(f"Corpus {corpus.name} has no text to train a tokenizer on.")
    spec = TokenizerSpec(kind=kind, vocab_size=vocab_size, family=family, min_frequency=min_frequency, lowercase=lowercase)
    tokenizer = train_tokenizer(docs, spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tokenizer.save(tmp)
    tmp.replace(target)  # never leave a half-written tokenizer.json
    print(
        f"Wrote {target}: {kind}, {tokenizer.vocab_size} tokens, trained on {len(docs)} documents of {corpus.name}; "
        f"special tokens {' '.join(special_tokens_of(tokenizer))}"
    )


def tokenizer_command(argv: list[str]) -> None:
    """``lmforge tokenizer <train> ...``"""
    CLI({"train": train}, args=argv, prog="lmforge tokenizer")
