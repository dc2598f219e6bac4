"""Training callbacks (being split into one module per concern)."""

from lmforge.callbacks.throughput import (
    GPU_PEAK_BF16, GPU_PEAK_PCIE, AtomicCheckpointIO, ModelSize, NonFiniteGuard, Preemption, ProgressBar, ProgressLog,
    RunCheckpoint, SafeSaveConfigCallback, TextSampleCallback, ThroughputMonitor, gpu_peak_flops,
    measure_cpu_peak_flops, progress_metrics,
)

__all__ = [
    "GPU_PEAK_BF16", "GPU_PEAK_PCIE", "AtomicCheckpointIO", "ModelSize", "NonFiniteGuard", "Preemption", "ProgressBar",
    "ProgressLog", "RunCheckpoint", "SafeSaveConfigCallback", "TextSampleCallback", "ThroughputMonitor",
    "gpu_peak_flops", "measure_cpu_peak_flops", "progress_metrics",
]
