"""Contrastive sentence encoders: InfoNCE, STS evaluation, starting from an MLM checkpoint, predict."""

from __future__ import annotations

import dataclasses

import math
import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from lmforge.data import DataSource, TextCorpus, TokenizerSpec
from lmforge.errors import UserError
from lmforge.evaluation.sts import STSEvaluation, read_sts, sts_spearman
from lmforge.models import BertConfig, GPTConfig
from lmforge.start import connect
from lmforge.tasks import ContrastiveTask, MaskedLMTask
from lmforge.tasks.contrastive import info_nce

TINY = BertConfig(vocab_size=300, max_seq_len=32, n_layer=2, n_head=2, d_model=32)


def test_info_nce_equals_hand_computation() -> None:
    torch.manual_seed(0)
    a, b, tau = torch.randn(4, 8), torch.randn(4, 8), 0.05
    loss, correct = info_nce(a, b, tau)
    expected, hits = 0.0, 0
    for i in range(4):
        sims = [float(torch.dot(a[i], b[j]) / (a[i].norm() * b[j].norm())) / tau for j in range(4)]
        expected += -(sims[i] - math.log(sum(math.exp(s) for s in sims))) / 4
        hits += int(max(range(4), key=lambda j: sims[j]) == i)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert int(correct) == hits
    perfect, _ = info_nce(a, a, tau)  # each view identical to its positive: near-zero loss
    assert perfect.item() < loss.item()


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):  # average ranks of ties
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def _spearman(x: list[float], y: list[float]) -> float:
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


def write_sts(path: Path, rows: list[tuple[float, str, str]]) -> Path:
    path.write_text(
        "".join(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{s}\t{a}\t{b}\textra\n" for i, (s, a, b) in enumerate(rows)),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def sts_file(tmp_path: Path) -> Path:
    return write_sts(tmp_path / "sts-dev.csv", [
        (5.0, "A cat sits on the mat.", "A cat is sitting on the mat."),
        (0.2, "The stock market fell sharply.", "A cat sits on the mat."),
        (3.8, "Lightning runs the training loop.", "The training loop is run by Lightning."),
        (1.0, "Every document ends with a token.", "Small models overfit quickly."),
        (4.4, "The quick brown fox jumps.", "A quick brown fox is jumping."),
        (2.0, "Pretraining teaches statistics of text.", "The dog ran in the park."),
    ])


def test_read_sts_takes_seven_fields_and_names_bad_lines(sts_file: Path, tmp_path: Path) -> None:
    first, second, gold = read_sts(sts_file)
    assert len(first) == len(second) == len(gold) == 6
    assert first[0] == "A cat sits on the mat." and second[0] == "A cat is sitting on the mat." and gold[0] == 5.0
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\tc\n", encoding="utf-8")
    with pytest.raises(UserError, match="bad.tsv, line 1"):
        read_sts(bad)
    with pytest.raises(UserError, match="does not exist"):
        read_sts(tmp_path / "missing.tsv")


def test_sts_spearman_matches_a_hand_computation(sts_file: Path, tiny_corpus: Path) -> None:
    dm = TextCorpus(source=DataSource(paths=str(tiny_corpus)),
                    tokenizer=TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=300))
    task = ContrastiveTask(config=BertConfig(**{**TINY.__dict__, "vocab_size": dm.vocab_size}))
    task.tokenizer = dm.tokenizer
    first, second, gold = read_sts(sts_file)
    task.eval()
    cosine = torch.nn.functional.cosine_similarity(task.encode_texts(first), task.encode_texts(second)).tolist()
    assert sts_spearman(task.encode_texts, (first, second, gold)) == pytest.approx(_spearman(cosine, gold), abs=1e-5)


def _trainer(tmp_path: Path, steps: int, callbacks: list | None = None) -> L.Trainer:
    return L.Trainer(default_root_dir=tmp_path, max_steps=steps, accelerator="cpu", logger=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     limit_val_batches=1, enable_checkpointing=False, callbacks=callbacks)


def test_starts_from_an_mlm_checkpoint_and_learns(tiny_corpus: Path, sts_file: Path, tmp_path: Path) -> None:
    L.seed_everything(0)
    spec = TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=300, lowercase=True)
    mlm_data = TextCorpus(source=DataSource(paths=str(tiny_corpus)), tokenizer=spec, seq_len=32, batch_size=8)
    mlm = MaskedLMTask(config=BertConfig(**{**TINY.__dict__, "vocab_size": mlm_data.vocab_size}))
    connect(mlm, mlm_data)
    trainer = _trainer(tmp_path, 5)
    trainer.fit(mlm, mlm_data)
    ckpt = tmp_path / "mlm.ckpt"
    trainer.save_checkpoint(ckpt)

    # the shape comes from the checkpoint; config contributes only dropout
    task = ContrastiveTask(config=BertConfig(dropout=0.1), init_from=str(ckpt))
    assert task.net.config.d_model == 32 and task.net.config.dropout == 0.1
    for name, value in mlm.net.state_dict().items():
        torch.testing.assert_close(task.net.state_dict()[name], value)
    assert task.hparams["init_from"] is None and task.hparams["config"]["d_model"] == 32

    data = TextCorpus(source=DataSource(paths=str(tiny_corpus)),
                      tokenizer=TokenizerSpec(path=str(ckpt)), seq_len=32, batch_size=16)
    connect(task, data)
    sts = [STSEvaluation(str(sts_file))]
    before = _trainer(tmp_path, 1, sts).validate(task, data, verbose=False)[0]
    _trainer(tmp_path, 30).fit(task, data)
    after = _trainer(tmp_path, 1, sts).validate(task, data, verbose=False)[0]
    assert after["val/loss"] < before["val/loss"]
    assert -1.0 <= before["val/sts_spearman"] <= 1.0 and -1.0 <= after["val/sts_spearman"] <= 1.0
    assert "val/ppl" not in after  # a contrastive loss has no perplexity


def test_init_from_something_else_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        ContrastiveTask(init_from=str(tmp_path / "missing.ckpt"))
    gpt_like = tmp_path / "gpt.ckpt"
    config = dataclasses.asdict(GPTConfig(n_layer=1, d_model=8, n_head=2, vocab_size=10, max_seq_len=8))
    torch.save({"state_dict": {}, "lmforge": {"task": "lmforge.tasks.causal_lm.CausalLMTask",
                                               "network": "lmforge.models.gpt.GPT", "model_config": config}}, gpt_like)
    with pytest.raises(UserError, match="holds gpt weights, but ContrastiveTask needs bert weights"):
        ContrastiveTask(init_from=str(gpt_like))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(UserError, match="is not an lmforge checkpoint"):
        ContrastiveTask(init_from=str(foreign))


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_predict_writes_embeddings(suffix: str, tiny_corpus: Path, tmp_path: Path) -> None:
    dm = TextCorpus(source=DataSource(paths=str(tiny_corpus)),
                    tokenizer=TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=300))
    out = tmp_path / f"emb{suffix}"
    task = ContrastiveTask(config=BertConfig(**{**TINY.__dict__, "vocab_size": dm.vocab_size}),
                           prompts=["A cat sits.", "The market fell."], embeddings_out=str(out))
    task.tokenizer = dm.tokenizer
    L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).predict(task)
    if suffix == ".npy":
        embeddings = np.load(out)
    else:
        from safetensors.numpy import load_file

        embeddings = load_file(str(out))["embeddings"]
    assert embeddings.shape == (2, 32)
    task.eval()
    np.testing.assert_allclose(embeddings, task.encode_texts(["A cat sits.", "The market fell."]).numpy(), atol=1e-6)


def test_hard_negatives_join_the_candidates() -> None:
    torch.manual_seed(1)
    a, p, n = torch.randn(3, 8), torch.randn(3, 8), torch.randn(3, 8)
    loss, _ = info_nce(a, p, 0.1, n)
    sim = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(torch.cat([p, n]), dim=-1).T / 0.1
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(sim, torch.arange(3)).item(), rel=1e-6)


def test_supervised_pairs_from_tsv_and_jsonl(tmp_path: Path) -> None:
    from lmforge.data import DataSource, SentencePairs
    from lmforge.data.pairs import read_pair_rows

    tsv = tmp_path / "nli.tsv"
    tsv.write_text("anchor\tpositive\tnegative\nA man plays.\tSomeone plays.\tNobody plays.\n", encoding="utf-8")
    assert read_pair_rows(tsv, ("anchor", "positive", "negative")) == [("A man plays.", "Someone plays.", "Nobody plays.")]
    plain = tmp_path / "plain.tsv"
    plain.write_text("A dog runs.\tAn animal runs.\n", encoding="utf-8")
    assert read_pair_rows(plain, ("anchor", "positive", "negative")) == [("A dog runs.", "An animal runs.", None)]
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"q": "Where is Paris?", "a": "Paris is in France."}\n{"q": "", "a": "x"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=re.escape(f"'{jsonl}' line 2 needs non-empty 'q' and 'a' fields: fill them "
                                                  "or remove that line.")):
        read_pair_rows(jsonl, ("q", "a", "negative"))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"q": "Where?", "a": "Here."}\n{"q": "When?", "a": "Now.}\n', encoding="utf-8")
    with pytest.raises(UserError, match=re.escape(f"'{broken}' line 2 is not valid JSON (Unterminated string "
                                                  "starting at column 21): fix or remove that line.")):
        read_pair_rows(broken, ("q", "a", "negative"))
    with pytest.raises(UserError, match=re.escape(f"'{broken}' line 2 is not valid JSON")):
        SentencePairs(source=DataSource(paths=str(tmp_path / "*.jsonl"))).rows()
    assert broken.read_text(encoding="utf-8").count("\n") == 2  # nothing written
    folder = tmp_path / "pairs"
    folder.mkdir()
    (folder / "a.tsv").write_text("A cat sleeps.\tA pet rests.\n", encoding="utf-8")
    assert SentencePairs(source=DataSource(paths=str(folder))).rows() == [("A cat sleeps.", "A pet rests.", None)]

    rows = [f"Sentence number {i} is here.\tThe {i}th sentence is here.\tNothing about {i}." for i in range(40)]
    (tmp_path / "many.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    dm = SentencePairs(source=DataSource(paths=str(tmp_path / "many.tsv")), val_fraction=0.2, batch_size=8, seq_len=32,
                       tokenizer=TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=200))
    task = ContrastiveTask(config=BertConfig(**{**TINY.__dict__, "vocab_size": dm.vocab_size}))
    dm.objective = task.objective
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 40 and len(dm.val_set) > 0
    batch = next(iter(dm.train_dataloader()))
    assert {"input_ids", "attention_mask", "positive_ids", "positive_mask", "negative_ids", "negative_mask"} <= set(batch)
    loss, correct = task._step(batch)
    assert loss.item() > 0 and 0 <= int(correct) <= 8
