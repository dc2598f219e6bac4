"""Tokenizers: train one with the `tokenizers` library, or load a ``tokenizer.json``.

A :class:`Tokenizer` wraps a ``tokenizers.Tokenizer`` and knows the roles of its special
tokens (end of document, padding, mask, ...), found by their conventional spellings, so a
``tokenizer.json`` from this project or from the Hugging Face hub works the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from lmforge.cache import atomic_write_text, cache_dir
from lmforge.errors import UserError

TokenizerKind = Literal["bpe", "byte_level_bpe", "wordpiece", "unigram"]
Family = Literal["gpt", "bert", "roberta", "t5", "elmo"]

# The special tokens each family reserves, in id order (presets are data, not code paths).
SPECIAL_TOKENS: dict[str, list[str]] = {
    "gpt": ["<|endoftext|>"],
    "bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "roberta": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    "t5": ["<pad>", "</s>", "<unk>"] + [f"<extra_id_{i}>" for i in range(100)],
    "elmo": ["<pad>", "<unk>", "<s>", "</s>"],
}

# Role -> spellings, most specific first. "eos" ends a document when documents are packed.
ROLE_SPELLINGS: dict[str, tuple[str, ...]] = {
    "eos": ("<|endoftext|>", "</s>", "[SEP]"),
    "bos": ("<s>", "[CLS]", "<|endoftext|>"),
    "pad": ("<pad>", "[PAD]", "<|endoftext|>"),
    "unk": ("<unk>", "[UNK]"),
    "mask": ("<mask>", "[MASK]"),
    "cls": ("[CLS]", "<s>"),
    "sep": ("[SEP]", "</s>"),
}


@dataclass
class TokenizerSpec:
    """Which tokenizer a corpus uses: a file to load, or how to train one on the corpus.

    Args:
        path: A ``tokenizer.json`` (or an lmforge ``.ckpt``, which carries its tokenizer) to
            load. When unset, a tokenizer is trained on the training split.
        kind: Subword model to train: ``byte_level_bpe`` (GPT-2, RoBERTa), ``bpe``,
            ``wordpiece`` (BERT) or ``unigram`` (T5).
        vocab_size: Vocabulary size to train, special tokens included.
        family: Whose special tokens to reserve: gpt, bert, roberta, t5 or elmo.
        min_frequency: Minimum count for a merge/word to enter the vocabulary.
        lowercase: Lowercase text before tokenizing (uncased models).
    """

    path: str | None = None
    kind: TokenizerKind = "byte_level_bpe"
    vocab_size: int = 8192
    family: Family = "gpt"
    min_frequency: int = 2
    lowercase: bool = False

    def load_or_train(self, texts: Iterable[str], corpus_key: str | None = None) -> Tokenizer:
        """The tokenizer ``path`` names, or one trained on ``texts`` (read only then) and cached,
        see :func:`train_tokenizer_cached`: ranks other than 0 load what rank 0 trained.

        Args:
            texts: The training documents.
            corpus_key: What identifies ``texts`` (a corpus fingerprint), if anything.
        """
        if self.path:
            return Tokenizer.from_file(self.path)
        from lightning.pytorch.utilities import rank_zero_only

        return train_tokenizer_cached(texts, self, wait=rank_zero_only.rank != 0, corpus_key=corpus_key)


class Tokenizer:
    """A trained subword tokenizer with named special-token roles.

    Args:
        backend: The ``tokenizers.Tokenizer`` to wrap.
    """

    def __init__(self, backend: tokenizers.Tokenizer):
        self.backend = backend
        self._pieces_exact: bool | None = None  # whether long texts may be encoded in pieces

    # -- loading and saving -------------------------------------------------------------
    @classmethod
    def from_str(cls, json_str: str) -> Tokenizer:
        return cls(tokenizers.Tokenizer.from_str(json_str))

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        """Load a ``tokenizer.json``, the tokenizer stored inside an lmforge checkpoint, or that of a
        Hugging Face model folder or ``hf:<model id>``."""
        if str(path).startswith("hf:") or Path(path).is_dir():
            from lmforge.convert.hf import load_hf_tokenizer, resolve

            tokenizer = load_hf_tokenizer(resolve(str(path)))
            if tokenizer is None:
                raise UserError(f"'{path}' has no tokenizer.json (or BERT vocab.txt): give `data.tokenizer.path`.")
            return tokenizer
        path = Path(path)
        if not path.is_file():
            raise UserError(f"Tokenizer file '{path}' does not exist: give the path of a tokenizer.json or a checkpoint.")
        if path.suffix == ".ckpt":
            import torch

            try:
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # torch raises many types for a damaged file
                raise UserError(f"'{path}' is not a readable checkpoint ({type(err).__name__}): check the file.") from err
            json_str = ckpt.get("lmforge", {}).get("tokenizer") if isinstance(ckpt, dict) else None
            if json_str is None:
                raise UserError(f"Checkpoint '{path}' carries no tokenizer: it was not written by lmforge.")
            return cls.from_str(json_str)
        try:
            return cls(tokenizers.Tokenizer.from_file(str(path)))
        except Exception as err:  # tokenizers raises a bare Exception on malformed JSON
            raise UserError(f"'{path}' is not a valid tokenizer.json ({err}): train one with `lmforge tokenizer train`.") from err

    def to_str(self) -> str:
        return self.backend.to_str()

    def save(self, path: str | Path) -> None:
        self.backend.save(str(path))

    @property
    def fingerprint(self) -> str:
        """A short hash of the whole tokenizer: equal fingerprints mean identical tokenization."""
        return hashlib.sha256(self.to_str().encode()).hexdigest()[:16]

    # -- vocabulary -----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def role_id(self, role: str) -> int | None:
        """Id of the special token playing ``role`` (eos, bos, pad, unk, mask, cls, sep), if any."""
        for spelling in ROLE_SPELLINGS[role]:
            token_id = self.backend.token_to_id(spelling)
            if token_id is not None:
                return token_id
        return None

    @property
    def eos_id(self) -> int:
        token_id = self.role_id("eos")
        if token_id is None:
            raise UserError(
                "The tokenizer has no end-of-document token (one of "
                f"{', '.join(ROLE_SPELLINGS['eos'])}): train it with `lmforge tokenizer train`."
            )
        return token_id

    # -- encoding -------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, encoded in parallel on every core.

        A text longer than :data:`PIECE_CHARS` is cut into pieces just after a non-space
        character that a space follows, the pieces are encoded in parallel with the rest, and
        their ids joined. Pre-tokenizers split words there (byte-level, WordPiece, Metaspace),
        so the ids are those of the whole text -- checked once per tokenizer on the first long
        text, and long texts are encoded whole if the check fails. Without it, one book in a
        batch keeps a single core busy while the others wait.
        """
        pieces: list[str] = []
        counts: list[int] = []
        for text in texts:
            split = _pieces(text) if len(text) > PIECE_CHARS and self._check_pieces(text) else [text]
            pieces.extend(split)
            counts.append(len(split))
        encodings = self.backend.encode_batch(pieces, add_special_tokens=False)
        if len(pieces) == len(texts):
            return [e.ids for e in encodings]
        out: list[list[int]] = []
        i = 0
        for n in counts:
            ids = encodings[i].ids
            for e in encodings[i + 1 : i + n]:
                ids.extend(e.ids)
            out.append(ids)
            i += n
        return out

    def _check_pieces(self, text: str) -> bool:
        if self._pieces_exact is None:
            sample = text[: 4 * PIECE_CHARS]
            whole = self.backend.encode(sample, add_special_tokens=False).ids
            parts = [self.backend.encode(p, add_special_tokens=False).ids for p in _pieces(sample, PIECE_CHARS // 4)]
            self._pieces_exact = whole == [i for p in parts for i in p]
        return self._pieces_exact

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)


PIECE_CHARS = 16384  # texts longer than this are encoded in pieces (see Tokenizer.encode_batch)
_PIECE_END = re.compile(r"\S(?=\s)")


def _pieces(text: str, size: int = PIECE_CHARS) -> list[str]:
    """``text`` cut into pieces of about ``size`` characters, each ending at a non-space
    character that a space follows (a text without such a place stays whole)."""
    out: list[str] = []
    start = 0
    while len(text) - start > size:
        match = _PIECE_END.search(text, start + size)
        if match is None:
            break
        out.append(text[start : match.end()])
        start = match.end()
    out.append(text[start:])
    return out


def _build_backend(spec: TokenizerSpec) -> tuple[tokenizers.Tokenizer, trainers.Trainer]:
    special = SPECIAL_TOKENS[spec.family]
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


def _add_post_processor(tok: tokenizers.Tokenizer, family: str) -> None:
    """Encoder families wrap single texts and pairs in their special tokens when asked to."""
    if family == "bert":
        cls, sep = "[CLS]", "[SEP]"
    elif family == "roberta":
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

    Args:
        texts: The training documents.
        spec: Kind, vocabulary size and family of special tokens.
    """
    # byte-level BPE always keeps its 256-byte alphabet
    smallest = len(SPECIAL_TOKENS[spec.family]) + (256 if spec.kind == "byte_level_bpe" else 1)
    if spec.vocab_size < smallest:
        raise UserError(f"vocab_size={spec.vocab_size} is too small for a {spec.kind} {spec.family} tokenizer: use at least {smallest}.")
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
    _add_post_processor(tok, spec.family)
    # a round trip through JSON, so the tokenizer equals its saved form bit for bit
    # (Unigram scores otherwise change in the last digit on the first save/load)
    return Tokenizer.from_str(tok.to_str())


def train_tokenizer_cached(texts: Iterable[str], spec: TokenizerSpec, wait: bool = False, timeout: float = 3600,
                           corpus_key: str | None = None) -> Tokenizer:
    """Train a tokenizer, or reuse the one trained before on the same texts with the same spec.

    WordPiece and Unigram training in ``tokenizers`` is not deterministic, so every process
    of a run (DDP ranks, a resumed run) must load one saved tokenizer rather than train
    its own: the first trains and writes the cache, the others (``wait=True``) read it.

    Args:
        texts: The training documents.
        spec: Kind, vocabulary size and family of special tokens.
        wait: Wait for another process to write the cache instead of training.
        timeout: Seconds to wait.
        corpus_key: What identifies ``texts`` (a corpus fingerprint): then ``texts`` is read
            once, lazily, and only to train. Without it the cache key hashes every text.
    """
    key = hashlib.sha256(json.dumps(dataclasses.asdict(spec), sort_keys=True).encode())
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
            return Tokenizer(tokenizers.Tokenizer.from_file(str(path)))
        except Exception:  # a damaged cache entry is retrained below
            pass
    tokenizer = train_tokenizer(texts, spec)
    atomic_write_text(path, tokenizer.to_str())
    return tokenizer


def special_tokens_of(tokenizer: Tokenizer) -> list[str]:
    """The special tokens a tokenizer declares, in id order."""
    added = json.loads(tokenizer.to_str()).get("added_tokens", [])
    return [t["content"] for t in sorted(added, key=lambda t: t["id"]) if t.get("special")]
