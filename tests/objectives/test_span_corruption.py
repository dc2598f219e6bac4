"""T5 span corruption and BART text infilling: lengths, token conservation, sentinels, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import SENTENCES
from lmforge.errors import UserError
from lmforge.data import Tokenizer, TokenizerSpec, train_tokenizer
from lmforge.objectives import SpanCorruption, TextInfilling
from lmforge.objectives.span_corruption import random_partition


@pytest.fixture(scope="module")
def t5_tokenizer() -> Tokenizer:
    docs = [" ".join(SENTENCES[i % len(SENTENCES) :] + SENTENCES[: i % len(SENTENCES)]) for i in range(60)]
    return train_tokenizer(docs, TokenizerSpec(kind="unigram", specials="t5", vocab_size=300))


def random_blocks(tokenizer: Tokenizer, n: int, length: int, seed: int = 0) -> list[np.ndarray]:
    """Blocks of ordinary (non-special) token ids, each id distinct within its block where possible."""
    rng = np.random.default_rng(seed)
    ordinary = np.arange(103, tokenizer.vocab_size)  # t5 family: 3 specials + 100 sentinels first
    return [rng.choice(ordinary, size=length, replace=length > len(ordinary)) for _ in range(n)]


def bound(objective, tokenizer: Tokenizer):
    objective.bind(tokenizer)
    return objective


@pytest.mark.parametrize(("seq_len", "raw", "target"), [(512, 568, 114), (128, 141, 29), (64, 70, 14)])
def test_lengths_follow_t5(seq_len: int, raw: int, target: int, t5_tokenizer: Tokenizer) -> None:
    """T5's own numbers: 568 corpus tokens make a 512-token input and a 114-token target."""
    sc = bound(SpanCorruption(), t5_tokenizer)
    assert sc.block_length(seq_len) == raw
    assert sc.target_length(seq_len) == target
    batch = sc(random_blocks(t5_tokenizer, 3, raw))
    assert batch["input_ids"].shape == (3, seq_len)
    assert batch["labels"].shape == batch["decoder_input_ids"].shape == (3, target)


def reconstruct(inputs: list[int], targets: list[int], sentinels: list[int], eos: int) -> list[int]:
    """Put every span of the target back in place of its sentinel in the input."""
    assert inputs[-1] == eos and targets[-1] == eos
    spans: dict[int, list[int]] = {}
    current = None
    for t in targets[:-1]:
        if t in sentinels:
            current = t
            spans[current] = []
        else:
            spans[current].append(t)
    out: list[int] = []
    for t in inputs[:-1]:
        out.extend(spans.pop(t) if t in sentinels else [t])
    assert not spans, "a target span has no sentinel in the input"
    return out


def test_every_token_appears_once_across_input_and_target(t5_tokenizer: Tokenizer) -> None:
    sc = bound(SpanCorruption(), t5_tokenizer)
    raw = sc.block_length(128)
    blocks = random_blocks(t5_tokenizer, 16, raw, seed=1)
    batch = sc(blocks)
    sentinels = sc.sentinels.tolist()
    for block, inputs, targets in zip(blocks, batch["input_ids"].tolist(), batch["labels"].tolist()):
        assert reconstruct(inputs, targets, sentinels, sc.eos_id) == block.tolist()
        kept = [t for t in inputs if t not in sentinels and t != sc.eos_id]
        dropped = [t for t in targets if t not in sentinels and t != sc.eos_id]
        assert sorted(kept + dropped) == sorted(block.tolist())  # each token exactly once


def test_sentinels_are_ordered_and_paired(t5_tokenizer: Tokenizer) -> None:
    sc = bound(SpanCorruption(), t5_tokenizer)
    batch = sc(random_blocks(t5_tokenizer, 8, sc.block_length(256)))
    sentinels = sc.sentinels.tolist()
    _, spans = sc.counts(sc.block_length(256))
    for inputs, targets in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        in_order = [t for t in inputs if t in sentinels]
        assert in_order == sentinels[:spans]  # <extra_id_0>, <extra_id_1>, ... once each
        assert [t for t in targets if t in sentinels] == in_order
        assert targets[0] == sentinels[0]  # the target opens with the first span
        assert inputs[0] not in sentinels  # the block opens with kept text


def test_noise_density_and_mean_span_length(t5_tokenizer: Tokenizer) -> None:
    sc = SpanCorruption(noise_density=0.15, mean_noise_span_length=3.0)
    mask = sc.noise_mask(400, 568, torch.Generator().manual_seed(0))
    assert mask.float().mean().item() == pytest.approx(0.15, abs=0.002)  # exact per block, up to rounding
    starts = mask & ~torch.nn.functional.pad(mask, (1, 0))[:, :-1]
    assert (mask.sum() / starts.sum()).item() == pytest.approx(3.0, abs=0.05)
    assert not mask[:, 0].any() and mask[:, -1].all()  # kept text first, a dropped span last
    # span lengths vary (a random partition, not fixed 3-token spans)
    lengths = torch.tensor([len(s) for row in mask.int().tolist() for s in "".join(map(str, row)).split("0") if s])
    assert lengths.min() == 1 and lengths.max() >= 8


def test_random_partition_is_uniform_and_exact() -> None:
    parts = random_partition(10, 3, 20000, torch.Generator().manual_seed(0))
    assert (parts.sum(dim=1) == 10).all() and (parts >= 1).all()
    # 36 compositions of 10 into 3 positive parts, each as likely: the first part is k with prob (9 - k) / 36
    first = torch.bincount(parts[:, 0], minlength=9)[1:9].float() / 20000
    assert torch.allclose(first, torch.arange(8, 0, -1) / 36, atol=0.015)
    zeros = random_partition(4, 3, 1000, torch.Generator().manual_seed(1), min_part=0)
    assert (zeros.sum(dim=1) == 4).all() and (zeros == 0).any()


def test_decoder_input_is_target_shifted_right(t5_tokenizer: Tokenizer) -> None:
    sc = bound(SpanCorruption(), t5_tokenizer)
    batch = sc(random_blocks(t5_tokenizer, 2, sc.block_length(64)))
    assert (batch["decoder_input_ids"][:, 0] == sc.pad_id).all()
    assert torch.equal(batch["decoder_input_ids"][:, 1:], batch["labels"][:, :-1])


def test_deterministic_from_seed_and_fresh_per_batch(t5_tokenizer: Tokenizer) -> None:
    blocks = random_blocks(t5_tokenizer, 4, 141)
    a, b, c = (bound(SpanCorruption(seed=s), t5_tokenizer) for s in (0, 0, 1))
    first = a(blocks)["input_ids"]
    assert torch.equal(first, b(blocks)["input_ids"])
    assert not torch.equal(first, c(blocks)["input_ids"])
    assert not torch.equal(first, a(blocks)["input_ids"])  # the same blocks get new spans next time


def test_too_many_spans_for_the_sentinels_is_refused(t5_tokenizer: Tokenizer) -> None:
    sc = bound(SpanCorruption(mean_noise_span_length=1.0), t5_tokenizer)  # 100 sentinels
    sc.block_length(512)  # 90 spans fit
    with pytest.raises(ValueError, match="only 100 sentinels"):
        sc.block_length(1024)


def test_tokenizer_without_sentinels_is_refused() -> None:
    gpt = train_tokenizer(SENTENCES * 5, TokenizerSpec(kind="byte_level_bpe", specials="gpt", vocab_size=300))
    with pytest.raises(UserError, match="specials: t5"):
        SpanCorruption().bind(gpt)


def test_works_in_dataloader_workers(t5_tokenizer: Tokenizer) -> None:
    sc = bound(SpanCorruption(seed=3), t5_tokenizer)
    blocks = random_blocks(t5_tokenizer, 4, sc.block_length(64)) * 2  # both batches hold the same blocks
    loader = DataLoader(blocks, batch_size=4, collate_fn=sc, num_workers=2)
    batches = list(loader)
    assert [b["input_ids"].shape for b in batches] == [(4, 64), (4, 64)]
    # each worker draws from its own stream: the same blocks get different spans
    assert not torch.equal(batches[0]["labels"], batches[1]["labels"])


# -- BART text infilling ----------------------------------------------------------------------


def test_infilling_round_trip(t5_tokenizer: Tokenizer) -> None:
    """Putting each masked span back in place of its mask token restores the block."""
    ti = bound(TextInfilling(), t5_tokenizer)
    g = torch.Generator().manual_seed(0)
    for block in random_blocks(t5_tokenizer, 50, 99, seed=2):
        block = torch.from_numpy(block)
        corrupted, spans = ti.corrupt(block, g)
        assert (corrupted == ti.mask_id).sum() == len(spans)
        restored, it = [], iter(spans)
        for t in corrupted.tolist():
            restored.extend(next(it).tolist() if t == ti.mask_id else [t])
        assert restored == block.tolist()
        assert sum(len(s) for s in spans) == round(0.3 * 99)
        mask_positions = (corrupted == ti.mask_id).nonzero().flatten()
        assert (mask_positions.diff() > 1).all()  # one mask per span: never two in a row


def test_infilling_span_lengths_are_poisson(t5_tokenizer: Tokenizer) -> None:
    ti = TextInfilling(poisson_lambda=3.0)
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([n for _ in range(300) for n in ti.span_lengths(1000, g)[:-1]])  # the last is clipped
    assert lengths.float().mean().item() == pytest.approx(3.0, abs=0.1)
    assert (lengths == 0).float().mean().item() == pytest.approx(np.exp(-3.0), abs=0.01)  # insertions


def test_infilling_batch(t5_tokenizer: Tokenizer) -> None:
    ti = bound(TextInfilling(), t5_tokenizer)
    blocks = random_blocks(t5_tokenizer, 4, ti.block_length(64))
    batch = ti(blocks)
    assert batch["labels"].shape == batch["input_ids"].shape == (4, 64)
    assert torch.equal(batch["labels"][:, :-1], torch.from_numpy(np.stack(blocks)))
    assert (batch["labels"][:, -1] == ti.eos_id).all()
    lengths = batch["attention_mask"].sum(dim=1)
    assert (lengths < 64).all()  # 30% removed, a mask per span added: shorter than the target
    for row, n in enumerate(lengths.tolist()):
        assert batch["input_ids"][row, n - 1] == ti.eos_id and (batch["input_ids"][row, n:] == ti.pad_id).all()
    assert ti.mask_id == t5_tokenizer.backend.token_to_id("<extra_id_0>")  # a T5 vocabulary has no <mask>
