"""GLUE in ``lmforge evaluate``: the download's .tsv layouts and the hub's (configs/eval/glue*.yaml)
read into text, pair and label; several metrics per task, a further validation set (MNLI
mismatched), the positive class's F1; the average row (BERT's rule); refusals in one sentence."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import CONFIGS, refused
from lmforge.data.source import DataSource
from lmforge.errors import UserError
from lmforge.evaluation import FineTuneTask, LabeledText, evaluate, read_suite
from lmforge.evaluation.finetune import ClassF1
from lmforge.evaluation.report import average_cell, write_summary
from lmforge.evaluation.suite_spec import read_average
from lmforge.models import BertConfig
from test_suite import FakeFit, _fake_checkpoints, _pretrained

GLUE_TSV = CONFIGS / "eval" / "glue-tsv.yaml"
GLUE_HUB = CONFIGS / "eval" / "glue.yaml"
MNLI_TRAIN = ("index promptID pairID genre sentence1_binary_parse sentence2_binary_parse sentence1_parse "
              "sentence2_parse sentence1 sentence2 label1 gold_label").split()
MNLI_DEV = [*MNLI_TRAIN[:11], "label2", "label3", "label4", "label5", "gold_label"]
STSB = "index genre filename year old_index source1 source2 sentence1 sentence2 score".split()


def _mnli_row(columns: list[str], i: int, premise: str, hypothesis: str, label: str) -> list[str]:
    values = {"sentence1": premise, "sentence2": hypothesis, "gold_label": label, "label1": label}
    return [values.get(c, f"{c}{i}" if c not in ("label2", "label3", "label4", "label5") else label) for c in columns]


# per task: file -> (header or None, rows); the first row of each file is checked below
LAYOUT = {
    "CoLA/train.tsv": (None, [["gj04", "1", "", 'Our friends won\'t buy this "analysis".'],
                              ["gj04", "0", "*", "They drank the pub."]]),
    "CoLA/dev.tsv": (None, [["cj99", "0", "*", "Him left."], ["cj99", "1", "", "He left."]]),
    "SST-2/train.tsv": (["sentence", "label"], [["a gripping , funny film ", "1"], ["dull", "0"]]),
    "SST-2/dev.tsv": (["sentence", "label"], [["it 's a charming journey . ", "1"], ["flat", "0"]]),
    "MRPC/train.tsv": (["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
                       [["1", "702876", "702977", "Amrozi accused his brother .", "Referring to him , Amrozi ."],
                        ["0", "2108705", "2108831", "Yucaipa owned Dominick 's .", "Yucaipa bought it ."]]),
    "MRPC/dev.tsv": (["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
                     [["0", "1", "2", "He said .", "She said ."], ["1", "3", "4", "Yes .", "Indeed ."]]),
    "QQP/train.tsv": (["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                      [["0", "1", "2", "How do I learn Python?", "What is the best way to learn Python?", "1"],
                       ["1", "3", "4", "Why is the sky blue?", "Who won?", "0"]]),
    "QQP/dev.tsv": (["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                    [["5", "6", "7", "What is AI?", "Define AI?", "1"], ["8", "9", "10", "Hi?", "Bye?", "0"]]),
    "STS-B/train.tsv": (STSB, [["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none",
                                "A plane is taking off.", "An air plane is taking off.", "5.000"],
                               ["1", "main-captions", "MSRvid", "2012test", "0004", "none", "none",
                                "A man plays a flute.", "A man plays a bamboo flute.", "3.800"]]),
    "STS-B/dev.tsv": (STSB, [["0", "main-captions", "MSRvid", "2012test", "0000", "none", "none",
                              "A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", "5.000"],
                             ["1", "main-captions", "MSRvid", "2012test", "0002", "none", "none",
                              "A young child rides a horse.", "A child rides a horse.", "4.750"]]),
    "MNLI/train.tsv": (MNLI_TRAIN, [_mnli_row(MNLI_TRAIN, 0, "Conceptually cream skimming has two dimensions.",
                                              "Product and geography are what make it work.", "neutral"),
                                    _mnli_row(MNLI_TRAIN, 1, "you know during the season", "You lose things.",
                                              "entailment"),
                                    _mnli_row(MNLI_TRAIN, 2, "One of our number", "A member of my team",
                                              "contradiction")]),
    "MNLI/dev_matched.tsv": (MNLI_DEV, [_mnli_row(MNLI_DEV, 0, "The new rights are nice enough", "Everyone likes them",
                                                  "neutral"),
                                        _mnli_row(MNLI_DEV, 1, "This site includes a list", "The list is here",
                                                  "entailment")]),
    "MNLI/dev_mismatched.tsv": (MNLI_DEV, [_mnli_row(MNLI_DEV, 0, "Your contribution helped", "It did not help",
                                                     "contradiction"),
                                           _mnli_row(MNLI_DEV, 1, "The letters are here", "Letters exist",
                                                     "entailment")]),
    "QNLI/train.tsv": (["index", "question", "sentence", "label"],
                       [["0", "When did it open?", "It opened in 1990.", "entailment"],
                        ["1", "Who built it?", "The weather was fine.", "not_entailment"]]),
    "QNLI/dev.tsv": (["index", "question", "sentence", "label"],
                     [["0", "What is it?", "It is a cat.", "entailment"], ["1", "Why?", "No.", "not_entailment"]]),
    "RTE/train.tsv": (["index", "sentence1", "sentence2", "label"],
                      [["0", "No weapons were found.", "Weapons were found.", "not_entailment"],
                       ["1", "A man runs.", "A person runs.", "entailment"]]),
    "RTE/dev.tsv": (["index", "sentence1", "sentence2", "label"],
                    [["0", "Dana read.", "Dana read a book.", "not_entailment"], ["1", "It rains.", "Wet.", "entailment"]]),
    "WNLI/train.tsv": (["index", "sentence1", "sentence2", "label"],
                       [["0", "I stuck a pin through a carrot.", "The carrot had a hole.", "1"],
                        ["1", "John could not see.", "John was tall.", "0"]]),
    "WNLI/dev.tsv": (["index", "sentence1", "sentence2", "label"],
                     [["0", "The drain is clogged.", "The hair is clogged.", "0"], ["1", "A.", "B.", "1"]]),
}
FIRST = {  # task -> (text, pair, label) of the first training example and of the first validation example
    "cola": (('Our friends won\'t buy this "analysis".', None, "1"), ("Him left.", None, "0")),
    "sst2": (("a gripping , funny film ", None, "1"), ("it 's a charming journey . ", None, "1")),
    "mrpc": (("Amrozi accused his brother .", "Referring to him , Amrozi .", "1"), ("He said .", "She said .", "0")),
    "qqp": (("How do I learn Python?", "What is the best way to learn Python?", "1"),
            ("What is AI?", "Define AI?", "1")),
    "stsb": (("A plane is taking off.", "An air plane is taking off.", "5.000"),
             ("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", "5.000")),
    "mnli": (("Conceptually cream skimming has two dimensions.", "Product and geography are what make it work.",
              "neutral"), ("The new rights are nice enough", "Everyone likes them", "neutral")),
    "qnli": (("When did it open?", "It opened in 1990.", "entailment"), ("What is it?", "It is a cat.", "entailment")),
    "rte": (("No weapons were found.", "Weapons were found.", "not_entailment"),
            ("Dana read.", "Dana read a book.", "not_entailment")),
    "wnli": (("I stuck a pin through a carrot.", "The carrot had a hole.", "1"),
             ("The drain is clogged.", "The hair is clogged.", "0")),
}


def _glue_folder(root: Path, layout: dict = LAYOUT) -> Path:
    """The GLUE download's folders, a few lines per file, each file in its real layout."""
    for relative, (header, rows) in layout.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ([header] if header else []) + rows
        path.write_text("".join("\t".join(line) + "\n" for line in lines), encoding="utf-8")
    return root


def _data(args: tuple[tuple[str, object], ...]) -> LabeledText:
    """The LabeledText a suite task's ``data.*`` arguments make."""
    source, kwargs = {}, {}
    for key, value in args:
        if key.startswith("data.source."):
            source[key.removeprefix("data.source.")] = value
        elif key.startswith("data."):
            kwargs[key.removeprefix("data.")] = value
    return LabeledText(source=DataSource(**source), **kwargs)


def test_the_glue_download_layouts_read_into_text_pair_and_label(tmp_path: Path) -> None:
    tasks = {t.name: t for t in read_suite(GLUE_TSV, str(_glue_folder(tmp_path)))}
    hub = {t.name: t for t in read_suite(GLUE_HUB)}
    assert list(tasks) == list(hub) == list(FIRST)
    assert {n: t.metrics for n, t in tasks.items()} == {n: t.metrics for n, t in hub.items()}  # the same table
    for name, task in tasks.items():
        raw = _data(task.args).raw()
        assert (raw["train"][0], raw["val"][0]) == FIRST[name], name
        assert len(raw["train"]) == len(LAYOUT[dict(task.args)["data.source.paths"][len(str(tmp_path)) + 1:]][1])
    mnli = _data(tasks["mnli"].args)
    assert mnli.raw()["val/mismatched"] == [("Your contribution helped", "It did not help", "contradiction"),
                                            ("The letters are here", "Letters exist", "entailment")]
    assert mnli.labels == ["contradiction", "entailment", "neutral"]
    stsb = _data(tasks["stsb"].args)
    stsb.raw()
    assert stsb.task_type == "regression" and stsb.num_labels == 1


@pytest.mark.parametrize("file, line, fields, header", [
    ("RTE/dev.tsv", 3, 5, 4),     # a tab inside a sentence: one field more than the header
    ("CoLA/train.tsv", 2, 3, 4),  # headerless: counted against data.columns
])
def test_a_line_with_the_wrong_field_count_is_refused_naming_file_and_line(
        tmp_path: Path, file: str, line: int, fields: int, header: int) -> None:
    layout = dict(LAYOUT)
    head, rows = layout[file]
    bad = [*rows[line - 1 - bool(head)]]
    bad = bad[:-1] if fields < header else [*bad[:2], "a\tb", *bad[3:]]
    rows = [*rows[:line - 1 - bool(head)], bad, *rows[line - bool(head):]]
    layout[file] = (head, rows)
    tasks = {t.name: t for t in read_suite(GLUE_TSV, str(_glue_folder(tmp_path, layout)))}
    with pytest.raises(UserError) as refusal:
        _data(tasks[file.split("/")[0].lower()].args).raw()
    named = "data.columns" if head is None else "its header"
    assert str(refusal.value) == (f"'{tmp_path / file}' line {line} has {fields} tab-separated fields but {named} has "
                                  f"{header}: fix or remove that line (a tab or line break inside a text?), or set "
                                  "data.columns to the file's columns.")


def test_the_command_refuses_a_bad_line_with_status_2_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\textra\nfine\t0\n")
    line = refused(capsys, "fit", "-c", str(CONFIGS / "finetune" / "tiny.yaml"), "--data.source.paths", "train.tsv")
    assert line == ("lmforge: error: 'train.tsv' line 3 has 3 tab-separated fields but its header has 2: fix or "
                    "remove that line (a tab or line break inside a text?), or set data.columns to the file's columns.")
    assert [p.name for p in tmp_path.iterdir()] == ["train.tsv"]


def _hub_glue(root: Path) -> Path:
    """A local folder laid out as the hub stores nyu-mll/glue: parquet files per config and split,
    the configs mapped to their files in the README's YAML header."""
    import datasets

    splits = {"mnli": ["train", "validation_matched", "validation_mismatched"], "mrpc": ["train", "validation"]}
    names = {"mnli": ["entailment", "neutral", "contradiction"], "mrpc": ["not_equivalent", "equivalent"]}
    columns = {"mnli": ("premise", "hypothesis"), "mrpc": ("sentence1", "sentence2")}
    configs = []
    for config, split_names in splits.items():
        a, b = columns[config]
        features = datasets.Features({a: datasets.Value("string"), b: datasets.Value("string"),
                                      "label": datasets.ClassLabel(names=names[config]), "idx": datasets.Value("int32")})
        for k, split in enumerate(split_names):
            labels = [(k + i) % len(names[config]) for i in range(3)]
            rows = {a: [f"{config} {split} text {i}" for i in range(3)], b: [f"pair {i}" for i in range(3)],
                    "label": labels, "idx": list(range(3))}
            (root / config).mkdir(parents=True, exist_ok=True)
            datasets.Dataset.from_dict(rows, features=features).to_parquet(
                root / config / f"{split}-00000-of-00001.parquet")
        configs.append({"config_name": config, "data_files": [{"split": s, "path": f"{config}/{s}-*"}
                                                              for s in split_names]})
    (root / "README.md").write_text(f"---\n{yaml.safe_dump({'configs': configs})}---\n")
    return root


def test_a_local_folder_in_the_hub_layout_stands_in_for_nyu_mll_glue(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = str(_hub_glue(tmp_path / "glue"))
    hub = {t.name: dict(t.args) for t in read_suite(GLUE_HUB)}
    args = {**hub["mnli"], "data.source.hf_dataset": folder}
    mnli = _data(tuple(args.items()))
    raw = mnli.raw()
    assert raw["val"][0] == ("mnli validation_matched text 0", "pair 0", "neutral")  # ClassLabel 1, by name
    assert raw["val/mismatched"][0] == ("mnli validation_mismatched text 0", "pair 0", "contradiction")
    assert mnli.labels == ["entailment", "neutral", "contradiction"]  # the dataset's own class order
    mrpc = _data(tuple({**hub["mrpc"], "data.source.hf_dataset": folder}.items()))
    assert mrpc.raw()["val"][:2] == [("mrpc validation text 0", "pair 0", "1"), ("mrpc validation text 1", "pair 1", "0")]
    assert mrpc.labels == ["0", "1"]  # the hub's names renamed in id order, as GLUE's files name them: val/f1_1
    with pytest.raises(UserError, match=r"renames the 2 classes of .* \(not_equivalent, equivalent\) in id order"):
        LabeledText(source=DataSource(hf_dataset=folder, hf_config="mrpc", text_field="sentence1"),
                    validation="validation", labels=["0", "1", "2"]).raw()


def test_metrics_equal_hand_counts_on_the_main_and_a_further_validation_set() -> None:
    f1 = ClassF1(2, names=["0", "1"])
    preds, gold = torch.tensor([1, 1, 0, 1, 0, 0]), torch.tensor([1, 0, 0, 1, 1, 0])  # tp 2, fp 1, fn 1 for "1"
    f1.update(preds, gold)
    got = f1.compute()
    assert got["f1_1"].item() == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert got["f1_micro"].item() == pytest.approx(4 / 6)  # micro-F1 of single labels is accuracy

    task = FineTuneTask(config=BertConfig(n_layer=1, n_head=2, d_model=16, vocab_size=32, max_seq_len=8))
    task.use_labels("classification", ["0", "1", "2"])
    wanted = {"val": ([0, 1, 2, 2, 1, 0], [0, 1, 2, 1, 1, 2]), "mismatched": ([2, 2, 1, 0], [2, 0, 1, 0])}
    task.loss = lambda batch, training: (torch.tensor(0.5), torch.nn.functional.one_hot(batch["preds"], 3).float())
    task.on_validation_epoch_start()
    for name, (preds, gold) in wanted.items():
        batch = {"preds": torch.tensor(preds), "labels": torch.tensor(gold)}
        task.validation_step({**batch, "set": name} if name != "val" else batch, 0, dataloader_idx=int(name != "val"))
    main, further = task._computed("val"), task._computed("val/mismatched")
    assert main["val/acc"].item() == pytest.approx(4 / 6) and further["val/acc/mismatched"].item() == pytest.approx(3 / 4)
    assert set(further) == {k + "/mismatched" for k in main} and "val/f1_2/mismatched" in further
    # Matthews correlation (Gorodkin's K-class form) from the confusion matrix of the main set
    c = torch.zeros(3, 3)
    for p, g in zip(*wanted["val"]):
        c[g, p] += 1
    t, p, n = c.sum(1), c.sum(0), c.sum()
    mcc = (c.trace() * n - t @ p) / ((n**2 - p @ p) * (n**2 - t @ t)).sqrt()
    assert main["val/mcc"].item() == pytest.approx(mcc.item(), abs=1e-6)
    task.on_validation_epoch_start()  # a new epoch starts every set afresh
    assert not task.mean_loss["val/mismatched"].update_called


BERT_BASE = {("mnli", "val/acc"): 84.6, ("mnli", "val/acc/mismatched"): 83.4, ("qqp", "val/f1_1"): 71.2,
             ("qnli", "val/acc"): 90.5, ("sst2", "val/acc"): 93.5, ("cola", "val/mcc"): 52.1,
             ("stsb", "val/spearman"): 85.8, ("mrpc", "val/f1_1"): 88.9, ("rte", "val/acc"): 66.4}


def _runs(scores: dict[tuple[str, str], float], start: str = "bert", seed: int = 0) -> list[dict]:
    rows: dict[str, dict] = {}
    for (task, metric), value in scores.items():
        rows.setdefault(task, {"task": task, "start": start, "source": start, "seed": seed})[metric] = value
    return list(rows.values())


def test_the_average_row_follows_bert_and_pairs_seeds(tmp_path: Path) -> None:
    average = read_average(GLUE_TSV)
    assert average is not None and list(average.parts) == list(BERT_BASE)  # MNLI twice, WNLI out
    rows = _runs(BERT_BASE) + [{"task": "wnli", "start": "bert", "source": "bert", "seed": 0, "val/acc": 65.1}]
    mean, std, seeds = average_cell(rows, list(average.parts), "bert", None)
    assert round(mean, 1) == 79.6 and (std, seeds) == (0.0, 1)  # BERT-base's published GLUE score, Table 1

    # two seeds: seed k of every task pairs; the row is the mean and sample std of the per-seed means
    parts = [("mrpc", "val/f1_1"), ("mrpc", "val/acc"), ("rte", "val/acc")]
    rows = [*_runs({parts[0]: 0.8, parts[1]: 0.7, parts[2]: 0.6}, "a", 0),
            *_runs({parts[0]: 0.9, parts[1]: 0.8, parts[2]: 0.4}, "a", 1),
            *_runs({parts[0]: 0.5, parts[1]: 0.5}, "b", 0)]  # b never ran rte (--tasks)
    table = write_summary(rows, {"mrpc": ["val/f1_1", "val/acc"], "rte": "val/acc"}, tmp_path,
                          ("GLUE average", parts), "on validation sets").splitlines()
    assert table[2].startswith("| mrpc | val/f1_1 | 0.8500 ± 0.0707 | 0.5000 |")
    assert table[3].startswith("| mrpc | val/acc | ") and table[4].startswith("| rte | val/acc | ")
    per_seed = [(0.8 + 0.7 + 0.6) / 3, (0.9 + 0.8 + 0.4) / 3]
    spread = abs(per_seed[0] - per_seed[1]) / 2 ** 0.5
    assert table[5] == f"| GLUE average | mean of 3 | {sum(per_seed) / 2:.4f} ± {spread:.4f} | missing: rte |"
    assert table[7] == ("GLUE average: the mean over seeds of each seed's mean of mrpc val/f1_1, mrpc val/acc, "
                        "rte val/acc. on validation sets")
    with open(tmp_path / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert [(r["task"], r["metric"], r["runs"]) for r in summary][-1] == ("GLUE average", "mean of 3", "2")
    assert float(summary[-1]["a mean"]) == pytest.approx(sum(per_seed) / 2, abs=1e-6)
    assert summary[-1]["b mean"] == "missing: rte"

    # a learning curve: an average row per training-set size, each from that size's runs
    sized = [{**r, "train_size": size, "val/acc": r["val/acc"] * (size == "all" or 0.5)}
             for size in (8, "all") for r in rows if r["start"] == "a"]
    table = write_summary(sized, {"mrpc": "val/acc", "rte": "val/acc"}, tmp_path,
                          ("avg", [("mrpc", "val/acc"), ("rte", "val/acc")])).splitlines()
    # per-seed means (0.7 + 0.6) / 2 and (0.8 + 0.4) / 2, halved at size 8: sample std |0.65 - 0.6| / sqrt(2)
    assert table[6:8] == ["| avg | 8 | mean of 2 | 0.3125 ± 0.0177 |", "| avg | all | mean of 2 | 0.6250 ± 0.0354 |"]


@pytest.mark.parametrize("average, said", [
    ({"name": "avg", "of": ["mrpc val/f1_1"], "notes": "x"}, "has the unknown key 'notes': did you mean 'note'?"),
    ({"name": "avg", "of": ["mrcp val/f1_1"]}, "averages 'mrcp val/f1_1', not a task of the suite with a metric: "
                                               "did you mean 'mrpc'?"),
    ({"name": "avg", "of": ["mrpc val/f1"]}, "averages 'val/f1' of task 'mrpc', which reports val/f1_1, val/acc: "
                                             "did you mean 'val/f1_1'?"),
    ({"of": ["mrpc val/f1_1"]}, "needs `name` (the row's) and `of`"),
    ("averge", "has the unknown key 'averge': did you mean 'average'?"),
])
def test_a_bad_average_is_refused_in_one_sentence_before_any_run(tmp_path: Path, average: dict | str, said: str) -> None:
    spec = yaml.safe_load(GLUE_HUB.read_text())
    spec["tasks"] = {name: {**spec["tasks"][name], "recipe": [str(CONFIGS / "finetune" / "glue.yaml")]}
                     for name in ("mrpc", "rte")}
    if average == "averge":  # a misspelt key of the suite itself
        spec["averge"] = spec.pop("average")
    else:
        spec["average"] = average
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(spec))
    fit = FakeFit()
    with pytest.raises(UserError) as refusal:
        evaluate(["hf:org/b"], suite=str(suite), out=str(tmp_path / "out"), fit=fit)
    where = f"Suite '{suite}'" if average == "averge" else f"The average of suite '{suite}'"
    assert f"{where} {said}" in str(refusal.value) and "\n" not in str(refusal.value)
    assert not fit.calls and not (tmp_path / "out").exists()


def test_tasks_chosen_from_the_glue_suite_leave_the_average_naming_what_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _fake_checkpoints(tmp_path, "a.ckpt")
    fit = FakeFit()
    evaluate(["a.ckpt"], suite=str(GLUE_TSV), tasks=["rte", "mrpc"], data_dir=str(_glue_folder(tmp_path / "glue")),
             seeds=1, random_baseline=False, out="out", fit=fit)
    table = (tmp_path / "out" / "summary.md").read_text().splitlines()
    assert [row.split(" | ")[:2] for row in table[2:5]] == [["| mrpc", "val/f1_1"], ["| mrpc", "val/acc"],
                                                            ["| rte", "val/acc"]]
    assert table[5] == "| GLUE average | mean of 9 | missing: mnli, qqp, qnli, sst2, cola, stsb |"


def test_evaluate_runs_a_glue_tsv_suite_with_several_metrics_a_further_set_and_the_average(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """Two GLUE tasks as configs/eval/glue-tsv.yaml reads them, BERT's recipe, a tiny pretrained
    BERT, two seeds: a row per (task, metric) and the average of the per-seed means."""
    monkeypatch.chdir(tmp_path)
    start = _pretrained(tmp_path, "tiny", 1)
    layout = {k: (h, rows * 4) for k, (h, rows) in LAYOUT.items() if k.startswith(("MRPC", "MNLI"))}
    _glue_folder(tmp_path / "glue", layout)
    spec = yaml.safe_load(GLUE_TSV.read_text())
    spec["tasks"] = {name: {**spec["tasks"][name], "recipe": [str(CONFIGS / "finetune" / "glue.yaml")]}
                     for name in ("mrpc", "mnli")}
    spec["average"] = {"name": "GLUE-2", "of": ["mnli val/acc", "mnli val/acc/mismatched", "mrpc val/f1_1"]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    fast = ["--trainer.max_steps=2", "--trainer.val_check_interval=1", "--trainer.check_val_every_n_epoch=null",
            "--trainer.enable_model_summary=false", "--data.seq_len=32", "--data.batch_size=4"]
    main_args = ["evaluate", "--suite", "suite.yaml", "--data_dir", "glue", "--starts", f"[{start}]", "--labels",
                 "[tiny]", "--seeds", "2", "--random_baseline", "false", "--out", "out", "--overrides", json.dumps(fast)]
    from lmforge.cli import main

    main(main_args)
    with open(tmp_path / "out" / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert [(r["task"], r["seed"]) for r in runs] == [("mrpc", "0"), ("mrpc", "1"), ("mnli", "0"), ("mnli", "1")]
    assert all(0 <= float(r["val/acc/mismatched"]) <= 1 and r["val/loss/mismatched"] for r in runs[2:])
    assert all(float(r["val/f1_1"]) >= 0 and not r["val/acc/mismatched"] for r in runs[:2])
    assert not any("dataloader_idx" in k for k in runs[0])  # the further set's names are ours, not Lightning's
    table = (tmp_path / "out" / "summary.md").read_text().splitlines()
    assert [row.split(" | ")[:2] for row in table[2:6]] == [["| mrpc", "val/f1_1"], ["| mrpc", "val/acc"],
                                                            ["| mnli", "val/acc"], ["| mnli", "val/acc/mismatched"]]
    per_seed = [(float(runs[2 + s]["val/acc"]) + float(runs[2 + s]["val/acc/mismatched"]) + float(runs[s]["val/f1_1"]))
                / 3 for s in (0, 1)]
    assert table[6].startswith(f"| GLUE-2 | mean of 3 | {sum(per_seed) / 2:.4f} ± ")
    assert table[6] in capsys.readouterr().out
