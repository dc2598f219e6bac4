"""The non-finite loss guard: stops before the bad update, names the batch, keeps the good checkpoint."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from lmforge.callbacks import NonFiniteGuard, RunCheckpoint
from lmforge.data import DataSource, TextCorpus, TokenizerSpec
from lmforge.errors import NonFiniteLossError
from lmforge.models import GPTConfig
from lmforge.tasks import CausalLMTask, OptimizerConfig
from lmforge.start import connect


class BreaksAtStep(CausalLMTask):
    """A tiny GPT whose loss becomes NaN at one step (as a diverging run's would)."""

    bad_step = 3

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.trainer.global_step == self.bad_step else loss


def test_nan_loss_stops_before_the_update_and_keeps_the_last_good_checkpoint(tiny_corpus: Path,
                                                                              tmp_path: Path) -> None:
    dm = TextCorpus(source=DataSource(paths=str(tiny_corpus)),
                    tokenizer=TokenizerSpec(vocab_size=300), seq_len=16, batch_size=4,
                    cache_dir=str(tmp_path / "cache"))
    task = BreaksAtStep(config=GPTConfig(vocab_size=dm.vocab_size, max_seq_len=16, n_layer=1, n_head=2, d_model=32),
                        optimizer=OptimizerConfig(warmup_steps=1))
    connect(task, dm)
    checkpoints = RunCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True)
    trainer = L.Trainer(max_steps=10, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        callbacks=[NonFiniteGuard(), checkpoints])
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 3 \(batch 3 of epoch 0, samples \[") as err:
        trainer.fit(task, dm)
    samples = dm.sample_ids(3)
    assert str(samples[:4])[1:-1] in str(err.value) and len(samples) == 4
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 3  # written after step 2, never after the bad one
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())
    assert all(torch.isfinite(p).all() for p in task.parameters())  # the NaN never reached the weights
