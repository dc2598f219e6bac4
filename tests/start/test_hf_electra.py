"""ELECTRA's Hugging Face interop: a discriminator folder (``ElectraForPreTraining``) and a
generator folder (``ElectraForMaskedLM``) read with logits equal to transformers', an lmforge
ELECTRA exported as both with equal logits, and ``init_from`` with or without the generator."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import pytest
import torch

from lmforge.cli import main
from lmforge.data import TokenizerSpec, train_tokenizer
from lmforge.errors import UserError
from lmforge.evaluation import FineTuneTask
from lmforge.models.bert import BertConfig
from lmforge.models.electra import Electra, ElectraConfig
from lmforge.start import open_start
from lmforge.start.export import export
from lmforge.tasks import ElectraTask, MaskedLMTask

transformers = pytest.importorskip("transformers")

V, E, C, G, L, T = 96, 16, 32, 16, 2, 24  # vocabulary, embedding, discriminator, generator widths, layers, positions


def perturb_(model: torch.nn.Module, seed: int = 4321) -> None:
    """Move every weight off its initial value (LayerNorms at 1/0, zero biases would hide a bad mapping)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def hf_pair(tmp_path: Path, same_embeddings: bool = True) -> tuple[torch.nn.Module, torch.nn.Module, Path, Path]:
    """A tiny random ``ElectraForPreTraining`` and a narrower ``ElectraForMaskedLM``, both with
    ``embedding_size`` below their width, saved to ``tmp_path/{discriminator,generator}``."""
    torch.manual_seed(0)
    common = dict(vocab_size=V, embedding_size=E, num_hidden_layers=L, max_position_embeddings=T,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager")
    disc = transformers.ElectraForPreTraining(transformers.ElectraConfig(
        hidden_size=C, num_attention_heads=4, intermediate_size=3 * C, **common))
    gen = transformers.ElectraForMaskedLM(transformers.ElectraConfig(
        hidden_size=G, num_attention_heads=2, intermediate_size=4 * G, **common))
    perturb_(disc)
    perturb_(gen, seed=99)
    if same_embeddings:  # as one ELECTRA run's pair: one embedding layer
        gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())
    folders = tmp_path / "discriminator", tmp_path / "generator"
    disc.save_pretrained(folders[0])
    gen.save_pretrained(folders[1])
    return disc.eval(), gen.eval(), *folders


def ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(3, V, (2, T - 4), generator=torch.Generator().manual_seed(seed))


def generator_logits(net: Electra, x: torch.Tensor) -> torch.Tensor:
    return net.generator.mlm_logits(net.generator.encode(x))


def test_both_folders_load_with_the_logits_of_transformers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    disc, gen, disc_dir, gen_dir = hf_pair(tmp_path)
    with caplog.at_level(logging.INFO):
        task = ElectraTask(init_from=f"hf:{disc_dir}", generator_from=str(gen_dir)).eval()
    assert not [r for r in caplog.records if "init_from" in r.getMessage() or "generator_from" in r.getMessage()]
    c = task.net.config
    assert (c.d_model, c.embedding_size, c.generator_d_model, c.generator_n_head) == (C, E, G, 2)
    assert task.hparams["init_from"] is None and task.hparams["generator_from"] is None
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(task.net(x), disc(input_ids=x).logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(generator_logits(task.net, x), gen(input_ids=x).logits, rtol=1e-5, atol=1e-5)
    assert task.net.generator.wte is task.net.discriminator.wte  # still one embedding layer


def test_a_generator_with_embeddings_of_its_own_keeps_the_discriminators(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    disc, gen, disc_dir, gen_dir = hf_pair(tmp_path, same_embeddings=False)
    with caplog.at_level(logging.INFO):
        task = ElectraTask(init_from=str(disc_dir), generator_from=str(gen_dir))
    lines = [r.getMessage() for r in caplog.records if "generator_from" in r.getMessage()]
    assert len(lines) == 1 and "the discriminator's are kept" in lines[0]
    torch.testing.assert_close(task.net.generator.wte.weight, disc.electra.embeddings.word_embeddings.weight)
    torch.testing.assert_close(task.net.generator.blocks[0].mlp.fc.weight,
                               gen.electra.encoder.layer[0].intermediate.dense.weight)


def test_a_discriminator_folder_alone_starts_the_generator_fresh(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    disc, _, disc_dir, _ = hf_pair(tmp_path)
    with caplog.at_level(logging.INFO):
        task = ElectraTask(config=ElectraConfig(generator_d_model=8, generator_n_head=2), init_from=str(disc_dir))
    lines = [r.getMessage() for r in caplog.records if "init_from" in r.getMessage()]
    assert len(lines) == 1 and "generator not in the weights, initialised fresh" in lines[0], lines
    assert (task.net.config.generator_d_model, task.net.generator.config.n_head) == (8, 2)  # the config's shape
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(task.eval().net(x), disc(input_ids=x).logits, rtol=1e-5, atol=1e-5)
    # fine-tuning starts from the discriminator as from any BERT encoder
    finetune = FineTuneTask(init_from=f"hf:{disc_dir}").eval()
    with torch.no_grad():
        states = finetune.net.token_states(x, torch.ones_like(x))
        torch.testing.assert_close(states, disc.electra(input_ids=x).last_hidden_state, rtol=1e-5, atol=1e-5)


def electra_checkpoint(tmp_path: Path) -> tuple[ElectraTask, Path]:
    """A tiny lmforge ELECTRA with a tokenizer, saved as its run would save it."""
    tokenizer = train_tokenizer(["the cell divides and the protein binds"] * 20,
                                TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=48, min_frequency=1))
    torch.manual_seed(0)
    task = ElectraTask(config=ElectraConfig(vocab_size=tokenizer.vocab_size, max_seq_len=T, n_layer=L, n_head=4,
                                            d_model=C, embedding_size=E, generator_d_model=G, generator_n_head=2,
                                            dropout=0.0))
    perturb_(task.net)
    task.use_tokenizer(tokenizer)
    checkpoint = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    task.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "electra.ckpt")
    return task.eval(), tmp_path / "electra.ckpt"


def test_export_writes_both_folders_transformers_loads_with_identical_logits(tmp_path: Path) -> None:
    task, ckpt = electra_checkpoint(tmp_path)
    out = tmp_path / "out"
    main(["export", "--ckpt_path", str(ckpt), "--to", str(out), "--generator", "true"])
    disc = transformers.ElectraForPreTraining.from_pretrained(out, attn_implementation="eager").eval()
    gen = transformers.ElectraForMaskedLM.from_pretrained(out / "generator", attn_implementation="eager").eval()
    assert json.loads((out / "config.json").read_text())["architectures"] == ["ElectraForPreTraining"]
    assert transformers.AutoTokenizer.from_pretrained(out / "generator").mask_token == "[MASK]"
    x = torch.randint(5, task.net.config.vocab_size, (2, T - 4), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(disc(input_ids=x).logits, task.net(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gen(input_ids=x).logits, generator_logits(task.net, x), rtol=1e-5, atol=1e-5)
    # and back: both folders give the same networks
    back = ElectraTask(init_from=str(out), generator_from=str(out / "generator"))
    mine, theirs = task.net.state_dict(), back.net.state_dict()
    assert set(mine) == set(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert back.tokenizer.fingerprint == task.tokenizer.fingerprint
    # without --generator, the discriminator alone
    main(["export", "--ckpt_path", str(ckpt), "--to", str(tmp_path / "alone")])
    assert (tmp_path / "alone" / "config.json").is_file() and not (tmp_path / "alone" / "generator").exists()


def test_mismatches_are_refused_in_one_sentence(tmp_path: Path) -> None:
    _, _, disc_dir, gen_dir = hf_pair(tmp_path)
    with pytest.raises(UserError, match="is an ELECTRA generator .* give this one as model.generator_from"):
        ElectraTask(init_from=str(gen_dir))
    with pytest.raises(UserError, match="is not an ELECTRA generator folder"):
        ElectraTask(init_from=str(disc_dir), generator_from=str(disc_dir))
    with pytest.raises(UserError, match="needs the discriminator it was trained with"):
        ElectraTask(generator_from=str(gen_dir))
    config = json.loads((gen_dir / "config.json").read_text())
    (gen_dir / "config.json").write_text(json.dumps({**config, "embedding_size": 2 * E}))
    with pytest.raises(UserError, match=f"has embedding_size={2 * E} but init_from has {E}: the two networks share"):
        ElectraTask(init_from=str(disc_dir), generator_from=str(gen_dir))
    # a tokenizer with more tokens than the embeddings have rows: the check every folder gets
    words = [a + b for a, b in itertools.product("abcdefghijklmnop", repeat=2)]
    tokenizer = train_tokenizer([" ".join(words)] * 3,
                                TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=2 * V, min_frequency=1))
    assert tokenizer.vocab_size > V
    tokenizer.save(disc_dir / "tokenizer.json")
    with pytest.raises(UserError, match="has 192 tokens but its embeddings only 96 rows"):
        ElectraTask(init_from=str(disc_dir))
    bert = MaskedLMTask(config=BertConfig(vocab_size=V, max_seq_len=T, n_layer=1, n_head=2, d_model=C))
    checkpoint = {"state_dict": bert.state_dict(), "hyper_parameters": dict(bert.hparams)}
    bert.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "bert.ckpt")
    with pytest.raises(UserError, match="--generator writes an ELECTRA generator, but .* holds a bert network"):
        export(str(tmp_path / "bert.ckpt"), str(tmp_path / "x"), generator=True)
    assert not (tmp_path / "x").exists()


def test_a_resumed_run_keeps_the_checkpoints_generator() -> None:
    from lmforge.commands.lightning import _given_model_keys

    # a resume repeats the command that started it: generator_from, like init_from, stays the checkpoint's (None)
    assert _given_model_keys(["--model.generator_from=gen/", "--model.init_from", "d/", "--model.rtd_weight=9"]) == \
        ["rtd_weight"]


def test_a_bare_electra_model_folder_is_an_encoder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    disc, _, _, _ = hf_pair(tmp_path)
    disc.electra.save_pretrained(tmp_path / "bare")  # ElectraModel: no prefix, no head
    with caplog.at_level(logging.INFO):
        ElectraTask(init_from=str(tmp_path / "bare"))
    lines = [r.getMessage() for r in caplog.records if "init_from" in r.getMessage()]
    assert len(lines) == 1 and "discriminator_head, generator not in the weights, initialised fresh" in lines[0]
    x = ids()
    with torch.no_grad():
        states = FineTuneTask(init_from=str(tmp_path / "bare")).eval().net.token_states(x, torch.ones_like(x))
        torch.testing.assert_close(states, disc.electra(input_ids=x).last_hidden_state, rtol=1e-5, atol=1e-5)
