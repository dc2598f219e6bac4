"""The tokenizer a run uses: a ``tokenizers.Tokenizer`` with named special-token roles.

It sits below both ``data/`` (which trains and applies it) and ``objectives/`` (which learn
its special ids), so neither imports the other. Roles (end of document, padding, mask, ...)
are found by their conventional spellings, so a ``tokenizer.json`` from this project or from
the Hugging Face hub works the same way.

A tokenizer is always *normalised* when it is wrapped: padding and truncation saved in a
``tokenizer.json`` (public folders often carry ``padding: Fixed 128`` and ``truncation: 128``)
are removed, so that encoding a text always gives all of its tokens and never a padding id.
Padding and cutting are done by whoever builds a batch, knowing its length.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import tokenizers

from lmforge.errors import UserError

# Role -> spellings, most specific first. "eos" ends a document when documents are packed.
ROLE_SPELLINGS: dict[str, tuple[str, ...]] = {
    "eos": ("<|endoftext|>", "</s>", "<|end_of_text|>", "[SEP]"),  # <|end_of_text|>: Llama 3
    "bos": ("<s>", "[CLS]", "<|begin_of_text|>", "<|endoftext|>"),
    "pad": ("<pad>", "[PAD]", "<|endoftext|>"),
    "unk": ("<unk>", "[UNK]"),
    "mask": ("<mask>", "[MASK]"),
    "cls": ("[CLS]", "<s>"),
    "sep": ("[SEP]", "</s>"),
}

PIECE_CHARS = 16384  # texts longer than this are encoded in pieces (see Tokenizer.encode_batch)
_PIECE_END = re.compile(r"\S(?=\s)")
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # a byte-fallback token (SentencePiece, Llama 2)


class Tokenizer:
    """A subword tokenizer with named special-token roles, normalised (no saved padding or truncation).

    Args:
        backend: The ``tokenizers.Tokenizer`` to wrap; its padding and truncation are switched off.
    """

    def __init__(self, backend: tokenizers.Tokenizer):
        backend.no_padding()
        backend.no_truncation()
        self.backend = backend
        self._pieces_exact: bool | None = None  # whether long texts may be encoded in pieces
        self._token_bytes: list[int] | None = None

    # -- loading and saving -------------------------------------------------------------
    @classmethod
    def from_str(cls, json_str: str) -> Tokenizer:
        return cls(tokenizers.Tokenizer.from_str(json_str))

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        """Load a ``tokenizer.json`` (checkpoints and model folders are read by :mod:`lmforge.start`)."""
        path = Path(path)
        if path.is_dir() or path.suffix == ".ckpt" or str(path).startswith("hf:"):
            raise UserError(f"'{path}' is not a tokenizer.json: a checkpoint's or model folder's tokenizer is read "
                            "with lmforge.start.load_tokenizer (the lmforge command does this for you).")
        if not path.is_file():
            raise UserError(f"Tokenizer file '{path}' does not exist: give the path of a tokenizer.json or a checkpoint.")
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
        """Id of the special token playing ``role`` (eos, bos, pad, unk, mask, cls, sep), if any: a
        spelling the tokenizer declares special first, as a large byte-level vocabulary (Llama 3's)
        may also hold another role's spelling (``</s>``) as ordinary text."""
        present = [s for s in ROLE_SPELLINGS[role] if self.backend.token_to_id(s) is not None]
        if len(present) > 1:  # the usual case has one; only a choice needs the (slower) list of special tokens
            special = {t.content for t in self.backend.get_added_tokens_decoder().values() if t.special}
            present = [s for s in present if s in special] or present
        return self.backend.token_to_id(present[0]) if present else None

    def require(self, roles: Iterable[str], user: str, hint: str) -> dict[str, int]:
        """The ids of ``roles``; one clear error naming the missing ones and their spellings if any is absent.

        Args:
            roles: The roles needed.
            user: What needs them, for the message (``masked LM``).
            hint: What to do instead, for the message.
        """
        ids = {role: self.role_id(role) for role in roles}
        missing = [role for role, token_id in ids.items() if token_id is None]
        if missing:
            spelled = "; ".join(f"{role}: one of {' '.join(ROLE_SPELLINGS[role])}" for role in missing)
            raise UserError(f"The tokenizer has no {', '.join(missing)} token ({spelled}), which {user} needs: {hint}")
        return ids  # type: ignore[return-value]

    @property
    def eos_id(self) -> int:
        return self.require(["eos"], "packing documents", "train it with `lmforge tokenizer train`.")["eos"]

    def with_special_tokens(self, tokens: Iterable[str]) -> Tokenizer:
        """This tokenizer with ``tokens`` added as special tokens (e.g. entity markers ``<<``,
        ``[[``): each is matched whole in the raw text and never split. Tokens it already has
        are not added again, so adding twice changes nothing. The new ids follow the last one.

        Args:
            tokens: The tokens to add, in the order of their new ids.
        """
        missing = [t for t in dict.fromkeys(tokens) if self.backend.token_to_id(t) is None]
        if not missing:
            return self
        backend = tokenizers.Tokenizer.from_str(self.to_str())
        backend.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False) for t in missing])
        return Tokenizer.from_str(backend.to_str())

    def special_tokens(self) -> list[str]:
        """The special tokens the tokenizer declares, in id order."""
        added = json.loads(self.to_str()).get("added_tokens", [])
        return [t["content"] for t in sorted(added, key=lambda t: t["id"]) if t.get("special")]

    def token_bytes(self) -> list[int]:
        """How many UTF-8 bytes of text each token id stands for (0 for special tokens), the
        denominator of bits per byte. Read from how the tokenizer spells text in its tokens:

        * byte-level BPE (GPT-2, Llama 3; a ``ByteLevel`` decoder): each character is one byte;
        * Metaspace / SentencePiece (Llama 2, T5, lmforge's ``bpe`` and ``unigram``): ``▁`` is
          one space and a byte-fallback token ``<0xAB>`` one byte. Such tokenizers prepend a
          ``▁`` to each text (Metaspace: unless it starts with a space), counted as one byte: one
          per document, standing for the gap between documents;
        * WordPiece (BERT): a ``##`` piece counts its text without the ``##``, a word-start token
          its text. Spaces between words are in no token and not counted.

        Other characters count their UTF-8 length. Bytes are those of the *normalised* text
        (after NFKC or lowercasing, where the tokenizer does that).
        """
        if self._token_bytes is None:
            spec = json.loads(self.to_str())
            length = _byte_length(spec)
            special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
            vocab = self.backend.get_vocab(with_added_tokens=True)
            table = [0] * max(self.vocab_size, max(vocab.values(), default=-1) + 1)
            for token, token_id in vocab.items():
                table[token_id] = 0 if token_id in special else length(token)
            self._token_bytes = table
        return list(self._token_bytes)

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


def byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE spells each byte as one printable character (GPT-2's table): that character -> the byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    return {chr(b): b for b in printable} | {chr(256 + n): b for n, b in enumerate(shifted)}


def _has_type(node: Any, kind: str) -> bool:
    """Whether a component of a tokenizer.json (a decoder, a ``Sequence`` of them ...) is or holds ``kind``."""
    if isinstance(node, dict):
        return node.get("type") == kind or any(_has_type(v, kind) for v in node.values())
    return isinstance(node, list) and any(_has_type(v, kind) for v in node)


def _byte_length(spec: dict[str, Any]) -> Callable[[str], int]:
    """The number of text bytes a token of the tokenizer.json ``spec`` stands for, as its decoder reads it."""
    model = spec["model"]
    if _has_type(spec.get("decoder"), "ByteLevel") or _has_type(spec.get("pre_tokenizer"), "ByteLevel"):
        alphabet = byte_level_alphabet()
        # the decoder reads a token with a character outside the alphabet (an added token) as its UTF-8
        return lambda token: len(token) if all(c in alphabet for c in token) else len(token.encode())
    if model["type"] == "WordPiece":
        prefix = model.get("continuing_subword_prefix") or "##"
        return lambda token: len(token.removeprefix(prefix).encode())
    fallback = bool(model.get("byte_fallback"))
    # markers of a BPE trained with them, not text
    prefix, suffix = model.get("continuing_subword_prefix") or "", model.get("end_of_word_suffix") or ""

    def length(token: str) -> int:
        if fallback and _BYTE_TOKEN.fullmatch(token):
            return 1
        return len(token.removeprefix(prefix).removesuffix(suffix).replace("▁", " ").encode())

    return length


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
