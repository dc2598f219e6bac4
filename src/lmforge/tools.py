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
    docs = list(corpus.documents())
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


def prepare_command(argv: list[str]) -> None:
    """``lmforge prepare -c config.yaml [--data.* ...]``: tokenize a corpus into token shards now.

    It reads the ``data`` section of the same configs ``lmforge fit`` takes (the other
    sections are accepted and ignored), so a later ``fit`` with those configs finds the
    shards ready. See :meth:`lmforge.data.text.CorpusDataModule.prepare`.
    """
    import json

    import yaml
    from jsonargparse import ArgumentParser

    from lmforge.data.text import CorpusDataModule

    parser = ArgumentParser(prog="lmforge prepare", description=prepare_command.__doc__.splitlines()[0],
                            exit_on_error=False)
    parser.add_argument("-c", "--config", action="append", default=[],
                        help="Config files as for `lmforge fit`; their `data` sections compose left to right.")
    parser.add_subclass_arguments(CorpusDataModule, "data", required=True, help="The corpus to prepare.")
    args: list[str] = []
    rest = list(argv)
    while rest:  # a config's other sections (model, trainer, ...) are for `fit`: keep only `data`
        arg = rest.pop(0)
        if arg in ("-c", "--config") and rest or arg.startswith("--config="):
            path = Path(rest.pop(0) if "=" not in arg else arg.split("=", 1)[1])
            if not path.is_file():
                raise UserError(f"Config file '{path}' does not exist: check the path.")
            section = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("data")
            if section is not None:
                args += ["--data", json.dumps(section)]
        else:
            args.append(arg)
    try:
        config = parser.parse_args(args)
    except Exception as err:  # jsonargparse's ArgumentError: a typo'd key, a bad value
        lines = [line.strip(" -") for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if "not accepted" in line or "Expected" in line), lines[0])
        raise UserError(f"data: {reason} (see `lmforge prepare --help`).") from err
    corpus = parser.instantiate_classes(config).data
    if not corpus.uses_shards:
        raise UserError(f"{corpus.name} is encoded in memory when training starts: there is nothing to prepare.")
    if corpus.streaming:
        raise UserError(f"{corpus.name} is configured with `streaming: true`, which tokenizes during training and "
                        "keeps no shards: set `--data.streaming false` to prepare it.")
    prepared = corpus.prepare()
    print(f"Prepared {corpus.name} in {prepared.folder}: {prepared.num_tokens('train'):,} train and "
          f"{prepared.num_tokens('val'):,} val tokens ({prepared.meta['dtype']}).")
