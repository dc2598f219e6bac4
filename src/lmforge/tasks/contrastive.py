"""Contrastive sentence encoders: SimCSE (unsupervised or from pairs) on any encoder of this project."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional import spearman_corrcoef

from lmforge.data.sts import read_sts
from lmforge.errors import UserError
from lmforge.models.bert import Bert, BertConfig
from lmforge.objectives.contrastive import SentenceViews, pad_sentences
from lmforge.tasks.base import OptimizerConfig, PretrainingTask, save_arrays

Pooling = Literal["cls", "mean"]


def info_nce(
    anchors: torch.Tensor, positives: torch.Tensor, temperature: float, negatives: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """In-batch-negatives contrastive loss: row i of ``anchors`` should match row i of
    ``positives`` among all positives (and all hard negatives, if given). Returns the loss
    and how many anchors rank their positive first.

    Args:
        anchors: Embeddings ``(B, C)``.
        positives: Embeddings ``(B, C)``.
        temperature: Softmax temperature of the cosine similarities.
        negatives: Hard-negative embeddings ``(B, C)``, candidates for every anchor.
    """
    candidates = positives if negatives is None else torch.cat([positives, negatives])  # (B or 2B, C)
    sim = F.normalize(anchors, dim=-1) @ F.normalize(candidates, dim=-1).T / temperature  # (B, B or 2B)
    target = torch.arange(sim.size(0), device=sim.device)
    return F.cross_entropy(sim, target), (sim.argmax(-1) == target).sum()


class ContrastiveTask(PretrainingTask):
    """Train a sentence encoder with in-batch negatives. On a corpus of sentences this is
    unsupervised SimCSE (every sentence passes twice through the encoder and dropout makes
    the two views of a positive pair); on ``SentencePairs`` it is supervised, with optional
    hard negatives.

    Start it from an encoder pretrained here (``init_from``: its weights, shape and tokenizer
    come from the checkpoint). ``val/sts_spearman`` is the Spearman correlation between cosine
    similarities and gold scores of ``sts_file``; ``predict`` writes sentence embeddings.

    Args:
        config: The encoder's shape when starting from scratch (with ``init_from`` only its
            ``dropout`` is used: the rest comes from the checkpoint).
        optimizer: Optimizer and learning-rate schedule.
        init_from: A BERT/RoBERTa encoder to start from (weights only): an lmforge ``.ckpt``, a
            Hugging Face model folder, or ``hf:<model id>`` (e.g. ``hf:bert-base-uncased``).
        pooling: Sentence embedding: the first token's state (``cls``) or the mean of all (``mean``).
        temperature: Softmax temperature of the cosine similarities.
        sts_file: Sentence pairs with gold scores (STS-Benchmark layout) to evaluate at each validation.
        prompts: Sentences to embed in ``predict``.
        prompt_file: A text file of sentences to embed in ``predict``, one per line.
        embeddings_out: Where ``predict`` writes the embeddings (``.npy`` or ``.safetensors``).
    """

    accuracy_name = "acc"
    log_perplexity = False
    prompt_example = "A sentence to embed."

    def __init__(
        self,
        config: BertConfig = BertConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(lr=3e-5, weight_decay=0.0, warmup_steps=0),
        init_from: str | None = None,
        pooling: Pooling = "mean",
        temperature: float = 0.05,
        sts_file: str | None = None,
        prompts: str | list[str] | None = None,
        prompt_file: str | None = None,
        embeddings_out: str = "embeddings.npy",
    ):
        super().__init__(optimizer)
        self._store_hparams(ignore=["prompts", "prompt_file", "embeddings_out"])
        if isinstance(config, dict):  # from a checkpoint's hyper-parameters
            config = BertConfig(**config)
        config = self._start_from(init_from, config, "bert")
        self.net = Bert(config)
        self._load_start()
        self.objective = SentenceViews()
        self.pooling = pooling
        self.temperature = temperature
        self.sts = read_sts(sts_file) if sts_file else None
        self._set_prompts(prompts, prompt_file)
        self.embeddings_out = embeddings_out
        self._embeddings: list[torch.Tensor] = []

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings ``(B, C)`` of padded ``[CLS] s [SEP]`` batches."""
        hidden = self.net.encode(input_ids, attention_mask)  # (B, T, C)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        anchors = self.embed(batch["input_ids"], batch["attention_mask"])
        if "positive_ids" not in batch:
            # unsupervised: a second pass draws other dropout masks, the second view (SimCSE)
            return info_nce(anchors, self.embed(batch["input_ids"], batch["attention_mask"]), self.temperature)
        positives = self.embed(batch["positive_ids"], batch["positive_mask"])
        negatives = self.embed(batch["negative_ids"], batch["negative_mask"]) if "negative_ids" in batch else None
        return info_nce(anchors, positives, self.temperature, negatives)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._step(batch)
        self.log_train(loss)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # in eval mode both views are identical; the loss still measures how far apart the
        # sentences of a batch are, and acc how often each one is its own nearest neighbour
        loss, correct = self._step(batch)
        self.record_eval(loss, batch["input_ids"].size(0), correct)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.sts is not None and self.tokenizer is not None:
            value = self.sts_spearman()
            if self.trainer.sanity_checking:
                for logger in self.loggers if self.global_step == 0 else []:
                    logger.log_metrics({"val/sts_spearman": value}, step=0)
            else:
                self.log("val/sts_spearman", value, prog_bar=True)

    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """Embeddings ``(N, C)`` of raw texts, with the task's tokenizer and pooling."""
        if self.tokenizer is None:
            raise UserError("This model has no tokenizer: load it from an lmforge checkpoint (`--ckpt_path`).")
        cls, sep, pad = (self.tokenizer.role_id(r) for r in ("cls", "sep", "pad"))
        limit = self.net.config.max_seq_len - 2
        out = []
        for start in range(0, len(texts), batch_size):
            ids = [np.asarray(t[:limit]) for t in self.tokenizer.encode_batch(texts[start : start + batch_size])]
            batch = pad_sentences(ids, cls, sep, pad)
            out.append(self.embed(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)))
        return torch.cat(out)

    def sts_spearman(self) -> float:
        """Spearman correlation of cosine similarity with the gold scores of ``sts_file``."""
        first, second, gold = self.sts
        with self.evaluating():
            cosine = F.cosine_similarity(self.encode_texts(first), self.encode_texts(second))
        return float(spearman_corrcoef(cosine.float().cpu(), torch.tensor(gold)))

    # -- predict: sentence embeddings to a file -------------------------------------------
    def predict_step(self, text: str, batch_idx: int) -> str:
        self._embeddings.append(self.encode_texts([text])[0].cpu())
        return ""

    def on_predict_end(self) -> None:
        embeddings = torch.stack(self._embeddings)
        path = save_arrays(self.embeddings_out, {"embeddings": embeddings})
        print(f"Wrote {embeddings.shape[0]} embeddings of dimension {embeddings.shape[1]} to {path}")
        self._embeddings = []
