"""The run folder's files: the resolved config saved once a run has started, checkpoints that
never land in another run's folder and always include the last step, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback

from lmforge.errors import UserError


class SafeSaveConfigCallback(SaveConfigCallback):
    """Saves the resolved config of a ``fit`` into its run folder, never overwriting one there,
    and only once the run has started: a resume that is refused (another tokenizer, corpus,
    seed ...) writes nothing. A resumed run writes ``config.resumed-1.yaml``, ``-2`` ...
    """

    started = False  # set once the run has started training

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pass  # the checkpoint to resume from is restored (and checked) after setup: wait for it

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log_dir = trainer.log_dir  # on every rank: it broadcasts
        filename = self.config_filename
        if trainer.is_global_zero and log_dir is not None and (Path(log_dir) / filename).exists():
            stem, n = Path(filename).stem, 1
            while (Path(log_dir) / f"{stem}.resumed-{n}.yaml").exists():
                n += 1
            filename = f"{stem}.resumed-{n}.yaml"
        self.config_filename = trainer.strategy.broadcast(filename)  # rank 0 decides, before it writes
        super().setup(trainer, pl_module, "fit")
        self.started = True


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that also writes ``last.ckpt`` when training ends between validations,
    so ``--ckpt_path last`` always resumes from the final step, and that never writes into a
    folder holding another run's checkpoints (unless resuming that run)."""

    def _ModelCheckpoint__warn_if_dir_not_empty(self, dirpath: Any) -> None:
        pass  # Lightning's warning for a non-empty folder: on_fit_start below refuses another run's

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # (the checkpoint to resume from is known from here on, and nothing has been written yet)
        if trainer.fast_dev_run or trainer.ckpt_path is not None or not self.dirpath:
            return
        folder = Path(self.dirpath)
        if folder.is_dir() and any(folder.glob("*.ckpt")):
            raise UserError(
                f"'{folder}' already holds the checkpoints of another run: resume it with `--ckpt_path last` (or the "
                "checkpoint's path), or leave `trainer.logger.init_args.version` unset to start in a new version folder."
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is None or not trainer.is_global_zero:
            return
        # a run killed after its checkpoint logged steps that the resumed run logs again: mark the
        # restart so TensorBoard drops the interrupted run's points from this step on
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        for logger in trainer.loggers:
            writer = getattr(logger.experiment, "_get_file_writer", None)
            if writer is not None:
                event = Event(step=trainer.global_step, session_log=SessionLog(status=SessionLog.START))
                writer().add_event(event)

    def write_last(self, trainer: L.Trainer) -> None:
        """Write ``last.ckpt`` now (unless this step's is already written)."""
        if self.save_last and self._last_global_step_saved < trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if not trainer.fast_dev_run:
            self.write_last(trainer)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, flushed to disk, then renames it
    into place: a process killed mid-write leaves the previous checkpoint intact (Lightning's
    own writer stages the file in the system's temp folder, from where the final move is a
    copy when that is another file system). Paths with a URL scheme (``s3://``) go to Lightning's.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.partial-*"):  # from a writer that was killed
            stale.unlink(missing_ok=True)
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        try:
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself reaches the disk
        finally:
            os.close(folder)
