"""Downstream evaluation: fine-tune (or linearly probe) any pretrained network of this project
on a labelled classification or regression task, to check that pretraining helped."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import (
    MulticlassAccuracy, MulticlassMatthewsCorrCoef, MulticlassStatScores, MultilabelExactMatch,
    MultilabelF1Score,
)
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

from lmforge.errors import UserError
from lmforge.models import Bert, BertConfig
from lmforge.models.elmo import ScalarMix
from lmforge.models.layers import pool
from lmforge.start import Start, import_class
from lmforge.tasks.base import OptimizerConfig, Task, class_path
from lmforge.tasks.optim import param_groups
from lmforge.tasks.schedules import StagedSchedule, schedule_factor

Pooling = Literal["auto", "cls", "mean", "last", "entity_start"]
TaskType = Literal["classification", "regression", "multilabel", "token_classification"]
Batch = dict[str, torch.Tensor]


class ClassF1(MulticlassStatScores):
    """Micro- and macro-F1 over classes from torchmetrics' per-class counts (summed over processes,
    so exact under DDP), with one class optionally left out: the "no relation" class of relation
    extraction (ChemProt's ``false``), whose correct predictions are no hits and whose
    predictions are no guesses. Macro-F1 averages the classes seen in the gold labels or the
    predictions (scikit-learn's convention). With ``names``, also each class's F1, ``f1_<name>``.

    Args:
        num_classes: Number of classes.
        ignore: The class left out, if any.
        names: The class names in id order, for the per-class F1s; ``None``: none.
    """

    full_state_update = False

    def __init__(self, num_classes: int, ignore: int | None = None, names: list[str] | None = None):
        # not torchmetrics' ignore_index: that drops the examples of that gold label, yet a class
        # predicted on a "no relation" example is a wrong guess
        super().__init__(num_classes, average="none")
        self.ignore, self.names = ignore, list(names or [])

    def compute(self) -> dict[str, torch.Tensor]:
        tp, fp, _, fn, _ = super().compute().double().unbind(-1)  # (C, 5): tp, fp, tn, fn, support
        keep = torch.ones_like(tp, dtype=torch.bool)
        if self.ignore is not None:
            keep[self.ignore] = False
        micro = 2 * tp[keep].sum() / (2 * tp[keep].sum() + fp[keep].sum() + fn[keep].sum()).clamp(min=1)
        per_class = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
        seen = keep & ((tp + fp + fn) > 0)
        macro = per_class[seen].mean() if seen.any() else micro.new_zeros(())
        classes = {f"f1_{name}": f1.float() for name, f1 in zip(self.names, per_class)}
        return {"f1_micro": micro.float(), "f1_macro": macro.float(), **classes}


class FineTuneTask(Task):
    """Fine-tune a pretrained network of this project (BERT/RoBERTa, GPT, T5's encoder, ELMo)
    with a linear head on sentence or sentence-pair classification or regression (``LabeledText``).

    ``mode: full`` trains everything; ``probe`` freezes the network (kept in eval mode, no
    dropout) and trains the head only: a linear probe of what pretraining learned. The
    sentence vector is pooled from the token states (``pooling``); ELMo first mixes its layers
    with learned softmax-normalised weights and a scale gamma (Peters et al. 2018, eq. 1).
    Relation classification marks the two entities in the text (``LabeledText``'s ``markers``,
    added to the tokenizer as special tokens, the embeddings grown for them) and pools
    ``entity_start``: the states at the two opening markers side by side.

    The number of classes and the task type come from the data when left unset. Metrics:
    ``val/loss``, and ``val/acc``, ``val/f1_micro``, ``val/f1_macro`` (both without
    ``ignore_label``), ``val/f1_<label>`` per class (GLUE's MRPC/QQP F1 is ``val/f1_1``, the positive
    class's: micro-F1 equals accuracy there), ``val/mcc`` (classification); ``val/f1_micro``, ``val/f1_macro``,
    ``val/exact_match`` and ``val/f1_<label>`` per label (multi-label: a sigmoid per label,
    binary cross-entropy, a label is predicted above ``threshold``); or ``val/pearson``,
    ``val/spearman`` (regression); ``test/...`` alike. A further validation set of the data
    (``extra_validation``: its batches carry ``set: <name>``) gets its own metrics, logged as
    ``val/<metric>/<name>`` (``val/acc/mismatched``, ``val/loss/mismatched``); checkpoints
    monitor the main set's.
    Checkpoints carry the network's class and shape, so they load without ``init_from``.
    Heads of the pretraining objective (an MLM head, ELMo's softmax) are not used: those the
    weights carry are named once when they are loaded; those they lack go unmentioned.

    Args:
        init_from: The pretrained weights: an lmforge checkpoint, a Hugging Face model folder or
            ``hf:<id>`` (any family); shape and tokenizer come with them.
        random_init: Keep the architecture and tokenizer of ``init_from`` but start from random
            weights: the baseline that shows what pretraining adds.
        mode: ``full`` fine-tuning or ``probe`` (frozen network, head only).
        pooling: ``cls`` or ``mean`` (BERT/RoBERTa), ``last`` (the last real token) or ``mean``
            (GPT), ``mean`` (T5 encoder, ELMo); ``auto`` takes the first of each;
            ``entity_start`` (any network) the states at the two opening entity markers.
        dropout: Dropout on the pooled vector, before the head.
        mixup: Embedding mixup (training only): pooled vectors and targets of each example and
            a shuffled partner are mixed with weights drawn from Beta(mixup, mixup); 0 turns it off.
        num_labels: Classes (classification); left unset, taken from the data.
        task_type: ``classification``, ``multilabel`` or ``regression`` (``token_classification`` is
            :class:`~lmforge.evaluation.TokenClassificationTask`'s); left unset, taken from the data.
        labels: Class names in id order (from the data when unset), kept in checkpoints.
        ignore_label: A class left out of micro- and macro-F1 (the "no relation" class, e.g.
            ChemProt's ``false``); accuracy still counts it.
        threshold: Multi-label: a label is predicted when its probability exceeds this.
        optimizer: AdamW (or Muon for the network's hidden matrices) settings; the schedule is
            linear warmup then linear decay to ``min_lr_ratio`` at the end of training
            (``decay_steps`` if set), unless ``optimizer.schedule`` names another.
        warmup_ratio: Fraction of the training steps warmed up; overrides
            ``optimizer.warmup_steps`` when set.
        head_lr: Learning rate of the head (and ELMo's scalar mix); ``None`` uses ``optimizer.lr``.
        config: The network's shape when training from scratch without ``init_from`` (a BERT
            encoder; ``vocab_size`` and ``max_seq_len`` come from the data). Unused otherwise.
        network: Set in checkpoints with ``network_config``: the class path of the fine-tuned network.
        network_config: Set in checkpoints: the fine-tuned network's config, so that it loads alone.
        compile: Compile the network with ``torch.compile`` when training starts (each transformer block
            once); checkpoints keep the plain parameter names.
    """

    task_types: tuple[str, ...] = ("classification", "regression", "multilabel")  # what this task's head does

    def __init__(
        self,
        init_from: str | None = None,
        random_init: bool = False,
        mode: Literal["full", "probe"] = "full",
        pooling: Pooling = "auto",
        dropout: float = 0.1,
        mixup: float = 0.0,
        num_labels: int | None = None,
        task_type: TaskType | None = None,
        labels: list[str] | None = None,
        ignore_label: str | None = None,
        threshold: float = 0.5,
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
        super().__init__(optimizer, compile)
        self._store_hparams()
        if mode not in ("full", "probe"):
            raise UserError(f"mode={mode!r}: use full (fine-tune everything) or probe (frozen network, head only).")
        if mixup < 0:
            raise UserError(f"mixup={mixup}: give the Beta distribution's alpha (> 0), or 0 to turn mixup off.")
        if warmup_ratio is not None and not 0.0 <= warmup_ratio < 1.0:
            raise UserError(f"warmup_ratio={warmup_ratio} must be in [0, 1).")
        if task_type is not None:
            self._check_task_type(task_type)
        # from scratch a BERT of `config`; a checkpoint names its network; init_from brings its own
        # (any family, with the weights' own dropout)
        net_class = import_class(network) if network is not None and not init_from else Bert
        shape = (network_config or {}) if network is not None else config
        self.build_network(None if init_from else shape, init_from, net_class, weights=not random_init)
        net_class = type(self.net)
        if pooling == "auto":
            pooling = net_class.poolings[0]
        if pooling not in (*net_class.poolings, "entity_start"):
            raise UserError(f"pooling={pooling!r} does not suit a {net_class.family} network: use one of "
                            f"{', '.join(net_class.poolings)}.")
        self.pooling, self.mode, self.mixup = pooling, mode, mixup
        self.ignore_label, self.threshold = ignore_label, threshold
        self._flops: tuple[float, float] | None = None  # forward FLOPs per token (a, b): a + b * length
        self.warmup_ratio, self.head_lr = warmup_ratio, head_lr
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

    @property
    def pooled_width(self) -> int:
        """The width of the pooled vector the head reads."""
        return self.net.state_width * (2 if self.pooling == "entity_start" else 1)

    # -- head and metrics, once the labels are known --------------------------------------
    def _build_head(self) -> None:
        if self.task_type == "regression":
            self.num_labels = 1
        elif self.num_labels is None or self.num_labels < 2 and self.task_type == "classification":
            raise UserError(f"Classification needs at least 2 classes, got num_labels={self.num_labels}: "
                            "check the data's labels or use task_type regression.")
        self.head = nn.Linear(self.pooled_width, self.num_labels)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.hparams.update(num_labels=self.num_labels, task_type=self.task_type, labels=self.labels)
        self.metrics = nn.ModuleDict({stage: self._metrics() for stage in ("val", "test")})
        self.mean_loss = nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})

    def _metrics(self) -> nn.ModuleDict:
        """The metrics of one stage, by name; one that computes a dict logs each of its entries."""
        n = self.num_labels
        if self.task_type == "regression":
            return nn.ModuleDict({"pearson": PearsonCorrCoef(), "spearman": SpearmanCorrCoef()})
        if self.task_type == "multilabel":
            t = self.threshold
            return nn.ModuleDict({
                "f1_micro": MultilabelF1Score(n, threshold=t, average="micro"),
                "f1_macro": MultilabelF1Score(n, threshold=t, average="macro"),
                "f1_label": MultilabelF1Score(n, threshold=t, average="none"),
                "exact_match": MultilabelExactMatch(n, threshold=t),
            })
        if self.ignore_label is not None and self.ignore_label not in (self.labels or []):
            raise UserError(f"ignore_label={self.ignore_label!r} is not one of the classes {self.labels}: "
                            "name one of them, or leave it unset.")
        ignore = self.labels.index(self.ignore_label) if self.ignore_label is not None else None
        return nn.ModuleDict({
            "acc": MulticlassAccuracy(n, average="micro"),
            "f1": ClassF1(n, ignore, self.labels),
            "mcc": MulticlassMatthewsCorrCoef(n),
        })

    def trained_heads(self) -> set[str]:
        return set()  # the network's pretraining heads: its token states feed this task's own head

    def _record_start(self, start: Start, config: Any) -> None:
        # this run's checkpoints must not depend on the source it started from
        self.hparams.update(init_from=None, random_init=False, network=class_path(start.network))
        self._record_config(config)

    def _record_config(self, config: Any) -> None:
        self.hparams["network_config"] = dataclasses.asdict(config)

    def use_labels(self, task_type: TaskType, labels: list[str] | None) -> None:
        """Take the data's task type and classes (handed over by :func:`lmforge.start.connect`) and
        build the head for them; set ones must agree."""
        self._check_task_type(task_type)
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

    def _check_task_type(self, task_type: str) -> None:
        if task_type not in self.task_types:
            other = "TokenClassificationTask with TaggedText" if task_type == "token_classification" else \
                "FineTuneTask with LabeledText"
            raise UserError(f"{type(self).__name__} does {', '.join(self.task_types)}, not {task_type}: use {other}.")

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
    def states(self, batch: Batch) -> torch.Tensor:
        """The token states ``(B, T, C)`` of a padded batch (ELMo's layers mixed)."""
        if self.mode == "probe" and self.net.training:
            self.net.eval()  # Lightning may restore recorded module modes directly, not through train()
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.mode == "full"):
            states = self.net.token_states(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        if self.scalar_mix is not None:
            states = self.scalar_mix(states)  # (L, B, T, C) -> (B, T, C)
        return states

    def embed(self, batch: Batch) -> torch.Tensor:
        """The pooled sentence vectors ``(B, C)`` of a padded batch."""
        states = self.states(batch)
        positions = batch.get("entity_positions")
        if self.pooling == "entity_start" and positions is None:
            raise UserError("pooling=entity_start needs the entities marked in the texts: set the data's `markers` "
                            "(e.g. ['<<', '>>', '[[', ']]']).")
        return pool(states, batch["attention_mask"], self.pooling, positions)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits ``(B, num_labels)`` (or scores ``(B,)`` for regression) of a batch."""
        return self._head(self.embed(batch))

    def _loss(self, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-example losses."""
        if self.task_type == "regression":
            return F.mse_loss(out, targets.to(out.dtype), reduction="none")
        if self.task_type == "multilabel":
            return F.binary_cross_entropy_with_logits(out, targets.to(out.dtype), reduction="none").mean(-1)
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
        if self.task_type != "classification":  # scores, or the labels' probabilities
            w = weight.view(-1, *[1] * (targets.dim() - 1))
            mixed_targets = w * targets + (1 - w) * targets[partner]
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
        self.mean_loss[stage].update(loss, weight=batch["labels"].size(0))
        if self.task_type == "regression":
            preds = out.float()
        elif self.task_type == "multilabel":
            preds = torch.sigmoid(out.float())
        else:
            preds = out.argmax(-1)
        for metric in self.metrics[stage].values():
            metric.update(preds, batch["labels"].long() if self.task_type == "multilabel" else batch["labels"])

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, self._metric_set("val", batch.pop("set", None)))

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, self._metric_set("test", batch.pop("set", None)))

    def _metric_set(self, stage: str, name: str | None) -> str:
        """The key of the metrics of ``stage``'s set ``name`` (``val/mismatched``), made on its first batch."""
        key = f"{stage}/{name}" if name is not None else stage
        if key not in self.metrics:  # no parameters, states outside state_dict: checkpoints do not change
            self.metrics[key] = self._metrics().to(self.device)
            self.mean_loss[key] = MeanMetric().to(self.device)
        return key

    def _reset(self, stage: str) -> None:
        for key in (key for key in self.metrics if key.split("/")[0] == stage):
            self.mean_loss[key].reset()
            for metric in self.metrics[key].values():
                metric.reset()

    def on_validation_epoch_start(self) -> None:
        self._reset("val")

    def on_test_epoch_start(self) -> None:
        self._reset("test")

    def _computed(self, stage: str) -> dict[str, torch.Tensor]:
        """Every metric of ``stage`` by its logged name: ``val/acc``; of set ``val/mismatched``: ``val/acc/mismatched``."""
        values: dict[str, torch.Tensor] = {}
        for name, metric in self.metrics[stage].items():
            value = metric.compute()
            if isinstance(value, dict):
                values.update(value)
            elif value.dim() == 1:  # one per label
                values.update({f"f1_{label}": v for label, v in zip(self.labels or [], value)})
            else:
                values[name] = value
        if self.mean_loss[stage].update_called:
            values["loss"] = self.mean_loss[stage].compute()
        base, _, name = stage.partition("/")
        return {f"{base}/{k}" + f"/{name}" * bool(name): v.float() for k, v in values.items()}

    def _log_eval(self, stage: str) -> None:
        values = {}  # each set's that had batches (`val`, `val/mismatched`)
        for key in (key for key in self.metrics if key.split("/")[0] == stage and self.mean_loss[key].update_called):
            values.update(self._computed(key))
        if self.trainer.sanity_checking:
            # Lightning drops what is logged in the sanity check; keep it as step 0, before fine-tuning
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
        head_groups = [{**group, "lr": self.head_lr or o.lr} for group in param_groups(head, o.weight_decay)]
        optimizer = self.build_optimizer(self.net if self.mode == "full" else None, head_groups)
        total = o.decay_steps or int(self.trainer.estimated_stepping_batches)
        warmup = round(self.warmup_ratio * total) if self.warmup_ratio is not None else o.warmup_steps
        factor = schedule_factor(o.schedule or "linear", warmup, total, o.min_lr_ratio, o.cooldown_fraction,
                                 o.cooldown_steps)
        schedule = StagedSchedule(optimizer, lambda start: factor)  # resumed: this run's settings win
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token of a batch ``seq_len`` tokens long, for MFU: the network's
        forward FLOPs as ``torch``'s FLOP counter counts them (what runs: no unused pretraining
        head, no embedding lookup as a matmul), times 3 when it trains (forward and backward),
        once when frozen (probe); the head's are negligible. Measured once at two lengths, so
        the part that grows with the length (attention) scales with ``seq_len``."""
        if self._flops is None:
            self._flops = self._count_forward_flops()
        per_token, per_token_per_length = self._flops
        length = seq_len or getattr(self.net, "max_positions", None) or 128
        return (3.0 if self.mode == "full" else 1.0) * (per_token + per_token_per_length * length)

    def _count_forward_flops(self, lengths: tuple[int, int] = (8, 16)) -> tuple[float, float]:
        """``(a, b)`` with forward FLOPs per token ``a + b * T`` at length ``T``."""
        from torch.utils.flop_counter import FlopCounterMode

        per_token = []
        with torch.no_grad(), self.evaluating():
            for length in lengths:
                ids = torch.ones(1, length, dtype=torch.long, device=self.device)
                with FlopCounterMode(display=False) as counter:
                    self.net.token_states(ids, torch.ones_like(ids), None)
                per_token.append(counter.get_total_flops() / length)
        (t1, f1), (t2, f2) = zip(lengths, per_token)
        slope = max(0.0, (f2 - f1) / (t2 - t1))
        return max(0.0, f1 - slope * t1), slope
