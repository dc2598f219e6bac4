"""Downstream evaluation, apart from pretraining: fine-tuning tasks (sentence, pair, relation,
multi-label and token classification, extractive question answering) with their data modules
(``LabeledText``, ``TaggedText``, ``SquadData``),
sentence similarity (STS), zero/few-shot scoring of decoders on task files (``PromptTask``,
``score_task``), and ``lmforge evaluate`` (a suite of downstream tasks from several starting
points)."""

from lmforge.evaluation.entities import EntityF1
from lmforge.evaluation.finetune import FineTuneTask
from lmforge.evaluation.labeled_data import LabeledText
from lmforge.evaluation.prompt_tasks import PromptTask, load_items, read_task
from lmforge.evaluation.qa import QuestionAnsweringTask
from lmforge.evaluation.qa_data import SquadData
from lmforge.evaluation.sts import STSEvaluation, read_sts, sts_spearman
from lmforge.evaluation.suite import evaluate
from lmforge.evaluation.suite_spec import ScoringTask, SuiteTask, read_suite
from lmforge.evaluation.tagged_data import TaggedText
from lmforge.evaluation.tagging import TokenClassificationTask
from lmforge.evaluation.zero_shot import score_task

__all__ = [
    "EntityF1", "FineTuneTask", "LabeledText", "PromptTask", "QuestionAnsweringTask", "STSEvaluation", "ScoringTask",
    "SquadData", "SuiteTask", "TaggedText",
    "TokenClassificationTask", "evaluate", "load_items", "read_sts", "read_suite", "read_task", "score_task",
    "sts_spearman",
]
