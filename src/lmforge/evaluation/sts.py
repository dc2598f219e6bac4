"""Sentence similarity: STS-Benchmark-layout files, and their Spearman correlation as a
validation metric of any task that embeds sentences (``--sts.file``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.functional import spearman_corrcoef

from lmforge.errors import UserError
from lmforge.evaluation.labeled_data import read_records


def read_sts(path: str | Path) -> tuple[list[str], list[str], list[float]]:
    """(sentences 1, sentences 2, gold scores) of an STS-Benchmark-layout file.

    Each line is tab-separated: genre, file, year, id, score, sentence 1, sentence 2 (extra
    fields after the seventh are ignored, and there is no quoting), as in ``sts-dev.csv``.

    Args:
        path: The file.
    """
    if not Path(path).is_file():
        raise UserError(f"STS file '{path}' does not exist: give a file in STS-Benchmark layout.")
    records = read_records(path, "sts")
    if len(records) < 2:
        raise UserError(f"STS file '{path}' has fewer than two scored pairs.")
    return [r["sentence1"] for r in records], [r["sentence2"] for r in records], [r["score"] for r in records]


def sts_spearman(encode: Callable[[list[str]], torch.Tensor], pairs: tuple[list[str], list[str], list[float]]) -> float:
    """Spearman correlation between the cosine similarity of each pair's embeddings and its gold score.

    Args:
        encode: Texts to embeddings ``(N, C)``.
        pairs: (sentences 1, sentences 2, gold scores), as :func:`read_sts` gives them.
    """
    first, second, gold = pairs
    cosine = F.cosine_similarity(encode(first), encode(second))
    return float(spearman_corrcoef(cosine.float().cpu(), torch.tensor(gold)))


class STSEvaluation(L.Callback):
    """After each validation, log ``val/sts_spearman``: how the cosine similarities of a task's
    sentence embeddings rank the pairs of an STS-Benchmark-layout file against their gold scores.
    The task must embed sentences (``encode_texts``, as :class:`~lmforge.tasks.ContrastiveTask`).

    Args:
        file: Sentence pairs with gold scores (STS Benchmark layout, e.g. ``sts-dev.csv``); ``None`` turns it off.
    """

    def __init__(self, file: str | None = None):
        self.file = file
        self.pairs = read_sts(file) if file else None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.pairs is None or getattr(pl_module, "tokenizer", None) is None:
            return
        encode = getattr(pl_module, "encode_texts", None)
        if encode is None:
            raise UserError(f"--sts.file scores sentence embeddings, which {type(pl_module).__name__} does not make: "
                            "use it with a sentence encoder (lmforge.tasks.ContrastiveTask).")
        with pl_module.evaluating():
            value = sts_spearman(encode, self.pairs)
        if trainer.sanity_checking:
            # Lightning drops what is logged in the sanity check: keep it as the step-0 point
            for logger in pl_module.loggers if trainer.global_step == 0 else []:
                logger.log_metrics({"val/sts_spearman": value}, step=0)
        else:
            pl_module.log("val/sts_spearman", value, prog_bar=True)
