"""DataSource: one argument group for where data comes from, the same rule for every corpus."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentParser

from conftest import CONFIGS
from lmforge.cli import main
from lmforge.data import DataSource, TextCorpus
from lmforge.errors import UserError
from lmforge.evaluation import LabeledText


def test_local_paths_win_over_the_hub_dataset(tiny_corpus: Path) -> None:
    both = DataSource(paths=str(tiny_corpus), hf_dataset="no/such-dataset")
    assert both.is_local and str(both) == str(tiny_corpus)
    assert len(list(TextCorpus(source=both).documents())) == 24  # the files, not the (offline) hub
    assert str(DataSource(hf_dataset="wikimedia/wikipedia", hf_config="20231101.en")) == "wikimedia/wikipedia 20231101.en"
    with pytest.raises(UserError, match=r"No corpus given: set `data.source.paths` to your text files or "
                                        r"`data.source.hf_dataset`"):
        TextCorpus().documents()


def test_every_source_field_is_in_the_corpus_fingerprint(tiny_corpus: Path) -> None:
    """Shards and tokenizers are cached by the fingerprint: another source must not reuse them."""
    base = DataSource(paths=str(tiny_corpus))
    changes = {"paths": str(tiny_corpus / "doc0*.txt"), "hf_dataset": "some/corpus", "hf_config": "en",
               "hf_split": "validation", "text_field": "body"}
    assert set(changes) == {f.name for f in dataclasses.fields(DataSource)}
    first = TextCorpus(source=base).fingerprint()
    assert TextCorpus(source=DataSource(paths=str(tiny_corpus))).fingerprint() == first
    for field, value in changes.items():
        assert TextCorpus(source=dataclasses.replace(base, **{field: value})).fingerprint() != first, field
    (tiny_corpus / "doc00.txt").write_text("Edited.", encoding="utf-8")  # the files' sizes and times count
    assert TextCorpus(source=base).fingerprint() != first


@pytest.mark.parametrize(("corpus", "dataset", "config"), [
    ("WikipediaCorpus", "wikimedia/wikipedia", "20231101.en"),
    ("FineWebCorpus", "HuggingFaceFW/fineweb-edu", "sample-10BT"),
    ("TextCorpus", None, None),
])
def test_each_corpus_default_source_comes_through_the_cli(corpus: str, dataset: str | None, config: str | None,
                                                          capsys: pytest.CaptureFixture) -> None:
    def source(*args: str) -> dict:
        with pytest.raises(SystemExit):
            main(["fit", "-c", str(CONFIGS / "gpt" / "tiny.yaml"), f"--data=lmforge.data.{corpus}", *args,
                  "--print_config"])
        return yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]["source"]

    assert source() == {"paths": None, "hf_dataset": dataset, "hf_config": config, "hf_split": "train",
                        "text_field": "text"}
    assert source("--data.source.paths=dumps/") == {"paths": "dumps/", "hf_dataset": dataset, "hf_config": config,
                                                    "hf_split": "train", "text_field": "text"}


def test_relative_files_in_a_config_are_read_next_to_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (folder / name).write_text("text\tlabel\ngood\tpos\nbad\tneg\nfine\tpos\n", encoding="utf-8")
    config = folder / "finetune.yaml"
    config.write_text(yaml.safe_dump({"data": {"source": {"paths": "train.tsv"}, "validation": "dev.tsv",
                                               "test": "missing.tsv"}}), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("-c", "--config", action="config")
    parser.add_class_arguments(LabeledText, "data")
    data = parser.instantiate_classes(parser.parse_args(["-c", str(config)])).data
    assert data.source.paths == str(folder / "train.tsv") and data.validation == str(folder / "dev.tsv")
    assert data.test == "missing.tsv"  # not next to the config: left to the working directory
    data.test = None
    assert [len(data.raw()[split]) for split in ("train", "val")] == [3, 3]
