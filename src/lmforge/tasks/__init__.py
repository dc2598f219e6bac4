"""LightningModules, one per family/objective: loss, metrics, optimizer, schedule."""

from lmforge.tasks.base import OptimizerConfig, PretrainingTask
from lmforge.tasks.causal_lm import CausalLMTask

__all__ = ["CausalLMTask", "OptimizerConfig", "PretrainingTask"]
