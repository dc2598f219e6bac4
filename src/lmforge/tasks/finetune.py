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

from lmforge.convert import load_weights
from lmforge.errors import UserError
from lmforge.models import GPT, T5, Bert, BertConfig, Elmo, ElmoConfig, GPTConfig, T5Config
from lmforge.models.elmo import ScalarMix
from lmforge.tasks.base import OptimizerConfig, PretrainingTask
from lmforge.tasks.optim import param_groups

Family = Literal["bert", "gpt", "t5", "elmo"]
Pooling = Literal["auto", "cls", "mean", "last"]
Batch = dict[str, torch.Tensor]


# -- what the task reads out of each family's network -------------------------------------
class Features:
    """How token states come out of one family's network, and which poolings make sense.

    Subclasses are data about a family, chosen by ``FEATURES[family]``: no if/else per family.
    """

    network: type[nn.Module]
    config: type
    poolings: tuple[str, ...]  # the first is the default

    def width(self, config: Any) -> int:
        return config.d_model

    def mixed_layers(self, config: Any) -> int | None:
        """Number of layers a scalar mix combines, or None when the network gives one state per token."""
        return None

    def max_positions(self, config: Any) -> int | None:
        """Longest input the network accepts; None when it has no such limit."""
        return config.max_seq_len

    def states(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        """Token states ``(B, T, C)``, or ``(L, B, T, C)`` for :meth:`mixed_layers` layers."""
        raise NotImplementedError


class BertFeatures(Features):
    network, config, poolings = Bert, BertConfig, ("cls", "mean")

    def states(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        # RoBERTa has one segment embedding: its second-text token types stay 0
        types = batch.get("token_type_ids") if net.config.type_vocab_size > 1 else None
        return net.encode(batch["input_ids"], batch["attention_mask"], types)


class GPTFeatures(Features):
    network, config, poolings = GPT, GPTConfig, ("last", "mean")

    def states(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        return net.hidden_states(batch["input_ids"])  # causal: right padding changes no real position


class T5Features(Features):
    network, config, poolings = T5, T5Config, ("mean",)

    def max_positions(self, config: Any) -> int | None:
        return None  # relative positions

    def states(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        return net.encode(batch["input_ids"], batch["attention_mask"])


class ElmoFeatures(Features):
    network, config, poolings = Elmo, ElmoConfig, ("mean",)

    def width(self, config: Any) -> int:
        return 2 * config.projection_size  # forward and backward LM side by side

    def mixed_layers(self, config: Any) -> int | None:
        return config.n_layer + 1  # the token layer and every LSTM layer

    def max_positions(self, config: Any) -> int | None:
        return None  # LSTMs

    def states(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        return net.padded_layer_embeddings(batch["input_ids"], batch["attention_mask"])


FEATURES: dict[str, Features] = {
    "bert": BertFeatures(), "gpt": GPTFeatures(), "t5": T5Features(), "elmo": ElmoFeatures(),
}


def pool(states: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector ``(B, C)`` per row of ``states`` ``(B, T, C)``: the first token's (``cls``),
    the last real token's (``last``, wherever the padding is) or the mean of the real ones."""
    if pooling == "cls":
        return states[:, 0]
    if pooling == "last":
        positions = torch.arange(states.size(1), device=states.device)
        last = (attention_mask.long() * positions).argmax(1)  # (B,): the rightmost real token
        return states[torch.arange(states.size(0), device=states.device), last]
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1)


def warmup_linear(warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0):
    """Multiplier of the peak learning rate: linear warmup, then linear decay to ``min_lr_ratio``
    at ``total_steps`` (the usual fine-tuning schedule, BERT's and RoBERTa's)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * (1 - progress)

    return factor


class FineTuneTask(PretrainingTask):
    """Fine-tune a pretrained network of this project (BERT/RoBERTa, GPT, T5's encoder, ELMo)
    with a linear head on sentence or sentence-pair classification or regression (``LabeledText``).

    ``mode: full`` trains everything; ``probe`` freezes the network (kept in eval mode, no
    dropout) and trains the head only: a linear probe of what pretraining learned. The
    sentence vector is pooled from the token states (``pooling``); ELMo first mixes its layers
    with learned softmax-normalised weights and a scale gamma (Peters et al. 2018, eq. 1).

    The number of classes and the task type come from the data when left unset. Metrics:
    ``val/loss``, and ``val/acc``, ``val/f1_macro``, ``val/f1_micro``, ``val/mcc``
    (classification) or ``val/pearson``, ``val/spearman`` (regression); ``test/...`` alike.
    Checkpoints carry the network's family and shape, so they load without ``init_from``.

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
        family: Set in checkpoints with ``network``: the family of the fine-tuned network.
        network: Set in checkpoints: the fine-tuned network's config, so that it loads alone.
    """

    log_perplexity = False

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
        family: Family | None = None,
        network: dict[str, Any] | None = None,
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
        state: dict[str, torch.Tensor] | None = None
        if init_from:
            loaded = load_weights(init_from)
            family, shape, state = loaded.family, loaded.config, loaded.state_dict
            if loaded.family not in FEATURES:
                raise UserError(f"init_from '{init_from}' holds {loaded.family} weights, which cannot be "
                                "fine-tuned here: start from a bert, gpt, t5 or elmo model.")
            self.tokenizer = self._start_tokenizer = loaded.tokenizer
            # this run's checkpoints must not depend on the file it started from
            self.hparams.update(init_from=None, random_init=False, family=family, network=dataclasses.asdict(shape))
        elif network is not None:
            if family not in FEATURES:
                raise UserError(f"family={family!r}: give bert, gpt, t5 or elmo with `network`.")
            shape = FEATURES[family].config(**network)
        else:
            family, shape = "bert", config
        self.family = family
        self.features = FEATURES[family]
        if pooling == "auto":
            pooling = self.features.poolings[0]
        if pooling not in self.features.poolings:
            raise UserError(f"pooling={pooling!r} does not suit a {family} network: use one of "
                            f"{', '.join(self.features.poolings)}.")
        self.pooling, self.mode, self.mixup = pooling, mode, mixup
        self.warmup_ratio, self.head_lr = warmup_ratio, head_lr
        self.net = self.features.network(shape)
        if state is not None:
            if random_init:  # the random baseline keeps non-learned buffers (ELMo's spelling table)
                parameters = dict(self.net.named_parameters())
                state = {k: v for k, v in state.items() if k not in parameters}
            self.net.load_state_dict(state, strict=not random_init)
        n_mix = self.features.mixed_layers(shape)
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
        self.head = nn.Linear(self.features.width(self.net.config), self.num_labels)
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

    def setup(self, stage: str) -> None:
        super().setup(stage)  # the data's tokenizer when the task has none (training from scratch)
        data = getattr(self.trainer, "datamodule", None)
        limit = self.features.max_positions(self.net.config)
        seq_len = getattr(data, "seq_len", None)
        if seq_len is not None and limit is not None and seq_len > limit:
            raise UserError(f"data.seq_len={seq_len} is longer than the {self.family} network's {limit} "
                            "positions: lower it.")
        if data is not None and getattr(data, "task_type", None) is not None:
            if self.task_type is not None and self.task_type != data.task_type:
                raise UserError(f"The model is set up for {self.task_type} but the data is {data.task_type}: "
                                "make model.task_type and data.task_type agree.")
            if self.head is not None and self.num_labels != data.num_labels:
                raise UserError(f"The model has {self.num_labels} classes but the data {data.num_labels}: "
                                "unset model.num_labels, or list the classes in data.labels.")
            self.task_type, self.num_labels = data.task_type, data.num_labels
            if self.labels is None and data.labels is not None:
                self.labels = list(data.labels)
        if self.head is None:
            if self.task_type is None:
                raise UserError("The task type is unknown: train on a LabeledText data module, or set "
                                "model.task_type and model.num_labels.")
            self._build_head()
            self.head.to(self.device)
            self.metrics.to(self.device)
            self.mean_loss.to(self.device)

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
            states = self.features.states(self.net, batch)
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

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lmforge"]["family"] = self.family
