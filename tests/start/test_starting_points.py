"""Where a run starts, with artifacts built the way other tools write them: a ``transformers``
``save_pretrained`` BERT folder without MLM head whose ``tokenizer.json`` carries saved padding
and truncation (as public folders such as all-MiniLM-L6-v2 do), and lmforge checkpoints."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from conftest import CONFIGS, SENTENCES
from lmforge.cli import main
from lmforge.data import DataSource, TextCorpus, TokenizerSpec, train_tokenizer
from lmforge.errors import UserError
from lmforge.evaluation import FineTuneTask, LabeledText
from lmforge.start import RunStart, connect, load_tokenizer, open_start
from lmforge.tasks import ContrastiveTask, MaskedLMTask
from lmforge.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")

SAVED_LENGTH = 16  # the saved padding and truncation: shorter than most documents below, longer than sentences
DOCS = [" ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(3)) for i in range(12)]


@pytest.fixture(scope="module")
def clean() -> Tokenizer:
    """The tokenizer as trained, without padding or truncation."""
    return train_tokenizer(DOCS * 3, TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=200, min_frequency=1,
                                                   lowercase=True))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, clean: Tokenizer) -> Path:
    """A bare ``BertModel`` saved by transformers, its tokenizer saved by transformers with fixed
    padding and truncation enabled."""
    out = tmp_path_factory.mktemp("hf") / "bert"
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=clean.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                     attn_implementation="eager")
    transformers.BertModel(config, add_pooling_layer=False).save_pretrained(out)
    backend = Tokenizer.from_str(clean.to_str()).backend
    backend.enable_padding(length=SAVED_LENGTH, pad_id=clean.role_id("pad"), pad_token="[PAD]")
    backend.enable_truncation(SAVED_LENGTH)
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=64).save_pretrained(out)
    saved = json.loads((out / "tokenizer.json").read_text())
    assert saved["padding"]["strategy"] == {"Fixed": SAVED_LENGTH} and saved["truncation"]["max_length"] == SAVED_LENGTH
    assert not any(k.startswith("cls.") for k in open_start(str(out)).state_dict())  # no MLM head in the folder
    return out


def corpus(tmp_path: Path, **kwargs) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir(exist_ok=True)
    for i, doc in enumerate(DOCS):
        (folder / f"doc{i:02d}.txt").write_text(doc, encoding="utf-8")
    return folder


def test_saved_padding_and_truncation_never_reach_the_ids(folder: Path, clean: Tokenizer, tmp_path: Path) -> None:
    pad = clean.role_id("pad")
    assert max(len(ids) for ids in clean.encode_batch(DOCS)) > SAVED_LENGTH  # truncation would cut them
    # the tokenizer itself
    for tokenizer in (load_tokenizer(str(folder)), open_start(str(folder)).tokenizer):
        assert tokenizer.fingerprint == clean.fingerprint
        assert tokenizer.encode_batch(DOCS) == clean.encode_batch(DOCS)

    # corpus encoding and the prepared shards
    task = MaskedLMTask(init_from=str(folder))
    data = TextCorpus(source=DataSource(paths=str(corpus(tmp_path))), seq_len=32, batch_size=4, cache_dir=str(tmp_path / "shards"))
    connect(task, data)
    assert data.tokenizer.encode_batch(DOCS) == clean.encode_batch(DOCS)
    prepared = data.prepare(progress=False)
    train, val = data.splits()
    for split, docs in (("train", train), ("val", val)):
        ids = [shard.document(i)[:-1].tolist() for shard in prepared.shards[split] for i in range(len(shard.doc_ends))]
        assert ids == clean.encode_batch(docs)
        assert prepared.num_tokens(split) == sum(len(d) + 1 for d in clean.encode_batch(docs))  # every token, + eos
        assert all(pad not in shard.tokens for shard in prepared.shards[split])

    # contrastive embeddings: those of transformers on the unpadded ids, mean-pooled over real tokens
    encoder = ContrastiveTask(init_from=str(folder), pooling="mean").eval()
    hf = transformers.BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    texts = SENTENCES[:4]
    rows = [clean.backend.encode(t).ids for t in texts]  # [CLS] ... [SEP]
    longest = max(map(len, rows))
    ids = torch.tensor([r + [pad] * (longest - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (longest - len(r)) for r in rows])
    with torch.no_grad():
        states = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        torch.testing.assert_close(encoder.encode_texts(texts), expected, rtol=1e-4, atol=1e-5)

    # fine-tuning data
    labeled = tmp_path / "labeled.tsv"
    labeled.write_text("text\tlabel\n" + "".join(f"{doc}\t{i % 2}\n" for i, doc in enumerate(DOCS)), encoding="utf-8")
    finetune, examples = FineTuneTask(init_from=str(folder)), LabeledText(source=DataSource(paths=str(labeled)), val_fraction=0.25,
                                                                       seq_len=64)
    connect(finetune, examples)
    examples.setup("fit")
    for example in examples.datasets["train"] + examples.datasets["val"]:
        text = next(doc for doc in DOCS if clean.encode(doc) == example["input_ids"][1:-1].tolist())
        assert example["input_ids"].tolist() == clean.backend.encode(text).ids
        assert pad not in example["input_ids"].tolist()


def test_a_bare_bert_folder_starts_every_encoder_task(folder: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    hf = transformers.BertModel.from_pretrained(folder).state_dict()
    query = hf["encoder.layer.0.attention.self.query.weight"]
    # the MLM head the folder lacks is named as fresh only to the task that trains it
    for make, said in ((lambda: MaskedLMTask(init_from=str(folder)), ["mlm_head not in the weights, initialised fresh"]),
                       (lambda: ContrastiveTask(init_from=str(folder)), []),
                       (lambda: FineTuneTask(init_from=str(folder)), [])):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            task = make()
        torch.testing.assert_close(task.net.blocks[0].attn.qkv.weight[: query.shape[0]], query)
        lines = [r.getMessage() for r in caplog.records if "init_from" in r.getMessage()]
        assert len(lines) == len(said) and all(s in line for s, line in zip(said, lines)), (type(task).__name__, lines)
        assert task.hparams["init_from"] is None
    # an MLM checkpoint's heads that a task does not train are named too
    ckpt = save(MaskedLMTask(init_from=str(folder)), tmp_path / "mlm.ckpt")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        ContrastiveTask(init_from=str(ckpt))
    assert any("mlm_head loaded but not used by ContrastiveTask" in r.getMessage() for r in caplog.records)

    # and continued pretraining runs from it
    task = MaskedLMTask(init_from=str(folder))
    data = TextCorpus(source=DataSource(paths=str(corpus(tmp_path))), seq_len=32, batch_size=4, cache_dir=str(tmp_path / "shards"))
    connect(task, data)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1)
    trainer.fit(task, data)
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train/loss"])


def save(task: L.LightningModule, path: Path) -> Path:
    """``task`` as the checkpoint its run would write (state, hyper-parameters, lmforge metadata)."""
    checkpoint = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    task.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def test_hf_prefix_and_plain_folder_are_the_same_source(folder: Path) -> None:
    run = RunStart()
    assert run.open(f"hf:{folder}") is run.open(str(folder))  # one source: a run reads it once
    plain, prefixed = MaskedLMTask(init_from=str(folder)), MaskedLMTask(init_from=f"hf:{folder}")
    weights = prefixed.net.state_dict()
    assert all(torch.equal(v, weights[k]) for k, v in plain.net.state_dict().items() if not k.startswith("mlm_head"))
    assert plain.tokenizer.fingerprint == prefixed.tokenizer.fingerprint == load_tokenizer(f"hf:{folder}").fingerprint


def test_prepare_with_init_from_writes_the_shards_fit_reads(folder: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["-c", str(CONFIGS / "bert" / "tiny.yaml"), "--model.init_from", f"hf:{folder}", "--model.nsp", "false",
            "--data", "lmforge.data.TextCorpus", "--data.source.paths", str(corpus(tmp_path)), "--data.seq_len", "32",
            "--data.cache_dir", str(tmp_path / "shards"), "--data.batch_size", "4"]
    main(["prepare", *args])
    assert "Prepared" in capsys.readouterr().out
    (prepared,) = [p for p in (tmp_path / "shards").iterdir() if (p / "meta.json").is_file()]
    assert json.loads((prepared / "meta.json").read_text())["tokenizer"] == load_tokenizer(str(folder)).fingerprint

    def no_tokenizing(self: Tokenizer, texts: list[str]) -> list[list[int]]:
        raise AssertionError("fit tokenized the corpus again")

    monkeypatch.setattr(Tokenizer, "encode_batch", no_tokenizing)
    main(["fit", *args, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
          "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"])
    assert [p for p in (tmp_path / "shards").iterdir()] == [prepared]
    last = torch.load(next(tmp_path.glob("logs/*/version_0/checkpoints/last.ckpt")), weights_only=True)
    assert last["global_step"] == 2
    # next sentence prediction builds its examples from sentences in memory: nothing to prepare
    with pytest.raises(SystemExit):
        main(["prepare", *args, "--model.nsp", "true"])
    assert "nothing to prepare" in capsys.readouterr().err


def test_declared_special_tokens_must_be_the_roles_lmforge_finds(folder: Path, tmp_path: Path) -> None:
    odd = tmp_path / "odd"
    odd.mkdir()
    for f in folder.iterdir():
        (odd / f.name).write_bytes(f.read_bytes())
    config = json.loads((odd / "tokenizer_config.json").read_text())
    (odd / "tokenizer_config.json").write_text(json.dumps({**config, "mask_token": "the"}))
    with pytest.raises(UserError, match="declares mask_token 'the', but lmforge finds the mask token by the spellings"):
        open_start(str(odd))


def test_tokenizers_of_checkpoints_and_their_errors(folder: Path, clean: Tokenizer, tmp_path: Path) -> None:
    task = MaskedLMTask(init_from=str(folder))
    ckpt = save(task, tmp_path / "mlm.ckpt")
    assert load_tokenizer(str(ckpt)).fingerprint == clean.fingerprint
    start = open_start(str(ckpt))
    assert start.family == "bert" and start.task == "lmforge.tasks.masked_lm.MaskedLMTask"
    assert start.config == task.net.config
    task.tokenizer = None
    save(task, tmp_path / "bare.ckpt")
    with pytest.raises(UserError, match="carries no tokenizer"):
        load_tokenizer(str(tmp_path / "bare.ckpt"))
    (tmp_path / "torn.ckpt").write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(UserError, match="torn.ckpt' is not a complete checkpoint"):
        load_tokenizer(str(tmp_path / "torn.ckpt"))
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(UserError, match="is not an lmforge checkpoint"):
        open_start(str(tmp_path / "foreign.ckpt"))
    with pytest.raises(UserError, match="does not exist"):
        load_tokenizer(str(tmp_path / "missing.ckpt"))


def test_predict_embeds_sentences_with_a_hf_folder_alone(folder: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "emb.npy"
    main(["predict", "--model=lmforge.tasks.ContrastiveTask", "--model.init_from", str(folder), "--model.pooling",
          "mean", "--model.prompt_file", str(write_lines(tmp_path / "s.txt", SENTENCES)), "--model.embeddings_out",
          str(out), "--trainer.enable_progress_bar", "false", "--trainer.logger", "false"])
    encoder = ContrastiveTask(init_from=str(folder), pooling="mean").eval()
    torch.testing.assert_close(torch.from_numpy(np.load(out)), encoder.encode_texts(SENTENCES), rtol=1e-5, atol=1e-6)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
