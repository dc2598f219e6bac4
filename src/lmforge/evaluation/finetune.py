"""Downstream evaluation: fine-tune (or linearly probe) any pretrained network of this project
on a labelled classification or regression task, to check that pretraining helped."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassMatthewsCorrCoef
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

from lmforge.errors import UserError
from lmforge.models import Bert, BertConfig
from lmforge.models.elmo import ScalarMix
from lmforge.models.layers import pool
from lmforge.start import Start, import_class
from lmforge.tasks.base import OptimizerConfig, Task, class_path
from lmforge.tasks.optim import param_groups

Pooling = Literal["auto", "cls", "mean", "last"]
Batch = dict[str, torch.Tensor]


def warmup_linear(warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0):
    """Multiplier of the peak learning rate: linear warmup, then linear decay to ``min_lr_ratio``
    at ``total_steps`` (the usual fine-tuning schedule, BERT's and RoBERTa's)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * (1 - progress)

    return factor


class FineTuneTask(Task):
    """Fine-tune a pretrained network of this project (BERT/RoBERTa, GPT, T5's encoder, ELMo)
    with a linear head on sentence or sentence-pair classification or regression (``LabeledText``).

    ``mode: full`` trains everything; ``probe`` freezes the network (kept in eval mode, no
    dropout) and trains the head only: a linear probe of what pretraining learned. The
    sentence vector is pooled from the token states (``pooling``); ELMo first mixes its layers
    with learned softmax-normalised weights and a scale gamma (Peters et al. 2018, eq. 1).

    The number of classes and the task type come from the data when left unset. Metrics:
    ``val/loss``, and ``val/acc``, ``val/f1_macro``, ``val/f1_micro``, ``val/mcc``
    (classification) or ``val/pearson``, ``val/spearman`` (regression); ``test/...`` alike.
    Checkpoints carry the network's class and shape, so they load without ``init_from``.
    Heads of the pretraining objective (an MLM head, ELMo's softmax) are not used: they are
    named once when the weights are loaded.

    Args:
        init_from: The pretrained weights: an lmforge checkpoint, a Hugging Face model folder or
            ``hf:<id>`` (any family); shape and tokenizer come with them.
        random_init: Keep the architecture and tokenizer of ``init_from`` but start from random
            weights: the baseline that shows what pretraining adds.
        mode: ``full`` fine-tuning or ``probe`` (frozen network, head only).
        pooling: ``cls`` or ``mean`` (BERT/RoBERTa), ``last`` (the last real token) or ``mean``
            (GPT), ``mean`` (T5 encoder, ELMo); ``auto`` takes the first of each.
        dropout: Dropout on the pooled vector, before the head.
        mixup: Embedding mixup (training only): pooled vectors and targets of each example and
            a shuffled partner are mixed with weights drawn from Beta(mixup, mixup); 0 turns it off.
        num_labels: Classes (classification); left unset, taken from the data.
        task_type: ``classification`` or ``regression``; left unset, taken from the data.
        labels: Class names in id order (from the data when unset), kept in checkpoints.
        optimizer: AdamW settings; the schedule is linear warmup then linear decay to
            ``min_lr_ratio`` at the end of training (``decay_steps`` if set).
        warmup_ratio: Fraction of the training steps warmed up; overrides
            ``optimizer.warmup_steps`` when set.
        head_lr: Learning rate of the head (and ELMo's scalar mix); ``None`` uses ``optimizer.lr``.
        config: The network's shape when training from scratch without ``init_from`` (a BERT
            encoder; ``vocab_size`` and ``max_seq_len`` come from the data). Unused otherwise.
        network: Set in checkpoints with ``network_config``: the class path of the fine-tuned network.
        network_config: Set in checkpoints: the fine-tuned network's config, so that it loads alone.
    """

    def __init__(
        self,
        init_from: str | None = None,
        random_init: bool = False,
        mode: Literal["full", "probe"] = "full",
        pooling: Pooling = "auto",
        dropout: float = 0.1,
        mixup: float = 0.0,
        num_labels: int | None = None,
        task_type: Literal["classification", "regression"] | None = None,
        labels: list[str] | None = None,
        optimizer: OptimizerConfig = OptimizerConfig(
            lr=5e-5, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8, warmup_steps=0, min_lr_ratio=0.0
        ),
        warmup_ratio: float | None = 0.1,
        head_lr: float | None = None,
        config: BertConfig = BertConfig(),
        network: str | None = None,
        network_config: dict[str, Any] | None = None,
    ):
        super().__init__(optimizer)
        self._store_hparams()
        if mode not in ("full", "probe"):
            raise UserError(f"mode={mode!r}: use full (fine-tune everything) or probe (frozen network, head only).")
        if mixup < 0:
            raise UserError(f"mixup={mixup}: give the Beta distribution's alpha (> 0), or 0 to turn mixup off.")
        if warmup_ratio is not None and not 0.0 <= warmup_ratio < 1.0:
            raise UserError(f"warmup_ratio={warmup_ratio} must be in [0, 1).")
        if isinstance(config, dict):
            config = BertConfig(**config)
        if init_from:
            shape = self._start_from(init_from, None)  # any family; the weights' own dropout
            net_class = self._start.network
        elif network is not None:
            net_class = import_class(network)
            shape = net_class.config_class(**(network_config or {}))
        else:
            net_class, shape = Bert, config
        if pooling == "auto":
            pooling = net_class.poolings[0]
        if pooling not in net_class.poolings:
            raise UserError(f"pooling={pooling!r} does not suit a {net_class.family} network: use one of "
                            f"{', '.join(net_class.poolings)}.")
        self.pooling, self.mode, self.mixup = pooling, mode, mixup
        self.warmup_ratio, self.head_lr = warmup_ratio, head_lr
        self.net = net_class(shape)
        if random_init and self._start is not None:
            # the baseline keeps the weights' non-learned buffers (ELMo's spelling table) only
            start, self._start = self._start, None
            learned = dict(self.net.named_parameters())
            self.net.load_state_dict({k: v for k, v in start.state_dict().items() if k not in learned}, strict=False)
        self._load_start()
        n_mix = self.net.state_layers
        self.scalar_mix = ScalarMix(n_mix) if n_mix else None
        if mode == "probe":
            self.net.requires_grad_(False)
            self.net.eval()
        self.drop = nn.Dropout(dropout)
        self.task_type, self.num_labels, self.labels = task_type, num_labels, labels
        self.head: nn.Linear | None = None
        if task_type is not None and (num_labels is not None or task_type == "regression"):
            self._build_head()

    # -- head and metrics, once the labels are known --------------------------------------
    def _build_head(self) -> None:
        if self.task_type == "regression":
            self.num_labels = 1
        elif self.num_labels is None or self.num_labels < 2:
            raise UserError(f"Classification needs at least 2 classes, got num_labels={self.num_labels}: "
                            "check the data's labels or use task_type regression.")
        self.head = nn.Linear(self.net.state_width, self.num_labels)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.hparams.update(num_labels=self.num_labels, task_type=self.task_type, labels=self.labels)
        if self.task_type == "regression":
            metrics = MetricCollection({"pearson": PearsonCorrCoef(), "spearman": SpearmanCorrCoef()})
        else:
            n = self.num_labels
            metrics = MetricCollection({
                "acc": MulticlassAccuracy(n, average="micro"),
                "f1_macro": MulticlassF1Score(n, average="macro"),
                "f1_micro": MulticlassF1Score(n, average="micro"),
                "mcc": MulticlassMatthewsCorrCoef(n),
            })
        self.metrics = nn.ModuleDict({"val": metrics.clone(), "test": metrics.clone()})
        self.mean_loss = nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})

    def trained_heads(self) -> set[str]:
        return set()  # the network's pretraining heads: its token states feed this task's own head

    def _record_start(self, start: Start, config: Any) -> None:
        # this run's checkpoints must not depend on the source it started from
        self.hparams.update(init_from=None, random_init=False, network=class_path(start.network),
                            network_config=dataclasses.asdict(config))

    def use_labels(self, task_type: Literal["classification", "regression"], labels: list[str] | None) -> None:
        """Take the data's task type and classes (handed over by :func:`lmforge.start.connect`) and
        build the head for them; set ones must agree."""
        num_labels = 1 if task_type == "regression" else len(labels or [])
        if self.task_type is not None and self.task_type != task_type:
            raise UserError(f"The model is set up for {self.task_type} but the data is {task_type}: "
                            "make model.task_type and data.task_type agree.")
        if self.head is not None and self.num_labels != num_labels:
            raise UserError(f"The model has {self.num_labels} classes but the data {num_labels}: "
                            "unset model.num_labels, or list the classes in data.labels.")
        self.task_type, self.num_labels = task_type, num_labels
        if self.labels is None and labels is not None:
            self.labels = list(labels)
        if self.head is None:
            self._build_head()
            self.head.to(self.device)
            self.metrics.to(self.device)
            self.mean_loss.to(self.device)

    def setup(self, stage: str) -> None:
        if self.head is None:
            raise UserError("The task type is unknown: hand the task its data's labels with "
                            "`lmforge.start.connect(task, data)` (the lmforge command does), or set "
                            "model.task_type and model.num_labels.")

    def train(self, mode: bool = True) -> FineTuneTask:
        super().train(mode)
        if self.mode == "probe":
            self.net.eval()  # a frozen network: features without dropout
        return self

    # -- forward --------------------------------------------------------------------------
    def embed(self, batch: Batch) -> torch.Tensor:
        """The pooled sentence vectors ``(B, C)`` of a padded batch."""
        if self.mode == "probe" and self.net.training:
            self.net.eval()  # Lightning may restore recorded module modes directly, not through train()
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.mode == "full"):
            states = self.net.token_states(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        if self.scalar_mix is not None:
            states = self.scalar_mix(states)  # (L, B, T, C) -> (B, T, C)
        return pool(states, batch["attention_mask"], self.pooling)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits ``(B, num_labels)`` (or scores ``(B,)`` for regression) of a batch."""
        return self._head(self.embed(batch))

    def _loss(self, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-example losses."""
        if self.task_type == "regression":
            return F.mse_loss(out, targets.to(out.dtype), reduction="none")
        return F.cross_entropy(out, targets, reduction="none")

    def loss(self, batch: Batch, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss and outputs of a batch; with ``mixup`` and ``training`` the loss of mixed
        pooled vectors against the same mixture of targets."""
        pooled = self.embed(batch)
        targets = batch["labels"]
        if not (training and self.mixup > 0):
            out = self._head(pooled)
            return self._loss(out, targets).mean(), out
        weight = torch.distributions.Beta(self.mixup, self.mixup).sample((pooled.size(0),)).to(pooled)  # (B,)
        partner = torch.randperm(pooled.size(0), device=pooled.device)
        mixed = weight[:, None] * pooled + (1 - weight[:, None]) * pooled[partner]
        out = self._head(mixed)
        if self.task_type == "regression":
            mixed_targets = weight * targets + (1 - weight) * targets[partner]
            return self._loss(out, mixed_targets).mean(), out
        # mixing the one-hot targets is mixing the two cross-entropies
        loss = weight * self._loss(out, targets) + (1 - weight) * self._loss(out, targets[partner])
        return loss.mean(), out

    def _head(self, pooled: torch.Tensor) -> torch.Tensor:
        out = self.head(self.drop(pooled))
        return out.squeeze(-1) if self.task_type == "regression" else out

    # -- steps ----------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss, _ = self.loss(batch, training=True)
        self.log_train(loss)
        return loss

    def _eval_step(self, batch: Batch, stage: str) -> None:
        loss, out = self.loss(batch, training=False)
        self.mean_loss[stage].update(loss, weight=batch["labels"].numel())
        preds = out.float() if self.task_type == "regression" else out.argmax(-1)
        self.metrics[stage].update(preds, batch["labels"])

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self.mean_loss["val"].reset()
        self.metrics["val"].reset()

    def on_test_epoch_start(self) -> None:
        self.mean_loss["test"].reset()
        self.metrics["test"].reset()

    def _log_eval(self, stage: str) -> None:
        values = {f"{stage}/{k}": v.float() for k, v in self.metrics[stage].compute().items()}
        values[f"{stage}/loss"] = self.mean_loss[stage].compute()
        if self.trainer.sanity_checking:
            # Lightning drops what is logged in the sanity check; keep it as the step-0 point,
            # the model before fine-tuning
            for logger in self.loggers if self.global_step == 0 else []:
                logger.log_metrics({k: float(v) for k, v in values.items()}, step=0)
            return
        self.log(f"{stage}/loss", values.pop(f"{stage}/loss"), prog_bar=stage == "val")
        self.log_dict(values)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    # -- optimization ---------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        o = self.optim
        head = nn.ModuleList([m for m in (self.head, self.scalar_mix) if m is not None])
        groups = param_groups(self.net, o.weight_decay) if self.mode == "full" else []
        for group in param_groups(head, o.weight_decay):
            groups.append({**group, "lr": self.head_lr or o.lr})
        groups = [g for g in groups if g["params"]]
        optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)
        total = o.decay_steps or int(self.trainer.estimated_stepping_batches)
        warmup = round(self.warmup_ratio * total) if self.warmup_ratio is not None else o.warmup_steps
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(warmup, total, o.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def flops_per_token(self) -> float:
        """Training FLOPs per token: forward and backward through what trains, forward only
        through a frozen network (parameter count; attention left out)."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        return 6.0 * trainable + 2.0 * frozen
