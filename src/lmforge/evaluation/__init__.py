"""Downstream evaluation, apart from pretraining: fine-tuning tasks (sentence, pair, relation,
multi-label and token classification) with their data modules (``LabeledText``, ``TaggedText``),
sentence similarity (STS), and ``lmforge evaluate`` (a suite of downstream tasks from several
starting points)."""

from lmforge.evaluation.entities import EntityF1
from lmforge.evaluation.finetune import FineTuneTask
from lmforge.evaluation.labeled_data import LabeledText
from lmforge.evaluation.sts import STSEvaluation, read_sts, sts_spearman
from lmforge.evaluation.suite import SuiteTask, evaluate, read_suite
from lmforge.evaluation.tagged_data import TaggedText
from lmforge.evaluation.tagging import TokenClassificationTask

__all__ = [
    "EntityF1", "FineTuneTask", "LabeledText", "STSEvaluation", "SuiteTask", "TaggedText", "TokenClassificationTask",
    "evaluate", "read_sts", "read_suite", "sts_spearman",
]
