"""The Wikipedia, PubMed and book DataModules on tiny files in their real formats, and one run by config alone."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from conftest import CONFIGS, SENTENCES
from lmforge.cli import main
from lmforge.data import BookCorpus, DataSource, PubMedCorpus, WikipediaCorpus
from lmforge.errors import UserError
from test_readers import (
    ARISTOTLE_TEXT, ARTICLE_TEXT, BASELINE, BOOK_BODY, DOC_100, GUTENBERG, UPDATE, ZETA_TEXT, mediawiki, page, write_dump,
    write_pubmed,
)


def test_wikipedia_dump_documents(tmp_path: Path) -> None:
    write_dump(tmp_path, name="enwiki-20240101-pages-articles1.xml.bz2")
    write_dump(tmp_path, mediawiki(page("Zeta", 0, "Only '''one''' line.")), name="enwiki-20240101-pages-articles2.xml")
    (tmp_path / "notes.txt").write_text("not a dump", encoding="utf-8")
    dump = DataSource(paths=str(tmp_path))
    assert list(WikipediaCorpus(source=dump).documents()) == [ARTICLE_TEXT, ZETA_TEXT, ARISTOTLE_TEXT,
                                                                  "Only one line."]
    assert list(WikipediaCorpus(source=dump, max_documents=1).documents()) == [ARTICLE_TEXT]


def test_wikipedia_without_articles_or_files(tmp_path: Path) -> None:
    write_dump(tmp_path, mediawiki(page("Talk:Zeta", 1, "chat"), page("Z", 0, "#REDIRECT [[Zeta]]")))
    with pytest.raises(UserError, match=r"No documents were found in .*: .*pages-articles dump"):
        list(WikipediaCorpus(source=DataSource(paths=str(tmp_path))).documents())
    with pytest.raises(UserError, match=r"No file matches 'nowhere/\*\.xml\.bz2'"):
        list(WikipediaCorpus(source=DataSource(paths="nowhere/*.xml.bz2")).documents())
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"Folder '.*empty' holds no MediaWiki dump file"):
        list(WikipediaCorpus(source=DataSource(paths=str(tmp_path / "empty"))).documents())


def test_pubmed_documents_in_file_order(tmp_path: Path) -> None:
    write_pubmed(tmp_path, "pubmed24n0001.xml.gz", BASELINE)
    write_pubmed(tmp_path, "pubmed24n1220.xml", UPDATE)
    assert list(PubMedCorpus(source=DataSource(paths=str(tmp_path / "pubmed24n0001.xml.gz"))).documents()) == [
        DOC_100, "A deleted study.\nIt was retracted."
    ]
    folder = DataSource(paths=str(tmp_path))
    assert list(PubMedCorpus(source=folder).documents()) == ["Aspirin and platelet function, revised.\nNew results."]
    assert list(PubMedCorpus(source=folder, require_abstract=False).documents())[-1] == "A title without abstract."


def test_pubmed_with_titles_only_says_what_to_set(tmp_path: Path) -> None:
    write_pubmed(tmp_path, "pubmed24n0001.xml", BASELINE.split("  <PubmedArticle>")[0] + "</PubmedArticleSet>\n")
    with pytest.raises(UserError, match=r"no citation has an abstract; set `require_abstract: false`"):
        list(PubMedCorpus(source=DataSource(paths=str(tmp_path))).documents())
    with pytest.raises(UserError, match=r"No PubMed corpus given"):
        list(PubMedCorpus().documents())


def test_books_one_document_each(tmp_path: Path) -> None:
    (tmp_path / "a-gutenberg.txt").write_text(GUTENBERG, encoding="utf-8", newline="")
    (tmp_path / "b-plain.txt.gz").write_bytes(gzip.compress(b"Chapter 1\r\n\r\nPlain book.\r\n"))
    (tmp_path / "c-empty.txt").write_text("\n\n", encoding="utf-8")
    (tmp_path / "cover.jpg").write_bytes(b"\xff\xd8")
    books = DataSource(paths=str(tmp_path))
    assert list(BookCorpus(source=books).documents()) == [BOOK_BODY, "Chapter 1\n\nPlain book."]
    (tmp_path / "d-bad.txt").write_bytes(b"caf\xe9")
    with pytest.raises(UserError, match=r"d-bad\.txt' is not valid UTF-8"):
        list(BookCorpus(source=DataSource(paths=str(tmp_path))).documents())


def test_books_folder_without_books(tmp_path: Path) -> None:
    (tmp_path / "cover.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(UserError, match=r"holds no plain-text book file"):
        list(BookCorpus(source=DataSource(paths=str(tmp_path))).documents())
    (tmp_path / "empty.txt").write_text(" \n", encoding="utf-8")
    with pytest.raises(UserError, match=r"No documents were found in .*: every book is empty"):
        list(BookCorpus(source=DataSource(paths=str(tmp_path))).documents())


def test_any_family_trains_on_a_wikipedia_dump_by_config_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    articles = [
        page(f"Article {i}", 0, f"'''Article {i}''' is about [[Topic {i}|topics]].{{{{cn}}}}\n== Body ==\n"
             + " ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(4)))
        for i in range(24)
    ]
    dump = write_dump(tmp_path, mediawiki(*articles, page("Talk:Article 0", 1, "talk")), name="wiki-pages-articles.xml.bz2")
    monkeypatch.chdir(tmp_path)
    main([
        "fit", "-c", str(CONFIGS / "gpt" / "tiny.yaml"), "--data=lmforge.data.WikipediaCorpus",
        f"--data.source.paths={dump}", "--data.seq_len=16", "--data.batch_size=2", "--data.tokenizer.vocab_size=300",
        "--trainer.fast_dev_run=true", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ])
    found = re.search(r"(\d+) train / (\d+) val documents", caplog.text)
    assert found and int(found[1]) + int(found[2]) == 24  # the articles, not the talk page
