"""The corpus fingerprint: a short hash of everything that decides a corpus's prepared documents.

Token shards and trained tokenizers are cached under it, so it must change whenever the
documents could: another corpus class, another source (or an edited local file), other
filters, split or augmentations, or an edit to a project's own corpus class.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import inspect
import json
from pathlib import Path
from typing import Any


def corpus_fingerprint(corpus: Any, base: type) -> str:
    """The fingerprint of ``corpus``: its class (and the source code of a class written outside
    lmforge), its own arguments (with size and modification time of the local files they
    name), the filters, the split and the augmentations.

    Args:
        corpus: The corpus (a :class:`~lmforge.data.corpus.CorpusDataModule`).
        base: The class whose arguments are the shared options (filters, split, batches):
            only the arguments of the classes below it name the source.
    """
    params = source_arguments(corpus, base)
    key = {
        "corpus": f"{type(corpus).__module__}.{type(corpus).__qualname__}",
        "source": params,
        "files": [file_stats(v) for v in params.values() if isinstance(v, (str, list))],
        "options": [corpus.max_documents, corpus.deduplicate, corpus.min_chars, corpus.val_fraction, corpus.seed,
                    [repr(a) for a in corpus.augment]],
        "extra": corpus.fingerprint_extra(),
    }
    code = user_code(type(corpus))
    if code:  # (not in lmforge's own corpora's keys: their caches stay valid)
        key["code"] = code
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def source_arguments(corpus: object, base: type) -> dict[str, Any]:
    """The ``__init__`` arguments of the classes of ``corpus`` below ``base``, by name, as the
    instance holds them.

    A ``source`` group (:class:`~lmforge.data.source.DataSource`) contributes its fields by
    their own names, so that the local files it names are collected like any path argument.

    Args:
        corpus: The corpus.
        base: Where to stop going up the class hierarchy.
    """
    params: dict[str, Any] = {}
    for cls in type(corpus).__mro__:
        if cls is base:
            break
        if "__init__" not in vars(cls):
            continue
        for name in inspect.signature(cls.__init__).parameters:
            if name in ("self", "args", "kwargs") or not hasattr(corpus, name):
                continue
            value = getattr(corpus, name)
            if name == "source" and dataclasses.is_dataclass(value):
                params.update(dataclasses.asdict(value))
            else:
                params[name] = value
    return params


def file_stats(value: str | list) -> list:
    """(path, size, mtime) of the local files a source argument names, if any.

    Args:
        value: A path, folder or glob, or a list of them; other values name no file.
    """
    stats = []
    for entry in [value] if isinstance(value, str) else value:
        if not isinstance(entry, str):
            continue
        p = Path(entry).expanduser()
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else \
            [p] if p.is_file() else sorted(Path(m) for m in glob.glob(str(p), recursive=True))
        for f in files:
            st = f.stat()
            stats.append((str(f), st.st_size, st.st_mtime_ns))
    return stats


def user_code(cls: type) -> list[str]:
    """Digests of the source of ``cls`` and of its bases written outside lmforge (a project's
    own corpus class): what lmforge's version does not already pin.

    Args:
        cls: The corpus class.
    """
    digests = []
    for base in cls.__mro__:
        if base.__module__.split(".")[0] in ("lmforge", "lightning", "builtins", "typing"):
            continue
        try:
            source = inspect.getsource(base)
        except (OSError, TypeError):  # defined interactively: nothing to read
            source = base.__qualname__
        digests.append(hashlib.sha256(source.encode()).hexdigest()[:16])
    return digests
