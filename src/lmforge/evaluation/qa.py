"""Extractive question answering (SQuAD v1.1/v2.0, BioASQ factoid): a start/end head on every token
state of a pretrained encoder, answers decoded back to the original text and scored by the
official SQuAD rules, or BioASQ's strict and lenient accuracy and mean reciprocal rank."""

from __future__ import annotations

import json
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import MeanMetric, Metric

from lmforge.errors import UserError
from lmforge.evaluation.finetune import Batch, FineTuneTask
from lmforge.evaluation.squad_data import Question, ranked_answers, top_spans
from lmforge.evaluation.squad_metric import bioasq_scores, best_thresholds, squad_scores
from lmforge.models import BertConfig
from lmforge.start import Start
from lmforge.tasks.base import OptimizerConfig, class_path

BIOASQ_TOP = 5  # BioASQ scores up to five ranked answers per factoid question


class SpanCandidates(Metric):
    """The best spans of every window seen (its question's number, their scores and character
    spans, its no-answer score), gathered from every process when computed.

    Args:
        kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    full_state_update = False

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        for name in ("question", "scores", "starts", "ends", "null"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, question: torch.Tensor, scores: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor,
               null: torch.Tensor) -> None:
        for name, value in zip(("question", "scores", "starts", "ends", "null"), (question, scores, starts, ends, null)):
            getattr(self, name).append(value)

    def compute(self) -> dict[str, torch.Tensor]:
        def cat(values: Any) -> torch.Tensor:
            return torch.cat(values) if isinstance(values, list) else values

        return {name: cat(getattr(self, name)).cpu() for name in ("question", "scores", "starts", "ends", "null")}


class QuestionAnsweringTask(FineTuneTask):
    """Fine-tune a pretrained encoder (BERT/RoBERTa, T5's encoder) on extractive question answering
    (``SquadData``): a linear head gives every token a start and an end score; the loss is the mean
    of the start and end cross-entropies over the window's tokens (padding left out), the target
    of a window without the whole answer being its first token (``[CLS]``).

    Decoding (BERT's): per window the ``n_best`` best start and end tokens in the context make the
    candidate spans (end not before start, at most ``max_answer_tokens`` tokens); a question's
    answer is its best span over all its windows, cut from the original context by character
    offsets; its no-answer score is the lowest ``[CLS]`` start + end score over its windows. On
    SQuAD 2.0 data the answer is "" when no-answer score − best span score exceeds the threshold:
    ``null_threshold``, or, left unset, the one that maximises F1 on the validation set (the
    official script's ``best_f1_thresh``), chosen at each validation and kept in checkpoints for
    ``test`` and ``predict``. On data without unanswerable questions (SQuAD v1.1) an answer is
    always given.

    Metrics (``val/...`` and ``test/...``): ``loss``; with ``scoring: squad``, the official
    ``exact`` and ``f1`` (percent), ``has_ans_exact``/``has_ans_f1`` and ``no_ans_exact``/``no_ans_f1``
    when both kinds of question are there, and ``threshold``; with ``scoring: bioasq``, BioASQ's
    ``strict_acc`` (the first answer right), ``lenient_acc`` (one of the first five right) and
    ``mrr`` (mean reciprocal rank over five), an answer matching a gold one ignoring case; the
    windows of BioBERT's converted files (ids ``<question>_<snippet number>``) count as one question,
    their candidates ranked together. ``predict`` prints ``{id: answer}`` JSON as the official
    evaluation script reads it. Started from a question-answering checkpoint (a SQuAD fine-tune,
    before BioASQ as BioBERT does), its start/end head carries over too. Everything else is
    :class:`FineTuneTask`'s.

    Args:
        init_from: The pretrained weights: an lmforge checkpoint, a Hugging Face model folder or ``hf:<id>``.
        random_init: Keep the architecture and tokenizer of ``init_from`` but start from random weights.
        mode: ``full`` fine-tuning or ``probe`` (frozen network, head only).
        dropout: Dropout on the token states, before the head.
        max_answer_tokens: Longest answer in tokens (BERT: 30).
        n_best: Start and end candidates per window (BERT: 20).
        null_threshold: SQuAD 2.0: answer "" when no-answer score − best span score is above it;
            ``None`` chooses it on the validation set.
        scoring: ``squad`` (exact match, F1) or ``bioasq`` (strict/lenient accuracy, MRR).
        optimizer: AdamW settings; linear warmup then linear decay (see :class:`FineTuneTask`).
        warmup_ratio: Fraction of the training steps warmed up.
        head_lr: Learning rate of the head; ``None`` uses ``optimizer.lr``.
        config: The network's shape when training from scratch without ``init_from``.
        network: Set in checkpoints: the class path of the fine-tuned network.
        network_config: Set in checkpoints: the fine-tuned network's config.
        compile: Compile the network with ``torch.compile`` when training starts.
    """

    task_types = ("question_answering",)

    def __init__(
        self,
        init_from: str | None = None,
        random_init: bool = False,
        mode: Literal["full", "probe"] = "full",
        dropout: float = 0.1,
        max_answer_tokens: int = 30,
        n_best: int = 20,
        null_threshold: float | None = None,
        scoring: Literal["squad", "bioasq"] = "squad",
        optimizer: OptimizerConfig = OptimizerConfig(
            lr=5e-5, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8, warmup_steps=0, min_lr_ratio=0.0
        ),
        warmup_ratio: float | None = 0.1,
        head_lr: float | None = None,
        config: BertConfig = BertConfig(),
        network: str | None = None,
        network_config: dict[str, Any] | None = None,
        compile: bool = False,
    ):
        if max_answer_tokens < 1 or n_best < 1:
            raise UserError(f"max_answer_tokens={max_answer_tokens} and n_best={n_best} must be at least 1.")
        if scoring not in ("squad", "bioasq"):
            raise UserError(f"scoring={scoring!r}: use squad (exact match, F1) or bioasq (strict/lenient accuracy, MRR).")
        super().__init__(init_from, random_init, mode, "auto", dropout, optimizer=optimizer, warmup_ratio=warmup_ratio,
                         head_lr=head_lr, config=config, network=network, network_config=network_config,
                         compile=compile)
        self.max_answer_tokens, self.n_best, self.scoring = max_answer_tokens, n_best, scoring
        self.null_threshold = null_threshold
        # the threshold chosen on the last validation, for test and predict (kept in checkpoints)
        self.register_buffer("chosen_threshold", torch.tensor(0.0 if null_threshold is None else null_threshold))
        self.task_type = "question_answering"
        self._build_head()
        if self._start_task == class_path(QuestionAnsweringTask) and not random_init:
            self._carry_head()

    def _record_start(self, start: Start, config: Any) -> None:
        super()._record_start(start, config)
        self._start_task = start.task  # a question-answering checkpoint's head carries over (SQuAD, then BioASQ)

    _start_task: str | None = None

    def _carry_head(self) -> None:
        """Start the head from the one of the question-answering checkpoint the network came from,
        as BioBERT starts BioASQ from its SQuAD fine-tune."""
        state = torch.load(self.start_source, map_location="cpu", weights_only=True, mmap=True)["state_dict"]
        self.head.load_state_dict({k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")})
        rank_zero_info(f"init_from '{self.start_source}': its question-answering head carries over.")

    @property
    def pooled_width(self) -> int:
        return self.net.state_width  # the head reads every token state

    def _build_head(self) -> None:
        self.head = nn.Linear(self.pooled_width, 2)  # start and end score of each token
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.metrics = nn.ModuleDict({stage: nn.ModuleDict({"spans": SpanCandidates()}) for stage in ("val", "test")})
        self.mean_loss = nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})

    def use_labels(self, task_type: str, labels: list[str] | None) -> None:
        """Check that the data is question answering (handed over by :func:`lmforge.start.connect`)."""
        self._check_task_type(task_type)

    # -- forward and loss -----------------------------------------------------------------
    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and end scores ``(B, T)`` of every token, padding at the lowest value."""
        logits = self.head(self.drop(self.states(batch))).float()  # (B, T, 2)
        logits = logits.masked_fill(batch["attention_mask"][..., None] == 0, torch.finfo(torch.float32).min)
        return logits[..., 0], logits[..., 1]

    def loss(self, batch: Batch, training: bool) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Mean of the start and end cross-entropies, and the scores."""
        start, end = self(batch)
        loss = (F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"])) / 2
        return loss, (start, end)

    def _candidates(self, batch: Batch, start: torch.Tensor, end: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each window's question, its best spans' scores and characters, and its no-answer score."""
        offsets = batch["offsets"]  # (B, T, 2), -1 outside the context
        keep = BIOASQ_TOP if self.scoring == "bioasq" else 1
        scores, first, last, null = top_spans(start, end, offsets[..., 0] >= 0, self.max_answer_tokens, self.n_best, keep)
        chars_from = offsets[..., 0].gather(1, first)  # (B, k)
        chars_to = offsets[..., 1].gather(1, last)
        return batch["question"], scores, chars_from, chars_to, null

    # -- evaluation ---------------------------------------------------------------------------
    def _eval_step(self, batch: Batch, stage: str) -> None:
        loss, (start, end) = self.loss(batch, training=False)
        self.mean_loss[stage].update(loss, weight=batch["question"].numel())
        self.metrics[stage]["spans"].update(*self._candidates(batch, start, end))

    def _questions(self, split: str) -> list[Question]:
        data = getattr(self.trainer, "datamodule", None)
        if data is None or not hasattr(data, "questions"):
            raise UserError("QuestionAnsweringTask decodes answers against its data's questions: run it with a "
                            "SquadData data module (`trainer.fit(task, datamodule=data)`; the lmforge command does).")
        return data.questions(split)

    def _log_eval(self, stage: str) -> None:
        if self.trainer.sanity_checking:
            return  # a few batches answer a few questions: no score to show for them
        questions = self._questions(stage)
        answers = ranked_answers(questions, **self.metrics[stage]["spans"].compute(), merge_snippets=self.scoring == "bioasq")
        references = {q: gold for q, (_, _, gold) in answers.items()}
        if self.scoring == "bioasq":
            values = bioasq_scores({q: [t for t, _ in ranked[:BIOASQ_TOP]] for q, (ranked, _, _) in answers.items()},
                                   references)
        else:
            values = self._squad(answers, references, stage)
        self.log(f"{stage}/loss", self.mean_loss[stage].compute(), prog_bar=stage == "val")
        self.log_dict({f"{stage}/{k}": float(v) for k, v in values.items()})

    def _squad(self, answers: dict[str, tuple], references: dict[str, list[str]], stage: str) -> dict[str, float]:
        """The official scores at the threshold: chosen now on validation (SQuAD 2.0 data and no
        ``null_threshold``), else the one kept."""
        predictions = {q: ranked[0][0] if ranked else "" for q, (ranked, _, _) in answers.items()}
        # how much more the model believes in "no answer" than in its best span
        no_answer = {q: null - ranked[0][1] if ranked else math.inf for q, (ranked, null, _) in answers.items()}
        unanswerable = any(not gold for gold in references.values())
        if self.null_threshold is not None:
            threshold = self.null_threshold
        elif stage == "val":  # SQuAD v1.1 (every question answerable): always answer
            threshold = best_thresholds(predictions, references, no_answer)["best_f1_thresh"] if unanswerable \
                else math.inf
            self.chosen_threshold.fill_(threshold)
        else:
            threshold = float(self.chosen_threshold)
        scores = squad_scores(predictions, references, no_answer, threshold)
        values = {k.lower().replace("hasans_", "has_ans_").replace("noans_", "no_ans_"): v
                  for k, v in scores.items() if not k.endswith("total")}
        if unanswerable:
            values["threshold"] = threshold
        return values

    # -- prediction ---------------------------------------------------------------------------
    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """The best spans of the batch's windows (assembled into answers by :meth:`prediction_texts`)."""
        start, end = self(batch)
        names = ("question", "scores", "starts", "ends", "null")
        return dict(zip(names, (t.cpu() for t in self._candidates(batch, start, end))))

    def prediction_texts(self, outputs: list[Any]) -> list[str]:
        """``{id: answer}`` JSON of every question of ``data.predict``, as the official SQuAD script reads it
        ("" for no answer, at the threshold kept in the checkpoint)."""
        found = {name: torch.cat([o[name] for o in outputs]) for name in outputs[0]} if outputs else None
        questions = self._questions("predict")
        if found is None:
            return [json.dumps({q.id: "" for q in questions}, ensure_ascii=False, indent=2)]
        answers = ranked_answers(questions, **found)
        threshold = float(self.chosen_threshold)
        chosen = {q: ranked[0][0] if ranked and null - ranked[0][1] <= threshold else ""
                  for q, (ranked, null, _) in answers.items()}
        return [json.dumps(chosen, ensure_ascii=False, indent=2)]
