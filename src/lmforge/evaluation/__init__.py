"""Downstream evaluation, apart from pretraining: fine-tuning tasks, sentence similarity (STS),
and ``lmforge evaluate`` (a suite of downstream tasks from several starting points)."""

from lmforge.evaluation.finetune import FineTuneTask
from lmforge.evaluation.sts import STSEvaluation, read_sts, sts_spearman
from lmforge.evaluation.suite import SuiteTask, evaluate, read_suite

__all__ = ["FineTuneTask", "STSEvaluation", "SuiteTask", "evaluate", "read_sts", "read_suite", "sts_spearman"]
