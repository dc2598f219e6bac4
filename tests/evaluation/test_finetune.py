"""FineTuneTask: fine-tuning and probing pretrained BERT, GPT, T5 and ELMo networks on LabeledText."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lightning as L
import pytest
import torch

from lmforge.data import DataSource, TokenizerSpec, train_tokenizer
from lmforge.errors import UserError
from lmforge.evaluation import FineTuneTask, LabeledText
from lmforge.models import BertConfig, ElmoConfig, GPTConfig, T5Config
from lmforge.models.layers import pool
from lmforge.start import connect
from lmforge.tasks import CausalLMTask, ElmoTask, MaskedLMTask, SpanCorruptionTask
from lmforge.tasks.optim import MuonAdamW, hidden_matrices

GOOD = ["good", "great", "fine", "nice"]
BAD = ["bad", "awful", "poor", "dull"]
THINGS = ["movie", "book", "day", "meal", "song"]


def toy_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Sentences whose label is whether the adjective is a good or a bad one: linearly separable."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = GOOD if label else BAD
        adjective = words[int(torch.randint(len(words), (1,), generator=g))]
        thing = THINGS[int(torch.randint(len(THINGS), (1,), generator=g))]
        rows.append((f"the {thing} was {adjective}", "pos" if label else "neg"))
    return rows


def write_tsv(path: Path, header: list[str], rows: list[tuple]) -> str:
    path.write_text("\n".join("\t".join(map(str, r)) for r in [header, *rows]) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [t for t, _ in toy_rows(40)] + ["a movie and a book", "the day of the song"]


def save_pretrained(task: L.LightningModule, tokenizer, path: Path) -> str:
    """Write ``task`` as the checkpoint of a pretraining run (its state, tokenizer and config)."""
    task.tokenizer = tokenizer
    ckpt = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    task.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return str(path)


@pytest.fixture(scope="module")
def bert_ckpt(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> str:
    tok = train_tokenizer(texts * 2, TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=120, min_frequency=1))
    torch.manual_seed(0)
    task = MaskedLMTask(config=BertConfig(vocab_size=tok.vocab_size, max_seq_len=24, n_layer=1, n_head=2, d_model=32))
    return save_pretrained(task, tok, tmp_path_factory.mktemp("bert") / "bert.ckpt")


@pytest.fixture(scope="module")
def gpt_ckpt(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> str:
    tok = train_tokenizer(texts * 2, TokenizerSpec(kind="byte_level_bpe", specials="gpt", vocab_size=290))
    torch.manual_seed(0)
    task = CausalLMTask(config=GPTConfig(vocab_size=tok.vocab_size, max_seq_len=24, n_layer=1, n_head=2, d_model=32))
    return save_pretrained(task, tok, tmp_path_factory.mktemp("gpt") / "gpt.ckpt")


def toy_data(tmp_path: Path, n: int = 64, **kwargs) -> LabeledText:
    train = write_tsv(tmp_path / "train.tsv", ["text", "label"], toy_rows(n, seed=1))
    val = write_tsv(tmp_path / "val.tsv", ["text", "label"], toy_rows(32, seed=2))
    return LabeledText(source=DataSource(paths=train), validation=val, seq_len=24, **{"batch_size": 16, **kwargs})


def trainer(steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kwargs)


def batch_of(data: LabeledText, split: str = "train", n: int = 8) -> dict[str, torch.Tensor]:
    return data.collate(data.datasets[split][:n])


def test_full_finetuning_learns_a_separable_task_and_checkpoints_stand_alone(bert_ckpt: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    task = FineTuneTask(init_from=bert_ckpt, dropout=0.0, optimizer={"lr": 3e-3, "weight_decay": 0.01})
    data = toy_data(tmp_path)
    connect(task, data)
    before = trainer(1).validate(task, data, verbose=False)[0]
    fit = trainer(40, limit_val_batches=0)
    fit.fit(task, data)
    after = trainer(1).validate(task, data, verbose=False)[0]
    assert after["val/acc"] >= 0.9 and after["val/acc"] > before["val/acc"] + 0.2
    assert after["val/mcc"] > 0.7 and after["val/loss"] < before["val/loss"]
    assert set(after) == {"val/loss", "val/acc", "val/f1_macro", "val/f1_micro", "val/f1_neg", "val/f1_pos", "val/mcc"}
    assert after["val/f1_macro"] == pytest.approx((after["val/f1_neg"] + after["val/f1_pos"]) / 2, abs=1e-6)
    assert task.labels == ["neg", "pos"] and task.pooling == "cls"

    # the fine-tuned checkpoint needs neither init_from nor the data to load
    path = tmp_path / "ft.ckpt"
    fit.save_checkpoint(path)
    assert torch.load(path, weights_only=True)["hyper_parameters"]["init_from"] is None
    restored = FineTuneTask.load_from_checkpoint(path, weights_only=True)
    restored.eval()
    task.eval()
    batch = batch_of(data, "val")
    torch.testing.assert_close(restored(batch), task(batch))
    assert restored.tokenizer.fingerprint == task.tokenizer.fingerprint
    test_data = toy_data(tmp_path, test=data.validation)
    connect(restored, test_data)
    test = trainer(1).test(restored, test_data, verbose=False)[0]
    assert test["test/acc"] == pytest.approx(after["val/acc"])


def test_probe_leaves_the_encoder_bit_identical_and_trains_the_head(bert_ckpt: str, tmp_path: Path) -> None:
    task = FineTuneTask(init_from=bert_ckpt, mode="probe", pooling="mean", optimizer={"lr": 1e-2})
    encoder = {k: v.clone() for k, v in task.net.state_dict().items()}
    data = toy_data(tmp_path)
    connect(task, data)
    trainer(5, limit_val_batches=0).fit(task, data)
    head = task.head.weight.detach().clone()
    for name, value in task.net.state_dict().items():
        assert torch.equal(value, encoder[name]), name
    assert not task.net.training and task.training  # the frozen encoder runs without dropout
    assert not torch.allclose(head, torch.zeros_like(head)) and all(p.requires_grad for p in task.head.parameters())
    assert all(not p.requires_grad for p in task.net.parameters())
    optimizer = task.configure_optimizers()["optimizer"]
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in task.head.parameters()}


def test_full_fine_tuning_with_muon_trains_the_blocks_with_muon_and_the_head_with_adamw(bert_ckpt: str,
                                                                                      tmp_path: Path) -> None:
    task = FineTuneTask(init_from=bert_ckpt, optimizer={"name": "muon", "lr": 1e-3}, head_lr=1e-2)
    data = toy_data(tmp_path)
    connect(task, data)
    trainer(2, limit_val_batches=0).fit(task, data)
    optimizer = task.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, MuonAdamW)
    muon = {id(p) for g in optimizer.muon.param_groups for p in g["params"]}
    assert muon == {id(p) for p in hidden_matrices(task.net)}
    head_groups = [g for g in optimizer.adamw.param_groups if any(p is task.head.weight for p in g["params"])]
    assert [g["initial_lr"] for g in head_groups] == [1e-2]


def test_random_init_keeps_shape_and_tokenizer_but_not_weights(bert_ckpt: str) -> None:
    pretrained = FineTuneTask(init_from=bert_ckpt, num_labels=2, task_type="classification")
    baseline = FineTuneTask(init_from=bert_ckpt, random_init=True, num_labels=2, task_type="classification")
    assert baseline.net.config == pretrained.net.config
    assert baseline.tokenizer.fingerprint == pretrained.tokenizer.fingerprint
    assert not torch.equal(baseline.net.wte.weight, pretrained.net.wte.weight)


def test_pair_token_types_reach_bert_and_roberta_ignores_them(tmp_path: Path, bert_ckpt: str) -> None:
    task = FineTuneTask(init_from=bert_ckpt, num_labels=2, task_type="classification").eval()
    batch = {"input_ids": torch.tensor([[2, 5, 3, 6, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long),
             "token_type_ids": torch.tensor([[0, 0, 0, 1, 1]])}
    with torch.no_grad():
        pair = task.embed(batch)
        single = task.embed({**batch, "token_type_ids": torch.zeros_like(batch["token_type_ids"])})
    assert not torch.allclose(pair, single)
    roberta = MaskedLMTask(config=BertConfig(vocab_size=64, max_seq_len=16, n_layer=1, n_head=2, d_model=16,
                                             type_vocab_size=1, position_offset=2, nsp_head=False))
    tok = FineTuneTask(init_from=bert_ckpt).tokenizer
    task = FineTuneTask(init_from=save_pretrained(roberta, tok, tmp_path / "roberta.ckpt"), num_labels=2,
                        task_type="classification")
    assert task.embed(batch).shape == (1, 16)  # token type 1 would be out of its one-row table


def test_gpt_last_pooling_picks_the_last_real_token_despite_padding(gpt_ckpt: str, tmp_path: Path) -> None:
    states = torch.arange(2 * 4 * 1, dtype=torch.float).view(2, 4, 1)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert pool(states, mask, "last").squeeze(-1).tolist() == [1.0, 7.0]
    assert pool(states, torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0]]), "last").squeeze(-1).tolist() == [2.0, 4.0]

    task = FineTuneTask(init_from=gpt_ckpt, dropout=0.0, optimizer={"lr": 1e-3})
    assert task.pooling == "last" and task.family == "gpt"
    data = toy_data(tmp_path, n=16)
    connect(task, data)
    trainer(2, limit_val_batches=0).fit(task, data)  # a GPT fine-tunes
    task.eval()
    examples = [data.datasets["val"][0], {**data.datasets["val"][1]}]
    examples[1]["input_ids"] = examples[1]["input_ids"][:3]  # a shorter row: padded in the batch
    examples[1]["token_type_ids"] = examples[1]["token_type_ids"][:3]
    padded = data.collate(examples)
    assert padded["attention_mask"][1].tolist().count(0) > 0
    with torch.no_grad():
        together = task.embed(padded)
        alone = task.embed(data.collate(examples[1:]))
    torch.testing.assert_close(together[1], alone[0])
    with pytest.raises(UserError, match="pooling='cls' does not suit a gpt network"):
        FineTuneTask(init_from=gpt_ckpt, pooling="cls")


def test_t5_encoder_runs_a_step(tmp_path: Path, texts: list[str]) -> None:
    tok = train_tokenizer(texts * 2, TokenizerSpec(kind="unigram", specials="t5", vocab_size=150))
    t5 = SpanCorruptionTask(config=T5Config(vocab_size=tok.vocab_size, max_seq_len=24, d_model=16, d_kv=8, d_ff=32,
                                            n_layer=1, n_head=2))
    task = FineTuneTask(init_from=save_pretrained(t5, tok, tmp_path / "t5.ckpt"))
    assert task.family == "t5" and task.pooling == "mean"
    data = toy_data(tmp_path, n=16)
    connect(task, data)
    result = trainer(2, limit_val_batches=1).fit(task, data)
    assert result is None and task.global_step == 2 and task.head.out_features == 2


def test_elmo_scalar_mix_is_softmax_normalised_learned_and_padding_free(tmp_path: Path, texts: list[str]) -> None:
    tok = train_tokenizer(texts * 2, TokenizerSpec(kind="wordpiece", specials="elmo", vocab_size=120, min_frequency=1))
    elmo = ElmoTask(config=ElmoConfig(vocab_size=tok.vocab_size, max_seq_len=24, filters=[(1, 8), (2, 8)], n_highway=1,
                                      n_layer=2, hidden_size=24, projection_size=8, max_chars=12, dropout=0.0))
    elmo.tokenizer = tok
    elmo.spell_vocabulary()
    task = FineTuneTask(init_from=save_pretrained(elmo, tok, tmp_path / "elmo.ckpt"), mode="probe", dropout=0.0,
                        optimizer={"lr": 5e-2})
    assert torch.equal(task.net.token_chars, elmo.net.token_chars)  # the spelling table came along
    assert task.scalar_mix.weights.shape == (3,)
    torch.testing.assert_close(task.scalar_mix.normalized_weights().sum(), torch.tensor(1.0))
    before = task.scalar_mix.weights.detach().clone(), task.scalar_mix.gamma.detach().clone()
    data = toy_data(tmp_path, n=16)
    connect(task, data)
    trainer(4, limit_val_batches=0).fit(task, data)
    weights = task.scalar_mix.normalized_weights()
    assert not torch.equal(task.scalar_mix.weights, before[0]) and not torch.equal(task.scalar_mix.gamma, before[1])
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0))
    assert (weights > 0).all()

    # the backward LM reads each row from its last real token: padding changes no real state
    ids = torch.tensor([[3, 7, 9, 11, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        padded = task.net.padded_layer_embeddings(ids, mask)[:, :, :4]
        alone = task.net.layer_embeddings(ids[:, :4])
    torch.testing.assert_close(padded, alone)


def test_mixup_changes_the_training_loss_only(bert_ckpt: str, tmp_path: Path) -> None:
    data = toy_data(tmp_path, n=16)
    data.trainer = None
    data._tokenizer = FineTuneTask(init_from=bert_ckpt).tokenizer
    data.setup("fit")
    batch = batch_of(data, n=16)
    plain = FineTuneTask(init_from=bert_ckpt, dropout=0.0, num_labels=2, task_type="classification")
    mixed = FineTuneTask(init_from=bert_ckpt, dropout=0.0, mixup=0.4, num_labels=2, task_type="classification")
    mixed.load_state_dict(plain.state_dict())
    plain.eval(), mixed.eval()  # no dropout: only mixup can make a difference
    with torch.no_grad():
        torch.testing.assert_close(mixed.loss(batch, training=False)[0], plain.loss(batch, training=False)[0])
        torch.testing.assert_close(plain.loss(batch, training=True)[0], plain.loss(batch, training=False)[0])
        torch.manual_seed(0)
        assert not torch.allclose(mixed.loss(batch, training=True)[0], plain.loss(batch, training=True)[0])
    with pytest.raises(UserError, match="mixup"):
        FineTuneTask(init_from=bert_ckpt, mixup=-1.0)


def test_regression_logs_pearson_and_spearman(bert_ckpt: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    rows = [(text, 0.9 if label == "pos" else 0.1) for text, label in toy_rows(48, seed=3)]  # not integers: regression
    path = write_tsv(tmp_path / "scores.tsv", ["sentence", "score"], rows)
    data = LabeledText(source=DataSource(paths=path, text_field="sentence"),
                       label_field="score", val_fraction=0.25, seq_len=24,
                       batch_size=12)
    task = FineTuneTask(init_from=bert_ckpt, dropout=0.0, optimizer={"lr": 3e-3}, head_lr=3e-2)
    connect(task, data)
    trainer(30, limit_val_batches=0).fit(task, data)
    assert task.task_type == "regression" and task.head.out_features == 1
    metrics = trainer(1).validate(task, data, verbose=False)[0]
    assert set(metrics) == {"val/loss", "val/pearson", "val/spearman"}
    assert metrics["val/pearson"] > 0.8 and metrics["val/spearman"] > 0.6
    task.eval()
    batch = data.collate(data.datasets["val"])
    with torch.no_grad():
        scores = task(batch)
    expected = torch.corrcoef(torch.stack([scores, batch["labels"]]))[0, 1]
    assert metrics["val/pearson"] == pytest.approx(float(expected), abs=1e-4)


def test_pair_regression_on_an_sts_benchmark_file(bert_ckpt: str, tmp_path: Path) -> None:
    """Sentence-pair similarity read from a file in the STS Benchmark's own layout (no header,
    seven tab-separated fields, some lines with two more), scored by Pearson and Spearman."""
    firsts, seconds = toy_rows(60, seed=4), toy_rows(60, seed=5)
    lines = []
    for i, ((a, la), (b, lb)) in enumerate(zip(firsts, seconds)):
        score = 0.4 + 2.1 * ((la == "pos") + (lb == "pos"))  # read from both sentences
        extra = "\tsource-a\tsource-b" if i % 7 == 0 else ""
        lines.append(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{score:.3f}\t{a}\t{b}{extra}")
    path = tmp_path / "sts-train.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = LabeledText(source=DataSource(paths=str(path), text_field="sentence1"), format="sts",
                       text_pair_field="sentence2", label_field="score", val_fraction=0.25, seq_len=24, batch_size=12)
    torch.manual_seed(0)
    task = FineTuneTask(init_from=bert_ckpt, dropout=0.0, optimizer={"lr": 3e-3}, head_lr=3e-2)
    connect(task, data)
    assert task.task_type == "regression"
    data.setup("fit")
    assert (data.datasets["train"][0]["token_type_ids"] == 1).any()  # two segments
    before = trainer(1).validate(task, data, verbose=False)[0]
    trainer(60, limit_val_batches=0).fit(task, data)
    after = trainer(1).validate(task, data, verbose=False)[0]
    assert after["val/pearson"] > 0.8 and after["val/spearman"] > before["val/spearman"]
    bad = tmp_path / "bad.csv"
    bad.write_text("genre\tfile\tyear\tid\tnot-a-score\ta\tb\n")
    with pytest.raises(UserError, match="bad.csv, line 1: expected 7 tab-separated fields"):
        LabeledText(source=DataSource(paths=str(bad), text_field="sentence1"), format="sts").raw()


def test_clear_errors(bert_ckpt: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        FineTuneTask(init_from=str(tmp_path / "missing.ckpt"))
    with pytest.raises(UserError, match="mode='head'"):
        FineTuneTask(init_from=bert_ckpt, mode="head")
    task = FineTuneTask(init_from=bert_ckpt)
    with pytest.raises(UserError, match="data.seq_len=64 is longer than the .*24 positions"):
        connect(task, toy_data(tmp_path, n=16).__class__(**{**_toy_args(tmp_path), "seq_len": 64}))
    assert dataclasses.asdict(task.net.config)["max_seq_len"] == 24


def _toy_args(tmp_path: Path) -> dict:
    return {"source": DataSource(paths=str(tmp_path / "train.tsv")), "validation": str(tmp_path / "val.tsv")}
