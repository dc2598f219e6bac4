"""A small English pretraining corpus that ships with every CPython.

The corpus needs no download and no extra package: it is made of the help
texts in :mod:`pydoc_data.topics` plus the docstrings of the standard library,
read from the ``.py`` sources with :mod:`ast` (the modules are never imported,
so building the corpus has no side effects). It is about 2 MB of text.

Parsing the whole standard library takes several seconds, so the result is
cached as JSON under ``${XDG_CACHE_HOME:-~/.cache}/lmforge/`` (or under
``$LMFORGE_CACHE_DIR`` when set) and memoised in-process.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import platform
import sysconfig
import warnings
from pathlib import Path

from lmforge.cache import atomic_write_text, cache_dir

__all__ = ["bundled_documents"]

# Bump when the extraction rules change so stale caches are rebuilt.
_CACHE_FORMAT = 1

# Docstrings shorter than this are mostly one-word stubs ("Close.") that add
# noise rather than prose.
_MIN_DOCSTRING_CHARS = 40

# Test suites are mostly code and fixtures, not prose; site-packages is
# whatever the user installed, which would make the corpus non-reproducible.
_SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})

_DOC_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def bundled_documents() -> list[str]:
    """Return the bundled corpus as a list of documents.

    The order and content are deterministic for a given Python version:
    first one document per ``pydoc_data.topics`` entry (sorted by topic name),
    then one document per standard-library module (sorted by path).

    Returns:
        A new list of non-empty, pairwise distinct documents. Mutating it does
        not affect later calls.
    """
    return list(_memoised_documents())


@functools.lru_cache(maxsize=1)
def _memoised_documents() -> tuple[str, ...]:
    # A tuple so the memoised value itself cannot be mutated by callers.
    return tuple(_load_or_build())


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _cache_path() -> Path:
    """Return where the corpus cache for this interpreter lives."""
    # Two interpreters of the same version (e.g. a venv base and a system
    # Python) may ship different stdlibs, hence the path hash.
    path_hash = hashlib.sha256(str(_stdlib_dir()).encode()).hexdigest()[:10]
    return cache_dir() / f"bundled-{platform.python_version()}-{path_hash}.json"


def _cache_header() -> dict[str, object]:
    return {
        "format": _CACHE_FORMAT,
        "python": platform.python_version(),
        "stdlib": str(_stdlib_dir()),
    }


def _load_or_build() -> list[str]:
    """Return the corpus from the on-disk cache, rebuilding it when needed."""
    path = _cache_path()
    docs = _read_cache(path)
    if docs is not None:
        return docs
    docs = _build_documents()
    _write_cache(path, docs)
    return docs


def _read_cache(path: Path) -> list[str] | None:
    """Return the cached documents, or None if the cache is missing or invalid."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if any(data.get(k) != v for k, v in _cache_header().items()):
        return None
    docs = data.get("documents")
    if not isinstance(docs, list) or not docs:
        return None
    if not all(isinstance(d, str) and d for d in docs):
        return None
    return docs


def _write_cache(path: Path, docs: list[str]) -> None:
    """Write the cache atomically; failures are ignored (the cache is optional)."""
    payload = {**_cache_header(), "documents": docs}
    try:
        atomic_write_text(path, json.dumps(payload, ensure_ascii=False))
    except OSError:
        pass


def _build_documents() -> list[str]:
    """Build the corpus from scratch, without any cache.

    Returns:
        The pydoc topic texts followed by one document per stdlib module,
        with empty and exactly duplicated documents removed.
    """
    from pydoc_data.topics import topics

    candidates = [topics[name].strip() for name in sorted(topics)]
    candidates.extend(_module_document(p) for p in _stdlib_sources(_stdlib_dir()))

    seen: set[str] = set()
    docs: list[str] = []
    for doc in candidates:
        if doc and doc not in seen:
            seen.add(doc)
            docs.append(doc)
    return docs


def _stdlib_sources(root: Path) -> list[Path]:
    """Return the stdlib ``.py`` files worth reading, in a stable order."""
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        files.extend(Path(dirpath, f) for f in filenames if f.endswith(".py"))
    # Sort on the relative POSIX path so the order does not depend on the
    # file system's listing order or on where Python is installed.
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _module_document(path: Path) -> str:
    """Return one module's docstrings joined by blank lines ("" if unusable)."""
    try:
        source = path.read_bytes()
        # Some stdlib files trigger Syntax/DeprecationWarnings when compiled.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source, filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return ""

    parts: list[str] = []
    seen: set[str] = set()
    for node in _doc_nodes_in_source_order(tree):
        doc = ast.get_docstring(node, clean=True)
        if not doc:
            continue
        doc = doc.strip()
        if len(doc) < _MIN_DOCSTRING_CHARS or doc in seen or not _is_utf8(doc):
            continue
        seen.add(doc)
        parts.append(doc)
    return "\n\n".join(parts)


def _doc_nodes_in_source_order(tree: ast.Module) -> list[ast.AST]:
    """Return the module and its classes/functions, depth first in source order."""
    # ast.walk is breadth first, which would scatter a class's method
    # docstrings away from the class docstring.
    out: list[ast.AST] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Module, *_DOC_NODES)):
            out.append(node)
        stack.extend(reversed(list(ast.iter_child_nodes(node))))
    return out


def _is_utf8(text: str) -> bool:
    # Escape sequences can put lone surrogates in a docstring; such text is
    # not prose and would break UTF-8 encoding downstream.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
