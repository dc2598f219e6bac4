"""A callback for tests/test_ddp.py: what each rank of a run trained on, and its weights.

Added to a run with ``--trainer.callbacks+=ddp_probe.DdpProbe --trainer.callbacks.out_dir=DIR``
(``tests/`` on ``PYTHONPATH``). Lightning's DDP launcher re-runs the same command line for the
other ranks, so every rank has one. At the end of training each rank writes to ``DIR``:

* ``rank{r}.json``: the world size and, per training step, the loss, the batch's sample ids
  (``datamodule.sample_ids``) and its ``input_ids``;
* ``rank{r}.pt``: the module's weights when training started and when it ended.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch


class DdpProbe(L.Callback):
    """Record every training step of this rank, and its weights at the start and the end.

    Args:
        out_dir: The folder the records go to (one pair of files per rank).
    """

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.steps: list[dict[str, Any]] = []
        self.start_weights: dict[str, torch.Tensor] = {}

    @staticmethod
    def _weights(pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start_weights = self._weights(pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.steps.append({
            "global_step": trainer.global_step,  # after this step's update
            "epoch": trainer.current_epoch,
            "batch_idx": batch_idx,
            "loss": float(loss.detach()),
            "sample_ids": [int(i) for i in trainer.datamodule.sample_ids(batch_idx)],
            "input_ids": batch["input_ids"].tolist(),
        })

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = Path(self.out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        rank = trainer.global_rank
        record = {"rank": rank, "world_size": trainer.world_size, "global_step": trainer.global_step,
                  "steps": self.steps}
        (folder / f"rank{rank}.json").write_text(json.dumps(record), encoding="utf-8")
        torch.save({"start": self.start_weights, "end": self._weights(pl_module)}, folder / f"rank{rank}.pt")
