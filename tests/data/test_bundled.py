"""Tests for the bundled stdlib corpus and the document-level split."""

from __future__ import annotations

import ast
import json
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydoc_data.topics import topics

from lmforge.data import bundled
from lmforge.data.bundled import bundled_documents
from lmforge.data.documents import split_documents


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    # A private cache dir keeps the tests from reading or writing the user's
    # cache; the single cold build (a few seconds) is shared by the module.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMFORGE_CACHE_DIR", str(tmp_path_factory.mktemp("lmforge-cache")))
        bundled._memoised_documents.cache_clear()
        yield bundled_documents()
    bundled._memoised_documents.cache_clear()


def test_documents_non_empty_and_sized(docs: list[str]) -> None:
    assert len(docs) > 100
    total = sum(len(d.encode("utf-8")) for d in docs)
    assert 1_000_000 <= total <= 6_000_000


def test_no_empty_or_duplicate_documents(docs: list[str]) -> None:
    assert all(isinstance(d, str) and d.strip() for d in docs)
    assert len(set(docs)) == len(docs)


def test_deterministic_and_not_mutable_by_callers(docs: list[str]) -> None:
    first = bundled_documents()
    first.append("mutated")
    first[0] = "mutated"
    assert bundled_documents() == docs


def test_contains_pydoc_topic_text(docs: list[str]) -> None:
    expected = topics["assert"].strip()
    assert "assert" in expected
    assert expected in docs


def test_contains_stdlib_docstrings(docs: list[str]) -> None:
    source = Path(sysconfig.get_paths()["stdlib"], "json", "__init__.py").read_bytes()
    module_doc = ast.get_docstring(ast.parse(source))
    assert module_doc and len(module_doc) > 100
    assert any(d.startswith(module_doc) for d in docs)


def test_no_raw_source_code(docs: list[str]) -> None:
    code_starts = ("def ", "class ", "import ", "from ", "#!", "# -*-")
    assert not [d[:60] for d in docs if d.lstrip().startswith(code_starts)]


def test_excludes_test_packages() -> None:
    root = bundled._stdlib_dir()
    rel = [p.relative_to(root).as_posix() for p in bundled._stdlib_sources(root)]
    assert rel == sorted(rel)
    assert "textwrap.py" in rel
    for path in rel:
        parts = path.split("/")
        assert not {"test", "tests", "idle_test", "site-packages", "__pycache__"} & set(parts)


@pytest.fixture
def fake_builder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[int]:
    """Replace the slow builder with a counting fake and isolate the cache."""
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path))
    calls = [0]

    def build() -> list[str]:
        calls[0] += 1
        return ["alpha document", "beta document"]

    monkeypatch.setattr(bundled, "_build_documents", build)
    return calls


def test_cache_round_trip(fake_builder: list[int], tmp_path: Path) -> None:
    assert bundled._load_or_build() == ["alpha document", "beta document"]
    assert fake_builder[0] == 1
    path = bundled._cache_path()
    assert path.parent == tmp_path
    assert path.is_file()
    assert not [p for p in tmp_path.iterdir() if p != path]  # no temp files left

    assert bundled._load_or_build() == ["alpha document", "beta document"]
    assert fake_builder[0] == 1  # served from the cache

    # The loader trusts a well-formed cache, which proves it is actually read.
    data = json.loads(path.read_text(encoding="utf-8"))
    data["documents"] = ["from the cache"]
    path.write_text(json.dumps(data), encoding="utf-8")
    assert bundled._load_or_build() == ["from the cache"]
    assert fake_builder[0] == 1


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        "[1, 2]",
        '{"documents": ["x"]}',  # header missing
        None,  # valid header, documents of the wrong type
    ],
)
def test_corrupted_cache_is_rebuilt(
    fake_builder: list[int], content: str | None
) -> None:
    path = bundled._cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        content = json.dumps({**bundled._cache_header(), "documents": [1, 2]})
    path.write_text(content, encoding="utf-8")

    assert bundled._load_or_build() == ["alpha document", "beta document"]
    assert fake_builder[0] == 1
    assert bundled._read_cache(path) == ["alpha document", "beta document"]


def test_cache_dir_defaults_to_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LMFORGE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = bundled._cache_path()
    assert path.parent == tmp_path / "lmforge"
    assert path.name.startswith("bundled-") and path.suffix == ".json"


SYNTHETIC = [f"synthetic document number {i}" for i in range(1000)]


def test_split_deterministic_disjoint_and_complete() -> None:
    train, val = split_documents(SYNTHETIC, 0.1, seed=3)
    assert (train, val) == split_documents(list(SYNTHETIC), 0.1, seed=3)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(SYNTHETIC)
    # Relative order is preserved on both sides.
    assert train == [d for d in SYNTHETIC if d in set(train)]


# Pinned so a change of hashing (e.g. to the per-process salted hash()) fails.
PINNED_VAL = [f"synthetic document number {i}" for i in (1, 3, 7, 13, 14, 16, 21, 27, 28, 31, 48)]


def test_split_pinned_values() -> None:
    _, val = split_documents(SYNTHETIC[:50], 0.2, seed=0)
    assert val == PINNED_VAL


def test_split_fraction_roughly_honoured() -> None:
    for fraction in (0.05, 0.1, 0.3):
        _, val = split_documents(SYNTHETIC, fraction)
        assert abs(len(val) / len(SYNTHETIC) - fraction) < 0.05


def test_split_seed_changes_split() -> None:
    assert split_documents(SYNTHETIC, 0.1, seed=0) != split_documents(SYNTHETIC, 0.1, seed=1)


def test_split_zero_fraction_and_empty_input() -> None:
    assert split_documents(SYNTHETIC, 0.0) == (SYNTHETIC, [])
    assert split_documents([], 0.5) == ([], [])


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan"), "0.1"])
def test_split_bad_fraction_raises(fraction: object) -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        split_documents(SYNTHETIC, fraction)  # type: ignore[arg-type]
