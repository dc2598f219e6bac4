"""Contrastive sentence encoders: SimCSE (unsupervised or from pairs) on any encoder of this project."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.errors import UserError
from lmforge.models.bert import Bert, BertConfig
from lmforge.models.layers import pool
from lmforge.objectives.contrastive import SentenceViews, pad_sentences
from lmforge.tasks.arrays import save_arrays
from lmforge.tasks.base import OptimizerConfig
from lmforge.tasks.pretraining import PretrainingTask

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

    Start it from a pretrained encoder (``init_from``: an lmforge checkpoint or a Hugging Face
    BERT/RoBERTa; its weights, shape and tokenizer come along). ``predict`` writes sentence
    embeddings; ``--sts.file`` adds ``val/sts_spearman`` (:class:`lmforge.evaluation.STSEvaluation`).

    Args:
        config: The encoder's shape when starting from scratch (with ``init_from`` only its
            ``dropout`` is used: the rest comes from the checkpoint).
        optimizer: Optimizer and learning-rate schedule.
        init_from: A BERT/RoBERTa encoder to start from (weights only): an lmforge ``.ckpt``, a
            Hugging Face model folder, or ``hf:<model id>`` (e.g. ``hf:bert-base-uncased``).
        pooling: Sentence embedding: the first token's state (``cls``) or the mean of all (``mean``).
        temperature: Softmax temperature of the cosine similarities.
        prompts: Sentences to embed in ``predict``.
        prompt_file: A text file of sentences to embed in ``predict``, one per line.
        embeddings_out: Where ``predict`` writes the embeddings (``.npy`` or ``.safetensors``).
        compile: Compile the network with ``torch.compile`` when training starts (each transformer block
            once); checkpoints keep the plain parameter names.
    """

    network = Bert
    accuracy_name = "acc"
    log_perplexity = False
    prompt_example = "A sentence to embed."
    predict_batch_size = 64

    def __init__(
        self,
        config: BertConfig = BertConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(lr=3e-5, weight_decay=0.0, warmup_steps=0),
        init_from: str | None = None,
        pooling: Pooling = "mean",
        temperature: float = 0.05,
        prompts: str | list[str] | None = None,
        prompt_file: str | None = None,
        embeddings_out: str = "embeddings.npy",
        compile: bool = False,
    ):
        super().__init__(optimizer, compile)
        self._store_hparams(ignore=["prompts", "prompt_file", "embeddings_out"])
        self.build_network(config, init_from)
        self.objective = SentenceViews()
        self.pooling = pooling
        self.temperature = temperature
        self._set_prompts(prompts, prompt_file)
        self.embeddings_out = embeddings_out
        self._embeddings: list[torch.Tensor] = []

    def trained_heads(self) -> set[str]:
        return set()  # the loss reads the encoder's states only

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings ``(B, C)`` of padded ``[CLS] s [SEP]`` batches."""
        return pool(self.net.encode(input_ids, attention_mask), attention_mask, self.pooling)  # (B, C)

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

    @torch.inference_mode()
    def encode_texts(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """Embeddings ``(N, C)`` of raw texts, with the task's tokenizer and pooling. Texts are
        batched by length (longest first), so that little of a batch is padding."""
        if self.tokenizer is None:
            raise UserError("This model has no tokenizer: load it from an lmforge checkpoint (`--ckpt_path`).")
        cls, sep, pad = (self.tokenizer.role_id(r) for r in ("cls", "sep", "pad"))
        limit = self.net.config.max_seq_len - 2
        ids = [np.asarray(t[:limit]) for t in self.tokenizer.encode_batch(texts)]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = torch.empty(len(ids), self.net.config.d_model, device=self.device)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = pad_sentences([ids[i] for i in rows], cls, sep, pad)
            out[rows] = self.embed(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
        return out

    # -- predict: sentence embeddings to a file -------------------------------------------
    def predict_step(self, texts: list[str], batch_idx: int) -> str:
        self._embeddings.append(self.encode_texts(texts).cpu())
        return ""

    def on_predict_end(self) -> None:
        embeddings = torch.cat(self._embeddings)
        path = save_arrays(self.embeddings_out, {"embeddings": embeddings})
        print(f"Wrote {embeddings.shape[0]} embeddings of dimension {embeddings.shape[1]} to {path}")
        self._embeddings = []
