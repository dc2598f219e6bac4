"""Throughput and model size: ``perf/tokens_per_sec`` and ``perf/mfu`` against the device's peak
FLOP/s, the run's training time, real-token rate and peak memory, and the one-line parameter and
FLOP count at the start of training."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities import rank_zero_info


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


def reset_peak_rss() -> bool:
    """Set the process's peak resident memory (Linux ``VmHWM``) to its current size; False where
    the system offers no such reset (then no peak of this run alone can be read)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5: reset the high-water mark (proc(5))
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The process's peak resident memory (``VmHWM``) in MiB since :func:`reset_peak_rss`."""
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib / 1024


class ThroughputMonitor(L.Callback):
    """Logs ``perf/tokens_per_sec`` and ``perf/mfu`` (model FLOPs utilisation) every step, and
    the run's totals at the end of every epoch.

    Tokens of ``perf/tokens_per_sec`` are the batch's ``input_ids`` (padding included: what the
    device computed). The rate is taken over the last ``window`` training steps (validation time
    excluded) and handed to Lightning every step, which writes it at the trainer's ``log_every_n_steps``.
    Model FLOPs per token are counted as nanoGPT's ``estimate_mfu`` does; the peak is the
    GPU's known dense bf16 peak, or on CPU a matmul rate measured once at the start.

    The totals since this fit started (what ``lmforge evaluate`` puts in ``runs.csv``):
    ``perf/train_seconds`` (training steps and their data loading, validation excluded),
    ``perf/train_tokens_per_sec`` (real tokens, the ``attention_mask``'s ones where the batch has
    one, over those seconds, times the number of processes) and the peak memory of the fit:
    ``perf/peak_cuda_allocated_mb`` (``torch.cuda.max_memory_allocated``) on a GPU, else
    ``perf/peak_rss_mb``, the process's peak resident memory, all of it, not only what the
    fit added (Linux only: elsewhere there is no peak of one fit to read).

    Args:
        peak_flops: Peak FLOP/s of one device; ``None`` looks it up (GPU) or measures it (CPU).
        window: Number of recent steps the rate is averaged over.
    """

    def __init__(self, peak_flops: float | None = None, window: int = 10):
        self.peak_flops = peak_flops
        self.window = window
        self._marks: deque[tuple[float, int, float]] = deque(maxlen=window + 1)  # (time, tokens, FLOPs of the step)
        self._train_seconds = 0.0
        self._real_tokens: int | torch.Tensor = 0  # a device tensor: adding to it needs no synchronisation
        self._last_mark: float | None = None  # end of the last timed step; None after validation
        self._peak_rss = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_seconds, self._real_tokens, self._last_mark = 0.0, 0, None
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        else:
            self._peak_rss = reset_peak_rss()
        if self.peak_flops is None:
            if pl_module.device.type == "cuda":
                self.peak_flops = gpu_peak_flops(torch.cuda.get_device_name(pl_module.device))
            elif pl_module.device.type == "cpu":
                self.peak_flops = measure_cpu_peak_flops()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if not self._marks:
            self._marks.append((time.perf_counter(), 0, 0.0))  # the start of the first timed step
        if self._last_mark is None:
            self._last_mark = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # no device synchronisation: over a window of steps the asynchronous lag averages out, and the
        # run's totals wait for the device once, before a validation and at an epoch's end
        ids = batch["input_ids"]
        flops_per_token = getattr(pl_module, "flops_per_token", None)
        flops = ids.numel() * flops_per_token(ids.shape[-1]) if flops_per_token is not None else 0.0
        now = time.perf_counter()
        self._marks.append((now, ids.numel(), flops))
        mask = batch.get("attention_mask") if isinstance(batch, dict) else None
        self._real_tokens = self._real_tokens + (mask.sum() if mask is not None else ids.numel())
        if self._last_mark is not None:
            self._train_seconds += now - self._last_mark
        self._last_mark = now
        start, end = self._marks[0][0], self._marks[-1][0]
        tokens = sum(n for _, n, _ in list(self._marks)[1:])
        tokens_per_sec = tokens * trainer.world_size / (end - start)
        pl_module.log("perf/tokens_per_sec", tokens_per_sec, prog_bar=True, on_step=True, on_epoch=False)
        if self.peak_flops and flops_per_token is not None:
            # each step's FLOPs at its own length: downstream batches are padded to their longest example
            flops_per_sec = sum(f for _, _, f in list(self._marks)[1:]) / (end - start)
            pl_module.log("perf/mfu", flops_per_sec / self.peak_flops, on_step=True, on_epoch=False)

    def _wait_for_the_steps(self, pl_module: L.LightningModule) -> None:
        """On a GPU the last steps' kernels may still run: they finish on the training clock."""
        if self._last_mark is not None and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
            now = time.perf_counter()
            self._train_seconds += now - self._last_mark
            self._last_mark = now

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._wait_for_the_steps(pl_module)
        self._marks.clear()  # validation time is not training throughput
        self._last_mark = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._wait_for_the_steps(pl_module)
        totals = {"perf/train_seconds": self._train_seconds}
        if self._train_seconds > 0:
            totals["perf/train_tokens_per_sec"] = int(self._real_tokens) * trainer.world_size / self._train_seconds
        if pl_module.device.type == "cuda":
            totals["perf/peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
        elif self._peak_rss:
            totals["perf/peak_rss_mb"] = peak_rss_mb()
        for name, value in totals.items():
            # across processes: the slowest one's seconds, the largest peak, the mean of the (whole-run) rates
            pl_module.log(name, value, on_step=False, on_epoch=True, sync_dist=True,
                          reduce_fx="mean" if name.endswith("_per_sec") else "max")


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
