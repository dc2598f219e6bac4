"""Learning-curve subsamples (``data.train_size``): stratified by class, drawn by the run's seed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from lmforge.data import DataSource
from lmforge.errors import UserError
from lmforge.evaluation import LabeledText
from lmforge.evaluation.labeled_records import subsample
from lmforge.evaluation.tagged_data import TaggedText


def _imbalanced(tmp_path: Path) -> Path:
    """20 examples: 12 'a', 6 'b', 2 'c', each text naming its line."""
    labels = ["a"] * 12 + ["b"] * 6 + ["c"] * 2
    lines = ["text\tlabel", *(f"example {i}\t{label}" for i, label in enumerate(labels))]
    path = tmp_path / "train.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _train(path: Path, size: int | None, seed: int, monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    monkeypatch.setenv("PL_GLOBAL_SEED", str(seed))  # what --seed_everything sets
    data = LabeledText(source=DataSource(paths=str(path), text_field="text"), validation=str(path), train_size=size)
    return data.raw()["train"]


@pytest.mark.parametrize("size, counts", [(10, {"a": 6, "b": 3, "c": 1}), (5, {"a": 3, "b": 1, "c": 1}),
                                          (3, {"a": 1, "b": 1, "c": 1}), (20, {"a": 12, "b": 6, "c": 2})])
def test_the_subsample_keeps_each_labels_share_and_every_label(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                size: int, counts: dict) -> None:
    # shares 60/30/10 %: 10 -> 6/3/1; 5 -> 3/1.5/0.5, rounded to 3/1/1 (c's one example); 3 -> one of each
    path = _imbalanced(tmp_path)
    for seed in range(3):
        rows = _train(path, size, seed, monkeypatch)
        assert Counter(label for _, _, label in rows) == counts and len(set(rows)) == size


def test_the_subsample_follows_the_seed_and_keeps_the_classes_of_the_whole_split(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _imbalanced(tmp_path)
    first, again, other = (_train(path, 10, seed, monkeypatch) for seed in (0, 0, 1))
    assert first == again and first != other
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")
    data = LabeledText(source=DataSource(paths=str(path), text_field="text"), validation=str(path), train_size=1)
    assert len(data.raw()["train"]) == 1 and data.labels == ["a", "b", "c"] and data.num_labels == 3


def test_a_size_over_the_split_or_below_one_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _imbalanced(tmp_path)
    with pytest.raises(UserError, match=r"data.train_size=21 is more than the 20 training examples .*give at most 20"):
        _train(path, 21, 0, monkeypatch)
    with pytest.raises(UserError, match="data.train_size=0: give a positive number"):
        _train(path, 0, 0, monkeypatch)


def test_plain_draws_and_tagged_sentences(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert subsample(10, 4, 0) == subsample(10, 4, 0) != subsample(10, 4, 1)
    assert len(set(subsample(10, 4, 0))) == 4 and subsample(10, 10, 3) == list(range(10))
    path = tmp_path / "ner.txt"
    path.write_text("".join(f"word{i} B-X\nother O\n\n" for i in range(8)), encoding="utf-8")
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")
    data = TaggedText(source=DataSource(paths=str(path)), validation=str(path), train_size=3)
    kept = data.raw()["train"]
    assert len(kept) == 3 and len({s.words[0] for s in kept}) == 3 and data.labels == ["O", "B-X", "I-X"]
    with pytest.raises(UserError, match="data.train_size=9 is more than the 8 training sentences"):
        TaggedText(source=DataSource(paths=str(path)), validation=str(path), train_size=9).raw()
