"""Downstream evaluation, apart from pretraining: fine-tuning tasks (sentence and token
classification), sentence similarity (STS), and ``lmforge compare`` (one downstream recipe from
several starting points)."""

from lmforge.evaluation.compare import compare, write_results
from lmforge.evaluation.entities import EntityF1
from lmforge.evaluation.finetune import FineTuneTask
from lmforge.evaluation.sts import STSEvaluation, read_sts, sts_spearman
from lmforge.evaluation.tagging import TokenClassificationTask

__all__ = [
    "EntityF1", "FineTuneTask", "STSEvaluation", "TokenClassificationTask", "compare", "read_sts", "sts_spearman",
    "write_results",
]
