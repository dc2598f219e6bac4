"""Named entities in tag sequences: tagging schemes (BIO/IOB2, IOB1, IO, and BIOES/BILOU read as BIO; from
:mod:`lmforge.evaluation.schemes`, where the tagged data reads them), entity spans under the
conlleval chunk rules (seqeval's default mode), and entity-level precision, recall and F1 as a
``torchmetrics`` metric whose counts are summed over processes (exact under DDP)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from lmforge.errors import UserError
from lmforge.evaluation.schemes import Scheme, detect_scheme, entity_types, split_tag, to_bio

__all__ = ["EntityF1", "Scheme", "Span", "detect_scheme", "entity_spans", "entity_types", "split_tag", "to_bio"]

Span = tuple[str, int, int]  # (type, first word, one past the last word)


def entity_spans(bio_tags: Sequence[str]) -> set[Span]:
    """The entities ``(type, start, end)`` (end exclusive) of one BIO-tagged sentence, under the
    conlleval chunk rules: ``B-X`` always opens an entity; ``I-X`` continues an open entity of
    type X and otherwise opens one (an I- without B- counts); ``O``, another type or the end of
    the sentence closes it."""
    spans: set[Span] = set()
    kind, start = "", -1
    for i, tag in enumerate([*bio_tags, "O"]):
        prefix, tag_kind = split_tag(tag)
        continues = prefix == "I" and tag_kind == kind
        if kind and not continues:
            spans.add((kind, start, i))
            kind = ""
        if prefix != "O" and not continues:
            kind, start = tag_kind, i
    return spans


class EntityF1(Metric):
    """Entity-level precision, recall and micro-F1, and F1 per entity type (seqeval's default,
    conlleval's): an entity is right when its type and both boundaries are. States are counts per
    type (true positives, predicted, gold), summed over processes, so the result is exact under
    DDP; the types are fixed at construction.

    Args:
        types: The entity types (e.g. :func:`entity_types` of the label list).
    """

    full_state_update = False

    def __init__(self, types: Sequence[str]):
        super().__init__()
        self.types = list(types)
        self._index = {t: i for i, t in enumerate(self.types)}
        for name in ("hits", "predicted", "gold"):
            self.add_state(name, torch.zeros(len(self.types), dtype=torch.long), dist_reduce_fx="sum")

    def _counts(self, spans: set[Span]) -> torch.Tensor:
        counts = torch.zeros(len(self.types), dtype=torch.long)
        for kind, _, _ in spans:
            if kind not in self._index:
                raise UserError(f"Entity type {kind!r} is not among the types {self.types} the metric was built for.")
            counts[self._index[kind]] += 1
        return counts

    def update(self, preds: Sequence[Sequence[str]], target: Sequence[Sequence[str]]) -> None:
        """Count the entities of predicted and gold BIO tag sequences, one pair per sentence."""
        if len(preds) != len(target):
            raise ValueError(f"{len(preds)} predicted sentences but {len(target)} gold ones.")
        hits, predicted, gold = (torch.zeros(len(self.types), dtype=torch.long) for _ in range(3))
        for p, g in zip(preds, target):
            p_spans, g_spans = entity_spans(p), entity_spans(g)
            predicted += self._counts(p_spans)
            gold += self._counts(g_spans)
            hits += self._counts(p_spans & g_spans)
        self.hits += hits.to(self.hits.device)
        self.predicted += predicted.to(self.hits.device)
        self.gold += gold.to(self.hits.device)

    def compute(self) -> dict[str, torch.Tensor]:
        tp, pred, gold = self.hits.double(), self.predicted.double(), self.gold.double()
        precision = tp.sum() / pred.sum().clamp(min=1)
        recall = tp.sum() / gold.sum().clamp(min=1)
        values = {"precision": precision, "recall": recall, "f1": 2 * tp.sum() / (pred.sum() + gold.sum()).clamp(min=1)}
        per_type = 2 * tp / (pred + gold).clamp(min=1)
        values.update({f"f1_{t}": per_type[i] for i, t in enumerate(self.types)})
        return {k: v.float() for k, v in values.items()}
