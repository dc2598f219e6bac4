"""Document-aware packing from the command line: ``--model.document_mask true`` trains and
validates with the documents of each block kept apart (GPT for a few steps, the other families a
fast_dev_run); the steps hand the batch's ``position_ids`` to the network; validation counts only
the targets inside a document; NSP refuses it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, fit_tiny_gpt
from lmforge.batching import IGNORE
from lmforge.cli import main
from lmforge.errors import UserError
from lmforge.models import BertConfig, GPTConfig
from lmforge.objectives import CausalLM
from lmforge.tasks import CausalLMTask, MaskedLMTask

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def test_fit_a_tiny_gpt_with_document_mask(tmp_path: Path) -> None:
    ckpt = fit_tiny_gpt(tmp_path / "run", 2, "--model.document_mask=true")
    assert ckpt["hyper_parameters"]["document_mask"] is True  # a resumed run keeps it


@pytest.mark.parametrize("family", ["llama", "roberta"])
def test_the_other_families_take_document_mask(family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", str(CONFIGS / family / "tiny.yaml"), "--model.document_mask=true",
          "--trainer.fast_dev_run=true", "--data.init_args.max_documents=60", *QUIET])


def test_validation_counts_the_targets_inside_documents_only() -> None:
    torch.manual_seed(0)
    task = CausalLMTask(GPTConfig(vocab_size=32, max_seq_len=16, n_layer=1, n_head=2, d_model=16),
                        document_mask=True)
    assert isinstance(task.objective, CausalLM) and task.objective.document_mask
    task.objective.eos_id = 1
    block = torch.randint(2, 32, (2, 17))
    block[0, [4, 9]] = 1
    block[1, 12] = 1
    batch = task.objective(list(block.numpy()))
    task.on_validation_epoch_start()
    task.validation_step(batch, 0)
    kept = batch["targets"] != IGNORE
    assert int(kept.sum()) == 2 * 16 - 3
    loss_sum, count, *_ = task._eval_totals[None].tolist()  # (loss sum, tokens, correct, bytes) of the one set
    assert count == 2 * 16 - 3
    logits = task.net(batch["input_ids"], position_ids=batch["position_ids"])
    expected = torch.nn.functional.cross_entropy(logits[kept], batch["targets"][kept])
    assert loss_sum / count == pytest.approx(expected.item(), abs=1e-5)


def test_nsp_pairs_refuse_document_mask() -> None:
    with pytest.raises(UserError, match="document_mask.*nsp"):
        MaskedLMTask(nsp=True, document_mask=True)


def test_the_training_steps_read_the_position_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    ids = torch.randint(2, 32, (2, 16))
    positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3]] * 2)
    causal = CausalLMTask(GPTConfig(vocab_size=32, max_seq_len=16, n_layer=1, n_head=2, d_model=16),
                          document_mask=True)
    monkeypatch.setattr(causal, "log_train", lambda loss: None)  # no trainer to log to
    batch = {"input_ids": ids, "targets": ids.roll(-1, 1), "position_ids": positions}
    step = causal.training_step(batch, 0)
    assert step.item() == pytest.approx(causal.net.loss(ids, batch["targets"], positions).item(), abs=1e-6)
    assert step.item() != pytest.approx(causal.net.loss(ids, batch["targets"]).item(), abs=1e-4)
    shape = BertConfig(vocab_size=32, max_seq_len=16, n_layer=1, n_head=2, d_model=16, nsp_head=False, dropout=0.0)
    masked = MaskedLMTask(shape, document_mask=True)
    monkeypatch.setattr(masked, "log_train", lambda loss: None)
    monkeypatch.setattr(masked, "log", lambda *args, **kwargs: None)
    labels = torch.full_like(ids, IGNORE)
    labels[:, [3, 6, 13]] = ids[:, [3, 6, 13]]
    batch = {"input_ids": ids, "labels": labels, "position_ids": positions}
    chosen = labels != IGNORE
    for position_ids, close in ((positions, True), (None, False)):
        logits = masked.net.mlm_logits(masked.net.encode(ids, position_ids=position_ids)[chosen])
        expected = torch.nn.functional.cross_entropy(logits, labels[chosen]).item()
        assert (masked.training_step(batch, 0).item() == pytest.approx(expected, abs=1e-6)) is close
