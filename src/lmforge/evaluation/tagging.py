"""Token classification (named-entity recognition, BioBERT/BLURB style): a linear head on every
token state of a pretrained network of this project, scored by entity-level F1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lmforge.errors import UserError
from lmforge.evaluation.entities import EntityF1, entity_types
from lmforge.evaluation.finetune import Batch, FineTuneTask

IGNORE = -100  # the label of pieces that are not a word's first (``TaggedText``)


class TokenClassificationTask(FineTuneTask):
    """Fine-tune (or probe) a pretrained network on token classification (``TaggedText``): a
    linear head reads each token's state (ELMo's layers mixed as in :class:`FineTuneTask`); the
    loss is cross-entropy on each word's first piece, and a word's tag is the argmax there.

    Everything else is :class:`FineTuneTask`'s (``init_from``, ``random_init``, ``mode``,
    optimizer and schedule, checkpoints); ``pooling`` and ``mixup`` do not apply. The tags
    (``labels``, BIO) come from the data. Metrics: ``val/loss``, entity-level (conlleval rules)
    ``val/precision``, ``val/recall``, ``val/f1`` (micro) and ``val/f1_<type>`` per entity type,
    and ``val/acc`` (word-level tag accuracy); ``test/...`` alike. Entities are scored per
    example: a sentence longer than the data's ``seq_len`` is scored window by window.
    ``predict`` writes each example back in CoNLL layout, its original lines with the predicted
    tag as one more tab-separated column (the windows of a split sentence one after the other,
    each followed by a blank line).
    """

    @property
    def pooled_width(self) -> int:
        return self.net.state_width  # the head reads one token state

    task_types = ("token_classification",)

    def use_labels(self, task_type: str, labels: list[str] | None) -> None:
        """Take the data's BIO tags (handed over by :func:`lmforge.start.connect`)."""
        if self.mixup > 0:
            raise UserError("mixup mixes pooled sentence vectors: set model.mixup to 0 for token classification.")
        super().use_labels(task_type, labels)  # type: ignore[arg-type]

    def _metrics(self) -> nn.ModuleDict:
        if not self.labels or len(self.labels) != self.num_labels:
            raise UserError("Token classification needs its tag names (BIO, e.g. O, B-Gene, I-Gene): hand the task "
                            "its data with `lmforge.start.connect`, or set model.labels.")
        return nn.ModuleDict({
            "entities": EntityF1(entity_types(self.labels)),
            "acc": MulticlassAccuracy(self.num_labels, average="micro", ignore_index=IGNORE),
        })

    def embed(self, batch: Batch) -> torch.Tensor:
        """The token states ``(B, T, C)``: every token is classified, none pooled."""
        return self.states(batch)

    def _loss(self, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the words' first pieces (the rest carry -100)."""
        if not (targets != IGNORE).any():
            return out.sum() * 0.0  # no word in the batch: nothing to learn, and no NaN
        return F.cross_entropy(out.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)

    def _tags(self, ids: torch.Tensor, where: torch.Tensor) -> list[list[str]]:
        """The tag names of ``ids`` at ``where``, one list per row (its words in order)."""
        names = self.labels or []
        return [[names[i] for i in row[keep].tolist()] for row, keep in zip(ids, where)]

    def _eval_step(self, batch: Batch, stage: str) -> None:
        loss, out = self.loss(batch, training=False)
        labels = batch["labels"]
        first = labels != IGNORE
        self.mean_loss[stage].update(loss, weight=first.sum().clamp(min=1))
        preds = out.argmax(-1)
        self.metrics[stage]["acc"].update(preds, labels)
        self.metrics[stage]["entities"].update(self._tags(preds, first), self._tags(labels, first))

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> list[str]:
        """Per example, its CoNLL block: each original line, a tab, the predicted tag."""
        preds = self(batch).argmax(-1)
        first = batch["word_index"] >= 0
        blocks = []
        for row, lines in enumerate(batch["lines"]):
            words = batch["word_index"][row][first[row]].tolist()
            tags = dict(zip(words, self._tags(preds[row:row + 1], first[row:row + 1])[0]))
            start = int(batch["first_word"][row])
            # a word the tokenizer turned into no piece at all is tagged O
            blocks.append("\n".join(f"{line}\t{tags.get(start + k, 'O')}" for k, line in enumerate(lines)))
        return blocks
