"""Preemption: on a scheduler's signal, finish the step, write ``last.ckpt`` and exit cleanly
(requeueing a SLURM job)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lmforge.callbacks.checkpoints import RunCheckpoint


class Preemption(L.Callback):
    """On ``SIGTERM`` (a scheduler's or Kubernetes' stop) or ``SIGUSR1`` (SLURM's warning before
    the time limit: ``#SBATCH --signal=USR1@90``), finish the current optimizer step, write
    ``last.ckpt`` and exit with status 0 (after a validation due at that step, before the next). Resuming with ``--ckpt_path last`` continues
    exactly where it stopped. Under SLURM, ``SIGUSR1`` also requeues the job.

    Under DDP the ranks agree (a one-flag all-reduce per optimizer step) so that all stop at
    the same step, even when only one received the signal.

    Args:
        enabled: Handle the signals.
        requeue: Under SLURM, requeue the job (``scontrol requeue``) after the checkpoint on ``SIGUSR1``.
    """

    SIGNALS = ("SIGTERM", "SIGUSR1")

    def __init__(self, enabled: bool = True, requeue: bool = True):
        self.enabled = enabled
        self.requeue = requeue
        self.received: str | None = None  # the signal's name, once one arrived
        self.stopped_at: int | None = None  # the step whose checkpoint was written
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum).name  # act at the next step boundary, not inside the handler

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning's own handlers are set: SIGTERM is ours for the training loop
        if not self.enabled or threading.current_thread() is not threading.main_thread():
            return
        for name in self.SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                self._previous[number] = signal.signal(number, self._handle)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.stopped_at is not None:
            # the step was logged and a validation due after it has run (the resumed run skips it,
            # as Lightning does after a checkpoint written at a batch's end); leave as Lightning
            # does on SIGTERM, with exit status 0
            raise SIGTERMException()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self.enabled or trainer.fit_loop.epoch_loop._should_accumulate():  # Lightning's own test
            return  # a checkpoint holds no half-accumulated gradients: wait for the optimizer step
        received = self.received is not None
        if trainer.world_size > 1:
            received = trainer.strategy.reduce_boolean_decision(received, all=False)
        if not received or self.stopped_at is not None:
            return
        self.received = self.received or "SIGTERM"  # another rank's signal
        checkpoint = trainer.checkpoint_callback
        if isinstance(checkpoint, RunCheckpoint) and checkpoint.save_last:
            checkpoint.write_last(trainer)
            where = checkpoint.last_model_path
        else:
            where = str(Path(trainer.default_root_dir) / "preempted.ckpt")
            trainer.save_checkpoint(where)
        self.stopped_at = trainer.global_step
        rank_zero_info(f"{self.received} received: stopped after step {trainer.global_step}, checkpoint {where}. "
                       "Resume with the same command and `--ckpt_path last`.")
        job = _slurm_job_id()
        if self.requeue and self.received == "SIGUSR1" and job and trainer.is_global_zero:
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            rank_zero_info(f"SLURM job {job} requeued." if result.returncode == 0 else
                           f"Could not requeue SLURM job {job}: {result.stderr.strip()}")


def _slurm_job_id() -> str | None:
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array is not None:
        return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID")
