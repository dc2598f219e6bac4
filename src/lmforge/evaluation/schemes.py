"""Tagging schemes of named-entity files: BIO (IOB2), IOB1 and IO, read as BIO. Shared by the
tagged data (which reads tagged files) and the entity scoring (which scores entities)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from lmforge.errors import UserError

Scheme = Literal["BIO", "IOB1", "IO"]


def split_tag(tag: str) -> tuple[str, str]:
    """``("B", "Gene")`` of ``B-Gene``; ``("O", "")`` of ``O``; a tag without a prefix (``Gene``)
    reads as ``I-Gene`` (conlleval does the same)."""
    if tag == "O" or not tag:
        return "O", ""
    if len(tag) > 1 and tag[1] in "-_" and tag[0] in "BI":
        return tag[0], tag[2:]
    return "I", tag


def detect_scheme(tag_sequences: Iterable[Sequence[str]]) -> Scheme:
    """The scheme of tagged sentences: ``IO`` when no tag starts with ``B-``; ``IOB1`` when every
    ``B-X`` directly follows an ``I-X`` or ``B-X`` of the same type (B- only separates two
    adjacent entities); ``BIO`` otherwise."""
    any_begin, every_begin_separates = False, True
    for tags in tag_sequences:
        previous = ("O", "")
        for tag in tags:
            prefix, kind = split_tag(tag)
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

    IO: consecutive ``I-X`` words are one entity. IOB1: an entity opens with ``I-X`` unless it
    directly follows another entity of the same type, where ``B-X`` marks the new one. Both come
    down to: an ``I-X`` not preceded by a word of type X opens an entity; ``B-X`` stays.

    Args:
        tags: The sentence's tags.
        scheme: ``BIO``, ``IOB1`` or ``IO``.
    """
    if scheme not in ("BIO", "IOB1", "IO"):
        raise UserError(f"scheme={scheme!r}: use BIO, IOB1, IO (or auto).")
    out: list[str] = []
    previous = ""
    for tag in tags:
        prefix, kind = split_tag(tag)
        if prefix == "O":
            out.append("O")
        elif scheme != "BIO" and prefix == "I" and previous != kind:
            out.append(f"B-{kind}")
        else:
            out.append(f"{'B' if prefix == 'B' else 'I'}-{kind}")
        previous = kind
    return out


def entity_types(labels: Iterable[str]) -> list[str]:
    """The sorted entity types named by BIO labels (``B-Gene``, ``I-Gene`` -> ``Gene``)."""
    return sorted({split_tag(t)[1] for t in labels if split_tag(t)[0] != "O"})
