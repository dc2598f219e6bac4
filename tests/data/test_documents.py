"""Tests for reading documents from local files (and the offline failure of the hub reader)."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import datasets
import huggingface_hub.constants
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmforge.data.documents import expand_paths, read_hf, read_local, read_txt
from lmforge.errors import UserError


@pytest.fixture(autouse=True)
def isolated_hf(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep `datasets` off the network and out of the user's cache.

    `datasets` and `huggingface_hub` read these settings at import time, so the
    module constants are patched as well as the environment.
    """
    cache = tmp_path_factory.mktemp("hf-datasets-cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", cache / "downloads")
    monkeypatch.setattr(datasets.config, "EXTRACTED_DATASETS_PATH", cache / "downloads" / "extracted")


def names(path: Path) -> str:
    """A regex that matches the path as the messages print it."""
    return re.escape(str(path))


def write_jsonl(path: Path, rows: list[dict], compress: bool = False) -> Path:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


ROWS = [
    {"text": "first document", "id": 1},
    {"text": "", "id": 2},
    {"text": "second\nwith a newline", "id": 3},
    {"text": "   \n\t ", "id": 4},
    {"text": None, "id": 5},
    {"text": "naïve café — 東京", "id": 6},
]
ROWS_DOCS = ["first document", "second\nwith a newline", "naïve café — 東京"]


# -- .txt ------------------------------------------------------------------------------------
TXT = "  Title line\nstill the first paragraph\n\n\nSecond paragraph.\n  \n\t\nThird, ünïcödé.\n\n"


def test_txt_whole_file_is_one_document(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text(TXT, encoding="utf-8")
    expected = ["Title line\nstill the first paragraph\n\n\nSecond paragraph.\n  \n\t\nThird, ünïcödé."]
    assert read_local(str(path)) == expected
    assert read_local(str(path), txt_split="file") == expected
    assert read_txt(path) == expected


def test_txt_blank_line_split(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text(TXT, encoding="utf-8")
    assert read_local(str(path), txt_split="blank_line") == [
        "Title line\nstill the first paragraph",
        "Second paragraph.",
        "Third, ünïcödé.",
    ]


def test_txt_crlf_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "windows.txt"
    path.write_bytes(b"First line\r\nsecond line\r\n\r\nNext block\r\n\r\n\r\nLast\r\n")
    assert read_local(str(path), txt_split="blank_line") == ["First line\nsecond line", "Next block", "Last"]
    assert read_local(str(path), txt_split="file") == ["First line\nsecond line\n\nNext block\n\n\nLast"]


def test_txt_gz(tmp_path: Path) -> None:
    path = tmp_path / "a.txt.gz"
    path.write_bytes(gzip.compress(TXT.encode("utf-8")))
    assert read_local(str(path), txt_split="blank_line") == [
        "Title line\nstill the first paragraph",
        "Second paragraph.",
        "Third, ünïcödé.",
    ]


def test_txt_whitespace_only_file_gives_no_document(tmp_path: Path) -> None:
    (tmp_path / "blank.txt").write_text(" \n\n\t\r\n  ", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    for split in ("file", "blank_line"):
        assert read_local(str(tmp_path / "blank.txt"), txt_split=split) == []
        assert read_local(str(tmp_path / "empty.txt"), txt_split=split) == []


# -- tabular formats -------------------------------------------------------------------------
def test_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", ROWS)
    assert read_local(str(path)) == ROWS_DOCS


def test_jsonl_gz(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl.gz", ROWS, compress=True)
    assert read_local(str(path)) == ROWS_DOCS


def test_json_list_file(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps(ROWS), encoding="utf-8")
    assert read_local(str(path)) == ROWS_DOCS


def test_json_file_with_json_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.json", ROWS)
    assert read_local(str(path)) == ROWS_DOCS


def test_csv(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(
        'id,text\n1,plain row\n2,\n3,"quoted, with a comma"\n4,"two\nlines"\n5,"   "\n6,naïve café\n',
        encoding="utf-8",
    )
    assert read_local(str(path)) == ["plain row", "quoted, with a comma", "two\nlines", "naïve café"]


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    table = pa.table({"id": [r["id"] for r in ROWS], "text": [r["text"] for r in ROWS]})
    pq.write_table(table, path)
    assert read_local(str(path)) == ROWS_DOCS


def test_custom_text_field(tmp_path: Path) -> None:
    rows = [{"body": "alpha", "text": "not this"}, {"body": "", "text": "nor this"}, {"body": "beta", "text": "no"}]
    path = write_jsonl(tmp_path / "a.jsonl", rows)
    assert read_local(str(path), text_field="body") == ["alpha", "beta"]
    assert read_local(str(path)) == ["not this", "nor this", "no"]


def test_several_tabular_files_in_sorted_order(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "b.jsonl", [{"text": "b1"}, {"text": "b2"}])
    write_jsonl(tmp_path / "a.jsonl", [{"text": "a1"}])
    write_jsonl(tmp_path / "c.jsonl", [{"text": "c1"}])
    assert read_local(str(tmp_path)) == ["a1", "b1", "b2", "c1"]


# -- folders and globs -----------------------------------------------------------------------
@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    for rel, text in {
        "b.txt": "doc b",
        "a.txt": "doc a",
        "sub/d.txt": "doc sub/d",
        "sub/c.txt": "doc sub/c",
        "sub/deeper/e.txt": "doc sub/deeper/e",
        "z.txt": "doc z",
        "README.md": "not a corpus file",
        "sub/notes.rst": "not a corpus file either",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


def test_folder_is_read_recursively_in_sorted_order(tree: Path) -> None:
    assert read_local(str(tree)) == ["doc a", "doc b", "doc sub/c", "doc sub/d", "doc sub/deeper/e", "doc z"]
    assert [p.relative_to(tree).as_posix() for p in expand_paths(str(tree))] == [
        "a.txt",
        "b.txt",
        "sub/c.txt",
        "sub/d.txt",
        "sub/deeper/e.txt",
        "z.txt",
    ]


def test_glob(tree: Path) -> None:
    assert read_local(str(tree / "*.txt")) == ["doc a", "doc b", "doc z"]
    assert read_local(str(tree / "sub" / "**" / "*.txt")) == ["doc sub/c", "doc sub/d", "doc sub/deeper/e"]
    assert read_local(str(tree / "[ab].txt")) == ["doc a", "doc b"]


def test_list_of_paths(tree: Path) -> None:
    assert read_local([str(tree / "z.txt"), str(tree / "sub")]) == [
        "doc z",
        "doc sub/c",
        "doc sub/d",
        "doc sub/deeper/e",
    ]


def test_mixed_formats_text_files_first(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", [{"text": "from a.jsonl"}])
    (tmp_path / "b.txt").write_text("from b.txt", encoding="utf-8")
    (tmp_path / "c.txt").write_text("from c.txt", encoding="utf-8")
    assert read_local(str(tmp_path)) == ["from b.txt", "from c.txt", "from a.jsonl"]


# -- errors ----------------------------------------------------------------------------------
def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(UserError, match=names(missing)):
        read_local(str(missing))


def test_glob_without_match(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x", encoding="utf-8")
    pattern = str(tmp_path / "*.jsonl")
    with pytest.raises(UserError, match=re.escape(pattern)):
        read_local(pattern)


def test_empty_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=names(empty)):
        read_local(str(empty))


def test_folder_without_supported_files(tmp_path: Path) -> None:
    folder = tmp_path / "other"
    (folder / "deep").mkdir(parents=True)
    (folder / "notes.md").write_text("# notes", encoding="utf-8")
    (folder / "deep" / "data.bin").write_bytes(b"\x00\x01")
    with pytest.raises(UserError, match=names(folder)):
        read_local(str(folder))


@pytest.mark.parametrize("name", ["wiki.train.raw", "wiki.test.tokens", "wiki.valid.raw.gz", "notes.md", "README"])
def test_a_named_plain_text_file_of_any_extension_is_read_as_text(tmp_path: Path, name: str) -> None:
    # WikiText ships wiki.{train,valid,test}.{raw,tokens}: plain text under other extensions
    path = tmp_path / name
    data = " = Valkyria Chronicles = \n\n Senjō no Valkyria is a game . \n\n = = Gameplay = = \n"
    path.write_bytes(gzip.compress(data.encode("utf-8")) if name.endswith(".gz") else data.encode("utf-8"))
    assert read_local(str(path), txt_split="blank_line") == [
        "= Valkyria Chronicles =", "Senjō no Valkyria is a game .", "= = Gameplay = ="]
    assert read_local(str(tmp_path / "*")) == [data.strip()]  # a glob's files are named too


def test_a_folder_is_searched_for_the_plain_text_suffixes_only(tmp_path: Path) -> None:
    for name in ("wiki.train.raw", "wiki.train.tokens", "a.txt", "README.md", ".DS_Store", "model.bin"):
        (tmp_path / name).write_text(f"text of {name}", encoding="utf-8")
    assert [p.name for p in expand_paths(str(tmp_path))] == ["a.txt", "wiki.train.raw", "wiki.train.tokens"]


@pytest.mark.parametrize(("name", "sentence"), [
    ("pairs.tsv", "holds tab-separated columns: convert it to .csv or .jsonl with a text column"),
    ("enwiki-pages-articles.xml", "is XML: read a MediaWiki dump with lmforge.data.WikipediaCorpus"),
    ("data.tar.gz", "is an archive or compressed with something other than gzip: extract or decompress it"),
    ("wiki.raw.bz2", "is an archive or compressed with something other than gzip: extract or decompress it"),
])
def test_formats_that_are_not_plain_text_are_refused_by_name(tmp_path: Path, name: str, sentence: str) -> None:
    path = tmp_path / name
    path.write_text("a\tb\n", encoding="utf-8")
    before = path.read_bytes()
    with pytest.raises(UserError) as info:
        read_local(str(path))
    assert str(info.value).startswith(f"'{path}' {sentence}")
    assert str(info.value).endswith("(a corpus is read from plain UTF-8 text files of any extension, or .jsonl, "
                                    ".json, .parquet or .csv files, each optionally .gz).")
    assert path.read_bytes() == before


@pytest.mark.parametrize("name", ["model.bin", "wiki.train.raw"])
def test_a_binary_file_of_any_extension_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x7fELF\x02\x01\x00\x00 binary")
    with pytest.raises(UserError, match=re.escape(f"'{path}' looks binary (it contains NUL bytes): give plain "
                                                  "UTF-8 text files.")):
        read_local(str(path))
    latin1 = tmp_path / f"latin1-{name}"
    latin1.write_bytes("first line\ncafé".encode("latin-1"))
    with pytest.raises(UserError, match=re.escape(f"'{latin1}' is not valid UTF-8 (line 2, column 4: byte 0xe9): "
                                                  "convert it, e.g. `iconv -t utf-8`.")):
        read_local(str(latin1))


@pytest.mark.parametrize("name", ["bin.txt", "bin.txt.gz"])
def test_binary_txt_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    data = b"looks like text\x00\x00\x01\x02 but is not"
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(UserError, match=names(path) + ".*binary"):
        read_local(str(path))


def test_binary_jsonl_file(tmp_path: Path) -> None:
    path = tmp_path / "bin.jsonl"
    path.write_bytes(b"\x00\x01\x02\x03binary\xff\xfe")
    with pytest.raises(UserError, match=names(path)):
        read_local(str(path))


@pytest.mark.parametrize("name", ["latin1.txt", "latin1.txt.gz"])
def test_invalid_utf8_txt(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    data = "first line\nsecond line\ncafé au lait".encode("latin-1")  # é is the byte 0xe9 in latin-1
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(UserError, match=names(path) + r".*not valid UTF-8 \(line 3, column 4: byte 0xe9\)"):
        read_local(str(path))


def test_invalid_utf8_csv(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("text\ncafé au lait\n".encode("latin-1"))
    with pytest.raises(UserError, match=names(path)):
        read_local(str(path))


def test_invalid_utf8_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9 au lait"}\n')
    with pytest.raises(UserError, match=re.escape(f"'{path}' is not valid UTF-8 (line 2, column 14: byte 0xe9)")):
        read_local(str(path))


BROKEN = b'{"text": "ok"}\n\n{"text": "fine"}\n{"text": "unterminated\n{"text": "after"}\n'


@pytest.mark.parametrize("name", ["broken.jsonl", "broken.jsonl.gz", "broken.json"])
def test_a_broken_json_line_is_named_by_file_and_line(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(gzip.compress(BROKEN) if name.endswith(".gz") else BROKEN)
    before = path.read_bytes()
    with pytest.raises(UserError) as info:
        read_local(str(path))
    assert str(info.value) == (f"'{path}' line 4 is not valid JSON (Unterminated string starting at column 10): "
                               "fix or remove that line.")
    assert path.read_bytes() == before


@pytest.mark.parametrize(("name", "content", "sentence"), [
    ("list.jsonl", '{"text": "ok"}\n["a", "list"]\n',
     "line 2 is an array, not a JSON object with named fields: write one object per line, or remove that line."),
    ("doc.json", '[\n  {"text": "ok"},\n  {"text": oops}\n]\n',
     "is not valid JSON (line 3, column 12: Expecting value): fix it, or write one JSON object per line (.jsonl)."),
])
def test_json_that_is_not_a_list_of_objects_is_named_by_file_and_line(tmp_path: Path, name: str, content: str,
                                                                     sentence: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as info:
        read_local(str(path))
    assert str(info.value) == f"'{path}' {sentence}"
    assert path.read_text(encoding="utf-8") == content


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_wrong_text_field_lists_available_fields(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"a.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, [{"body": "x", "meta": 1}])
    elif fmt == "csv":
        path.write_text("body,meta\nx,1\n", encoding="utf-8")
    else:
        pq.write_table(pa.table({"body": ["x"], "meta": [1]}), path)
    with pytest.raises(UserError) as info:
        read_local(str(path), text_field="content")
    message = str(info.value)
    assert "'content'" in message
    assert str(path) in message
    assert "body, meta" in message


@pytest.mark.parametrize("name", ["bad.txt.gz", "bad.jsonl.gz"])
def test_corrupt_gzip(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"this was never gzipped")
    with pytest.raises(UserError, match=names(path)):
        read_local(str(path))


def test_truncated_gzip_txt(tmp_path: Path) -> None:
    path = tmp_path / "cut.txt.gz"
    path.write_bytes(gzip.compress(("some text " * 200).encode())[:-20])
    with pytest.raises(UserError, match=names(path) + ".*gzip"):
        read_local(str(path))


def test_read_hf_offline_unknown_dataset() -> None:
    name = "lmforge-tests/no-such-dataset-9f3a1c"
    with pytest.raises(UserError, match=re.escape(f"'{name}'")):
        read_hf(name)


@pytest.mark.parametrize("compress", [False, True])
def test_jsonl_record_without_the_text_field_names_its_line(tmp_path: Path, compress: bool) -> None:
    rows = [{"text": "one"}, {"text": None}, {"id": 3}, {"text": "four"}]  # null is skipped, absent is an error
    path = write_jsonl(tmp_path / ("a.jsonl.gz" if compress else "a.jsonl"), rows, compress=compress)
    with pytest.raises(UserError, match=names(path) + "' line 3 has no 'text' field"):
        read_local(str(path))
    ok = write_jsonl(tmp_path / "ok.jsonl", [rows[0], rows[1], rows[3]])
    assert read_local(str(ok)) == ["one", "four"]


# -- through the command line ----------------------------------------------------------------
def _tokenizer_train(*args: str) -> None:
    from lmforge.cli import main

    main(["tokenizer", "train", "--vocab_size", "260", *args])


def test_tokenizer_train_names_the_broken_json_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    corpus = tmp_path / "x.jsonl"
    corpus.write_bytes(b'{"text": "a b c"}\n{"text": "d e f"}\n{"text": "broken\n{"text": "g h"}\n')
    before = corpus.read_bytes()
    out = tmp_path / "tokenizer.json"
    with pytest.raises(SystemExit) as exit_info:
        _tokenizer_train("--source.paths", str(corpus), "--out", str(out))
    assert exit_info.value.code == 2
    assert (f"lmforge: error: '{corpus}' line 3 is not valid JSON (Unterminated string starting at column 10): "
            "fix or remove that line.\n") in capsys.readouterr().err
    assert not out.exists() and corpus.read_bytes() == before


def test_tokenizer_train_reads_wikitext_raw_files_and_refuses_binary_ones(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    raw = tmp_path / "wiki.train.raw"
    raw.write_text(" = Robert Boulter = \n\n Robert Boulter is an English actor . \n\n" * 20, encoding="utf-8")
    out = tmp_path / "tokenizer.json"
    _tokenizer_train("--source.paths", str(raw), "--out", str(out), "--txt_split", "blank_line")
    assert out.is_file() and f"trained on 40 documents of {raw}" in capsys.readouterr().out
    binary = tmp_path / "wiki.train.bin"
    binary.write_bytes(b"\x00\x01\x02 weights, not text")
    written = out.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        _tokenizer_train("--source.paths", str(binary), "--out", str(tmp_path / "other.json"))
    assert exit_info.value.code == 2
    assert (f"lmforge: error: '{binary}' looks binary (it contains NUL bytes): give plain UTF-8 text files.\n"
            in capsys.readouterr().err)
    assert not (tmp_path / "other.json").exists() and out.read_bytes() == written
