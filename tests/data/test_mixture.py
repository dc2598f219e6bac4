"""Weighted corpus mixtures (issue 27): shares by weight, deterministic from the seed, disjoint
over ranks and workers, exact resume (prepared and streaming), per-source validation in
TensorBoard, and bad mixtures refused before anything is written."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import CONFIGS, record_batches, refused
from lmforge.data import CorpusMixture, DataSource, TextCorpus, TokenizerSpec, train_tokenizer
from lmforge.data.blend import Blend, MixtureBlocks, MixtureSampler, MixtureStream
from lmforge.data.documents import read_local
from lmforge.data.streaming import StreamingBlocks
from lmforge.errors import UserError


def corpus(folder: Path, word: str, documents: int = 12) -> Path:
    """``documents`` text files whose words all start with ``word``: a block shows its source."""
    folder.mkdir(parents=True)
    for d in range(documents):
        text = " ".join(f"{word}{(d * 7 + i) % 23}" for i in range(60))
        (folder / f"{d:02d}.txt").write_text(f"{text}\n", encoding="utf-8")
    return folder


@pytest.fixture
def two_corpora(tmp_path: Path) -> tuple[Path, Path]:
    return corpus(tmp_path / "general", "alpha"), corpus(tmp_path / "domain", "kinase", 30)


# -- the blend ---------------------------------------------------------------------------------
@pytest.mark.parametrize("weights", [[0.9, 0.1], [5, 3, 2], [0.97, 0.02, 0.01]])
def test_each_source_share_of_200_batches_is_within_2_points_of_its_weight(weights: list[float]) -> None:
    blend = Blend(weights, seed=7)
    share = np.asarray(weights) / sum(weights)
    for batches in (1, 10, 57, 200):
        n = batches * 8
        counts = np.bincount([blend.locate(k)[0] for k in range(n)], minlength=len(weights))
        assert np.array_equal(counts, blend.counts(n))
        if batches == 200:
            assert np.abs(counts / n - share).max() < 0.02, counts / n
    # every source's examples are numbered 0, 1, 2, ... in the order they come
    seen: dict[int, list[int]] = {}
    for k in range(3000):
        s, j = blend.locate(k)
        seen.setdefault(s, []).append(j)
    assert all(js == list(range(len(js))) for js in seen.values())


def test_the_draw_is_deterministic_from_the_seed() -> None:
    draw = lambda seed: [Blend([0.5, 0.5], seed).locate(k)[0] for k in range(500)]  # noqa: E731
    assert draw(1) == draw(1) and draw(1) != draw(2)
    # random access equals reading in order
    blend = Blend([0.6, 0.3, 0.1], 3)
    assert [blend.locate(k) for k in (2999, 17, 1500)] == [Blend([0.6, 0.3, 0.1], 3).locate(k) for k in (2999, 17, 1500)]


def test_sources_repeat_in_new_orders_and_stop_before_a_source_runs_out() -> None:
    sources = [np.arange(10)[:, None] + 100, np.arange(40)[:, None] + 200]  # blocks of one token, by source
    blend = Blend([0.5, 0.5], 0)
    stop = blend.first_exhausted([10, 40])
    # the last example before a source would give a block twice
    assert np.all(blend.counts(stop) <= [10, 40]) and not np.all(blend.counts(stop + 1) <= [10, 40])
    blocks = MixtureBlocks(sources, blend, seed=0, epoch_length=stop)
    small = [int(blocks[k][0]) for k in range(400) if blend.locate(k)[0] == 0]
    passes = [small[i : i + 10] for i in range(0, 40, 10)]
    assert all(sorted(p) == list(range(100, 110)) for p in passes)  # each pass reads every block once
    assert len({tuple(p) for p in passes}) == 4  # in a new order each time


def test_ranks_take_disjoint_positions_and_together_all_of_them() -> None:
    blocks = MixtureBlocks([np.zeros((50, 2))], Blend([1.0], 0), 0, epoch_length=50)
    taken = []
    for rank in range(2):
        sampler = MixtureSampler(len(blocks), 2, rank, seed=0)
        sampler.set_epoch(1)
        taken.append([k for _, k in sampler])
    assert not set(taken[0]) & set(taken[1]) and sorted(taken[0] + taken[1]) == list(range(50, 100))


def test_streamed_sources_split_over_ranks_and_workers_and_follow_the_draw() -> None:
    """Two ranks x 2 workers: every document of each source in one sub-stream only, and each
    sub-stream's blocks come from the sources the draw gives its positions (t, t + 4, ...)."""
    def source(offset: int, rank: int) -> StreamingBlocks:
        docs = [f"doc{offset + g} " + "word " * (g % 5) for g in range(60)]
        encode = lambda texts: [[int(t.split()[0][3:])] * len(t.split()) for t in texts]  # noqa: E731
        return StreamingBlocks(lambda start: iter(docs[start:]), encode, eos_id=9999, dtype=np.uint16,
                               block_length=3, rank=rank, world_size=2)

    blend = Blend([0.7, 0.3], seed=5)
    owners: dict[int, set] = {}
    for rank in range(2):
        stream = MixtureStream([source(0, rank), source(1000, rank)], blend)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2, collate_fn=lambda x: x)
        for item, _ in zip(loader, range(120)):
            tokens = [t for t in item["block"].tolist() if t != 9999]
            assert tokens and all((t >= 1000) == (blend.locate(item["index"])[0] == 1) for t in tokens)
            assert item["index"] % 4 == item["stream"]
            for token in tokens:
                owners.setdefault(token, set()).add(item["stream"])
    assert all(len(o) == 1 for o in owners.values())  # each document in exactly one sub-stream
    assert {s for o in owners.values() for s in o} == {0, 1, 2, 3}


# -- through Lightning: exact resume, per-source validation --------------------------------------
def _mixture(corpora: tuple[Path, Path], tmp_path: Path, **options) -> CorpusMixture:
    """General text (1 part) and the domain (3 parts), with a tokenizer trained on both."""
    tokenizer = tmp_path / "tokenizer.json"
    if not tokenizer.exists():
        texts = [*read_local(str(corpora[0])), *read_local(str(corpora[1]))]
        train_tokenizer(texts, TokenizerSpec(vocab_size=300)).save(tokenizer)
    sources = {name: TextCorpus(source=DataSource(paths=str(path)), val_fraction=0.2, cache_dir=str(tmp_path / "c"))
               for name, path in zip(("general", "domain"), corpora)}
    return CorpusMixture(sources, {"general": 1, "domain": 3}, tokenizer=TokenizerSpec(path=str(tokenizer)),
                         seq_len=16, batch_size=4, **options)


def _fit(corpora: tuple[Path, Path], tmp_path: Path, run: str, max_steps: int, ckpt_path: Path | None = None,
         **options) -> list:
    return record_batches(_mixture(corpora, tmp_path, **options), tmp_path / run, max_steps, ckpt_path)


@pytest.mark.parametrize("streaming", [False, True], ids=["prepared", "streaming"])
def test_a_stopped_mixture_resumes_with_exactly_the_next_batch(streaming: bool, two_corpora: tuple[Path, Path],
                                                               tmp_path: Path) -> None:
    options = {"streaming": True, "num_workers": 2} if streaming else {"on_exhausted": "repeat"}
    full = _fit(two_corpora, tmp_path, "full", 30, **options)
    stopped = _fit(two_corpora, tmp_path, "stopped", 11, **options)  # a run that ends, then one that resumes it
    assert stopped == full[:11]
    resumed = _fit(two_corpora, tmp_path, "resumed", 30, ckpt_path=tmp_path / "stopped" / "last.ckpt", **options)
    assert resumed == full[11:]
    assert len({str(b) for _, b in full}) == len(full)  # no batch twice: the sources repeat in new orders


def test_on_exhausted_stop_ends_the_run_before_a_source_gives_a_block_twice(two_corpora: tuple[Path, Path],
                                                                           tmp_path: Path) -> None:
    data = _mixture(two_corpora, tmp_path, on_exhausted="stop")
    batches = record_batches(data, tmp_path / "run", 1000)
    mixture = data.train_set
    assert mixture.epoch_length == data.blend.first_exhausted([len(source) for source in mixture.sources])
    assert {epoch for epoch, _ in batches} == {0} and len(batches) == mixture.epoch_length // 4 < 1000
    # the run read the mixture's positions in order, up to where the first source would give a block twice
    rows = [row for _, batch in batches for row in batch]
    assert rows == [mixture[k][:-1].tolist() for k in range(len(rows))]


def test_the_mixture_refuses_resuming_with_other_weights(two_corpora: tuple[Path, Path], tmp_path: Path) -> None:
    _fit(two_corpora, tmp_path, "run", 3)
    sources = {name: TextCorpus(source=DataSource(paths=str(path)), val_fraction=0.2, cache_dir=str(tmp_path / "c"))
               for name, path in zip(("general", "domain"), two_corpora)}
    other = CorpusMixture(sources, {"general": 1, "domain": 1}, tokenizer=TokenizerSpec(path=str(tmp_path / "tokenizer.json")),
                          seq_len=16, batch_size=4)
    state = torch.load(tmp_path / "run" / "last.ckpt", weights_only=False)["CorpusMixture"]
    with pytest.raises(UserError, match="other data"):
        other.load_state_dict(state)


def _mixture_config(tmp_path: Path, corpora: dict[str, Path], validate_on: dict[str, Path] | None = None,
                    **extra: object) -> Path:
    import yaml

    def spec(path: Path) -> dict:
        return {"class_path": "lmforge.data.TextCorpus", "init_args": {"source": {"paths": str(path)}, "val_fraction": 0.2}}

    init = {"sources": {name: spec(path) for name, path in corpora.items()}, "weights": {name: 1 for name in corpora},
            "validate_on": {name: spec(path) for name, path in (validate_on or {}).items()}, **extra}
    path = tmp_path / "mixture.yaml"
    path.write_text(yaml.safe_dump({"data": {"class_path": "lmforge.data.CorpusMixture", "init_args": init}}))
    return path


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_fit_logs_each_source_and_the_weighted_loss(two_corpora: tuple[Path, Path], tmp_path: Path) -> None:
    from lmforge.cli import main

    general, domain = two_corpora
    extra = corpus(tmp_path / "extra", "zeta")
    # a replay mixture: the domain 80%, general text 20%, and a third corpus validated only
    config = _mixture_config(tmp_path, {"domain": domain, "general": general}, {"extra": extra})
    main_args = ["fit", "-c", str(CONFIGS / "gpt" / "tiny.yaml"), "-c", str(config),
                 "--data.weights={'domain': 0.8, 'general': 0.2}", "--data.seq_len=16",
                 "--trainer.max_steps=6", "--trainer.val_check_interval=3", "--trainer.log_every_n_steps=1",
                 "--sample.enabled=false", "--trainer.enable_progress_bar=false"]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        main(main_args)
    finally:
        os.chdir(cwd)
    run = tmp_path / "logs" / "gpt-tiny" / "version_0"
    s = _scalars(run)
    for name in ("domain", "general", "extra"):
        assert {f"val/loss/{name}", f"val/bpb/{name}", f"val/ppl/{name}"} <= set(s), sorted(s)
    assert {"data/tokens/domain", "data/tokens/general", "data/epoch/general"} <= set(s)
    assert "data/tokens/extra" not in s  # validated on, never trained on
    for (step, loss), (_, d), (_, g) in zip(s["val/loss"], s["val/loss/domain"], s["val/loss/general"]):
        assert loss == pytest.approx(0.8 * d + 0.2 * g, rel=1e-5), step
    tokens = {n: dict(s[f"data/tokens/{n}"]) for n in ("domain", "general")}
    total = tokens["domain"][5] + tokens["general"][5]
    assert total == 6 * 8 * 17  # 6 steps of 8 blocks of 17 tokens
    assert abs(tokens["general"][5] / total - 0.2) < 0.05


@pytest.mark.parametrize(("override", "says"), [
    ("--data.weights={'domain': 0, 'general': 0}", "sum to a positive number"),
    ("--data.weights={'domian': 1.0}", "data.weights names 'domian', which is not a source: did you mean 'domain'?"),
    ("--data.weights={'domain': -1, 'general': 1}", "must be numbers >= 0"),
    ("--data.validate_on={'domain': {'class_path': 'lmforge.data.BundledCorpus'}}", "both in data.sources and"),
    ("--data.sources.domain.init_args.source.pathz=x", "unknown option 'data.sources.domain.init_args.source.pathz' of "
     "lmforge.data.TextCorpus: did you mean 'data.sources.domain.init_args.source.paths'?"),
])
def test_a_bad_mixture_is_refused_before_anything_is_written(override: str, says: str, two_corpora: tuple[Path, Path],
                                                             tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = _mixture_config(tmp_path, dict(zip(("general", "domain"), two_corpora)))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        err = refused(capsys, "fit", "-c", str(CONFIGS / "gpt" / "tiny.yaml"), "-c", str(config), override)
    finally:
        os.chdir(cwd)
    assert says in err
    assert not (tmp_path / "logs").exists()


def test_a_masked_lm_on_a_mixture_logs_each_source_and_the_weighted_loss(two_corpora: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    from lmforge.cli import main

    config = _mixture_config(tmp_path, dict(zip(("general", "domain"), two_corpora)))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        main(["fit", "-c", str(CONFIGS / "bert" / "tiny.yaml"), "-c", str(config), "--model.nsp=false",
              "--data.seq_len=16", "--trainer.max_steps=4", "--trainer.val_check_interval=2",
              "--sample.enabled=false", "--trainer.enable_progress_bar=false"])
    finally:
        os.chdir(cwd)
    s = _scalars(next((tmp_path / "logs").glob("*/version_0")))
    assert {"val/loss", "val/mlm_loss/general", "val/mlm_loss/domain"} <= set(s), sorted(s)
    assert not [tag for tag in s if "dataloader_idx" in tag]
    for (_, loss), (_, g), (_, d) in zip(s["val/loss"], s["val/mlm_loss/general"], s["val/mlm_loss/domain"]):
        assert loss == pytest.approx(0.5 * g + 0.5 * d, rel=1e-5)
