"""FineWebCorpus on tiny parquet shards with FineWeb's columns, and on a stand-in for the hub."""

from __future__ import annotations

from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmforge.data import DataSource, FineWebCorpus
from lmforge.errors import UserError

# (text, language_score, score): FineWeb-Edu's columns (int_score and id ride along unread)
EDU_A = [
    ("Photosynthesis turns light into sugar.", 0.95, 3.6),
    ("Buy cheap watches now.", 0.70, 2.6),
    ("   ", 0.99, 4.0),  # blank text: never a document
    ("The French Revolution began in 1789.", 0.80, 3.0),
]
EDU_B = [
    ("Mitochondria are the powerhouse of the cell.", 0.65, 4.2),
    ("A page with no edu score.", 0.90, None),
]


def write_shard(path: Path, rows: list[tuple], edu: bool = True) -> Path:
    columns: dict[str, list] = {
        "text": [r[0] for r in rows], "id": [f"<urn:uuid:{i}>" for i in range(len(rows))],
        "language": ["en"] * len(rows), "language_score": [r[1] for r in rows],
    }
    if edu:
        columns["score"] = [r[2] for r in rows]
        columns["int_score"] = [None if r[2] is None else round(r[2]) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    write_shard(tmp_path / "sample" / "000_00000.parquet", EDU_A)
    write_shard(tmp_path / "sample" / "001_00000.parquet", EDU_B)
    return tmp_path / "sample"


def texts(rows: list[tuple], keep: list[int]) -> list[str]:
    return [rows[i][0] for i in keep]


def test_local_shards_in_name_order_without_blank_pages(shards: Path) -> None:
    local = DataSource(paths=str(shards))
    assert list(FineWebCorpus(source=local).documents()) == texts(EDU_A, [0, 1, 3]) + texts(EDU_B, [0, 1])


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"min_language_score": 0.8}, texts(EDU_A, [0, 3]) + texts(EDU_B, [1])),  # 0.8 itself is kept
        ({"min_edu_score": 3.0}, texts(EDU_A, [0, 3]) + texts(EDU_B, [0])),  # a missing score fails
        ({"min_language_score": 0.9, "min_edu_score": 3.5}, texts(EDU_A, [0])),
    ],
)
def test_score_filters_keep_exactly_the_pages_at_or_above(shards: Path, filters: dict, expected: list[str]) -> None:
    assert list(FineWebCorpus(source=DataSource(paths=str(shards)), **filters).documents()) == expected


def test_max_documents_counts_pages_that_pass_and_stops_reading(shards: Path) -> None:
    (shards / "002_00000.parquet").write_bytes(b"not parquet")  # never reached
    # shard A's French Revolution page passes min_edu_score but is 36 characters: not counted
    corpus = FineWebCorpus(source=DataSource(paths=str(shards)), min_edu_score=3.0, min_chars=37, max_documents=2)
    assert list(corpus.documents()) == [EDU_A[0][0], EDU_B[0][0]]
    with pytest.raises(UserError, match=r"002_00000\.parquet' is not a readable parquet file"):
        list(FineWebCorpus(source=DataSource(paths=str(shards))).documents())


def test_reads_only_the_columns_its_filters_need(shards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[list[str]] = []
    iter_batches = pq.ParquetFile.iter_batches

    def spy(self: pq.ParquetFile, *args: object, columns: list[str] | None = None, **kwargs: object):
        asked.append(columns)
        return iter_batches(self, *args, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    list(FineWebCorpus(source=DataSource(paths=str(shards))).documents())
    list(FineWebCorpus(source=DataSource(paths=str(shards)), min_edu_score=3.0).documents())
    assert asked == [["text"], ["text"], ["text", "score"], ["text", "score"]]


def test_edu_filter_on_fineweb_without_score_names_the_file(tmp_path: Path) -> None:
    shard = write_shard(tmp_path / "CC-MAIN-2024-10" / "000_00000.parquet", EDU_A, edu=False)
    assert len(list(FineWebCorpus(source=DataSource(paths=str(shard)), min_language_score=0.9).documents())) == 1
    with pytest.raises(UserError, match=r"`min_edu_score` is set but '.*000_00000\.parquet' has no 'score' column "
                                        r"\(only FineWeb-Edu has one"):
        list(FineWebCorpus(source=DataSource(paths=str(shard)), min_edu_score=3.0).documents())
    pq.write_table(pa.table({"text": ["a page"]}), tmp_path / "bare.parquet")
    with pytest.raises(UserError, match=r"`min_language_score` is set but '.*bare\.parquet' has no 'language_score'"):
        list(FineWebCorpus(source=DataSource(paths=str(tmp_path / "bare.parquet")), min_language_score=0.5).documents())
    with pytest.raises(UserError, match=r"Column 'content' is not in '.*bare\.parquet' \(its columns: text\)"):
        list(FineWebCorpus(source=DataSource(paths=str(tmp_path / "bare.parquet"), text_field="content")).documents())


def test_nothing_passing_names_the_filters_to_lower(shards: Path) -> None:
    with pytest.raises(UserError, match=r"after filtering \(5 below min_edu_score=4.5\): lower `min_edu_score`"):
        list(FineWebCorpus(source=DataSource(paths=str(shards)), min_edu_score=4.5).documents())


def test_hub_dataset_is_streamed_and_filtered(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []
    rows = {"text": [r[0] for r in EDU_A], "language_score": [r[1] for r in EDU_A]}

    def load_dataset(name: str, config: str | None, split: str, streaming: bool) -> datasets.IterableDataset:
        calls.append((name, config, split, streaming))
        return datasets.Dataset.from_dict(rows).to_iterable_dataset()

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    fineweb = DataSource(hf_dataset="HuggingFaceFW/fineweb", hf_config="sample-10BT")
    corpus = FineWebCorpus(source=fineweb, min_language_score=0.8, deduplicate=True)
    assert corpus.splits()[0] + corpus.splits()[1] in (texts(EDU_A, [0, 3]), texts(EDU_A, [3, 0]))
    assert calls == [("HuggingFaceFW/fineweb", "sample-10BT", "train", True)]
    with pytest.raises(UserError, match=r"`min_edu_score` is set but dataset 'HuggingFaceFW/fineweb' \(config "
                                        r"'sample-10BT'\) has no 'score' column"):
        list(FineWebCorpus(source=fineweb, min_edu_score=3.0).documents())
