"""LightningModules, one per family/objective: loss, metrics, optimizer, schedule."""

from lmforge.tasks.base import OptimizerConfig, PretrainingTask
from lmforge.tasks.causal_lm import CausalLMTask
from lmforge.tasks.contrastive import ContrastiveTask
from lmforge.tasks.elmo import ElmoTask
from lmforge.tasks.finetune import FineTuneTask
from lmforge.tasks.masked_lm import MaskedLMTask
from lmforge.tasks.span_corruption import SpanCorruptionTask

__all__ = ["CausalLMTask", "ContrastiveTask", "ElmoTask", "FineTuneTask", "MaskedLMTask", "OptimizerConfig", "PretrainingTask", "SpanCorruptionTask"]
