"""Generated text samples, written to TensorBoard's text tab after each validation."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.strategies import FSDPStrategy


class TextSampleCallback(L.Callback):
    """After each validation, generate text from a fixed prompt into TensorBoard's text tab.

    Args:
        prompt: The prompt to continue.
        enabled: Turn sampling off.
    """

    def __init__(self, prompt: str = "The", enabled: bool = True):
        self.prompt = prompt
        self.enabled = enabled

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking or not hasattr(pl_module, "sample_text"):
            return  # (a downstream task writes no text)
        if isinstance(trainer.strategy, FSDPStrategy):
            # each rank holds a shard of the weights: gather them on every rank to generate
            from torch.distributed.fsdp import FullyShardedDataParallel

            with FullyShardedDataParallel.summon_full_params(trainer.model, writeback=False):
                text = pl_module.sample_text(self.prompt)
        elif trainer.is_global_zero:
            text = pl_module.sample_text(self.prompt)
        else:
            return
        if text is None or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            add_text = getattr(logger.experiment, "add_text", None)
            if add_text is not None:
                # at the step of the validation scalars beside it (Lightning's: the index of the last
                # optimizer step), not one later, so a resumed run's restart point keeps it too
                add_text("samples", text, global_step=max(trainer.global_step - 1, 0))
