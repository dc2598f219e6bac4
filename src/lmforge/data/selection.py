"""Which documents a corpus uses, and where each goes: filters, the train/validation split and
static augmentation of the training documents.

Every step reads lazily, one document at a time, so that memory does not grow with the
corpus; :class:`~lmforge.data.corpus.CorpusDataModule` chains them.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator

from lightning.pytorch.utilities import rank_zero_info

from lmforge.data.augment import Augmentation, apply_augmentations
from lmforge.data.documents import is_validation
from lmforge.errors import UserError

AUGMENT_CHUNK = 1024  # training documents augmented together (one seeded draw per chunk)

Labelled = tuple[str, str]  # (split, text), split "train" or "val"


def kept_documents(documents: Iterable[str], name: str, min_chars: int = 0, deduplicate: bool = False,
                   max_documents: int | None = None) -> Iterator[str]:
    """The documents that pass ``min_chars`` and ``deduplicate``, in order, at most ``max_documents``.

    Filters come before the ``max_documents`` cut, so that it counts kept documents; the input
    is read no further than needed.

    Args:
        documents: The corpus's documents, read lazily.
        name: The corpus, for messages.
        min_chars: Drop documents shorter than this (leading and trailing whitespace not counted).
        deduplicate: Drop exact repeats (same text, by hash), keeping the first occurrence.
        max_documents: Stop after this many kept documents.
    """
    seen: set[bytes] = set()
    short = duplicates = kept = 0
    if max_documents is not None and max_documents <= 0:
        return
    for doc in documents:
        if min_chars and len(doc.strip()) < min_chars:
            short += 1
            continue
        if deduplicate:
            key = hashlib.blake2b(doc.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
        kept += 1
        yield doc
        if kept == max_documents:
            break  # before the reader is asked for one more (a stream, a next shard)
    if short or duplicates:
        rank_zero_info(
            f"{name}: removed {duplicates} duplicate documents (deduplicate) and {short} "
            f"shorter than {min_chars} characters (min_chars); {kept} kept."
        )
    if not kept and short:  # deduplication alone always keeps a first occurrence
        raise UserError(
            f"Corpus {name} has no document left after filtering ({short} shorter than "
            f"min_chars={min_chars} characters): lower `min_chars`."
        )


def labelled(documents: Iterable[str], val_fraction: float, seed: int) -> Iterator[Labelled]:
    """``(split, text)`` of every document, lazily, in order; the split is decided per document
    (:func:`~lmforge.data.documents.is_validation`), so a stream splits as a list does.

    Args:
        documents: The kept documents.
        val_fraction: Expected fraction sent to validation.
        seed: Seed of the split.
    """
    for doc in documents:
        yield ("val" if is_validation(doc, val_fraction, seed) else "train"), doc


def collect_splits(documents: Iterable[Labelled], name: str) -> tuple[list[str], list[str]]:
    """(train, validation) lists of labelled documents; never an empty split.

    Args:
        documents: ``(split, text)`` pairs, as :func:`labelled` gives them.
        name: The corpus, for messages.
    """
    train: list[str] = []
    val: list[str] = []
    for split, doc in documents:
        (train if split == "train" else val).append(doc)
    if not train and not val:
        raise UserError(f"Corpus {name} has no text: every document is empty.")
    if not val or not train:
        # few documents: hold out the last one rather than fail; a lone document
        # serves both splits (a smoke run, not a measurement)
        docs = train or val
        train, val = (docs[:-1], docs[-1:]) if len(docs) > 1 else (docs, docs)
    return train, val


def augmented(documents: Iterable[Labelled], augment: list[Augmentation], seed: int) -> Iterator[Labelled]:
    """``documents`` with ``augment`` applied to the training ones, :data:`AUGMENT_CHUNK` at a time;
    validation documents pass unchanged and in place.

    Args:
        documents: ``(split, text)`` pairs.
        augment: The augmentations, applied in order.
        seed: Seed of the augmentations; each chunk draws from its own stream of it.
    """
    if not augment:
        yield from documents
        return
    chunk: list[Labelled] = []
    chunks = itertools.count()
    for item in itertools.chain(documents, [None]):
        if item is not None:
            chunk.append(item)
        if chunk and (item is None or len(chunk) == AUGMENT_CHUNK):
            train = iter(apply_augmentations([d for s, d in chunk if s == "train"], augment, seed, next(chunks)))
            yield from ((s, next(train) if s == "train" else d) for s, d in chunk)
            chunk = []
