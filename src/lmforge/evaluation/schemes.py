"""Tagging schemes of named-entity files: BIO (IOB2), IOB1, IO, BIOES (IOBES) and BILOU, read as
BIO. Shared by the tagged data (which reads tagged files) and the entity scoring (which scores
entities)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from lmforge.errors import UserError

Scheme = Literal["BIO", "IOB1", "IO", "BIOES", "IOBES", "BILOU"]

# Each scheme's tag prefixes and the BIO prefix each becomes: the one table every reading uses.
# A single-word entity (S-/U-) opens like B-; an entity's last word (E-/L-) continues like I-.
PREFIXES: dict[str, dict[str, str]] = {
    "BIO": {"B": "B", "I": "I"},
    "IOB1": {"B": "B", "I": "I"},
    "IO": {"B": "B", "I": "I"},
    "BIOES": {"B": "B", "I": "I", "E": "I", "S": "B"},
    "IOBES": {"B": "B", "I": "I", "E": "I", "S": "B"},
    "BILOU": {"B": "B", "I": "I", "L": "I", "U": "B"},
}
# Schemes whose files mark an entity's first word only where it touches one of the same type, so
# an I-X after a word of another type opens an entity.
OPENS_ON_I = ("IOB1", "IO")
_ALL_PREFIXES = "".join(dict.fromkeys(p for table in PREFIXES.values() for p in table))  # "BIESLU"


def split_tag(tag: str, prefixes: str = "BI") -> tuple[str, str]:
    """``("B", "Gene")`` of ``B-Gene``; ``("O", "")`` of ``O``; a tag without one of ``prefixes``
    (``Gene``) reads as ``I-Gene`` (conlleval does the same).

    Args:
        tag: One tag.
        prefixes: The prefix letters to recognise (a scheme's: ``"BIES"`` for BIOES).
    """
    if tag == "O" or not tag:
        return "O", ""
    if len(tag) > 1 and tag[1] in "-_" and tag[0] in prefixes:
        return tag[0], tag[2:]
    return "I", tag


def _prefixes(scheme: str) -> dict[str, str]:
    if scheme not in PREFIXES:
        raise UserError(f"scheme={scheme!r}: use {', '.join(PREFIXES)} (or auto).")
    return PREFIXES[scheme]


def foreign_tag(tags: Sequence[str], scheme: str) -> int | None:
    """The index of the first tag whose prefix belongs to another scheme than ``scheme``
    (``S-PER`` under BIO, ``U-PER`` under BIOES), or ``None`` when every tag fits.

    Args:
        tags: The sentence's tags.
        scheme: The declared scheme.
    """
    own = _prefixes(scheme)
    for i, tag in enumerate(tags):
        prefix, _ = split_tag(tag, _ALL_PREFIXES)
        if prefix not in own and prefix != "O":
            return i
    return None


def mismatch(tag: str, scheme: str) -> str:
    """Why ``tag`` does not fit ``scheme`` and the scheme that reads it, e.g. ``tag 'S-PER' is not
    a BIO tag: the file looks like BIOES; set data.scheme: BIOES``.

    Args:
        tag: The tag that does not fit.
        scheme: The declared (or detected) scheme.
    """
    fits = next(s for s, table in PREFIXES.items() if tag[:1] in table)
    article = "an" if scheme[:1] in "AEIOU" else "a"
    return f"tag {tag!r} is not {article} {scheme} tag: the file looks like {fits}; set data.scheme: {fits}"


def detect_scheme(tag_sequences: Iterable[Sequence[str]]) -> Scheme:
    """The scheme of tagged sentences: the scheme of the first prefix outside ``B-``/``I-``
    (``E-``/``S-``: BIOES, ``L-``/``U-``: BILOU); otherwise ``IO`` when no tag starts with
    ``B-``; ``IOB1`` when every ``B-X`` directly follows an ``I-X`` or ``B-X`` of the same type
    (B- only separates two adjacent entities); ``BIO`` otherwise."""
    any_begin, every_begin_separates = False, True
    for tags in tag_sequences:
        previous = ("O", "")
        for tag in tags:
            prefix, kind = split_tag(tag, _ALL_PREFIXES)
            if prefix not in "BIO":
                return next(s for s, table in PREFIXES.items() if prefix in table)  # type: ignore[return-value]
            if prefix == "B":
                any_begin = True
                if previous[0] == "O" or previous[1] != kind:
                    every_begin_separates = False
            previous = (prefix, kind)
    if not any_begin:
        return "IO"
    return "IOB1" if every_begin_separates else "BIO"


def to_bio(tags: Sequence[str], scheme: Scheme) -> list[str]:
    """``tags`` of one sentence in BIO (IOB2): every entity opens with ``B-``.

    Each prefix becomes its BIO prefix (:data:`PREFIXES`: S-/U- open like B-, E-/L- continue
    like I-). IO and IOB1 also open an entity at an ``I-X`` not preceded by a word of type X (IO
    has no B-; IOB1 writes B-X only between two adjacent entities of type X).

    Args:
        tags: The sentence's tags.
        scheme: ``BIO``, ``IOB1``, ``IO``, ``BIOES`` (or ``IOBES``) or ``BILOU``.

    Raises:
        UserError: A tag's prefix belongs to another scheme (``S-PER`` under BIO).
    """
    table = _prefixes(scheme)
    bad = foreign_tag(tags, scheme)
    if bad is not None:
        raise UserError(f"{mismatch(tags[bad], scheme)}.")
    out: list[str] = []
    previous = ""
    for tag in tags:
        prefix, kind = split_tag(tag, "".join(table))
        if prefix == "O":
            out.append("O")
        elif scheme in OPENS_ON_I and prefix == "I" and previous != kind:
            out.append(f"B-{kind}")
        else:
            out.append(f"{table[prefix]}-{kind}")
        previous = kind
    return out


def entity_types(labels: Iterable[str]) -> list[str]:
    """The sorted entity types named by BIO labels (``B-Gene``, ``I-Gene`` -> ``Gene``)."""
    return sorted({split_tag(t)[1] for t in labels if split_tag(t)[0] != "O"})
