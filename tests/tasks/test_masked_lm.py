"""The masked-LM task: sparse loss equals the dense one, it learns, fill-mask, hparams."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from lmforge.data import DataSource, TextCorpus, TokenizerSpec
from lmforge.errors import UserError
from lmforge.models import BertConfig
from lmforge.tasks import MaskedLMTask, OptimizerConfig
from lmforge.start import connect

SPEC = TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=300, lowercase=True)


def _task(vocab_size: int, **kwargs) -> MaskedLMTask:
    config = BertConfig(vocab_size=vocab_size, max_seq_len=32, n_layer=2, n_head=2, d_model=64, dropout=0.0)
    return MaskedLMTask(config=config, **kwargs)


def _data(corpus: Path) -> TextCorpus:
    return TextCorpus(source=DataSource(paths=str(corpus)),
                      tokenizer=SPEC, seq_len=32, batch_size=16, val_fraction=0.25)


def test_sparse_loss_equals_dense_loss(tiny_corpus: Path) -> None:
    dm = _data(tiny_corpus)
    task = _task(dm.vocab_size)
    dm.objective = task.objective
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    hidden = task.net.encode(batch["input_ids"])
    sparse, correct, n = task._mlm(batch, hidden)
    logits = task.net(batch["input_ids"])  # every position projected
    dense = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
    torch.testing.assert_close(sparse, dense)
    selected = batch["labels"] != -100
    assert n == int(selected.sum()) and int(correct) == int((logits.argmax(-1)[selected] == batch["labels"][selected]).sum())


def _trainer(tmp_path: Path, steps: int) -> L.Trainer:
    return L.Trainer(default_root_dir=tmp_path, max_steps=steps, accelerator="cpu", logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, limit_val_batches=4)


def test_tiny_bert_learns_the_tiny_corpus(tiny_corpus: Path, tmp_path: Path) -> None:
    L.seed_everything(0)
    dm = _data(tiny_corpus)
    task = _task(dm.vocab_size, optimizer=OptimizerConfig(lr=3e-3, warmup_steps=10, weight_decay=0.0))
    connect(task, dm)
    before = _trainer(tmp_path, 1).validate(task, dm, verbose=False)[0]
    _trainer(tmp_path, 300).fit(task, dm)
    after = _trainer(tmp_path, 1).validate(task, dm, verbose=False)[0]
    # 300 steps of a 2-layer post-LN encoder on a few repeated sentences: a clear, not a full, fit
    assert after["val/mlm_loss"] < before["val/mlm_loss"] - 0.5
    assert after["val/mlm_acc"] > before["val/mlm_acc"] + 0.1
    assert after["val/ppl"] == pytest.approx(torch.tensor(after["val/mlm_loss"]).exp().item(), rel=1e-4)


def test_fill_mask_lists_top_k_candidates_per_mask(tiny_corpus: Path) -> None:
    dm = _data(tiny_corpus)
    task = _task(dm.vocab_size, top_k=3)
    with pytest.raises(UserError, match="no tokenizer"):
        task.fill_mask("the [MASK] fox")
    task.tokenizer = dm.tokenizer
    lines = task.fill_mask("the [MASK] brown fox [MASK] over").splitlines()
    assert lines[0] == "the [MASK] brown fox [MASK] over"
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["[MASK] 1", "[MASK] 2"]
    assert all(line.count("(") == 3 for line in lines[1:])
    with pytest.raises(UserError, match="no \\[MASK\\] token"):
        task.fill_mask("no mask here")


def test_fill_mask_shows_byte_pieces_by_their_vocabulary_entry(tiny_corpus: Path) -> None:
    """A byte-level piece of a multi-byte character decodes to U+FFFD on its own: candidates
    would all read "\ufffd", so they are shown as vocabulary entries instead."""
    spec = TokenizerSpec(kind="byte_level_bpe", specials="roberta", vocab_size=300)
    dm = TextCorpus(source=DataSource(paths=str(tiny_corpus)), tokenizer=spec, seq_len=32, batch_size=16)
    task = _task(dm.vocab_size)
    task.tokenizer = dm.tokenizer
    lead_byte = dm.tokenizer.backend.token_to_id("Ã")  # 0xC3, the first byte of "é"
    assert "\ufffd" in dm.tokenizer.decode([lead_byte])
    assert task._token_text(lead_byte) == "Ã"
    assert task._token_text(dm.tokenizer.backend.token_to_id("Ġthe")) == "the"


def test_nsp_needs_the_nsp_head_and_hparams_are_plain_data() -> None:
    with pytest.raises(UserError, match="nsp_head"):
        MaskedLMTask(config=BertConfig(nsp_head=False), nsp=True)
    task = _task(100, nsp=True, prompts=["a [MASK]"], top_k=7)
    assert task.objective.nsp and task.objective.sentences
    assert task.hparams["config"]["vocab_size"] == 100 and task.hparams["nsp"] is True
    assert "prompts" not in task.hparams and "top_k" not in task.hparams
