"""DataSource: one argument group for where data comes from, the same rule for every corpus."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS
from lmforge.cli import main
from lmforge.data import DataSource, TextCorpus
from lmforge.errors import UserError


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

