"""ElectraTask: which tokens the generator replaced and how they are labelled, no gradient
through the sampling, the refusals, fine-tuning from the discriminator, and exact resume."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import CONFIGS
from test_exact_resume import STEPS, assert_same_run, curves, fit, signal_at

from lmforge.batching import IGNORE
from lmforge.cli import main
from lmforge.data import DataSource, TokenizerSpec, train_tokenizer
from lmforge.errors import UserError
from lmforge.evaluation import FineTuneTask, LabeledText
from lmforge.models import Bert, ElectraConfig
from lmforge.models.electra import SHARED
from lmforge.objectives import ReplacedTokens
from lmforge.objectives.replaced_tokens import replace_tokens, sample_tokens
from lmforge.start import connect
from lmforge.tasks import ElectraTask

TEXTS = [f"the {a} {b} was seen near the {c} river in the spring" for a in ("grey", "small", "old", "quick")
         for b in ("heron", "boat", "mill", "fox") for c in ("north", "south", "wide")]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS * 2, TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=90, min_frequency=1))


def make_task(tok, **kwargs) -> ElectraTask:
    torch.manual_seed(0)
    config = ElectraConfig(vocab_size=tok.vocab_size, max_seq_len=16, n_layer=1, n_head=2, d_model=32,
                           embedding_size=16, generator_d_model=16, generator_n_head=1, dropout=0.0)
    task = ElectraTask(config=config, **kwargs)
    task.objective.bind(tok)
    return task


def masked_batch(task: ElectraTask, tok, seed: int = 0) -> dict[str, torch.Tensor]:
    ids = [t for text in TEXTS for t in tok.encode(text)]
    blocks = [np.array(ids[i * 14:(i + 1) * 14]) for i in range(6)]
    task.objective.rng.set_key((seed,))
    return task.objective(blocks)


def test_replaced_positions_are_the_masked_ones_where_the_sample_differs() -> None:
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    labels = torch.tensor([[IGNORE, 60, IGNORE, 80], [90, IGNORE, IGNORE, IGNORE]])
    inputs = torch.where(labels != IGNORE, 3, ids)  # the mask token at the masked positions
    corrupted, replaced = replace_tokens(inputs, labels, torch.tensor([61, 80, 90]))  # row-major: (0,1), (0,3), (1,0)
    assert corrupted.tolist() == [[5, 61, 7, 80], [90, 10, 11, 12]]  # originals elsewhere, never the mask token
    assert replaced.tolist() == [[0, 1, 0, 0], [0, 0, 0, 0]]  # a sample equal to the original is original


def test_sampling_follows_the_softmax_and_takes_no_gradient() -> None:
    logits = torch.full((3, 5), -1e4, requires_grad=True)
    with torch.no_grad():
        logits[torch.arange(3), torch.tensor([4, 0, 2])] = 0.0
    samples = sample_tokens(logits, torch.Generator().manual_seed(0))
    assert samples.tolist() == [4, 0, 2] and not samples.requires_grad
    uniform = sample_tokens(torch.zeros(20000, 4), torch.Generator().manual_seed(0))  # temperature 1: all alike
    assert torch.bincount(uniform, minlength=4).float().div(20000).sub(0.25).abs().max() < 0.02


def test_task_labels_a_generator_sample_that_equals_the_original_as_original(tok) -> None:
    task = make_task(tok)
    batch = masked_batch(task, tok)
    masked = batch["labels"] != IGNORE
    assert masked.any()
    favourite = int(batch["labels"][masked][0])
    with torch.no_grad():  # a generator that always answers `favourite`
        task.net.generator.mlm_head.bias.fill_(-1e4)
        task.net.generator.mlm_head.bias[favourite] = 1e4
    out = task._losses(batch, torch.Generator().manual_seed(0))
    replaced = out["truth"].view(masked.shape)  # packed blocks: every position is real
    original = torch.where(masked, batch["labels"], batch["input_ids"])
    assert torch.equal(replaced.bool(), masked & (original != favourite))
    assert not replaced[masked & (original == favourite)].any() and replaced[masked & (original != favourite)].all()


def test_the_generator_learns_from_its_mlm_loss_only(tok) -> None:
    task = make_task(tok)
    batch = masked_batch(task, tok)
    out = task._losses(batch, None)
    out["rtd"].backward()
    shared = {id(p) for name in SHARED for p in getattr(task.net.discriminator, name).parameters()}
    own = [(n, p) for n, p in task.net.generator.named_parameters() if id(p) not in shared]
    assert own and all(p.grad is None or not p.grad.any() for _, p in own), [n for n, p in own if p.grad is not None]
    assert task.net.discriminator_head.out.weight.grad.any()
    task.zero_grad(set_to_none=True)
    task._losses(batch, None)["mlm"].backward()
    assert all(p.grad is None for n, p in task.net.named_parameters() if n.startswith("discriminator_head"))
    assert task.net.generator.mlm_head.dense.weight.grad.any()


def test_loss_is_mlm_plus_weighted_rtd_and_training_logs_its_parts(tok) -> None:
    task = make_task(tok, rtd_weight=7.0)
    out = task._losses(masked_batch(task, tok), torch.Generator().manual_seed(1))
    torch.testing.assert_close(out["loss"], out["mlm"] + 7.0 * out["rtd"])
    assert 0 < out["truth"].float().mean() <= 0.2  # only masked tokens can be replaced


@pytest.mark.parametrize("weight", [0.0, -1.0, float("nan")])
def test_a_non_positive_rtd_weight_is_refused(weight: float) -> None:
    with pytest.raises(UserError, match=r"model.rtd_weight=.*> 0; the paper's 50"):
        ElectraTask(config=ElectraConfig(vocab_size=50, max_seq_len=8, n_layer=1, n_head=2, d_model=16,
                                         embedding_size=8), rtd_weight=weight)


def test_a_tokenizer_without_a_mask_token_is_refused() -> None:
    gpt = train_tokenizer(TEXTS, TokenizerSpec(kind="byte_level_bpe", specials="gpt", vocab_size=300))
    with pytest.raises(UserError, match=r"has no mask, cls, sep token .* which replaced-token detection \(ELECTRA\)"):
        ReplacedTokens().bind(gpt)


def test_validation_samples_are_the_same_every_time(tok) -> None:
    task = make_task(tok)
    batch = masked_batch(task, tok)
    task.eval()
    a, b = (task._losses(batch, task._sampler("val", 3)) for _ in range(2))
    assert torch.equal(a["truth"], b["truth"]) and torch.equal(a["loss"], b["loss"])


@pytest.mark.parametrize("option, says", [
    ("--model.config.generator_d_model=128", "generator_d_model=128 is wider than the discriminator's d_model=64"),
    ("--model.rtd_weight=-1", "model.rtd_weight=-1.0: give the weight"),
])
def test_the_cli_refuses_bad_settings_in_one_sentence_before_writing(option: str, says: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(CONFIGS / "electra" / "tiny.yaml"), option, "--data.init_args.max_documents=30"])
    error = capsys.readouterr().err
    assert says in error and "Traceback" not in error
    assert not (tmp_path / "logs").exists()


def test_finetuning_starts_from_the_discriminator(tok, tmp_path: Path) -> None:
    task = make_task(tok)
    task.tokenizer = tok
    ckpt = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    task.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "electra.ckpt")
    rows = [(f"the {a} heron was seen", "pos" if a in ("grey", "old") else "neg")
            for a in ("grey", "small", "old", "quick")]
    (tmp_path / "train.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows * 8))
    data = LabeledText(source=DataSource(paths=str(tmp_path / "train.tsv")), validation=str(tmp_path / "train.tsv"),
                       seq_len=16, batch_size=8)
    ft = FineTuneTask(init_from=str(tmp_path / "electra.ckpt"), dropout=0.0)
    connect(ft, data)
    assert isinstance(ft.net, Bert) and not hasattr(ft.net, "mlm_head")  # the discriminator alone
    torch.testing.assert_close(ft.net.wte.weight, task.net.discriminator.wte.weight)
    torch.testing.assert_close(ft.net.proj_emb.weight, task.net.discriminator.proj_emb.weight)
    assert ft.hparams["network"] == "lmforge.models.bert.Bert" and ft.hparams["network_config"]["embedding_size"] == 16
    trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(ft, data)
    assert "val/acc" in trainer.validate(ft, data, verbose=False)[0]


@pytest.mark.slow
def test_a_stopped_and_resumed_run_equals_the_uninterrupted_one(tmp_path: Path) -> None:
    """Dropout on and the generator's samples drawn in the training steps: a real signal stops
    the run at step 5, ``--ckpt_path last`` resumes it; curves, both networks' weights and the
    optimizer's state equal those of the run that never stopped, bit for bit."""
    config, extra = "electra/tiny.yaml", ["--model.config.dropout=0.1"]
    fit(tmp_path / "full", config, extra)
    stopped = tmp_path / "stopped"
    fit(stopped, config, extra, *signal_at(5, "SIGUSR1"))
    run = stopped / "logs" / "run" / "version_0"
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] < STEPS
    fit(stopped, config, extra, "--ckpt_path", "last")
    full = tmp_path / "full" / "logs" / "run" / "version_0"
    assert_same_run(full, run)
    a, b = (torch.load(r / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True) for r in (full, run))
    assert any(k.startswith("net.generator.") for k in b["state_dict"])
    states = [s["optimizer_states"][0]["state"] for s in (a, b)]
    assert states[0].keys() == states[1].keys() and len(states[0]) > 0
    for key in states[0]:
        for name, value in states[0][key].items():
            assert torch.equal(value, states[1][key][name]), (key, name)
    assert curves(full)["train/loss_rtd"] == curves(run)["train/loss_rtd"]


def test_a_discriminator_is_not_exported_as_a_bert(tok, tmp_path: Path) -> None:
    from lmforge.start.hf import export_hf

    net = make_task(tok).net
    network, config, state = net.encoder(net.config, net.state_dict())
    with pytest.raises(UserError, match="factorised embeddings or no MLM head .* has no bert equivalent"):
        export_hf(network, config, state, tok, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_predict_marks_the_tokens_the_discriminator_reads_as_replaced(tok) -> None:
    task = make_task(tok, prompts="the grey heron")
    task.tokenizer = tok
    with torch.no_grad():
        task.net.discriminator_head.out.bias.fill_(5.0)  # every token looks replaced
    lines = task.predict_step("the grey heron", 0).splitlines()
    assert lines[0] == "the grey heron" and lines[1].split()[0].startswith("the*(0.9")
    assert len(lines[1].split()) == len(tok.encode("the grey heron"))
