"""The ELMo task: spelling the vocabulary, the biLM loss, sampled softmax, validation metrics,
checkpoints, and predict writing ELMo embeddings through the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tokenizers import pre_tokenizers

from conftest import CONFIGS
from lmforge.cli import main
from lmforge.data import DataSource, TextCorpus, Tokenizer, TokenizerSpec, train_tokenizer
from lmforge.errors import UserError
from lmforge.models.elmo import PIECE_START, SPECIAL_START, TOKEN_END, WORD_START, ElmoConfig
from lmforge.objectives import BidirectionalLM
from lmforge.tasks import ElmoTask, OptimizerConfig
from lmforge.tasks.elmo import sampled_softmax_loss, token_char_ids
from lmforge.tokenizer import byte_level_alphabet
from lmforge.start import connect, load_tokenizer

SHAPE = dict(max_seq_len=16, char_dim=8, max_chars=12, filters=[(1, 8), (2, 8), (3, 16)], n_highway=1, n_layer=2,
             hidden_size=24, projection_size=12, dropout=0.0)
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def _data(corpus: Path, kind: str = "bpe", **kwargs) -> TextCorpus:
    return TextCorpus(source=DataSource(paths=str(corpus)),
                      tokenizer=TokenizerSpec(kind=kind, specials="elmo", vocab_size=200),
                      seq_len=16, batch_size=4, **kwargs)


def _task(dm: TextCorpus, **kwargs) -> ElmoTask:
    torch.manual_seed(0)
    task = ElmoTask(config=ElmoConfig(vocab_size=dm.vocab_size, **SHAPE), **kwargs)
    task.tokenizer = dm.tokenizer
    task.spell_vocabulary()  # as the hand-over of the data's tokenizer does
    return task


def _batch(dm: TextCorpus) -> dict[str, torch.Tensor]:
    dm.objective = BidirectionalLM()
    dm.setup("fit")
    return next(iter(dm.val_dataloader()))


def _spelling(row: torch.Tensor) -> tuple[int, bytes]:
    """(start marker, bytes) of a row of character ids."""
    end = row.tolist().index(TOKEN_END)
    return int(row[0]), bytes(c - 1 for c in row[1:end].tolist())


# --------------------------------------------------------------------------- spelling the vocabulary


@pytest.mark.parametrize("kind", ["bpe", "byte_level_bpe", "wordpiece"])
def test_vocabulary_spellings_keep_word_starts_apart_from_pieces(kind: str) -> None:
    texts = ["the theme of the thesis is their theory, café au lait"] * 40
    vocab_size = 300 if kind == "byte_level_bpe" else 80  # byte-level BPE starts from 256 bytes
    tok = train_tokenizer(texts, TokenizerSpec(kind=kind, specials="elmo", vocab_size=vocab_size))
    table = token_char_ids(tok, 10)
    assert table.shape == (tok.vocab_size, 10)
    eos = tok.eos_id
    assert _spelling(table[eos]) == (SPECIAL_START, b"</s>")
    spelled = {}
    for token, token_id in tok.backend.get_vocab().items():
        if token_id != eos and token not in ("<pad>", "<unk>", "<s>"):
            spelled[token] = _spelling(table[token_id])
    word_start = {"bpe": "▁the", "byte_level_bpe": "Ġthe", "wordpiece": "the"}[kind]
    assert spelled[word_start] == (WORD_START, b"the")
    pieces = [t for t, (start, _) in spelled.items() if start == PIECE_START]
    assert pieces, "no token continues a word"
    # the same letters as a word start and as a piece are different inputs
    assert len(set(map(tuple, table.tolist()))) == tok.vocab_size
    if kind == "byte_level_bpe":  # byte-level BPE spells bytes with stand-in characters: read the real bytes
        assert sorted(byte_level_alphabet()) == sorted(pre_tokenizers.ByteLevel.alphabet())
        assert sorted(byte_level_alphabet().values()) == list(range(256))
        ids = tok.encode(" café")
        assert b"".join(_spelling(table[i])[1] for i in ids) == "café".encode()


# --------------------------------------------------------------------------- loss


def test_loss_is_the_mean_of_forward_and_backward_next_token_nll(tiny_corpus: Path) -> None:
    dm = _data(tiny_corpus)
    task = _task(dm)
    batch = _batch(dm)
    forward, backward = task._direction_losses(batch)
    with torch.no_grad():
        f_logits, b_logits = task.net(batch["input_ids"])
    ids = batch["input_ids"]
    B, T = ids.shape
    block = torch.cat([batch["backward_targets"][:, :1], ids, batch["forward_targets"][:, -1:]], dim=1)  # (B, T + 2)
    f_logp, b_logp = f_logits.log_softmax(-1), b_logits.log_softmax(-1)
    nll_f = nll_b = 0.0
    for b in range(B):
        for t in range(T):  # input t is block[t + 1]: the forward LM predicts block[t + 2], the backward block[t]
            nll_f -= f_logp[b, t, block[b, t + 2]].item()
            nll_b -= b_logp[b, t, block[b, t]].item()
    assert forward.item() == pytest.approx(nll_f / (B * T), rel=1e-5)
    assert backward.item() == pytest.approx(nll_b / (B * T), rel=1e-5)
    # validation records the mean of the two, weighted by the 2 * B * T predictions
    task.on_validation_epoch_start()
    task.validation_step(batch, 0)
    totals = task._eval_totals[None]  # (loss sum, tokens, correct, bytes, each part's loss sum) of the one set
    assert totals[1].item() == 2 * B * T
    mean = (totals[0] / totals[1]).item()
    assert mean == pytest.approx((nll_f + nll_b) / (2 * B * T), rel=1e-5)
    torch.testing.assert_close(totals[4:].float(), torch.tensor([nll_f, nll_b]) * 2, rtol=1e-5, atol=0)


def test_sampled_softmax_with_every_class_is_the_full_softmax_and_never_exceeds_it() -> None:
    torch.manual_seed(0)
    hidden, weight, bias = torch.randn(30, 8), torch.randn(50, 8), torch.randn(50)
    targets = torch.randint(0, 50, (30,))
    full = F.cross_entropy(hidden @ weight.T + bias, targets)
    assert sampled_softmax_loss(hidden, targets, weight, bias, 50).item() == pytest.approx(full.item(), rel=1e-5)
    assert sampled_softmax_loss(hidden, targets, weight, bias, 1000).item() == pytest.approx(full.item(), rel=1e-5)
    weight.requires_grad_(True)
    sampled = sampled_softmax_loss(hidden, targets, weight, bias, 5)
    assert 0 < sampled.item() < full.item()  # a subset of the partition function
    sampled.backward()
    touched = (weight.grad.abs().sum(-1) > 0).sum().item()
    assert touched <= len(set(targets.tolist())) + 5  # only the targets' and the negatives' rows learn


def test_sampled_softmax_trains_on_samples_but_validation_scores_the_full_softmax(tiny_corpus: Path) -> None:
    dm = _data(tiny_corpus)
    full, sampled = _task(dm), _task(dm, sampled_softmax=7)
    batch = _batch(dm)
    assert sampled.flops_per_token() < full.flops_per_token()
    loss_full = sum(full._direction_losses(batch)) / 2
    loss_sampled = sum(sampled._direction_losses(batch)) / 2
    assert loss_sampled.item() < loss_full.item()
    for task in (full, sampled):
        task.eval()
        task.on_validation_epoch_start()
        task.validation_step(batch, 0)
    torch.testing.assert_close(sampled._eval_totals[None], full._eval_totals[None])  # same weights, full softmax both
    assert sampled._eval_totals[None][0] / sampled._eval_totals[None][1] == pytest.approx(loss_full.item(), rel=1e-5)
    with pytest.raises(UserError, match="sampled_softmax=0"):
        ElmoTask(config=ElmoConfig(vocab_size=dm.vocab_size, **SHAPE), sampled_softmax=0)


# --------------------------------------------------------------------------- training and validation


def _trainer(tmp_path: Path, max_steps: int) -> L.Trainer:
    return L.Trainer(default_root_dir=tmp_path, max_steps=max_steps, accelerator="cpu", logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, limit_val_batches=3)


def test_learns_logs_both_perplexities_and_round_trips_a_checkpoint(tiny_corpus: Path, tmp_path: Path) -> None:
    L.seed_everything(0)
    dm = _data(tiny_corpus)
    task = ElmoTask(config=ElmoConfig(vocab_size=dm.vocab_size, **SHAPE),
                    optimizer=OptimizerConfig(lr=1e-2, betas=(0.9, 0.999), weight_decay=0.0, warmup_steps=3))
    connect(task, dm)
    assert task.net.token_chars.any(), "the hand-over did not spell the vocabulary"
    before = _trainer(tmp_path, 1).validate(task, dm, verbose=False)[0]
    assert before["val/loss"] == pytest.approx(math.log(dm.vocab_size), abs=0.5)
    trainer = _trainer(tmp_path, 80)
    trainer.fit(task, dm)
    after = _trainer(tmp_path, 1).validate(task, dm, verbose=False)[0]
    assert after["val/loss"] < before["val/loss"] - 1.0
    # val/loss is the token-weighted mean of the two directions; perplexities are their exps
    assert after["val/loss"] == pytest.approx((after["val/loss_forward"] + after["val/loss_backward"]) / 2, rel=1e-5)
    for direction in ("forward", "backward"):
        assert after[f"val/ppl_{direction}"] == pytest.approx(math.exp(after[f"val/loss_{direction}"]), rel=1e-5)
    assert 0 < after["val/acc"] < 1

    # the same figures by hand over the same batches
    task.eval()
    sums, n = torch.zeros(2), 0
    for batch in list(dm.val_dataloader())[:3]:
        with torch.no_grad():
            f_logits, b_logits = task.net(batch["input_ids"])
        for i, (logits, key) in enumerate([(f_logits, "forward_targets"), (b_logits, "backward_targets")]):
            sums[i] += F.cross_entropy(logits.flatten(0, 1), batch[key].flatten(), reduction="sum")
        n += batch["input_ids"].numel()
    assert after["val/loss_forward"] == pytest.approx(sums[0].item() / n, rel=1e-4)
    assert after["val/loss_backward"] == pytest.approx(sums[1].item() / n, rel=1e-4)

    ckpt = tmp_path / "elmo.ckpt"
    trainer.save_checkpoint(ckpt)
    restored = ElmoTask.load_from_checkpoint(ckpt, map_location="cpu").eval()  # nothing but the file
    assert restored.tokenizer.fingerprint == dm.tokenizer.fingerprint
    torch.testing.assert_close(restored.net.token_chars, task.net.token_chars)
    ids = torch.randint(0, dm.vocab_size, (2, 9))
    with torch.no_grad():
        for got, want in zip(restored.net(ids), task.net(ids)):
            torch.testing.assert_close(got, want)


def test_refuses_a_tokenizer_of_another_size_and_bad_outputs(tiny_corpus: Path) -> None:
    dm = _data(tiny_corpus)
    task = ElmoTask(config=ElmoConfig(vocab_size=dm.vocab_size + 1, **SHAPE))
    task.tokenizer = dm.tokenizer
    with pytest.raises(UserError, match="tokens but the model"):
        task.spell_vocabulary()
    with pytest.raises(UserError, match=r"'emb\.npy'.*\.npz or \.safetensors"):
        ElmoTask(config=ElmoConfig(**SHAPE), embeddings_out="emb.npy")  # one array only: ELMo writes several
    with pytest.raises(UserError, match="mix_weights has 2 values for 3 layers"):
        ElmoTask(config=ElmoConfig(**SHAPE), mix_weights=[1.0, 2.0])


# --------------------------------------------------------------------------- predict through the CLI


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_predict_writes_layers_and_mix_from_the_checkpoint_alone(
    suffix: str, tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", str(CONFIGS / "elmo" / "tiny.yaml"), "--data=lmforge.data.TextCorpus",
          f"--data.source.paths={tiny_corpus}", "--data.seq_len=16", "--data.tokenizer.vocab_size=200",
          "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1", *QUIET])
    ckpt = tmp_path / "logs" / "elmo-tiny" / "version_0" / "checkpoints" / "last.ckpt"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The quick brown fox jumps.\n\nA language model\n", encoding="utf-8")
    out = tmp_path / "out" / f"elmo{suffix}"
    main(["predict", "--ckpt_path", str(ckpt), "--model.prompts=Small models overfit small corpora quickly.",
          "--model.prompt_file", str(prompts), "--model.embeddings_out", str(out),
          "--model.mix_weights=[0.0, 1.0, 2.0]", "--model.mix_gamma=2.0", *QUIET])
    if suffix == ".npz":
        arrays = dict(np.load(out))
    else:
        from safetensors.numpy import load_file

        arrays = load_file(str(out))

    texts = ["Small models overfit small corpora quickly.", "The quick brown fox jumps.", "A language model"]
    tok = load_tokenizer(str(ckpt))
    lengths = [len(tok.encode(t)) for t in texts]
    P = 64  # projection_size of configs/elmo/tiny.yaml, 2 LSTM layers
    assert arrays["lengths"].tolist() == lengths
    assert arrays["layers"].shape == (3, 3, max(lengths), 2 * P)
    assert arrays["mix"].shape == (3, max(lengths), 2 * P)
    assert arrays["input_ids"].shape == (3, max(lengths))
    for row, text in enumerate(texts):
        assert arrays["input_ids"][row, : lengths[row]].tolist() == tok.encode(text)
        assert not arrays["layers"][row, :, lengths[row] :].any()  # zero padding after the end
    weights = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0).numpy()
    np.testing.assert_allclose(arrays["mix_weights"], weights, rtol=1e-6)
    np.testing.assert_allclose(arrays["mix"], 2.0 * np.einsum("l,nltc->ntc", weights, arrays["layers"]), atol=1e-5)
    # layer 0 is the context-free token representation, the same vector on both halves
    np.testing.assert_array_equal(arrays["layers"][:, 0, :, :P], arrays["layers"][:, 0, :, P:])

    # what was written is the model's own reading of each text between two document boundaries
    task = ElmoTask.load_from_checkpoint(ckpt, map_location="cpu").eval()
    eos = tok.eos_id
    ids = torch.tensor([[eos, *tok.encode(texts[1]), eos]])
    with torch.no_grad():
        expected = task.net.layer_embeddings(ids)[:, 0, 1:-1].numpy()
    np.testing.assert_allclose(arrays["layers"][1, :, : lengths[1]], expected, atol=1e-5)
