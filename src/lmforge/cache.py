"""The lmforge cache folder, and atomic writes into it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """``$LMFORGE_CACHE_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/lmforge``."""
    root = os.environ.get("LMFORGE_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "lmforge"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` so that readers see either the old file or the complete new one.

    The temporary file sits in the target's folder, so ``os.replace`` is an atomic rename.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=path.name + ".", suffix=".tmp", delete=False
    ) as f:
        tmp_name = f.name
        try:
            f.write(text)
        except BaseException:
            f.close()
            os.unlink(tmp_name)
            raise
    try:
        os.replace(tmp_name, path)
    except BaseException:
        os.unlink(tmp_name)
        raise
