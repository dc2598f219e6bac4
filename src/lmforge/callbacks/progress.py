"""Progress: a Rich bar of optimizer steps in a terminal, plain lines elsewhere."""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    """Rich progress bar counting optimizer steps towards ``max_steps`` (epochs when there is no
    step limit), with loss and a short ``tok/s``, without Lightning's ``v_num``."""

    @property
    def total_train_batches(self) -> int | float:
        max_steps = self.trainer.max_steps
        return max_steps if max_steps > 0 else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_steps > 0:
            description = "Steps"
        else:
            epochs = self.trainer.max_epochs
            description = f"Epoch {current_epoch + 1}" + (f"/{epochs}" if epochs and epochs > 0 else "")
        return f"{description:{len(self.validation_description)}}"

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()  # resumed mid-epoch
        self._update(self.train_progress_bar_id, trainer.global_step if trainer.max_steps > 0 else batch_idx + 1)
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return progress_metrics(super().get_metrics(trainer, pl_module))


def progress_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The progress bar's metrics as shown: no ``v_num``, tokens/s as a short ``tok/s``."""
    metrics = dict(metrics)
    metrics.pop("v_num", None)
    tokens_per_sec = metrics.pop("perf/tokens_per_sec", None)
    if tokens_per_sec is not None:
        metrics["tok/s"] = f"{float(tokens_per_sec):,.0f}"
    return metrics


class ProgressLog(L.Callback):
    """Plain progress lines for output that is not a terminal (a file, a pipe, a scheduler's
    log) or when the progress bar is off: ``step 100/500 | loss 3.214 | val/loss 3.5 | tok/s
    12,345 | 0:01:02 elapsed, ~0:04:08 left``, every ``every_n_steps`` optimizer steps (after a
    validation due at that step, so its loss is in the line). The total is ``max_steps``, or for a
    run measured in epochs the steps those epochs take (Lightning's ``estimated_stepping_batches``).

    Args:
        every_n_steps: Steps between lines; 0 picks about 20 lines per run (at least every
            ``log_every_n_steps``).
    """

    def __init__(self, every_n_steps: int = 0):
        self.every_n_steps = every_n_steps
        self._start = 0.0
        self._first_step = 0
        self._last_printed = -1
        self._due: int | None = None  # a step whose line waits for the validation due after it
        self._total = 0  # optimizer steps of the whole run; 0 when unknown (an endless epoch count)

    def _every(self, trainer: L.Trainer) -> int:
        if self.every_n_steps > 0:
            return self.every_n_steps
        return max(trainer.log_every_n_steps, self._total // 20, 1)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._first_step = time.perf_counter(), trainer.global_step
        if trainer.max_steps > 0:
            self._total = trainer.max_steps
        else:
            total = trainer.estimated_stepping_batches  # max_epochs x optimizer steps per epoch; inf if endless
            self._total = int(total) if math.isfinite(total) else 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        # step > first: a batch that only accumulated gradients before the first optimizer step has no line
        if step != self._last_printed and step > self._first_step and step % self._every(trainer) == 0:
            self._due = step  # printed when the next batch starts: after a validation due at this step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._due is not None:
            self._print(trainer, self._due)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = self._due if self._due is not None else trainer.global_step
        if step != self._last_printed:
            self._print(trainer, step)

    def _print(self, trainer: L.Trainer, step: int) -> None:
        self._last_printed, self._due = step, None
        if not trainer.is_global_zero:
            return
        parts = [f"step {step}/{self._total}" if self._total > 0 else f"step {step}"]
        for name, value in progress_metrics(trainer.progress_bar_metrics).items():
            parts.append(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}")
        elapsed = time.perf_counter() - self._start
        timing = f"{_clock(elapsed)} elapsed"
        done = step - self._first_step
        if self._total > 0 and done > 0:
            timing += f", ~{_clock(elapsed / done * max(self._total - step, 0))} left"
        print(" | ".join([*parts, timing]), flush=True)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
