"""Relation classification with entity markers (SciERC/ChemProt layout) from a ``transformers``
folder, multi-label classification, their metrics against hand counts, and the FLOPs that
MFU divides by."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from conftest import CONFIGS, SENTENCES, refused
from lmforge.callbacks import ThroughputMonitor
from lmforge.data import DataSource, TokenizerSpec, train_tokenizer
from lmforge.data.vocab import extension_pieces
from lmforge.errors import UserError
from lmforge.evaluation import FineTuneTask, LabeledText
from lmforge.evaluation.finetune import ClassF1
from lmforge.start import connect

transformers = pytest.importorskip("transformers")

MARKERS = ["<<", ">>", "[[", "]]"]
RELATIONS = ["USED-FOR", "PART-OF", "none"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare ``BertModel`` and its tokenizer, both written by transformers' ``save_pretrained``."""
    out = tmp_path_factory.mktemp("hf") / "bert"
    texts = SENTENCES + [r["text"] for r in relation_rows(30, 0) + multilabel_rows(30, 0)]
    tok = train_tokenizer(texts * 4, TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=200,
                                                       min_frequency=1, lowercase=True))
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(config, add_pooling_layer=False).save_pretrained(out)
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok.backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=64).save_pretrained(out)
    return out


def relation_rows(n: int, seed: int) -> list[dict]:
    """SciERC-style examples: the relation is readable from the word between the two entities."""
    g = np.random.default_rng(seed)
    cue = {"USED-FOR": "for", "PART-OF": "in", "none": "and"}
    rows = []
    for i in range(n):
        label = RELATIONS[i % 3]
        a, b = g.choice(["the model", "a parser", "the corpus", "this method"], 2, replace=False)
        first, second = ("<< " + a + " >>", "[[ " + b + " ]]") if i % 2 else ("[[ " + a + " ]]", "<< " + b + " >>")
        rows.append({"text": f"we use {first} {cue[label]} {second} here .", "label": label, "metadata": [1, 2, 4, 5]})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> str:
    """JSON lines in a ``.txt`` file, as SciBERT's data folders ship them."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def relation_data(tmp_path: Path, **kwargs) -> LabeledText:
    train = write_jsonl(tmp_path / "train.txt", relation_rows(48, 0))
    dev = write_jsonl(tmp_path / "dev.txt", relation_rows(24, 1))
    return LabeledText(source=DataSource(paths=train), validation=dev, format="jsonl", seq_len=32, batch_size=8,
                       **{"markers": MARKERS, **kwargs})


def trainer(steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kwargs)


def test_markers_become_special_tokens_once_and_the_embeddings_grow(folder: Path, tmp_path: Path) -> None:
    task = FineTuneTask(init_from=str(folder), pooling="entity_start", dropout=0.0, ignore_label="none",
                        optimizer={"lr": 1e-2, "weight_decay": 0.01})
    old_rows = task.net.wte.weight.detach().clone()
    old = task.tokenizer
    data = relation_data(tmp_path)
    tokenizer = connect(task, data)
    assert tokenizer.vocab_size == old.vocab_size + 4 and task.net.wte.weight.shape[0] == old.vocab_size + 4
    assert tokenizer.with_special_tokens(MARKERS) is tokenizer  # added once: a second time changes nothing
    assert data.tokenizer is tokenizer and task.tokenizer is tokenizer
    # each marker starts as the mean of the embeddings of the pieces the folder's tokenizer cut it into
    assert extension_pieces(old, tokenizer) == [old.encode(m) for m in MARKERS]
    for i, marker in enumerate(MARKERS):
        torch.testing.assert_close(task.net.wte.weight[old.vocab_size + i], old_rows[old.encode(marker)].mean(0))
    torch.testing.assert_close(task.net.wte.weight[: old.vocab_size], old_rows)

    # the ids are those of the transformers tokenizer with the markers as additional special tokens
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    hf.add_special_tokens({"additional_special_tokens": MARKERS})
    data.setup("fit")
    rows = relation_rows(24, 1)
    for example, row in zip(data.datasets["val"][:6], rows):
        assert example["input_ids"].tolist() == hf(row["text"])["input_ids"]
        opening = [tokenizer.backend.token_to_id(m) for m in ("<<", "[[")]
        assert example["input_ids"][example["entity_positions"]].tolist() == opening

    assert task.head.in_features == 2 * task.net.state_width  # both opening markers' states side by side
    before = trainer(1).validate(task, data, verbose=False)[0]
    fit = trainer(80, limit_val_batches=0)
    fit.fit(task, data)
    after = trainer(1).validate(task, data, verbose=False)[0]
    assert after["val/f1_micro"] > before["val/f1_micro"] and after["val/f1_micro"] >= 0.8

    # the fine-tuned checkpoint carries the grown vocabulary and loads alone
    path = tmp_path / "rel.ckpt"
    fit.save_checkpoint(path)
    restored = FineTuneTask.load_from_checkpoint(path, weights_only=True)
    assert restored.net.wte.weight.shape[0] == tokenizer.vocab_size
    assert restored.tokenizer.fingerprint == tokenizer.fingerprint
    again = relation_data(tmp_path)
    assert connect(restored, again).fingerprint == tokenizer.fingerprint  # no second set of markers
    restored.eval()
    task.eval()
    batch = again.collate((again.setup("fit") or again.datasets["val"])[:4])
    torch.testing.assert_close(restored(batch), task(batch))


def test_entity_start_pooling_needs_markers_and_markers_are_checked(folder: Path, tmp_path: Path) -> None:
    task = FineTuneTask(init_from=str(folder), pooling="entity_start")
    data = relation_data(tmp_path, markers=None)
    connect(task, data)
    data.setup("fit")
    with pytest.raises(UserError, match="markers"):
        task(data.collate(data.datasets["train"][:2]))
    with pytest.raises(UserError, match="four distinct markers"):
        relation_data(tmp_path, markers=["<<", ">>"])
    with pytest.raises(UserError, match="ignore_label='nope'"):
        task = FineTuneTask(init_from=str(folder), ignore_label="nope")
        connect(task, relation_data(tmp_path))


def test_a_marker_cut_off_by_seq_len_is_reported(folder: Path, tmp_path: Path) -> None:
    rows = [{"text": "a " * 40 + "<< x >> and [[ y ]]", "label": "none"}, *relation_rows(6, 0)]
    path = write_jsonl(tmp_path / "long.txt", rows)
    data = LabeledText(source=DataSource(paths=path), validation=path, format="jsonl", markers=MARKERS, seq_len=16)
    connect(FineTuneTask(init_from=str(folder)), data)
    with pytest.warns(UserWarning, match="2 entity markers .* cut off at seq_len=16"):
        data.setup("fit")
    assert data.datasets["train"][0]["entity_positions"].tolist() == [0, 0]


def test_a_row_without_its_markers_is_refused_by_line(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    """A short text that lacks a marker is the data's fault, not seq_len's: refused through the
    relation recipe, naming the line, with nothing written; no "cut off" warning for it."""
    rows = relation_rows(8, 0)
    rows[4] = {"text": "we use the model for a parser here .", "label": "USED-FOR"}  # 12 tokens, no markers
    rows[6] = {"text": "we use << the model >> for a parser ]] here .", "label": "USED-FOR"}
    train = write_jsonl(tmp_path / "train.txt", rows)
    monkeypatch.chdir(tmp_path)
    line = refused(capsys, "fit", "-c", str(CONFIGS / "finetune" / "relation.yaml"), "--model.init_from", str(folder),
                   "--data.source.paths", train, "--data.validation", train, "--data.seq_len", "32",
                   "--trainer.max_steps", "1")
    assert line == (f"lmforge: error: '{train}' line 5 lacks the entity markers << >> [[ ]] (data.markers: << >> [[ ]]): "
                    "mark both entities of that line, or remove it.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.txt"]  # no logs/, no checkpoint
    del rows[4]
    with pytest.raises(UserError, match=r"train\.txt' line 6 lacks the entity marker \[\[ \("):
        LabeledText(source=DataSource(paths=write_jsonl(tmp_path / "train.txt", rows)), format="jsonl",
                    markers=MARKERS).raw()


def test_class_f1_leaves_out_the_ignored_class_by_hand_counts() -> None:
    gold = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0])
    pred = torch.tensor([0, 1, 1, 2, 2, 2, 0, 0])
    metric = ClassF1(3, ignore=2)
    metric.update(pred, gold)
    # classes 0 and 1: tp 2 + 1, fp 1 (a 2 predicted as 0) + 1, fn 1 + 1 (a 1 predicted as 2)
    micro = 2 * 3 / (2 * 3 + 2 + 2)
    f1_0, f1_1 = 2 * 2 / (2 * 2 + 1 + 1), 2 * 1 / (2 * 1 + 1 + 1)
    out = metric.compute()
    assert out["f1_micro"].item() == pytest.approx(micro) and out["f1_macro"].item() == pytest.approx((f1_0 + f1_1) / 2)
    full = ClassF1(3)
    full.update(pred, gold)
    assert full.compute()["f1_micro"].item() == pytest.approx(5 / 8)  # = accuracy without an ignored class


def confusion_f1(pred: torch.Tensor, gold: torch.Tensor, n: int, ignore: int | None) -> tuple[float, float]:
    """Micro/macro F1 from a confusion matrix counted by hand (ClassF1's own counting before it
    used torchmetrics' stat scores)."""
    c = torch.bincount(gold * n + pred, minlength=n * n).view(n, n).double()
    tp = c.diag()
    fp, fn = c.sum(0) - tp, c.sum(1) - tp
    keep = [k for k in range(n) if k != ignore]
    micro = 2 * tp[keep].sum() / max(1.0, (2 * tp[keep].sum() + fp[keep].sum() + fn[keep].sum()).item())
    seen = [k for k in keep if (tp[k] + fp[k] + fn[k]) > 0]
    macro = sum(2 * tp[k] / (2 * tp[k] + fp[k] + fn[k]) for k in seen) / len(seen) if seen else 0.0
    return float(micro), float(macro)


@pytest.mark.parametrize("seed", range(12))
def test_class_f1_matches_scikit_learn_and_a_confusion_matrix_on_random_labels(seed: int) -> None:
    from sklearn.metrics import f1_score

    g = torch.Generator().manual_seed(seed)
    n = 2 + seed % 6
    ignore = None if seed % 3 == 0 else int(torch.randint(n, (), generator=g))
    # skewed towards few classes, so some classes are never seen and the ignored one is common
    probs = torch.rand(n, generator=g) ** 3
    metric = ClassF1(n, ignore)
    golds, preds = [], []
    for _ in range(3):  # several batches: the counts add up
        size = int(torch.randint(1, 40, (), generator=g))
        gold = torch.multinomial(probs, size, replacement=True, generator=g)
        pred = torch.where(torch.rand(size, generator=g) < 0.5, gold,
                           torch.multinomial(probs, size, replacement=True, generator=g))
        metric.update(pred, gold)
        golds.append(gold), preds.append(pred)
    gold, pred = torch.cat(golds), torch.cat(preds)
    out = {k: v.item() for k, v in metric.compute().items()}
    keep = [k for k in range(n) if k != ignore]
    seen = [k for k in keep if k in set(gold.tolist()) | set(pred.tolist())]
    micro = f1_score(gold, pred, labels=keep, average="micro", zero_division=0)
    macro = f1_score(gold, pred, labels=seen, average="macro", zero_division=0) if seen else 0.0
    assert out["f1_micro"] == pytest.approx(micro, abs=1e-6) and out["f1_macro"] == pytest.approx(macro, abs=1e-6)
    assert (out["f1_micro"], out["f1_macro"]) == pytest.approx(confusion_f1(pred, gold, n, ignore), abs=1e-6)


def test_class_f1_is_zero_when_only_the_ignored_class_occurs() -> None:
    metric = ClassF1(3, ignore=1)
    metric.update(torch.tensor([1, 1]), torch.tensor([1, 1]))
    assert {k: v.item() for k, v in metric.compute().items()} == {"f1_micro": 0.0, "f1_macro": 0.0}


def multilabel_rows(n: int, seed: int) -> list[dict]:
    """Hallmarks-of-Cancer-like documents: each cue word adds its label; some have none."""
    g = np.random.default_rng(seed)
    cues = {"growth": "proliferation", "death": "apoptosis", "spread": "invasion"}
    rows = []
    for _ in range(n):
        labels = [label for label in cues if g.random() < 0.4]
        words = [cues[label] for label in labels] + list(g.choice(["cells", "tumour", "study", "the"], 3))
        g.shuffle(words)
        rows.append({"text": " ".join(words), "labels": labels})
    return rows


def test_multilabel_reads_lists_and_separated_text_and_trains(folder: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", multilabel_rows(64, 0))
    dev_rows = multilabel_rows(32, 1)
    dev = tmp_path / "dev.tsv"
    dev.write_text("text\tlabels\n" + "".join(f"{r['text']}\t{','.join(r['labels'])}\n" for r in dev_rows))
    data = LabeledText(source=DataSource(paths=train), validation=str(dev), label_field="labels", seq_len=16,
                       batch_size=16, task_type="multilabel")
    task = FineTuneTask(init_from=str(folder), dropout=0.0, optimizer={"lr": 5e-3, "weight_decay": 0.0})
    connect(task, data)
    assert data.task_type == "multilabel" and task.task_type == "multilabel"
    assert data.labels == ["death", "growth", "spread"] and task.head.out_features == 3
    data.setup("fit")
    hot = np.stack([e["label"] for e in data.datasets["val"]])
    expected = np.array([[label in r["labels"] for label in data.labels] for r in dev_rows], dtype=np.float32)
    np.testing.assert_array_equal(hot, expected)
    assert (hot.sum(1) == 0).any()  # an example with no label at all is kept
    trainer(60, limit_val_batches=0).fit(task, data)
    out = trainer(1).validate(task, data, verbose=False)[0]
    assert {"val/f1_micro", "val/f1_macro", "val/exact_match", "val/f1_death", "val/f1_growth", "val/f1_spread"} <= set(out)
    assert out["val/f1_micro"] > 0.8


def test_multilabel_metrics_equal_hand_counts(folder: Path) -> None:
    task = FineTuneTask(init_from=str(folder), task_type="multilabel", num_labels=3, labels=["a", "b", "c"],
                        threshold=0.5)
    probs = torch.tensor([[0.9, 0.2, 0.6], [0.1, 0.7, 0.4], [0.8, 0.8, 0.1], [0.3, 0.1, 0.2]])
    gold = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0]])
    for metric in task.metrics["val"].values():
        metric.update(probs, gold)
    out = task._computed("val")
    # a: tp 2; b: tp 1, fp 1; c: tp 1, fn 1
    assert out["val/f1_a"].item() == pytest.approx(1.0)
    assert out["val/f1_b"].item() == pytest.approx(2 / 3) and out["val/f1_c"].item() == pytest.approx(2 / 3)
    assert out["val/f1_micro"].item() == pytest.approx(2 * 4 / (2 * 4 + 1 + 1))
    assert out["val/f1_macro"].item() == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert out["val/exact_match"].item() == pytest.approx(3 / 4)  # all but row 2


def test_finetune_flops_count_what_runs_and_mfu_stays_below_one(folder: Path, tmp_path: Path) -> None:
    task = FineTuneTask(init_from=str(folder), pooling="entity_start")
    data = relation_data(tmp_path)
    connect(task, data)
    matmuls = sum(m.weight.numel() for m in task.net.modules() if isinstance(m, torch.nn.Linear)
                  and m is not getattr(task.net.mlm_head, "dense", None))
    everything = sum(p.numel() for p in task.parameters())
    c = task.net.config
    length = 32
    # forward and backward (3x the forward's 2 FLOPs per weight) of the layers that run, plus at most
    # the attention's scores and mixing; not the embeddings (lookups) nor the unused MLM head
    assert 6 * matmuls <= task.flops_per_token(length) <= 6 * matmuls + 12 * c.n_layer * c.d_model * length
    assert task.flops_per_token(length) < 0.8 * 6 * everything
    probe = FineTuneTask(init_from=str(folder), mode="probe", task_type="classification", num_labels=2)
    assert probe.flops_per_token(length) == pytest.approx(task.flops_per_token(length) / 3)

    monitor = ThroughputMonitor(window=3)
    seen: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if "perf/mfu" in trainer.callback_metrics:
                seen.append(float(trainer.callback_metrics["perf/mfu"]))

    trainer(8, limit_val_batches=0, callbacks=[monitor, Record()]).fit(task, data)
    assert seen and 0 < max(seen) < 1
