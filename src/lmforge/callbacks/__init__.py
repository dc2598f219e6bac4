"""Training callbacks, one module per concern: throughput and model size, progress, the run
folder's checkpoints and config, preemption, the NaN guard, text samples. Every public name is
here too, so ``lmforge.callbacks.X`` in a config keeps working."""

from lmforge.callbacks.checkpoints import AtomicCheckpointIO, RunCheckpoint, SafeSaveConfigCallback
from lmforge.callbacks.nan_guard import NonFiniteGuard
from lmforge.callbacks.preemption import Preemption
from lmforge.callbacks.progress import ProgressBar, ProgressLog, progress_metrics
from lmforge.callbacks.samples import TextSampleCallback
from lmforge.callbacks.throughput import (
    GPU_PEAK_BF16, GPU_PEAK_PCIE, ModelSize, ThroughputMonitor, gpu_peak_flops, measure_cpu_peak_flops,
)

__all__ = [
    "GPU_PEAK_BF16", "GPU_PEAK_PCIE", "AtomicCheckpointIO", "ModelSize", "NonFiniteGuard", "Preemption", "ProgressBar",
    "ProgressLog", "RunCheckpoint", "SafeSaveConfigCallback", "TextSampleCallback", "ThroughputMonitor",
    "gpu_peak_flops", "measure_cpu_peak_flops", "progress_metrics",
]
