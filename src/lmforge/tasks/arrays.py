"""Writing what ``predict`` computes (embeddings, layers) as named arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lmforge.errors import UserError

ARRAY_SUFFIXES = (".npy", ".npz", ".safetensors")


def check_array_file(path: str | Path, several: bool) -> Path:
    """``path`` as a Path if its suffix can hold the arrays (``.npy`` holds one only)."""
    path = Path(path)
    allowed = [".npz", ".safetensors"] if several else list(ARRAY_SUFFIXES)
    if path.suffix not in allowed:
        raise UserError(f"Cannot write arrays to '{path}': name a {' or '.join(allowed)} file.")
    return path


def save_arrays(path: str | Path, arrays: dict[str, torch.Tensor]) -> Path:
    """Write named tensors to ``.safetensors`` or ``.npz`` (each under its name), or a single
    one to ``.npy``; returns the path written.

    Args:
        path: The file to write; its folder is created.
        arrays: The tensors, by name.
    """
    path = check_array_file(path, several=len(arrays) > 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({name: value.contiguous() for name, value in arrays.items()}, str(path))
    elif path.suffix == ".npz":
        np.savez(path, **{name: value.numpy() for name, value in arrays.items()})
    else:
        np.save(path, next(iter(arrays.values())).numpy())
    return path
