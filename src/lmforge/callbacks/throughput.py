"""Training callbacks: throughput and MFU, generated text samples, run-folder hygiene, safe
checkpoints (atomic writes, preemption)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, RichProgressBar
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lmforge.errors import NonFiniteLossError, UserError

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, by device-name substring.
GPU_PEAK_BF16: dict[str, float] = {
    "H200": 989e12,
    "H100": 989e12,  # SXM; the PCIe card is listed below and matched first
    "A100": 312e12,
    "A10G": 70e12,
    "A10": 125e12,
    "L40S": 362e12,
    "L40": 181e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,  # fp16: V100 has no bf16
    "T4": 65e12,  # fp16
}
GPU_PEAK_PCIE = {"H100 PCIe": 756e12}


def gpu_peak_flops(name: str) -> float | None:
    """The known dense bf16 peak of a GPU by its CUDA device name, or None if unknown."""
    for table in (GPU_PEAK_PCIE, GPU_PEAK_BF16):
        for key, flops in table.items():
            if key in name:
                return flops
    return None


def measure_cpu_peak_flops(size: int = 1536, repeats: int = 5) -> float:
    """FLOP/s of the fastest of a few fp32 matmuls with all threads: the CPU's practical peak.

    The fastest, not the mean, because other processes only ever slow a measurement down.
    """
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm up the BLAS threads
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


class ThroughputMonitor(L.Callback):
    """Logs ``perf/tokens_per_sec`` and ``perf/mfu`` (model FLOPs utilisation).

    Tokens are the batch's ``input_ids`` (padding included). The rate is taken over the last
    ``window`` training steps (validation time excluded) and
    handed to Lightning every step, which writes it at the trainer's ``log_every_n_steps``.
    Model FLOPs per token are counted as nanoGPT's ``estimate_mfu`` does; the peak is the
    GPU's known dense bf16 peak, or on CPU a matmul rate measured once at the start.

    Args:
        peak_flops: Peak FLOP/s of one device; ``None`` looks it up (GPU) or measures it (CPU).
        window: Number of recent steps the rate is averaged over.
    """

    def __init__(self, peak_flops: float | None = None, window: int = 10):
        self.peak_flops = peak_flops
        self.window = window
        self._marks: deque[tuple[float, int, float]] = deque(maxlen=window + 1)  # (time, tokens, FLOPs of the step)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.peak_flops is None:
            if pl_module.device.type == "cuda":
                self.peak_flops = gpu_peak_flops(torch.cuda.get_device_name(pl_module.device))
            elif pl_module.device.type == "cpu":
                self.peak_flops = measure_cpu_peak_flops()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if not self._marks:
            self._marks.append((time.perf_counter(), 0, 0.0))  # the start of the first timed step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # no device synchronisation: over a window of steps the asynchronous lag averages out
        ids = batch["input_ids"]
        flops_per_token = getattr(pl_module, "flops_per_token", None)
        flops = ids.numel() * flops_per_token(ids.shape[-1]) if flops_per_token is not None else 0.0
        self._marks.append((time.perf_counter(), ids.numel(), flops))
        start, end = self._marks[0][0], self._marks[-1][0]
        tokens = sum(n for _, n, _ in list(self._marks)[1:])
        tokens_per_sec = tokens * trainer.world_size / (end - start)
        pl_module.log("perf/tokens_per_sec", tokens_per_sec, prog_bar=True, on_step=True, on_epoch=False)
        if self.peak_flops and flops_per_token is not None:
            # each step's FLOPs at its own length: downstream batches are padded to their longest example
            flops_per_sec = sum(f for _, _, f in list(self._marks)[1:]) / (end - start)
            pl_module.log("perf/mfu", flops_per_sec / self.peak_flops, on_step=True, on_epoch=False)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._marks.clear()  # validation time is not training throughput


class TextSampleCallback(L.Callback):
    """After each validation, generate text from a fixed prompt into TensorBoard's text tab.

    Args:
        prompt: The prompt to continue.
        enabled: Turn sampling off.
    """

    def __init__(self, prompt: str = "The", enabled: bool = True):
        self.prompt = prompt
        self.enabled = enabled

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking or not hasattr(pl_module, "sample_text"):
            return  # (a downstream task writes no text)
        if isinstance(trainer.strategy, FSDPStrategy):
            # each rank holds a shard of the weights: gather them on every rank to generate
            from torch.distributed.fsdp import FullyShardedDataParallel

            with FullyShardedDataParallel.summon_full_params(trainer.model, writeback=False):
                text = pl_module.sample_text(self.prompt)
        elif trainer.is_global_zero:
            text = pl_module.sample_text(self.prompt)
        else:
            return
        if text is None or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            add_text = getattr(logger.experiment, "add_text", None)
            if add_text is not None:
                # at the step of the validation scalars beside it (Lightning's: the index of the last
                # optimizer step), not one later, so a resumed run's restart point keeps it too
                add_text("samples", text, global_step=max(trainer.global_step - 1, 0))


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
    validation due at that step, so its loss is in the line).

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

    def _every(self, trainer: L.Trainer) -> int:
        if self.every_n_steps > 0:
            return self.every_n_steps
        return max(trainer.log_every_n_steps, trainer.max_steps // 20 if trainer.max_steps > 0 else 0, 1)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._first_step = time.perf_counter(), trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step != self._last_printed and step % self._every(trainer) == 0:
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
        parts = [f"step {step}/{trainer.max_steps}" if trainer.max_steps > 0 else f"step {step}"]
        for name, value in progress_metrics(trainer.progress_bar_metrics).items():
            parts.append(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}")
        elapsed = time.perf_counter() - self._start
        timing = f"{_clock(elapsed)} elapsed"
        done = step - self._first_step
        if trainer.max_steps > 0 and done > 0:
            timing += f", ~{_clock(elapsed / done * (trainer.max_steps - step))} left"
        print(" | ".join([*parts, timing]), flush=True)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ModelSize(ModelSummary):
    """One line at the start of training instead of Lightning's table: the network, its
    parameters and model FLOPs per token (what MFU counts)."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        net = getattr(pl_module, "net", pl_module)
        total = sum(p.numel() for p in pl_module.parameters())
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        line = f"Model: {type(net).__name__}, {_count(total)} parameters"
        if trainable != total:
            line += f" ({_count(trainable)} trainable)"
        flops_per_token = getattr(pl_module, "flops_per_token", None)
        if flops_per_token is not None:
            line += f", {_count(flops_per_token(None))}FLOPs per token"
        rank_zero_info(line + ".")


def _count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} "


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
