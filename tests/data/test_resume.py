"""The training order: deterministic from (seed, epoch), disjoint per rank, exact mid-epoch resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import record_batches

from lmforge.data import DataSource, TextCorpus, TokenizerSpec, train_tokenizer
from lmforge.data.documents import read_local
from lmforge.data.sampler import ResumableSampler
from lmforge.data.streaming import StreamingBlocks
from lmforge.errors import UserError


def _epoch(sampler: ResumableSampler, epoch: int) -> list[int]:
    sampler.set_epoch(epoch)
    keys = list(sampler)
    assert all(e == epoch for e, _ in keys)
    return [i for _, i in keys]


def test_sampler_order_comes_from_seed_and_epoch() -> None:
    a, b = ResumableSampler(50, seed=3), ResumableSampler(50, seed=3)
    assert _epoch(a, 0) == _epoch(b, 0) and sorted(_epoch(a, 0)) == list(range(50))
    assert _epoch(a, 1) != _epoch(a, 0)
    assert _epoch(ResumableSampler(50, seed=4), 0) != _epoch(a, 0)


def test_sampler_ranks_are_disjoint() -> None:
    parts = [_epoch(ResumableSampler(53, num_replicas=4, rank=r, seed=1), 2) for r in range(4)]
    seen = [i for part in parts for i in part]
    assert len(seen) == len(set(seen)) == 52 and all(len(p) == 13 for p in parts)


def test_sampler_resumes_after_what_was_consumed() -> None:
    full = _epoch(ResumableSampler(40, num_replicas=2, rank=1, seed=7), 3)
    sampler = ResumableSampler(40, num_replicas=2, rank=1, seed=7)
    sampler.set_epoch(3)
    state = sampler.state_dict(consumed=6)
    resumed = ResumableSampler(40, num_replicas=2, rank=1, seed=7)
    resumed.load_state_dict(state)
    assert _epoch(resumed, 3) == full[6:] and len(resumed) == len(full)
    assert _epoch(resumed, 3) == full  # the skip applies once
    with pytest.raises(UserError, match="seed=7, this run has seed=8"):
        ResumableSampler(40, num_replicas=2, rank=1, seed=8).load_state_dict(state)
    with pytest.raises(UserError, match="num_items=40, this run has num_items=41"):
        ResumableSampler(41, num_replicas=2, rank=1, seed=7).load_state_dict(state)


@pytest.mark.parametrize("new_world", [1, 3, 4])
def test_sampler_resumes_on_another_number_of_ranks_reading_each_item_once(new_world: int) -> None:
    """2 ranks read 6 items each, then the run continues on ``new_world`` ranks: together they
    read every item of the epoch once, in the epoch's order (the tail cut to a multiple aside)."""
    before = [ResumableSampler(40, num_replicas=2, rank=r, seed=7) for r in range(2)]
    read = []
    for sampler in before:
        sampler.set_epoch(3)
        read += _epoch(sampler, 3)[:6]
    state = before[0].state_dict(consumed=6)
    after = []
    for r in range(new_world):
        sampler = ResumableSampler(40, num_replicas=new_world, rank=r, seed=7)
        sampler.load_state_dict(state)
        after.append(_epoch(sampler, 3))
    order = before[0].permutation()
    assert sorted(read) == sorted(order[:12])  # the two ranks had read the first 12 of the order
    assert all(len(part) == len(after[0]) for part in after)  # equal shares, no rank waits on another
    rest = [i for step in zip(*after) for i in step]  # interleaved back into the order
    assert rest == order[12 : 12 + len(rest)] and len(rest) > 40 - 12 - new_world


# -- through Lightning's checkpoints ------------------------------------------------------------
def _fit(corpus: Path, tmp_path: Path, run: str, max_steps: int, ckpt_path: Path | None = None, **data) -> list:
    tokenizer = tmp_path / "tokenizer.json"
    if not tokenizer.exists():
        train_tokenizer(read_local(str(corpus)), TokenizerSpec(vocab_size=300)).save(tokenizer)
    dm = TextCorpus(source=DataSource(paths=str(corpus)),
                    tokenizer=TokenizerSpec(path=str(tokenizer)), seq_len=16, batch_size=16,
                    cache_dir=str(tmp_path / "cache"), **data)
    return record_batches(dm, tmp_path / run, max_steps, ckpt_path)


@pytest.mark.parametrize("streaming", [False, True], ids=["shards", "streaming-2-workers"])
def test_mid_epoch_resume_continues_with_exactly_the_next_batch(streaming: bool, tiny_corpus: Path,
                                                                tmp_path: Path) -> None:
    # a stream's DataLoader takes batches from its workers in turn: the resumed one starts with the
    # worker whose turn it was
    workers = 2 if streaming else 0
    full = _fit(tiny_corpus, tmp_path, "full", 24, streaming=streaming, num_workers=workers)
    assert len(full) == 24 and full[7][0] == 0 and full[19][0] == 1  # 13-14 steps per epoch
    for stop in (7, 19):  # within the first epoch, and within a later one
        resumed = _fit(tiny_corpus, tmp_path, f"from{stop}", 24, ckpt_path=tmp_path / "full" / f"step={stop}.ckpt",
                       streaming=streaming, num_workers=workers)
        assert resumed == full[stop:], f"resuming at step {stop}"
    assert len({str(b) for _, b in full}) > 1


def test_streaming_splits_documents_over_ranks_and_workers_without_overlap() -> None:
    docs = [f"doc{g} " + "word " * (g % 7) for g in range(40)]
    encode = lambda texts: [[int(t.split()[0][3:])] * len(t.split()) for t in texts]  # noqa: E731
    blocks = {}
    for rank in range(2):
        ds = StreamingBlocks(lambda start: iter(docs[start:]), encode, eos_id=999, dtype=np.uint16, block_length=4,
                             rank=rank, world_size=2)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, collate_fn=lambda x: x)
        for item in loader:
            blocks.setdefault(rank, []).append(item)
    owners: dict[int, set] = {}
    for rank, items in blocks.items():
        for item in items:
            for token in item["block"].tolist():
                if token != 999:
                    owners.setdefault(token, set()).add((rank, item["stream"]))
    assert all(len(o) == 1 for o in owners.values())  # each document in exactly one sub-stream
    assert {s for o in owners.values() for _, s in o} == {0, 1, 2, 3}
    assert all(next(iter(owners[g]))[1] == g % 4 for g in owners)


def test_streaming_resumes_from_a_position_without_retokenizing_what_came_before() -> None:
    docs = [f"doc{g} " + "word " * (g % 5 + 1) for g in range(30)]
    encoded: list[str] = []

    def encode(texts: list[str]) -> list[list[int]]:
        encoded.extend(texts)
        return [[int(t.split()[0][3:])] * len(t.split()) for t in texts]

    def make() -> StreamingBlocks:
        return StreamingBlocks(lambda start: iter(docs[start:]), encode, 999, np.uint16, 5, batch_documents=1)

    full = list(make())
    resumed = make()
    resumed.resume_from = {0: full[9]["position"]}
    encoded.clear()
    rest = list(resumed)
    assert [b["block"].tolist() for b in rest] == [b["block"].tolist() for b in full[10:]]
    assert encoded[0] == docs[full[9]["position"][0]]  # tokenizing starts at the resume document


def test_a_position_marked_afresh_starts_the_data_from_its_beginning_whatever_its_identity() -> None:
    from lmforge.data.resume import DataPosition, start_data_afresh

    sampler = {"epoch": 2, "position": 24, "seed": 1, "num_items": 100, "num_replicas": 1}
    checkpoint = {"global_step": 9, "SomeCorpus": {"identity": {"corpus": "A", "seq_len": 64}, "sampler": sampler,
                                                   "batches": 3}, "loops": {"fit_loop": {}}}
    position = DataPosition()
    with pytest.raises(UserError, match=r"^The checkpoint was trained on other data \(corpus A, this run has B\)"):
        position.load_state_dict(checkpoint["SomeCorpus"], {"corpus": "B", "seq_len": 64}, 1, 1)
    start_data_afresh(checkpoint)
    assert "afresh" not in checkpoint["loops"]
    position = DataPosition()
    position.load_state_dict(checkpoint["SomeCorpus"], {"corpus": "B", "seq_len": 64}, 1, 1)
    assert position.pending == {}  # no position: the first loader starts at the beginning
    new = position.sampler_for(10, 1, 0, seed=5)
    new.set_epoch(2)  # Lightning's epoch goes on, and so does its batch count: sample ids follow it
    assert list(new) and position.sample_ids(3, 4) == new.order[:4]
