"""Watching a decoder learn: zero-shot task files scored during pretraining, logged to TensorBoard
as ``zeroshot/<task>/<metric>`` beside ``val/loss`` (``--zeroshot.tasks``)."""

from __future__ import annotations

import lightning as L
import torch
from jsonargparse.typing import Path_fr

from lmforge.data.source import plain_path
from lmforge.errors import UserError
from lmforge.evaluation.likelihood import Scorer
from lmforge.evaluation.prompt_tasks import Item, PromptTask, load_items, read_task
from lmforge.evaluation.zero_shot import score_task
from lmforge.models.layers import DecoderLM


class ZeroShotProbe(L.Callback):
    """Every ``every`` validations, score the model being trained on a few zero-shot task files
    and log each metric as ``zeroshot/<task>/<metric>`` (e.g. ``zeroshot/sciq/acc``); the run
    goes on. The tasks are read and rendered once, when the run starts, so a bad task file stops
    the run before its first step. Under DDP every rank scores the same items (they are few).

    Args:
        tasks: Task files (see ``configs/eval/tasks/``); none turns the probe off. A relative
            path in a config file is looked up next to that file first, then in the working directory.
        every: Score after every ``every``-th validation; the sanity check before training
            (``num_sanity_val_steps``) is the first, logged at step 0.
        limit: Score at most this many items of each task.
        batch_size: Requests per forward pass.
    """

    def __init__(self, tasks: list[Path_fr | str] | None = None, every: int = 1, limit: int | None = 200,
                 batch_size: int = 32):
        if every < 1:
            raise UserError(f"--zeroshot.every={every} must be at least 1 (score after every N-th validation).")
        self.every, self.batch_size = every, batch_size
        self.tasks: list[tuple[PromptTask, list[Item]]] = []
        for path in tasks or []:
            task = read_task(plain_path(path)).overridden(limit=limit)
            self.tasks.append((task, load_items(task)))
        self.validations = 0

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.tasks:
            return
        self.validations += 1
        if (self.validations - 1) % self.every:
            return
        net, tokenizer = getattr(pl_module, "net", None), getattr(pl_module, "tokenizer", None)
        if not isinstance(net, DecoderLM) or tokenizer is None:
            raise UserError(f"--zeroshot.tasks scores a decoder's log-likelihoods, which {type(pl_module).__name__} "
                            "does not train: use it with a GPT or Llama causal LM task.")
        with pl_module.evaluating(), torch.no_grad():
            scorer = Scorer(net, tokenizer, self.batch_size)
            metrics = {f"zeroshot/{task.name}/{name}": value
                       for task, items in self.tasks for name, value in score_task(task, scorer, items)[0].items()}
        if trainer.sanity_checking:
            # Lightning drops what is logged in the sanity check: keep it as the step-0 point
            for logger in pl_module.loggers if trainer.global_step == 0 else []:
                logger.log_metrics(metrics, step=0)
        else:
            pl_module.log_dict(metrics)
