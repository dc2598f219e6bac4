"""The shared corpus options `deduplicate` and `min_chars`, on every corpus through the CLI."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
import pytest
import yaml

from conftest import CONFIGS
from lmforge.cli import main
from lmforge.data import BookCorpus, CorpusDataModule, DataSource, TextCorpus
from lmforge.errors import UserError

DOCS = ["alpha one", "short", "beta two", "alpha one", "  tiny  ", "gamma three", "beta two", "alpha one"]


class ListCorpus(CorpusDataModule):
    """A corpus of the documents it is given."""

    def __init__(self, docs: list[str], **kwargs: object):
        super().__init__(**kwargs)
        self.docs = docs

    def load_documents(self) -> list[str]:
        return list(self.docs)


def test_deduplicate_keeps_first_occurrences_in_order(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    corpus = ListCorpus(DOCS, deduplicate=True)
    assert corpus.keep_documents(DOCS) == ["alpha one", "short", "beta two", "  tiny  ", "gamma three"]
    assert "removed 3 duplicate documents (deduplicate)" in caplog.text
    train, val = corpus.splits()
    assert sorted(train + val) == sorted(set(DOCS))  # each once, across both splits
    assert ListCorpus(DOCS).keep_documents(DOCS) == DOCS  # off by default


def test_min_chars_counts_stripped_characters() -> None:
    assert ListCorpus(DOCS, min_chars=6).keep_documents(DOCS) == [d for d in DOCS if d not in ("short", "  tiny  ")]
    assert ListCorpus(DOCS, min_chars=4).keep_documents(DOCS) == DOCS  # "  tiny  " is 4 once stripped
    assert ListCorpus(DOCS, min_chars=5).keep_documents(DOCS) == [d for d in DOCS if d != "  tiny  "]
    with pytest.raises(UserError, match="min_chars must be 0 or more"):
        ListCorpus(DOCS, min_chars=-1)


def test_max_documents_counts_kept_documents() -> None:
    corpus = ListCorpus(DOCS, deduplicate=True, min_chars=6, max_documents=3)
    assert corpus.keep_documents(DOCS) == ["alpha one", "beta two", "gamma three"]
    assert sorted(sum(corpus.splits(), [])) == ["alpha one", "beta two", "gamma three"]


def test_nothing_left_names_the_corpus_and_the_option(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("too short", encoding="utf-8")
    (tmp_path / "b.txt").write_text("also short", encoding="utf-8")
    corpus = TextCorpus(source=DataSource(paths=str(tmp_path)), min_chars=100, deduplicate=True)
    with pytest.raises(UserError, match=rf"Corpus {tmp_path} has no document left after filtering \(2 shorter than "
                                        r"min_chars=100 characters\): lower `min_chars`\."):
        corpus.splits()


@pytest.mark.parametrize(
    "corpus", ["BundledCorpus", "TextCorpus", "WikipediaCorpus", "PubMedCorpus", "BookCorpus", "FineWebCorpus"]
)
def test_every_corpus_takes_the_options_from_the_command_line(corpus: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(CONFIGS / "gpt" / "tiny.yaml"), f"--data=lmforge.data.{corpus}",
              "--data.deduplicate=true", "--data.min_chars=50", "--print_config"])
    assert exit_info.value.code in (0, None)
    data = yaml.safe_load(capsys.readouterr().out)["data"]
    assert data["class_path"] == f"lmforge.data.{corpus}"
    assert data["init_args"]["deduplicate"] is True and data["init_args"]["min_chars"] == 50


def test_readers_that_stop_early_count_kept_documents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hub datasets and books stop reading at `max_documents` documents kept, not read."""
    read: list[str] = []

    def stream():
        for doc in DOCS:
            read.append(doc)
            yield {"text": doc}

    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: stream())
    corpus = TextCorpus(source=DataSource(hf_dataset="some/corpus"),
                        streaming=True, deduplicate=True, min_chars=6, max_documents=2)
    assert list(corpus.documents()) == ["alpha one", "beta two"]
    assert read == DOCS[:3]  # and not one row more
    for i, doc in enumerate(DOCS):
        (tmp_path / f"book{i}.txt").write_text(doc, encoding="utf-8")
    books = BookCorpus(source=DataSource(paths=str(tmp_path)), deduplicate=True, min_chars=6, max_documents=3)
    assert list(books.documents()) == ["alpha one", "beta two", "gamma three"]
