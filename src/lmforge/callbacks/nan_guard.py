"""The NaN guard: stop at the first non-finite training loss, before its update."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from lmforge.errors import NonFiniteLossError


class NonFiniteGuard(L.Callback):
    """Stop training at the first NaN or infinite loss, before its backward pass and update.

    The weights stay those of the last good step and no checkpoint is written after it, so
    the last good ``last.ckpt`` is untouched. The error names the step, the batch and, when
    the data module can tell (``sample_ids``), the samples of the batch, so the cause can be
    looked at: a too-high learning rate, missing gradient clipping, or bad data.

    Args:
        enabled: Check every training loss.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._batch_idx = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if not self.enabled or bool(torch.isfinite(loss.detach()).all()):
            return
        ids = getattr(trainer.datamodule, "sample_ids", None) if trainer.datamodule is not None else None
        samples = ids(self._batch_idx) if callable(ids) else None
        where = f"batch {self._batch_idx} of epoch {trainer.current_epoch}"
        if samples is not None:
            where += f", samples {samples[:16]}{' ...' if len(samples) > 16 else ''}"
        raise NonFiniteLossError(
            f"The training loss is {float(loss.detach().float().mean())} at step {trainer.global_step} ({where}): "
            "training stopped before this step's update, and the last good checkpoint is untouched. Lower the "
            "learning rate, clip gradients (trainer.gradient_clip_val) or check those samples."
        )
