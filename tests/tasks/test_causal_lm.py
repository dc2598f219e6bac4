"""The GPT task: it learns, bits per byte, its optimizer groups, self-describing checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch

from lmforge.data import DataSource, TextCorpus, TokenizerSpec, train_tokenizer
from lmforge.errors import UserError
from lmforge.models import GPTConfig, LlamaConfig
from lmforge.tasks import CausalLMTask, LlamaCausalLMTask, OptimizerConfig
from lmforge.tasks.optim import param_groups
from lmforge.start import connect


def _task(vocab_size: int, **kwargs) -> CausalLMTask:
    config = GPTConfig(vocab_size=vocab_size, max_seq_len=32, n_layer=2, n_head=2, d_model=64)
    return CausalLMTask(config=config, **kwargs)


def _trainer(tmp_path: Path, max_steps: int) -> L.Trainer:
    return L.Trainer(
        default_root_dir=tmp_path,
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=2,
    )


def test_tiny_model_overfits_tiny_corpus(tiny_corpus: Path, tmp_path: Path) -> None:
    L.seed_everything(0)
    dm = TextCorpus(source=DataSource(paths=str(tiny_corpus)),
                    tokenizer=TokenizerSpec(vocab_size=300), seq_len=32, batch_size=8)
    task = _task(dm.vocab_size, optimizer=OptimizerConfig(lr=3e-3, warmup_steps=10, weight_decay=0.0))
    connect(task, dm)
    before = _trainer(tmp_path, 1).validate(task, dm, verbose=False)[0]["val/loss"]
    _trainer(tmp_path, 150).fit(task, dm)
    after = _trainer(tmp_path, 1).validate(task, dm, verbose=False)[0]["val/loss"]
    # the corpus is a handful of sentences repeated: a 2-layer model memorises it
    assert before > math.log(dm.vocab_size) - 1.0
    assert after < 1.0, f"val loss {after:.3f} did not fall from {before:.3f}"


@pytest.mark.parametrize("network", ["gpt", "llama"])
def test_val_bpb_is_the_epoch_s_nats_over_its_text_bytes(network: str, tiny_corpus: Path, tmp_path: Path) -> None:
    L.seed_everything(0)
    dm = TextCorpus(source=DataSource(paths=str(tiny_corpus)),
                    tokenizer=TokenizerSpec(vocab_size=300), seq_len=32, batch_size=4)
    task = _task(dm.vocab_size) if network == "gpt" else LlamaCausalLMTask(
        LlamaConfig(vocab_size=dm.vocab_size, max_seq_len=32, n_layer=1, n_head=2, n_kv_head=1, d_model=32, d_ff=64))
    connect(task, dm)
    trainer = L.Trainer(default_root_dir=tmp_path, max_steps=2, val_check_interval=2,
                        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(task, dm)
    logged = trainer.callback_metrics
    # the validation targets' text, decoded apart from the byte table (the corpus is ASCII)
    batches = [batch["targets"] for batch in dm.val_dataloader()]
    tokens = sum(t.numel() for t in batches)
    text_bytes = len(dm.tokenizer.decode(torch.cat(batches).flatten().tolist()).encode())
    # batches of 4 and 1 blocks: a mean of the two batches' ratios would not be the epoch's
    assert [len(t) for t in batches] == [4, 1] and text_bytes > tokens
    expected = logged["val/loss"].item() * tokens / text_bytes / math.log(2)
    assert logged["val/bpb"].item() == pytest.approx(expected, rel=1e-5)


def test_weight_decay_skips_norms_biases_and_embeddings() -> None:
    task = _task(100)
    decay, no_decay = param_groups(task.net, weight_decay=0.1)
    names = {id(p): n for n, p in task.net.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decayed and all(n.endswith(".weight") and ("qkv" in n or "proj" in n or "fc" in n) for n in decayed)
    not_decayed = {names[id(p)] for p in no_decay["params"]}
    assert {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"} <= not_decayed
    # the tied output projection is the embedding: counted once, never decayed
    total = len(decay["params"]) + len(no_decay["params"])
    assert total == len(list(task.net.parameters()))


def test_checkpoint_carries_tokenizer_and_config_and_refuses_another_tokenizer(tiny_corpus: Path) -> None:
    dm = TextCorpus(source=DataSource(paths=str(tiny_corpus)), tokenizer=TokenizerSpec(vocab_size=300), seq_len=32)
    task = _task(dm.vocab_size)
    task.tokenizer = dm.tokenizer
    checkpoint: dict = {}
    task.on_save_checkpoint(checkpoint)
    assert checkpoint["lmforge"]["tokenizer"] == dm.tokenizer.to_str()
    assert checkpoint["lmforge"]["model_config"]["vocab_size"] == dm.vocab_size

    restored = _task(dm.vocab_size)
    restored.on_load_checkpoint(checkpoint)
    assert restored.tokenizer.fingerprint == dm.tokenizer.fingerprint

    other = _task(dm.vocab_size)
    other.tokenizer = train_tokenizer(["something else entirely"] * 20, TokenizerSpec(vocab_size=300))
    with pytest.raises(UserError, match="not the checkpoint's"):
        other.on_load_checkpoint(checkpoint)


def test_generate_needs_a_tokenizer_and_continues_the_prompt(tiny_corpus: Path) -> None:
    dm = TextCorpus(source=DataSource(paths=str(tiny_corpus)), tokenizer=TokenizerSpec(vocab_size=300), seq_len=32)
    task = _task(dm.vocab_size, max_new_tokens=6, temperature=0.0)
    with pytest.raises(UserError, match="no tokenizer"):
        task.generate("The")
    task.tokenizer = dm.tokenizer
    text = task.generate("The quick")
    assert text.startswith("The quick") and text == task.generate("The quick")


def test_hparams_are_plain_data() -> None:
    task = _task(100, optimizer=OptimizerConfig(lr=1e-3))
    assert task.hparams["config"]["vocab_size"] == 100
    assert task.hparams["optimizer"]["lr"] == 1e-3
    # generation settings belong to a predict call, not to the model
    assert "temperature" not in task.hparams and "prompts" not in task.hparams
    torch.save(dict(task.hparams), "/dev/null")
