"""LabeledText: reading labelled files, label mapping, framing of pairs, padding, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import CONFIGS, SENTENCES, refused
from lmforge.data import DataSource, TokenizerSpec, train_tokenizer
from lmforge.errors import UserError
from lmforge.evaluation import LabeledText
from lmforge.evaluation.labeled_data import label_names, read_records, truncate_pair
from lmforge.evaluation.loaders import LengthGroupedSampler, run_seed

WORDS = SENTENCES + ["good movie", "bad movie", "a fine day", "a poor day"]


def write_tsv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.write_text("\n".join("\t".join(map(str, r)) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bert_tokenizer():
    return train_tokenizer(WORDS * 3, TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=200, min_frequency=1))


@pytest.fixture(scope="module")
def gpt_tokenizer():
    return train_tokenizer(WORDS * 3, TokenizerSpec(kind="byte_level_bpe", specials="gpt", vocab_size=300))


def attach(dm: LabeledText, tokenizer) -> LabeledText:
    """Hand the data module a task's ``tokenizer`` (as ``lmforge.start.connect`` does) and set it up."""
    dm.tokenizer = tokenizer
    dm.setup("fit")
    return dm


def test_string_labels_are_sorted_classes_and_unknown_validation_label_is_refused(tmp_path: Path,
                                                                                   bert_tokenizer) -> None:
    train = write_tsv(tmp_path / "train.tsv", ["text", "label"],
                      [["good movie", "pos"], ["bad movie", "neg"], ["a fine day", "pos"], ["a poor day", "neutral"]])
    val = write_tsv(tmp_path / "val.tsv", ["text", "label"], [["good movie", "neg"], ["a poor day", "pos"]])
    dm = attach(LabeledText(source=DataSource(paths=str(train)), validation=str(val)), bert_tokenizer)
    assert dm.task_type == "classification" and dm.labels == ["neg", "neutral", "pos"] and dm.num_labels == 3
    assert [e["label"] for e in dm.datasets["train"]] == [2, 0, 2, 1]
    assert [e["label"] for e in dm.datasets["val"]] == [0, 2]

    bad = write_tsv(tmp_path / "bad.tsv", ["text", "label"], [["good movie", "positive"]])
    with pytest.raises(UserError, match="'positive'.*not among the training labels"):
        attach(LabeledText(source=DataSource(paths=str(train)), validation=str(bad)), bert_tokenizer)
    # classes given in data.labels: a training label outside them is named by its line too
    with pytest.raises(UserError, match=r"train\.tsv' line 5 has the label 'neutral', not among data\.labels \(neg, pos\)"):
        LabeledText(source=DataSource(paths=str(train)), validation=str(val), labels=["neg", "pos"]).raw()


def test_integer_labels_sort_numerically_and_floats_mean_regression(tmp_path: Path, bert_tokenizer) -> None:
    assert label_names([2, 10, 1]) == ["1", "2", "10"]
    assert label_names(["b", "a"]) == ["a", "b"]
    records = [{"text": WORDS[i % len(WORDS)], "label": i % 11} for i in range(22)]
    jsonl = str(write_jsonl(tmp_path / "c.jsonl", records))
    dm = attach(LabeledText(source=DataSource(paths=jsonl), validation=jsonl), bert_tokenizer)
    assert dm.task_type == "classification" and dm.labels == [str(i) for i in range(11)]  # "10" after "9"
    # a JSON 3 and a text "3" are the same class
    val = write_tsv(tmp_path / "v.tsv", ["text", "label"], [["good movie", "3"]])
    dm = attach(LabeledText(source=DataSource(paths=str(tmp_path / "c.jsonl")), validation=str(val)), bert_tokenizer)
    assert dm.datasets["val"][0]["label"] == dm.labels.index("3")

    scores = write_tsv(tmp_path / "s.tsv", ["text", "score"], [[t, i * 0.5] for i, t in enumerate(WORDS)])
    dm = attach(LabeledText(source=DataSource(paths=str(scores)),
                            label_field="score", val_fraction=0.3), bert_tokenizer)
    assert dm.task_type == "regression" and dm.num_labels == 1
    batch = dm.collate(dm.datasets["train"][:3])
    assert batch["labels"].dtype == torch.float32
    with pytest.raises(UserError, match="not a number"):
        text = write_tsv(tmp_path / "t.tsv", ["text", "label"], [["a", "x"], ["b", "1.5"]])
        attach(LabeledText(source=DataSource(paths=str(text)), task_type="regression"), bert_tokenizer)


def test_held_out_split_is_reproducible_and_disjoint(tmp_path: Path, bert_tokenizer) -> None:
    rows = [[f"sentence number {i}", i % 2] for i in range(40)]
    path = write_tsv(tmp_path / "all.tsv", ["text", "label"], rows)

    def split(seed: int) -> tuple[list[str], list[str]]:
        raw = LabeledText(source=DataSource(paths=str(path)), val_fraction=0.25, seed=seed).raw()
        return [r[0] for r in raw["train"]], [r[0] for r in raw["val"]]

    train, val = split(1)
    assert len(val) == 10 and len(train) == 30 and not set(train) & set(val)
    assert split(1) == (train, val)
    assert split(2)[1] != val


def test_pairs_get_cls_sep_and_token_types_with_a_bert_tokenizer(tmp_path: Path, bert_tokenizer) -> None:
    path = write_tsv(tmp_path / "pairs.tsv", ["premise", "hypothesis", "label"],
                     [["good movie", "a fine day", "yes"], ["bad movie", "a poor day", "no"]])
    dm = attach(LabeledText(source=DataSource(paths=str(path), text_field="premise"), validation=str(path),
                            text_pair_field="hypothesis"), bert_tokenizer)
    example = dm.datasets["train"][0]
    cls, sep = bert_tokenizer.role_id("cls"), bert_tokenizer.role_id("sep")
    a, b = bert_tokenizer.encode("good movie"), bert_tokenizer.encode("a fine day")
    assert example["input_ids"].tolist() == [cls, *a, sep, *b, sep]
    assert example["token_type_ids"].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1)


def test_tokenizers_without_a_template_frame_texts_with_eos(tmp_path: Path, gpt_tokenizer) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"a": "good movie", "b": "a fine day", "label": "x"},
                                              {"a": "bad movie", "b": "a poor day", "label": "y"}])
    dm = attach(LabeledText(source=DataSource(paths=str(path), text_field="a"),
                            validation=str(path), text_pair_field="b"),
                gpt_tokenizer)
    eos = gpt_tokenizer.eos_id
    a, b = gpt_tokenizer.encode("good movie"), gpt_tokenizer.encode("a fine day")
    example = dm.datasets["train"][0]
    assert example["input_ids"].tolist() == [eos, *a, eos, *b, eos]
    assert example["token_type_ids"].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1)


def test_truncation_cuts_the_longer_text_first_and_keeps_special_tokens(tmp_path: Path, bert_tokenizer) -> None:
    assert truncate_pair([1] * 10, [2] * 3, 8) == ([1] * 5, [2] * 3)
    assert truncate_pair([1] * 6, [2] * 2, 6) == ([1] * 4, [2] * 2)
    assert [len(t) for t in truncate_pair([1] * 5, [2] * 5, 6)] == [3, 3]
    assert truncate_pair([1] * 9, None, 4) == ([1] * 4, None)
    long = " ".join(SENTENCES)
    path = write_tsv(tmp_path / "long.tsv", ["text", "pair", "label"], [[long, "good movie", 0], [long, long, 1]])
    dm = attach(LabeledText(source=DataSource(paths=str(path)),
                            validation=str(path), text_pair_field="pair", seq_len=16),
                bert_tokenizer)
    sep = bert_tokenizer.role_id("sep")
    for example in dm.datasets["train"]:
        ids = example["input_ids"].tolist()
        assert len(ids) == 16 and ids[-1] == sep and ids.count(sep) == 2
    short = bert_tokenizer.encode("good movie")  # the short text of a pair stays whole
    assert dm.datasets["train"][0]["input_ids"].tolist()[-len(short) - 1 :] == short + [sep]


def test_collate_pads_dynamically_with_attention_mask(tmp_path: Path, bert_tokenizer) -> None:
    path = write_tsv(tmp_path / "d.tsv", ["text", "label"], [["good", "a"], [SENTENCES[1], "b"], ["bad movie", "a"]])
    dm = attach(LabeledText(source=DataSource(paths=str(path)), validation=str(path), batch_size=2), bert_tokenizer)
    batch = next(iter(dm.val_dataloader()))
    lengths = [len(e["input_ids"]) for e in dm.datasets["val"][:2]]
    assert batch["input_ids"].shape == (2, max(lengths))  # the batch's longest, not seq_len
    assert batch["attention_mask"].sum(1).tolist() == lengths
    pad = bert_tokenizer.role_id("pad")
    assert (batch["input_ids"][batch["attention_mask"] == 0] == pad).all()
    assert batch["labels"].tolist() == [0, 1]


def test_csv_files_and_max_documents(tmp_path: Path, bert_tokenizer) -> None:
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"good, really good",a\nbad movie,b\n"a ""fine"" day",a\n', encoding="utf-8")
    records = read_records(path)
    assert [r["text"] for r in records] == ["good, really good", "bad movie", 'a "fine" day']
    dm = attach(LabeledText(source=DataSource(paths=str(path)), validation=str(path), max_documents=2), bert_tokenizer)
    assert len(dm.datasets["train"]) == 2


def test_bad_inputs_are_one_sentence_user_errors(tmp_path: Path, bert_tokenizer) -> None:
    with pytest.raises(UserError, match="does not exist"):
        LabeledText(source=DataSource(paths=str(tmp_path / "missing.tsv"))).raw()
    (tmp_path / "empty.tsv").write_text("", encoding="utf-8")
    with pytest.raises(UserError, match="holds no examples"):
        LabeledText(source=DataSource(paths=str(tmp_path / "empty.tsv"))).raw()
    (tmp_path / "header.tsv").write_text("text\tlabel\n", encoding="utf-8")
    with pytest.raises(UserError, match="holds no examples"):
        LabeledText(source=DataSource(paths=str(tmp_path / "header.tsv"))).raw()
    path = write_tsv(tmp_path / "cols.tsv", ["sentence", "label"], [["good", "a"], ["bad", "b"]])
    with pytest.raises(UserError, match=r"'.*cols\.tsv' has no column 'text' \(columns: sentence, label\)") as err:
        LabeledText(source=DataSource(paths=str(path))).raw()
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="no column 'pair'"):
        LabeledText(source=DataSource(paths=str(path), text_field="sentence"), text_pair_field="pair").raw()
    with pytest.raises(UserError, match=r"\.tsv, \.csv or \.jsonl"):
        LabeledText(source=DataSource(paths=str(tmp_path / "data.txt"))).raw()
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "label": 1}\n{oops\n', encoding="utf-8")
    with pytest.raises(UserError) as err:
        LabeledText(source=DataSource(paths=str(broken))).raw()
    assert str(err.value) == (f"'{broken}' line 2 is not valid JSON (Expecting property name enclosed in double "
                              "quotes at column 2): fix or remove that line.")
    # SciBERT's .txt files of JSON lines, read as jsonl: the same sentence, and a line that is no object
    scibert = tmp_path / "train.txt"
    scibert.write_text('{"text": "a", "label": 1}\n\n"just a string"\n', encoding="utf-8")
    with pytest.raises(UserError) as err:
        LabeledText(source=DataSource(paths=str(scibert)), format="jsonl").raw()
    assert str(err.value) == (f"'{scibert}' line 3 is a string, not a JSON object with named fields: write one "
                              "object per line, or remove that line.")
    assert broken.read_text(encoding="utf-8") == '{"text": "a", "label": 1}\n{oops\n'  # nothing written
    with pytest.raises(UserError, match="No labelled data"):
        LabeledText().raw()
    with pytest.raises(UserError, match="label .* is empty"):
        nolabel = write_tsv(tmp_path / "nolabel.tsv", ["text", "label"], [["a", ""]])
        LabeledText(source=DataSource(paths=str(nolabel))).raw()
    with pytest.raises(UserError, match="data.test"):
        dm = attach(LabeledText(source=DataSource(paths=str(path), text_field="sentence"),
                                validation=str(path)), bert_tokenizer)
        dm.test_dataloader()


def test_length_grouping_keeps_every_example_once_and_pads_less(tmp_path: Path, bert_tokenizer) -> None:
    rng = torch.Generator().manual_seed(0)
    lengths = torch.randint(2, 60, (400,), generator=rng).tolist()
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=3, group_batches=10)
    first, second = list(sampler), list(sampler)  # a loader that never calls set_epoch still reshuffles
    assert sorted(first) == list(range(400)) and first != second
    sampler.set_epoch(0)
    assert list(sampler) == first  # the order of an epoch is a function of (seed, epoch)

    def padding(order: list[int]) -> int:
        batches = [order[i : i + 8] for i in range(0, len(order), 8)]
        return sum(max(lengths[j] for j in b) * len(b) - sum(lengths[j] for j in b) for b in batches)

    shuffled = torch.randperm(400, generator=rng).tolist()
    assert padding(first) < 0.25 * padding(shuffled)
    assert lengths[first[0]] == max(lengths)  # the longest batch first: out of memory shows at once


def test_the_training_order_follows_the_run_seed(tmp_path: Path, bert_tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [(" ".join(WORDS[i % len(WORDS)].split()[: 1 + i % 5]), str(i % 2)) for i in range(40)]
    path = write_tsv(tmp_path / "train.tsv", ["text", "label"], rows)

    def order(seed: int | None, group: bool = False) -> list[list[int]]:
        if seed is None:
            monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
        else:
            L.seed_everything(seed, verbose=False)
        data = LabeledText(source=DataSource(paths=path), val_fraction=0.2, batch_size=8, group_by_length=group)
        data.tokenizer = bert_tokenizer
        data.setup("fit")
        return [row for batch in data.train_dataloader() for row in batch["input_ids"].tolist()]

    assert order(0) == order(0) and order(0) != order(1)
    assert order(0, group=True) != order(1, group=True)
    assert order(None) == order(None)  # no run seed: the data's own seed
    assert run_seed(7) == 7
    monkeypatch.setenv("PL_GLOBAL_SEED", "11")
    assert run_seed(7) == 11


def test_bad_rows_are_refused_by_file_and_line_and_nothing_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """What a new user's first files get wrong: one sentence naming the file, the line and the
    fix, exit status 2 through ``lmforge fit``, and no run folder."""
    rows = [{"sentence": f"{WORDS[i % len(WORDS)]}", "label": "pos" if i % 2 else "neg"} for i in range(12)]
    good = write_jsonl(tmp_path / "good.jsonl", rows)
    monkeypatch.chdir(tmp_path)  # the tiny recipe's logs/ would land here

    def fit_refused(train: Path, *more: str) -> str:
        return refused(capsys, "fit", "-c", str(CONFIGS / "finetune" / "tiny.yaml"), "--data.source.paths", str(train),
                       "--trainer.max_steps", "1", *more)

    no_label = write_jsonl(tmp_path / "train.jsonl", rows[:6] + [{"sentence": "a day", "lbl": "pos"}] + rows[6:])
    assert fit_refused(no_label) == (
        f"lmforge: error: '{no_label}' line 7 has no 'label' field (its fields: sentence, lbl): set data.label_field "
        "to the field that holds it, or add it to that line.")
    no_text = write_jsonl(tmp_path / "notext.jsonl", rows[:3] + [{"text": "a day", "label": "pos"}] + rows[3:])
    assert f"'{no_text}' line 4 has no 'sentence' field (its fields: text, label): set data.source.text_field" in \
        fit_refused(no_text)
    for value in ([], ["pos", "neg"]):
        listed = write_jsonl(tmp_path / "listed.jsonl", rows[:2] + [{"sentence": "a day", "label": value}] + rows[2:])
        assert fit_refused(listed) == (
            f"lmforge: error: '{listed}' line 3 has the label {value!r}, not one classification label: set "
            "data.task_type multilabel for lists of labels, or give one label there.")
    null = write_jsonl(tmp_path / "null.jsonl", rows[:4] + [{"sentence": "a day", "label": None}] + rows[4:])
    assert f"'{null}' line 5: the label ('label') is empty" in fit_refused(null)
    unseen = write_jsonl(tmp_path / "dev.jsonl", rows[:2] + [{"sentence": "a day", "label": "positive"}])
    assert fit_refused(good, "--data.validation", str(unseen)) == (
        f"lmforge: error: '{unseen}' line 3 has the label 'positive', not among the training labels (neg, pos): "
        "fix that label, or list every class in data.labels.")
    # a .tsv names the line the row is on, the header being line 1
    tsv = write_tsv(tmp_path / "dev.tsv", ["sentence", "label"], [["a day", "neg"], ["a night", "good"]])
    assert f"'{tsv}' line 3 has the label 'good'" in fit_refused(good, "--data.validation", str(tsv))
    # regression: a score that is no number, in validation as in training
    scores = write_jsonl(tmp_path / "scores.jsonl", [{"sentence": w, "label": i / 7} for i, w in enumerate(WORDS)])
    dev_scores = write_jsonl(tmp_path / "dev_scores.jsonl",
                             [{"sentence": "a", "label": 0.5}, {"sentence": "b", "label": "high"}])
    assert f"'{dev_scores}' line 2 has the label 'high', not a number, but data.task_type is regression" in \
        fit_refused(scores, "--data.validation", str(dev_scores), "--data.task_type", "regression")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == []  # no logs/, no checkpoint
