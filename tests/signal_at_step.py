"""Test helper, loaded by ``lmforge fit`` subprocesses (``PYTHONPATH=tests``): a real signal at a
chosen step, or the step reached written to a file for a sender outside the process."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning as L


class SignalAtStep(L.Callback):
    """After training batch number ``batch`` of this process (counted from 1; with gradient
    accumulation it may fall between optimizer steps), the OS delivers ``signal_name`` to this
    process; with ``progress_file``, the optimizer step reached is written there after every batch.

    Args:
        batch: The batch after which to send the signal (0: never).
        signal_name: ``SIGTERM`` or ``SIGUSR1``.
        progress_file: Where to write the step reached.
    """

    def __init__(self, batch: int = 0, signal_name: str = "SIGTERM", progress_file: str | None = None):
        self.batch = batch
        self.signal_name = signal_name
        self.progress_file = progress_file
        self.seen = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.progress_file:
            # written beside and renamed into place: a reader never sees the file empty
            partial = Path(f"{self.progress_file}.partial")
            partial.write_text(str(trainer.global_step))
            os.replace(partial, self.progress_file)
        self.seen += 1
        if self.seen == self.batch and trainer.is_global_zero:
            os.kill(os.getpid(), getattr(signal, self.signal_name))


class KillMidSave(L.Callback):
    """Save number ``save`` of ``last.ckpt`` in this process dies halfway through writing: half of
    its bytes reach the file, then the OS kills the process (SIGKILL, nothing runs after it).

    Args:
        save: Which save of ``last.ckpt`` dies (counted from 1).
    """

    def __init__(self, save: int = 2):
        self.save = save

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        import io

        import torch

        real_save, calls = torch.save, [0]

        def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
            if "last.ckpt" not in str(getattr(f, "name", f)):
                return real_save(obj, f, *args, **kwargs)
            calls[0] += 1
            if calls[0] != self.save:
                return real_save(obj, f, *args, **kwargs)
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = save
