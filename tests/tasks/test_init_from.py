"""Starting from weights (``init_from``) and exporting them (``lmforge export``)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import CONFIGS
from lmforge.cli import main
from lmforge.data import DataSource, TextCorpus, TokenizerSpec, train_tokenizer
from lmforge.data.documents import read_local
from lmforge.errors import UserError
from lmforge.models import GPTConfig
from lmforge.start import connect
from lmforge.tasks import CausalLMTask, MaskedLMTask, OptimizerConfig

QUIET = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
             num_sanity_val_steps=0, limit_val_batches=1)


def _gpt_checkpoint(corpus: Path, tmp_path: Path, steps: int = 3) -> tuple[Path, CausalLMTask]:
    dm = TextCorpus(source=DataSource(paths=str(corpus)),
                    tokenizer=TokenizerSpec(vocab_size=300), seq_len=16, batch_size=4)
    task = CausalLMTask(config=GPTConfig(vocab_size=dm.vocab_size, max_seq_len=16, n_layer=1, n_head=2, d_model=32),
                        optimizer=OptimizerConfig(warmup_steps=1))
    connect(task, dm)
    trainer = L.Trainer(max_steps=steps, enable_checkpointing=False, **QUIET)
    trainer.fit(task, dm)
    path = tmp_path / "general.ckpt"
    trainer.save_checkpoint(path)
    return path, task


def test_init_from_keeps_the_weights_and_starts_a_new_run(tiny_corpus: Path, tmp_path: Path) -> None:
    ckpt, trained = _gpt_checkpoint(tiny_corpus, tmp_path)
    task = CausalLMTask(config=GPTConfig(dropout=0.2), init_from=str(ckpt))  # shape from the weights
    assert task.net.config == GPTConfig(**{**trained.net.config.__dict__, "dropout": 0.2})
    assert all(torch.equal(a, b) for a, b in zip(task.net.state_dict().values(), trained.net.state_dict().values()))
    assert task.tokenizer.fingerprint == trained.tokenizer.fingerprint
    assert task.hparams["init_from"] is None and task.hparams["config"]["n_layer"] == 1
    # a new run: the step count, optimizer and schedule start over
    dm = TextCorpus(source=DataSource(paths=str(tiny_corpus)),
                    tokenizer=TokenizerSpec(path=str(ckpt)), seq_len=16, batch_size=4)
    connect(task, dm)
    assert dm.tokenizer.fingerprint == trained.tokenizer.fingerprint  # the checkpoint's, read by the start owner
    trainer = L.Trainer(max_steps=2, enable_checkpointing=False, **QUIET)
    trainer.fit(task, dm)
    assert trainer.global_step == 2
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 2


def test_init_from_refuses_another_tokenizer_or_family(tiny_corpus: Path, tmp_path: Path) -> None:
    ckpt, _ = _gpt_checkpoint(tiny_corpus, tmp_path, steps=1)
    other = tmp_path / "other.json"
    train_tokenizer(read_local(str(tiny_corpus)), TokenizerSpec(vocab_size=280)).save(other)
    task = CausalLMTask(init_from=str(ckpt))
    dm = TextCorpus(source=DataSource(paths=str(tiny_corpus)), tokenizer=TokenizerSpec(path=str(other)), seq_len=16)
    with pytest.raises(UserError, match="is not the one of the init_from weights"):
        connect(task, dm)
    with pytest.raises(UserError, match="holds gpt weights, but MaskedLMTask needs bert weights"):
        MaskedLMTask(init_from=str(ckpt))
    long = TextCorpus(source=DataSource(paths=str(tiny_corpus)), tokenizer=TokenizerSpec(path=str(ckpt)), seq_len=64)
    with pytest.raises(UserError, match="data.seq_len=64 is longer than the gpt network's 16 positions"):
        connect(CausalLMTask(init_from=str(ckpt)), long)


def test_continued_pretraining_from_a_hf_folder_through_the_cli(tmp_path: Path, tiny_corpus: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    transformers = pytest.importorskip("transformers")
    tokenizer = train_tokenizer(read_local(str(tiny_corpus)), TokenizerSpec(kind="wordpiece", specials="bert",
                                                                            vocab_size=200, min_frequency=1))
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    folder = tmp_path / "hf-bert"
    transformers.BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save(folder / "tokenizer.json")
    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", str(CONFIGS / "bert" / "tiny.yaml"), "--model.init_from", str(folder),
          "--data.max_documents", "40", "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
          "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"])
    last = next(tmp_path.glob("logs/*/version_0/checkpoints/last.ckpt"))
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2 and ckpt["hyper_parameters"]["init_from"] is None
    assert ckpt["hyper_parameters"]["config"]["d_model"] == 32  # the HF model's shape, not the config's
    assert ckpt["lmforge"]["tokenizer"] == tokenizer.to_str()  # the folder's tokenizer, not a retrained one

    # and back out: the continued model as a transformers folder, identical logits
    out = tmp_path / "exported"
    main(["export", "--ckpt_path", str(last), "--to", str(out)])
    hf = transformers.AutoModelForMaskedLM.from_pretrained(out).eval()
    task = MaskedLMTask(init_from=str(last))
    task.eval()
    ids = torch.tensor([tokenizer.backend.encode("the model predicts the next token").ids])
    with torch.no_grad():
        torch.testing.assert_close(task.net(ids), hf(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
    with pytest.raises(SystemExit):
        main(["export", "--ckpt_path", str(last), "--to", str(out)])  # never overwrites


def test_init_from_with_an_extended_tokenizer_grows_the_embeddings(tiny_corpus: Path, tmp_path: Path) -> None:
    from lmforge.data.vocab import coverage, domain_words, extend_tokenizer, init_new_embeddings

    ckpt, trained = _gpt_checkpoint(tiny_corpus, tmp_path, steps=1)
    old = trained.tokenizer
    words = domain_words(coverage(old, read_local(str(tiny_corpus)), top=5), 2)
    extended, pieces = extend_tokenizer(old, words)
    extended.save(tmp_path / "extended.json")
    task = CausalLMTask(init_from=str(ckpt))
    expected = init_new_embeddings(trained.net.wte.weight.detach(), pieces)
    dm = TextCorpus(source=DataSource(paths=str(tiny_corpus)),
                    tokenizer=TokenizerSpec(path=str(tmp_path / "extended.json")),
                    seq_len=16, batch_size=4)
    connect(task, dm)
    assert task.net.wte.weight.shape[0] == old.vocab_size + 2 == task.hparams["config"]["vocab_size"]
    torch.testing.assert_close(task.net.wte.weight.detach(), expected)
    assert task.net.lm_head.weight is task.net.wte.weight  # still tied
    ids = torch.tensor([extended.encode(f"the {words[0]} and")])
    assert task.net(ids).shape[-1] == old.vocab_size + 2
    trainer = L.Trainer(max_steps=1, enable_checkpointing=False, **QUIET)
    trainer.fit(task, dm)  # trains with the new rows; the run's checkpoints record the grown shape
    trainer.save_checkpoint(tmp_path / "grown.ckpt")
    again = CausalLMTask(init_from=str(tmp_path / "grown.ckpt"))
    assert again.net.config.vocab_size == old.vocab_size + 2
