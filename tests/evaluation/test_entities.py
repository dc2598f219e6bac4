"""Tagging schemes, entity spans under the conlleval rules, and EntityF1 (also summed over 2 DDP processes)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lmforge.errors import UserError
from lmforge.evaluation.entities import EntityF1, detect_scheme, entity_spans, entity_types, to_bio


def test_io_and_iob1_become_bio() -> None:
    io = ["I-Gene", "I-Gene", "O", "I-Gene", "I-Cell", "I-Cell", "O"]
    assert to_bio(io, "IO") == ["B-Gene", "I-Gene", "O", "B-Gene", "B-Cell", "I-Cell", "O"]
    iob1 = ["I-PER", "I-PER", "B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]
    assert to_bio(iob1, "IOB1") == ["B-PER", "I-PER", "B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG"]
    bio = ["B-X", "I-X", "O", "B-X", "B-X"]
    assert to_bio(bio, "BIO") == bio
    with pytest.raises(UserError, match="scheme"):
        to_bio(bio, "IOE2")  # type: ignore[arg-type]


def test_bioes_and_bilou_become_the_same_bio() -> None:
    bio = ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O", "B-ORG", "B-PER"]
    bioes = ["B-PER", "I-PER", "E-PER", "O", "S-LOC", "B-LOC", "E-LOC", "O", "S-ORG", "S-PER"]
    bilou = ["B-PER", "I-PER", "L-PER", "O", "U-LOC", "B-LOC", "L-LOC", "O", "U-ORG", "U-PER"]
    assert to_bio(bioes, "BIOES") == to_bio(bioes, "IOBES") == to_bio(bilou, "BILOU") == bio
    assert entity_spans(to_bio(bioes, "BIOES")) == {("PER", 0, 3), ("LOC", 4, 5), ("LOC", 5, 7), ("ORG", 8, 9),
                                                   ("PER", 9, 10)}


@pytest.mark.parametrize("tags, scheme, message", [
    (["B-PER", "E-PER", "S-LOC"], "BIO", "tag 'E-PER' is not a BIO tag: the file looks like BIOES; set data.scheme: BIOES"),
    (["S-LOC"], "IOB1", "tag 'S-LOC' is not an IOB1 tag: the file looks like BIOES"),
    (["O", "U-LOC"], "BIOES", "tag 'U-LOC' is not a BIOES tag: the file looks like BILOU; set data.scheme: BILOU"),
    (["B-X", "E-X"], "BILOU", "tag 'E-X' is not a BILOU tag: the file looks like BIOES"),
])
def test_a_tag_of_another_scheme_is_refused(tags: list[str], scheme: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        to_bio(tags, scheme)  # type: ignore[arg-type]


def test_scheme_detection() -> None:
    assert detect_scheme([["O", "I-Task", "I-Task"], ["I-Method", "O"]]) == "IO"
    assert detect_scheme([["I-PER", "B-PER", "O"], ["I-LOC"]]) == "IOB1"
    assert detect_scheme([["B-PER", "I-PER", "O"], ["O", "B-LOC"]]) == "BIO"
    assert detect_scheme([["I-PER", "B-LOC"]]) == "BIO"  # a B- after another type is an opening
    assert detect_scheme([["O", "O"]]) == "IO"
    assert detect_scheme([["B-PER", "E-PER"], ["S-LOC", "O"]]) == "BIOES"
    assert detect_scheme([["O", "O"], ["U-LOC", "O", "B-PER", "L-PER"]]) == "BILOU"
    assert detect_scheme([["I-Gene", "Cell"]]) == "IO"  # a tag without a prefix is I- (conlleval)


def test_spans_follow_the_conlleval_rules() -> None:
    assert entity_spans(["B-X", "B-X", "I-X"]) == {("X", 0, 1), ("X", 1, 3)}  # adjacent entities of one type
    assert entity_spans(["O", "I-X", "I-X", "O"]) == {("X", 1, 3)}  # an I- without B- opens one
    assert entity_spans(["B-X", "I-Y", "I-Y"]) == {("X", 0, 1), ("Y", 1, 3)}  # type mismatch: two
    assert entity_spans(["O", "B-X", "I-X"]) == {("X", 1, 3)}  # closed at the sentence end
    assert entity_spans(["O", "O"]) == set()


def test_f1_equals_hand_counts() -> None:
    gold = [["B-X", "B-X", "O", "B-Y", "I-Y"], ["O", "B-X", "I-X"]]
    pred = [["B-X", "I-X", "O", "I-Y", "I-Y"], ["O", "B-X", "I-Y"]]
    # gold: X(0,1) X(1,2) Y(3,5) | X(1,3)        -> 3 X, 1 Y
    # pred: X(0,2) Y(3,5)        | X(1,2) Y(2,3) -> 2 X, 2 Y; hits: Y(3,5) only
    metric = EntityF1(entity_types(["O", "B-X", "I-X", "B-Y", "I-Y"]))
    metric.update(pred, gold)
    out = metric.compute()
    assert out["precision"].item() == pytest.approx(1 / 4)
    assert out["recall"].item() == pytest.approx(1 / 4)
    assert out["f1"].item() == pytest.approx(1 / 4)
    assert out["f1_X"].item() == pytest.approx(0.0)
    assert out["f1_Y"].item() == pytest.approx(2 * 1 / (2 + 1))
    metric.reset()
    metric.update(gold, gold)
    assert metric.compute()["f1"].item() == 1.0


GOLD = [["B-X", "I-X", "O"], ["O", "B-Y"], ["B-X", "B-X"], ["I-Y", "O", "B-X"]]
PRED = [["B-X", "O", "O"], ["O", "B-Y"], ["B-X", "I-X"], ["I-Y", "O", "B-Y"]]


def _rank(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        metric = EntityF1(["X", "Y"])
        metric.update(PRED[rank::2], GOLD[rank::2])  # each rank its own sentences
        values = metric.compute()  # synced over both ranks
        if rank == 0:
            torch.save({k: v.item() for k, v in values.items()}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_entity_f1_is_exact_under_ddp(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "values.pt")
    mp.spawn(_rank, args=(port, out), nprocs=2, join=True)
    single = EntityF1(["X", "Y"])
    single.update(PRED, GOLD)
    expected = {k: v.item() for k, v in single.compute().items()}
    ranks_only = EntityF1(["X", "Y"])
    ranks_only.update(PRED[0::2], GOLD[0::2])
    assert ranks_only.compute()["f1"].item() != pytest.approx(expected["f1"])  # the sync matters
    assert torch.load(out) == pytest.approx(expected)
