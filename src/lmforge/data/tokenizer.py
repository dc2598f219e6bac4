"""Which tokenizer a corpus uses (:class:`TokenizerSpec`), and training one with the `tokenizers` library.

The tokenizer type itself, :class:`lmforge.tokenizer.Tokenizer`, lives below ``data/`` and
``objectives/``, so that neither imports the other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from lmforge.cache import atomic_write_text, cache_dir
from lmforge.errors import UserError, UserInputWarning
from lmforge.tokenizer import ROLE_SPELLINGS, Tokenizer

TokenizerKind = Literal["bpe", "byte_level_bpe", "wordpiece", "unigram"]
Specials = Literal["gpt", "bert", "roberta", "t5", "elmo"]

# The special tokens of each set (named after the family that reserves them), in id order (presets are data, not code paths).
SPECIAL_TOKENS: dict[str, list[str]] = {
    "gpt": ["<|endoftext|>"],
    "bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "roberta": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    "t5": ["<pad>", "</s>", "<unk>"] + [f"<extra_id_{i}>" for i in range(100)],
    "elmo": ["<pad>", "<unk>", "<s>", "</s>"],
}

@dataclass
class TokenizerSpec:
    """Which tokenizer a corpus uses: a file to load, or how to train one on the corpus.

    Args:
        path: A ``tokenizer.json`` to load, or an lmforge ``.ckpt``, a Hugging Face model folder or
            ``hf:<id>`` whose tokenizer the lmforge command reads. When unset, a tokenizer is
            trained on the training split (or comes with ``init_from`` weights).
        kind: Subword model to train: ``byte_level_bpe`` (GPT-2, RoBERTa), ``bpe``,
            ``wordpiece`` (BERT) or ``unigram`` (T5).
        vocab_size: Vocabulary size to train, special tokens included.
        specials: Which special tokens to reserve, named after the family that uses them: gpt,
            bert, roberta, t5 or elmo (a Llama uses ``gpt``).
        min_frequency: Minimum count for a merge/word to enter the vocabulary.
        lowercase: Lowercase text before tokenizing (uncased models).
    """

    path: str | None = None
    kind: TokenizerKind = "byte_level_bpe"
    vocab_size: int = 8192
    specials: Specials = "gpt"
    min_frequency: int = 2
    lowercase: bool = False

    def load_or_train(self, texts: Iterable[str], corpus_key: str | None = None, name: str = "the corpus") -> Tokenizer:
        """The tokenizer ``path`` names, or one trained on ``texts`` (read only then) and cached,
        see :func:`train_tokenizer_cached`: ranks other than 0 load what rank 0 trained.

        Args:
            texts: The training documents.
            corpus_key: What identifies ``texts`` (a corpus fingerprint), if anything.
            name: The corpus, for messages.
        """
        if self.path:
            return Tokenizer.from_file(self.path)
        from lightning.pytorch.utilities import rank_zero_only

        return train_tokenizer_cached(texts, self, wait=rank_zero_only.rank != 0, corpus_key=corpus_key, name=name)


def _build_backend(spec: TokenizerSpec) -> tuple[tokenizers.Tokenizer, trainers.Trainer]:
    special = SPECIAL_TOKENS[spec.specials]
    unk = next((t for t in ROLE_SPELLINGS["unk"] if t in special), None)
    norm = [normalizers.NFKC()] + ([normalizers.Lowercase()] if spec.lowercase else [])
    if spec.kind == "byte_level_bpe":
        # bytes never fall outside the alphabet, so no unknown token is needed
        tok = tokenizers.Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        if spec.lowercase:
            tok.normalizer = normalizers.Lowercase()
        trainer = trainers.BpeTrainer(
            vocab_size=spec.vocab_size,
            min_frequency=spec.min_frequency,
            special_tokens=special,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    elif spec.kind == "bpe":
        tok = tokenizers.Tokenizer(models.BPE(unk_token=unk))
        tok.normalizer = normalizers.Sequence(norm)
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(
            vocab_size=spec.vocab_size, min_frequency=spec.min_frequency, special_tokens=special, show_progress=False
        )
    elif spec.kind == "wordpiece":
        tok = tokenizers.Tokenizer(models.WordPiece(unk_token=unk or "[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=spec.lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=spec.vocab_size,
            min_frequency=spec.min_frequency,
            special_tokens=special if unk else special + ["[UNK]"],
            show_progress=False,
        )
    elif spec.kind == "unigram":
        tok = tokenizers.Tokenizer(models.Unigram())
        tok.normalizer = normalizers.Sequence(norm)
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=spec.vocab_size, special_tokens=special, unk_token=unk, show_progress=False
        )
    else:
        raise UserError(f"Unknown tokenizer kind '{spec.kind}': use bpe, byte_level_bpe, wordpiece or unigram.")
    return tok, trainer


def _add_post_processor(tok: tokenizers.Tokenizer, specials: str) -> None:
    """Encoder families wrap single texts and pairs in their special tokens when asked to."""
    if specials == "bert":
        cls, sep = "[CLS]", "[SEP]"
    elif specials == "roberta":
        cls, sep = "<s>", "</s>"
    else:
        return
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
    )


def train_tokenizer(texts: Iterable[str], spec: TokenizerSpec) -> Tokenizer:
    """Train a tokenizer on ``texts`` as ``spec`` says.

    A corpus too small for ``spec.vocab_size`` tokens gives fewer: a :class:`UserInputWarning`
    then names both sizes and what to do (every trained tokenizer comes through here: the
    ``lmforge tokenizer train`` command's and a run's).

    Args:
        texts: The training documents.
        spec: Kind, vocabulary size and set of special tokens.
    """
    # byte-level BPE always keeps its 256-byte alphabet
    smallest = len(SPECIAL_TOKENS[spec.specials]) + (256 if spec.kind == "byte_level_bpe" else 1)
    if spec.vocab_size < smallest:
        raise UserError(f"vocab_size={spec.vocab_size} is too small for a {spec.kind} {spec.specials} tokenizer: use at least {smallest}.")
    tok, trainer = _build_backend(spec)

    def batches() -> Iterator[list[str]]:
        batch: list[str] = []
        for text in texts:
            batch.append(text)
            if len(batch) == 1000:
                yield batch
                batch = []
        if batch:
            yield batch

    tok.train_from_iterator(batches(), trainer=trainer)
    _add_post_processor(tok, spec.specials)
    # a round trip through JSON, so the tokenizer equals its saved form bit for bit
    # (Unigram scores otherwise change in the last digit on the first save/load)
    tokenizer = Tokenizer.from_str(tok.to_str())
    if tokenizer.vocab_size < spec.vocab_size:
        warnings.warn(_shortfall(spec, tokenizer.vocab_size), UserInputWarning, stacklevel=2)
    return tokenizer


def _shortfall(spec: TokenizerSpec, obtained: int) -> str:
    """The sentence for a trained vocabulary smaller than asked for.

    Args:
        spec: What was asked for.
        obtained: The trained tokenizer's vocabulary size.
    """
    why, remedy = "", "add text"
    if spec.kind != "unigram" and spec.min_frequency > 1:  # Unigram training has no min_frequency
        why = f" (a merge must occur min_frequency={spec.min_frequency} times or more)"
        remedy = "add text, lower min_frequency"
    return (f"The {spec.kind} tokenizer has {obtained} tokens, not the vocab_size={spec.vocab_size} asked for: the "
            f"corpus is too small for that many{why}; {remedy}, or ask for vocab_size={obtained}.")


def train_tokenizer_cached(texts: Iterable[str], spec: TokenizerSpec, wait: bool = False, timeout: float = 3600,
                           corpus_key: str | None = None, name: str = "the corpus") -> Tokenizer:
    """Train a tokenizer, or reuse the one trained before on the same texts with the same spec.

    WordPiece and Unigram training in ``tokenizers`` is not deterministic, so every process
    of a run (DDP ranks, a resumed run) must load one saved tokenizer rather than train
    its own: the first trains and writes the cache, the others (``wait=True``) read it.

    Args:
        texts: The training documents.
        spec: Kind, vocabulary size and set of special tokens.
        wait: Wait for another process to write the cache instead of training.
        timeout: Seconds to wait.
        corpus_key: What identifies ``texts`` (a corpus fingerprint): then ``texts`` is read
            once, lazily, and only to train. Without it the cache key hashes every text.
        name: The corpus, for the message that says whether the tokenizer is trained now or reused.
    """
    from lightning.pytorch.utilities import rank_zero_info

    fields = dataclasses.asdict(spec)
    fields["family"] = fields.pop("specials")  # the spec's name before the rename: tokenizers cached then stay found
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
    if corpus_key is not None:
        key.update(corpus_key.encode())
    else:
        texts = list(texts)
        for text in texts:
            key.update(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
    path = cache_dir() / "tokenizers" / f"{key.hexdigest()[:24]}.json"
    deadline = time.monotonic() + timeout
    while wait and not path.is_file():
        if time.monotonic() > deadline:
            raise UserError(
                f"Waited {timeout:.0f} s for rank 0 to train the tokenizer into '{path}': train it first with "
                "`lmforge tokenizer train` and set `data.tokenizer.path` (needed when nodes share no file system)."
            )
        time.sleep(1)
    if path.is_file():
        try:
            tokenizer = Tokenizer(tokenizers.Tokenizer.from_file(str(path)))
        except Exception:  # a damaged cache entry is retrained below
            pass
        else:
            rank_zero_info(f"Reusing the {spec.kind} tokenizer ({tokenizer.vocab_size} tokens) trained on {name} "
                           f"before: {path}")
            return tokenizer
    rank_zero_info(f"Training a {spec.kind} tokenizer ({spec.vocab_size} tokens) on {name} ...")
    tokenizer = train_tokenizer(texts, spec)
    atomic_write_text(path, tokenizer.to_str())
    return tokenizer
