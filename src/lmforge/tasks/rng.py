"""The random state of training steps: kept apart from the rest of the run, and checkpointed.

Dropout and any other randomness of a training step draw from the global python, numpy and
torch generators. Between two training steps other code draws from them too -- validation,
the creation of DataLoader iterators (which draws their base seed) -- and a resumed run does
that work at other moments than an uninterrupted one. So each training step starts from the
state the previous one ended with, and checkpoints carry that state for every rank: a resumed
run continues the very same random stream.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng(numpy: bool = True) -> dict[str, Any]:
    """The python, numpy and torch (CPU, and CUDA if in use) generator states, as plain data
    that a checkpoint loads with ``weights_only``."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if numpy:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state["numpy"] = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                          "has_gauss": int(has_gauss), "gauss": float(gauss)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set the generators to a state from :func:`capture_rng` (numpy's only if it holds it)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class TrainingRNG:
    """The random stream of the training steps of one process.

    Call :meth:`batch_start` right before a training batch and :meth:`batch_end` right after
    it; :meth:`state` is what a checkpoint written now must carry. The python and torch states
    are carried from step to step (a few microseconds); numpy's global state, which nothing
    between steps draws from in lmforge and which costs 0.1 ms to copy, is only saved in
    checkpoints and restored on resume.
    """

    def __init__(self) -> None:
        self._state: dict[str, Any] | None = None
        self._in_batch = False

    def batch_start(self) -> None:
        if self._state is not None:
            restore_rng(self._state)  # whatever ran since the last step drew from a stream of its own
            self._state.pop("numpy", None)  # restored once, after a resume
        self._in_batch = True

    def batch_end(self) -> None:
        self._state = capture_rng(numpy=False)
        self._in_batch = False

    def state(self) -> dict[str, Any]:
        """The state the next training step starts from (a checkpoint written at a batch's end,
        before :meth:`batch_end`, takes the live state: nothing has drawn since the step)."""
        if self._in_batch or self._state is None:
            return capture_rng()
        return {**self._state, "numpy": capture_rng()["numpy"]}

    def load(self, state: dict[str, Any]) -> None:
        """Start the next training step from ``state`` (from a checkpoint)."""
        self._state = dict(state)
