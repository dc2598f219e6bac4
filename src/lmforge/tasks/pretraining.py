"""What the pretraining tasks share: the objective they hand to the data, warmup + cosine
AdamW, validation loss/perplexity/accuracy (and bits per byte) summed over the epoch, and
``predict`` prompts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from lmforge.batching import Objective
from lmforge.data.resume import start_data_afresh
from lmforge.errors import UserError
from lmforge.tasks.base import Task
from lmforge.tasks.schedules import StagedSchedule

# Per-call settings of text generation: kept out of a checkpoint's hyper-parameters, so that
# predict's command line always wins over what the training run had.
GENERATION_ARGS = ["prompts", "prompt_file", "max_new_tokens", "temperature", "top_k", "generation_seed"]


class PretrainingTask(Task):
    """Base of every pretraining family's task. Subclasses set ``self.net`` and ``self.objective``
    (how token blocks become examples: the data module applies it once it is handed over).

    Args:
        optimizer: Optimizer and learning-rate schedule.
        compile: Compile the network with ``torch.compile`` when training starts.
    """

    objective: Objective
    prompts: tuple[str, ...] | list[str] = ()
    prompt_file: str | None = None
    prompt_example = "..."  # shown in the message when predict is given no prompts
    predict_batch_size = 1  # prompts per predict_step: one text, or a list of up to this many
    accuracy_name = "acc"  # logged as val/<accuracy_name>: the fraction of predictions right
    log_perplexity = True  # val/ppl = exp(val/<eval_loss_name>), for language-modelling losses
    # val/bpb: the loss in bits per UTF-8 byte of the targets (record_eval's ``target_ids``), which
    # unlike val/loss compares runs with different tokenizers
    log_bpb = False
    eval_loss_name = "loss"  # what record_eval's loss is logged as
    eval_parts: tuple[str, ...] = ()  # parts of that loss (record_eval's ``parts``): val/loss_<name>, val/ppl_<name>

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token, for MFU (blocks are packed to ``max_seq_len``: ``seq_len`` is
        the same)."""
        return self.net.flops_per_token(self.model_config.max_seq_len)

    def sample_text(self, prompt: str) -> str | None:
        """A text generated from ``prompt`` for the TensorBoard text tab; None if the task cannot."""
        return None

    # -- predict ----------------------------------------------------------------------------
    def _set_prompts(self, prompts: str | list[str] | None, prompt_file: str | None) -> None:
        """Keep ``predict``'s inputs: a prompt or a list of them, and a file of more."""
        self.prompts = [prompts] if isinstance(prompts, str) else list(prompts or [])
        self.prompt_file = prompt_file

    def _set_generation(self, max_new_tokens: int, temperature: float, top_k: int | None, seed: int) -> None:
        """Keep the sampling settings of ``predict``; a value that would sample nothing, or
        something other than asked, is refused by name."""
        if max_new_tokens < 1:
            raise UserError(f"model.max_new_tokens={max_new_tokens}: give the number of tokens to generate (>= 1).")
        if not temperature >= 0:  # also NaN
            raise UserError(f"model.temperature={temperature}: give a temperature >= 0 (0 decodes greedily).")
        if top_k is not None and top_k < 1:
            raise UserError(f"model.top_k={top_k}: give the number of candidates to sample from (>= 1), or null for all.")
        self.max_new_tokens, self.temperature, self.top_k, self.generation_seed = max_new_tokens, temperature, top_k, seed

    def predict_dataloader(self) -> DataLoader:
        """The prompts of ``predict``: ``prompts`` plus the lines of ``prompt_file``."""
        prompts = list(self.prompts)
        if self.prompt_file:
            path = Path(self.prompt_file)
            if not path.is_file():
                raise UserError(f"Prompt file '{path}' does not exist: give a text file with one prompt per line.")
            prompts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not prompts:
            raise UserError(
                f'No prompts: pass `--model.prompts "{self.prompt_example}"` or `--model.prompt_file prompts.txt`.'
            )
        if self.predict_batch_size == 1:
            return DataLoader(prompts, batch_size=1, collate_fn=lambda batch: batch[0])
        return DataLoader(prompts, batch_size=self.predict_batch_size, collate_fn=list)

    # -- optimization ---------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        o = self.optim
        optimizer = self.build_optimizer(self.net)
        end = o.decay_steps or int(self.trainer.estimated_stepping_batches)
        schedule = StagedSchedule(optimizer, lambda start: o.stage_factor("cosine", end, start))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lmforge"]["stage"] = self.optim.stage

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint of a lower ``optimizer.stage`` starts this stage at its step: the schedule
        counts from there (:class:`StagedSchedule`), the moments are dropped with
        ``reset_state``, and the training data starts from its beginning."""
        super().on_load_checkpoint(checkpoint)
        if self._trainer is None or self.trainer.state.fn != TrainerFn.FITTING or "lr_schedulers" not in checkpoint:
            return
        stored, stage, step = checkpoint.get("lmforge", {}).get("stage", 0), self.optim.stage, checkpoint["global_step"]
        if stage < stored:
            raise UserError(f"optimizer.stage={stage} is lower than the checkpoint's stage {stored}: give {stored} "
                            f"to resume it, or {stored + 1} to start a new stage from it.")
        if stage == stored:
            return
        for state in checkpoint["lr_schedulers"]:  # read by StagedSchedule once the optimizer is restored
            state.update(start=step, reset_state=self.optim.reset_state)
        start_data_afresh(checkpoint)
        rank_zero_info(f"Stage {stage} starts at step {step} (the checkpoint's stage is {stored}): the learning rate "
                       f"warms up again over {self.optim.warmup_steps} steps, the optimizer's moments are "
                       f"{'reset' if self.optim.reset_state else 'kept'}, the training data starts from its beginning.")

    # -- validation metrics -------------------------------------------------------------------
    # A mixture's validation batches name their set (``set``) and its weight in the overall loss
    # (``set_weight``); every other corpus's batches belong to the one set ``None``.
    def on_validation_epoch_start(self) -> None:
        # per set: (sum of losses, predicted tokens, correct predictions, text bytes of the predicted
        # tokens, sum of each part's loss), summed over the epoch
        self._eval_totals: dict[str | None, torch.Tensor] = {}
        self._eval_weights: dict[str | None, float] = {}
        self._eval_set: str | None = None
        # bytes per token id, from the tokenizer handed over, for bits per byte
        self._token_bytes = None
        if self.log_bpb and self.tokenizer is not None:
            self._token_bytes = torch.tensor(self.tokenizer.token_bytes(), dtype=torch.float64, device=self.device)

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if isinstance(batch, dict) and "set" in batch:
            self._eval_set = batch.pop("set")
            self._eval_weights[self._eval_set] = float(batch.pop("set_weight"))

    on_test_batch_start = on_validation_batch_start

    def record_eval(
        self,
        mean_loss: torch.Tensor,
        num_tokens: int,
        num_correct: torch.Tensor,
        parts: Sequence[torch.Tensor] = (),
        target_ids: torch.Tensor | None = None,
    ) -> None:
        """Accumulate a batch's mean loss (weighted by its predicted tokens) and its correct
        predictions into the epoch's loss, perplexity and accuracy of the batch's set; ``parts`` are
        the batch's mean losses of ``eval_parts``, weighted alike; ``target_ids``, the
        ``num_tokens`` ids predicted, give the bytes of bits per byte."""
        totals = self._eval_totals.get(self._eval_set)
        if totals is None:
            totals = self._eval_totals[self._eval_set] = torch.zeros(
                4 + len(self.eval_parts), dtype=torch.float64, device=self.device)
        num_bytes = (self._token_bytes[target_ids].sum() if target_ids is not None and self._token_bytes is not None
                     else totals.new_zeros(()))
        totals += torch.stack(
            [mean_loss.detach().double() * num_tokens, totals.new_tensor(num_tokens), num_correct.double(), num_bytes]
            + [part.detach().double() * num_tokens for part in parts]
        )

    def _set_metrics(self, totals: torch.Tensor, prefix: str, suffix: str) -> dict[str, torch.Tensor]:
        """The metrics of one set's summed ``totals``: ``{prefix}/loss{suffix}``, ppl, accuracy, bpb, parts."""
        loss = (totals[0] / totals[1]).float()
        metrics = {f"{prefix}/{self.eval_loss_name}{suffix}": loss,
                   f"{prefix}/{self.accuracy_name}{suffix}": (totals[2] / totals[1]).float()}
        if self.log_perplexity:
            metrics[f"{prefix}/ppl{suffix}"] = torch.exp(loss)
        if totals[3] > 0:  # nats over the epoch / bytes over the epoch, not a mean of batch ratios
            metrics[f"{prefix}/bpb{suffix}"] = (totals[0] / totals[3] / math.log(2)).float()
        for name, total in zip(self.eval_parts, totals[4:]):
            part = (total / totals[1]).float()
            metrics[f"{prefix}/loss_{name}{suffix}"] = part
            if self.log_perplexity:
                metrics[f"{prefix}/ppl_{name}{suffix}"] = torch.exp(part)
        return metrics

    def _eval_metrics(self, prefix: str) -> dict[str, torch.Tensor]:
        """The epoch's metrics, summed over all ranks in one reduce. With named sets (a mixture),
        each set's as ``{prefix}/loss/<set>``, and overall the mean of the sets' metrics weighted
        by their ``set_weight`` (the sets of weight 0 are only validated on)."""
        names = sorted(self._eval_totals, key=lambda n: (n is not None, n or ""))
        if not names:
            return {}
        summed = self.trainer.strategy.reduce(torch.stack([self._eval_totals[n] for n in names]), reduce_op="sum")
        if names == [None]:
            return self._set_metrics(summed[0], prefix, "") if summed[0][1] > 0 else {}
        metrics: dict[str, torch.Tensor] = {}
        overall: dict[str, torch.Tensor] = {}
        weight = sum(self._eval_weights.get(n, 0.0) for n in names)
        for name, totals in zip(names, summed):
            if totals[1] == 0:
                continue
            one = self._set_metrics(totals, prefix, f"/{name}")
            metrics.update(one)
            w = self._eval_weights.get(name, 0.0) / weight if weight > 0 else 0.0
            for key, value in one.items():
                if w > 0 and not key.startswith(f"{prefix}/ppl"):
                    base = key[: -len(name) - 1]
                    overall[base] = overall.get(base, 0.0) + w * value
        metrics.update(overall)
        if f"{prefix}/loss" not in metrics and f"{prefix}/{self.eval_loss_name}" in overall:
            # the weighted loss checkpoints monitor (a mixture trains no sentence objective: MLM's loss is all of it)
            metrics[f"{prefix}/loss"] = overall[f"{prefix}/{self.eval_loss_name}"]
        for name in (self.eval_loss_name, *(f"loss_{part}" for part in self.eval_parts)) if self.log_perplexity else ():
            if f"{prefix}/{name}" in overall:
                ppl = "ppl" if name == self.eval_loss_name else name.replace("loss_", "ppl_", 1)
                metrics[f"{prefix}/{ppl}"] = torch.exp(overall[f"{prefix}/{name}"])
        return metrics

    def _log_eval(self, prefix: str) -> None:
        metrics = self._eval_metrics(prefix)
        loss_name = f"{prefix}/{self.eval_loss_name}"
        if loss_name not in metrics:
            return
        if self.trainer.sanity_checking:
            # Lightning drops what is logged in the sanity check; keep it as the step-0 point
            # of the validation curve, the untrained model's loss (not again on resume)
            for logger in self.loggers if self.global_step == 0 else []:
                logger.log_metrics({k: v.item() for k, v in metrics.items()}, step=0)
            return
        self.log(loss_name, metrics.pop(loss_name), prog_bar=prefix == "val", add_dataloader_idx=False)
        self.log_dict(metrics, add_dataloader_idx=False)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")
