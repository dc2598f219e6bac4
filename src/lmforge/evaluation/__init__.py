"""Downstream evaluation, apart from pretraining: fine-tuning tasks, sentence similarity (STS),
and ``lmforge compare`` (one downstream recipe from several starting points)."""

from lmforge.evaluation.compare import compare, write_results
from lmforge.evaluation.finetune import FineTuneTask
from lmforge.evaluation.sts import STSEvaluation, read_sts, sts_spearman

__all__ = ["FineTuneTask", "STSEvaluation", "compare", "read_sts", "sts_spearman", "write_results"]
