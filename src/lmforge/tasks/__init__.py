"""LightningModules, one per pretraining family/objective: loss, metrics, optimizer, schedule.

Each declares its ``network`` (its family and config class come with it); :class:`Task` is
the base of every task, downstream ones (:mod:`lmforge.evaluation`) included.
"""

from lmforge.tasks.base import OptimizerConfig, Task
from lmforge.tasks.causal_lm import CausalLMTask, LlamaCausalLMTask
from lmforge.tasks.contrastive import ContrastiveTask
from lmforge.tasks.electra import ElectraTask
from lmforge.tasks.elmo import ElmoTask
from lmforge.tasks.masked_lm import MaskedLMTask
from lmforge.tasks.pretraining import PretrainingTask
from lmforge.tasks.span_corruption import SpanCorruptionTask

__all__ = ["CausalLMTask", "ContrastiveTask", "ElectraTask", "ElmoTask", "LlamaCausalLMTask", "MaskedLMTask",
           "OptimizerConfig", "PretrainingTask", "SpanCorruptionTask", "Task"]
