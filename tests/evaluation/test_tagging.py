"""TokenClassificationTask: from a tiny pretrained BERT, from random weights, in predict, and the
ner-tiny config through the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_finetune import save_pretrained, trainer

from conftest import CONFIGS
from lmforge.cli import main
from lmforge.data import DataSource, TokenizerSpec, train_tokenizer
from lmforge.errors import UserError
from lmforge.evaluation import FineTuneTask, TaggedText, TokenClassificationTask
from lmforge.models import BertConfig
from lmforge.start import connect
from lmforge.tasks import MaskedLMTask

TOY = CONFIGS / "finetune" / "toy-ner.conll"


@pytest.fixture(scope="module")
def bert_ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    texts = [line.split("\t")[0] for line in TOY.read_text().splitlines() if line and "DOCSTART" not in line]
    tok = train_tokenizer([" ".join(texts)] * 4, TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=120,
                                                               min_frequency=1))
    torch.manual_seed(0)
    task = MaskedLMTask(config=BertConfig(vocab_size=tok.vocab_size, max_seq_len=24, n_layer=1, n_head=2, d_model=32))
    return save_pretrained(task, tok, tmp_path_factory.mktemp("bert") / "bert.ckpt")


def toy_data(**kwargs) -> TaggedText:
    return TaggedText(source=DataSource(paths=str(TOY)), val_fraction=0.25, seq_len=24, batch_size=8, **kwargs)


def test_finetunes_from_a_pretrained_bert_and_logs_entity_f1(bert_ckpt: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    task = TokenClassificationTask(init_from=bert_ckpt, dropout=0.0, optimizer={"lr": 5e-3, "weight_decay": 0.01})
    data = toy_data()
    connect(task, data)
    assert task.labels == ["O", "B-Cell", "B-Gene", "I-Cell", "I-Gene"]
    before = trainer(1).validate(task, data, verbose=False)[0]
    fit = trainer(40, limit_val_batches=0)
    fit.fit(task, data)
    after = trainer(1).validate(task, data, verbose=False)[0]
    assert set(after) == {"val/loss", "val/acc", "val/f1", "val/precision", "val/recall", "val/f1_Cell", "val/f1_Gene"}
    assert after["val/f1"] > before["val/f1"] + 0.3 and after["val/f1"] > 0.7
    assert after["val/acc"] > 0.9 and after["val/loss"] < before["val/loss"]

    path = tmp_path / "ner.ckpt"  # the fine-tuned checkpoint stands alone
    fit.save_checkpoint(path)
    restored = TokenClassificationTask.load_from_checkpoint(path, weights_only=True)
    assert restored.labels == task.labels
    restored.eval()
    task.eval()
    batch = data.collate(data.datasets["val"][:4])
    torch.testing.assert_close(restored(batch), task(batch))


def test_random_init_predicts_one_tag_column_per_line(bert_ckpt: str, tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    lines = ["p53 NN", "binds NN", "T NN", "cells NN", "", "MYC NN", "."]
    words.write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = TokenClassificationTask(init_from=bert_ckpt, random_init=True)
    data = toy_data(predict=str(words))
    connect(task, data)
    outputs = trainer(1).predict(task, data)
    blocks = [block for batch in outputs for block in batch]
    assert len(blocks) == 2
    written = [line for block in blocks for line in block.split("\n")]
    assert len(written) == len([line for line in lines if line])
    for original, line in zip([line for line in lines if line], written):
        assert line.startswith(original + "\t") and line.split("\t")[1] in task.labels


def test_each_task_refuses_the_others_data(bert_ckpt: str) -> None:
    task = TokenClassificationTask(init_from=bert_ckpt)
    with pytest.raises(UserError, match="not classification: use FineTuneTask"):
        task.use_labels("classification", ["neg", "pos"])
    with pytest.raises(UserError, match="use TokenClassificationTask"):
        FineTuneTask(init_from=bert_ckpt).use_labels("token_classification", ["O", "B-X", "I-X"])


def test_ner_tiny_config_trains_from_scratch_and_predict_writes_conll(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    config = ["-c", str(CONFIGS / "finetune" / "ner-tiny.yaml"), "--trainer.enable_progress_bar=false"]
    main(["fit", *config, "--trainer.max_steps=3", "--trainer.val_check_interval=3",
          "--trainer.enable_model_summary=false"])
    (tmp_path / "words.txt").write_text("p53 NN\nbinds NN\n\nMYC NN\n", encoding="utf-8")
    capsys.readouterr()
    main(["predict", *config, "--ckpt_path", "logs/ner-tiny/version_0/checkpoints/last.ckpt",
          "--data.predict", "words.txt"])
    blocks = capsys.readouterr().out.strip().split("\n\n")
    assert [[line.split("\t")[0] for line in b.split("\n")] for b in blocks] == [["p53 NN", "binds NN"], ["MYC NN"]]


def test_a_file_in_another_scheme_exits_2_writing_nothing_and_help_lists_the_schemes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.txt").write_text("IL-2\tB-protein\nreceptor\tE-protein\n\nDNA\tS-DNA\n", encoding="utf-8")
    config = ["-c", str(CONFIGS / "finetune" / "ner-tiny.yaml"), "--data.source.paths", "train.txt"]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *config, "--data.scheme", "BIO"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'train.txt' line 2 tag 'E-protein' is not a BIO tag: the file looks like BIOES; set data.scheme: BIOES" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.txt"]  # no logs, no checkpoint
    with pytest.raises(SystemExit):
        main(["fit", "--data.help", "lmforge.evaluation.TaggedText"])
    assert "{auto,BIO,IOB1,IO,BIOES,IOBES,BILOU}" in capsys.readouterr().out
