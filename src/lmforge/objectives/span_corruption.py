"""Denoising objectives of encoder-decoder models: T5's span corruption and BART's text
infilling.

**Span corruption** (Raffel et al. 2020, section 3.1.4). Of a block of tokens,
``noise_density`` (15%) are dropped in spans whose mean length is ``mean_noise_span_length``
(3). The encoder input is the block with each dropped span replaced by one sentinel
``<extra_id_0>``, ``<extra_id_1>``, ... in order; the target lists each sentinel followed
by the span it replaced; both end with ``</s>``::

    block    Thank you for inviting me to your party last week .
    input    Thank you <extra_id_0> me to your party <extra_id_1> week . </s>
    target   <extra_id_0> for inviting <extra_id_1> last </s>

The numbers of dropped tokens and of spans depend only on the block length, so a block of
``block_length(seq_len)`` corpus tokens gives an input of exactly ``seq_len`` tokens and a
target of exactly ``target_length(seq_len)`` tokens: no padding anywhere (T5 pretrains on
568-token blocks for 512-token inputs and 114-token targets). Span lengths are a random
partition of the dropped tokens into that many non-empty spans, and likewise the kept
tokens, interleaved starting with kept text (T5's ``random_spans_noise_mask``).

**Text infilling** (Lewis et al. 2020, BART). Span lengths are drawn from a Poisson
distribution (λ = 3) until ``noise_density`` (30%) of the block is covered; each span is
replaced by a single mask token (a span of length 0 inserts one), and the target is the
whole original block. Inputs are shorter than the target and padded to ``seq_len``.

Both draw from a generator seeded per batch (:class:`BatchRNG`): deterministic given
the seed and the batch. The decoder input is the target shifted right behind a start token
(the padding token, as in T5).
"""

from __future__ import annotations

import numpy as np
import torch

from lmforge.batching import BatchRNG
from lmforge.errors import UserError

from lmforge.tokenizer import Tokenizer

SENTINEL = "<extra_id_{}>"


def sentinel_ids(tokenizer: Tokenizer) -> list[int]:
    """Ids of ``<extra_id_0>``, ``<extra_id_1>``, ... for as long as the tokenizer has them."""
    ids = []
    while (token_id := tokenizer.backend.token_to_id(SENTINEL.format(len(ids)))) is not None:
        ids.append(token_id)
    return ids


def random_partition(total: int, parts: int, size: int, generator: torch.Generator, min_part: int = 1) -> torch.Tensor:
    """``size`` random compositions of ``total`` into ``parts`` parts of at least ``min_part``
    (0 or 1), uniform over all such compositions: a ``(size, parts)`` tensor of lengths."""
    free = total - parts * min_part  # what is left to spread once every part has its minimum
    if free < 0 or parts < 1:
        raise ValueError(f"Cannot split {total} into {parts} parts of at least {min_part}.")
    if parts == 1:
        return torch.full((size, 1), total)
    # stars and bars: choose parts - 1 bar positions among free + parts - 1 slots
    slots = free + parts - 1
    bars = torch.rand(size, slots, generator=generator).argsort(dim=1)[:, : parts - 1].sort(dim=1).values
    edges = torch.cat([torch.full((size, 1), -1), bars, torch.full((size, 1), slots)], dim=1)
    return edges.diff(dim=1) - 1 + min_part


class SpanCorruption:
    """T5's span corruption of packed blocks (see the module docstring).

    Args:
        noise_density: Fraction of the block's tokens dropped into the target.
        mean_noise_span_length: Mean length of a dropped span.
        seed: Seed of the spans, drawn per batch from (seed, the batch's key): see ``BatchRNG``.
    """

    sentences = False

    def __init__(self, noise_density: float = 0.15, mean_noise_span_length: float = 3.0, seed: int = 0):
        if not 0 < noise_density < 1 or mean_noise_span_length < 1:
            raise ValueError(
                f"noise_density must be in (0, 1) and mean_noise_span_length >= 1, got {noise_density}, "
                f"{mean_noise_span_length}."
            )
        self.noise_density = noise_density
        self.mean_noise_span_length = mean_noise_span_length
        self.rng = BatchRNG(seed)
        self.sentinels: torch.Tensor | None = None

    def bind(self, tokenizer: Tokenizer) -> None:
        """Learn the sentinel, end-of-sequence and padding (decoder start) tokens."""
        sentinels = sentinel_ids(tokenizer)
        if not sentinels:
            raise UserError("The tokenizer has no <extra_id_0> sentinel, which span corruption needs: use a T5 tokenizer "
                            "(train it with `specials: t5`).")
        self.sentinels = torch.tensor(sentinels)
        ids = tokenizer.require(["eos", "pad"], "span corruption", "use a T5 tokenizer (train it with `specials: t5`).")
        self.eos_id, self.pad_id = ids["eos"], ids["pad"]

    # -- lengths ----------------------------------------------------------------------------
    def counts(self, raw_length: int) -> tuple[int, int]:
        """(dropped tokens, dropped spans) of a block of ``raw_length`` tokens."""
        noise = min(max(round(raw_length * self.noise_density), 1), raw_length - 1)
        spans = max(round(noise / self.mean_noise_span_length), 1)
        return noise, spans

    def _lengths(self, raw_length: int) -> tuple[int, int]:
        """(input length, target length), each with its closing ``</s>``."""
        noise, spans = self.counts(raw_length)
        return raw_length - noise + spans + 1, noise + spans + 1

    def block_length(self, seq_len: int) -> int:
        """The longest block whose corrupted input fits ``seq_len`` tokens (568 for 512)."""
        if seq_len < 4:
            raise ValueError(f"Span corruption needs seq_len >= 4, got {seq_len}.")
        raw = seq_len
        while self._lengths(raw + 1)[0] <= seq_len:
            raw += 1
        spans = self.counts(raw)[1]
        if self.sentinels is not None and spans > len(self.sentinels):
            raise ValueError(
                f"A {seq_len}-token input has {spans} corrupted spans but the tokenizer has only "
                f"{len(self.sentinels)} sentinels: lower seq_len or raise mean_noise_span_length."
            )
        return raw

    def target_length(self, seq_len: int) -> int:
        """Length of the target (and decoder input) for inputs of ``seq_len`` tokens (114 for 512)."""
        return self._lengths(self.block_length(seq_len))[1]

    # -- corruption -------------------------------------------------------------------------
    def noise_mask(self, size: int, raw_length: int, generator: torch.Generator) -> torch.Tensor:
        """``(size, raw_length)`` booleans, True on dropped tokens: spans of kept and dropped
        tokens alternate, starting with kept ones, and the last span is a dropped one."""
        noise, spans = self.counts(raw_length)
        dropped = random_partition(noise, spans, size, generator)
        kept = random_partition(raw_length - noise, spans, size, generator)
        lengths = torch.stack([kept, dropped], dim=2).flatten(1)  # (size, 2 * spans): kept, dropped, ...
        starts = lengths.cumsum(dim=1)[:, :-1]  # where each span after the first begins
        boundary = torch.zeros(size, raw_length, dtype=torch.long).scatter_(1, starts, 1)
        return boundary.cumsum(dim=1) % 2 == 1  # odd-numbered spans are the dropped ones

    def _replace_spans(self, ids: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """Each run of ``drop`` in ``ids`` (B, L) becomes one sentinel, in order; rows end with </s>."""
        first = drop & ~torch.nn.functional.pad(drop, (1, 0))[:, :-1]  # the first token of each run
        index = (first.cumsum(dim=1) - 1).clamp(min=0)
        values = torch.where(first, self.sentinels[index], ids)
        keep = ~drop | first
        out = values[keep].view(ids.size(0), -1)  # every row keeps the same number of tokens
        return torch.cat([out, torch.full((ids.size(0), 1), self.eos_id)], dim=1)

    def __call__(self, blocks: list[np.ndarray]) -> dict[str, torch.Tensor]:
        if self.sentinels is None:
            raise RuntimeError("SpanCorruption.bind(tokenizer) must be called before corrupting.")
        ids = torch.from_numpy(np.stack(blocks).astype(np.int64))  # (B, L)
        noise = self.noise_mask(ids.size(0), ids.size(1), self.rng())
        inputs = self._replace_spans(ids, noise)  # (B, seq_len): kept text, one sentinel per span
        targets = self._replace_spans(ids, ~noise)  # (B, target length): sentinel, span, ...
        return {"input_ids": inputs, "decoder_input_ids": shift_right(targets, self.pad_id), "labels": targets}


class TextInfilling:
    """BART's text infilling of packed blocks (see the module docstring).

    The mask token is the tokenizer's ``<mask>``/``[MASK]``; a T5 tokenizer, which has none,
    uses ``<extra_id_0>``.

    Args:
        noise_density: Fraction of the block's tokens covered by masked spans.
        poisson_lambda: Mean of the Poisson distribution of span lengths.
        seed: Seed of the spans, drawn per batch from (seed, the batch's key): see ``BatchRNG``.
    """

    sentences = False

    def __init__(self, noise_density: float = 0.3, poisson_lambda: float = 3.0, seed: int = 0):
        if not 0 < noise_density < 1 or poisson_lambda <= 0:
            raise ValueError(f"noise_density must be in (0, 1) and poisson_lambda > 0, got {noise_density}, {poisson_lambda}.")
        self.noise_density = noise_density
        self.poisson_lambda = poisson_lambda
        self.rng = BatchRNG(seed)
        self.bound = False

    def bind(self, tokenizer: Tokenizer) -> None:
        """Learn the mask, end-of-sequence and padding tokens."""
        mask_id = tokenizer.role_id("mask")
        if mask_id is None:
            mask_id = tokenizer.backend.token_to_id(SENTINEL.format(0))
        if mask_id is None:
            raise UserError("The tokenizer has no mask token (<mask> or [MASK]) nor <extra_id_0>, which text infilling "
                            "needs: use a T5, BART or RoBERTa tokenizer.")
        self.mask_id = mask_id
        ids = tokenizer.require(["eos", "pad"], "text infilling", "use a T5 or BART-style tokenizer.")
        self.eos_id, self.pad_id = ids["eos"], ids["pad"]
        self.bound = True

    def block_length(self, seq_len: int) -> int:
        return seq_len - 1  # room for </s>: the target is the block and </s>

    def span_lengths(self, length: int, generator: torch.Generator) -> list[int]:
        """Poisson span lengths (zeros included) covering exactly ``noise_density`` of ``length``."""
        goal = min(max(round(length * self.noise_density), 1), length - 1)
        spans: list[int] = []
        while sum(spans) < goal:
            draws = torch.poisson(torch.full((goal,), self.poisson_lambda), generator=generator).long().tolist()
            for n in draws:
                spans.append(min(n, goal - sum(spans)))
                if sum(spans) == goal:
                    break
        while len(spans) > goal and 0 in spans:  # no input longer than its block
            spans.remove(0)
        kept = length - goal
        while len(spans) - 1 > kept:  # masks must be separated by kept text: merge the last spans
            spans[-2] += spans.pop()
        return spans

    def corrupt(self, block: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The input for one block (kept text with one mask per span, no ``</s>``) and the spans
        it masks, in order."""
        spans = self.span_lengths(len(block), generator)
        kept = len(block) - sum(spans)
        # kept text before, between (at least one token, so masks stay distinct) and after spans
        gaps = random_partition(kept - (len(spans) - 1), len(spans) + 1, 1, generator, min_part=0)[0]
        gaps[1:-1] += 1
        pieces, masked, pos = [], [], 0
        for gap, span in zip(gaps.tolist(), spans + [None]):
            pieces.append(block[pos : pos + gap])
            pos += gap
            if span is not None:
                pieces.append(torch.tensor([self.mask_id]))
                masked.append(block[pos : pos + span])
                pos += span
        return torch.cat(pieces), masked

    def __call__(self, blocks: list[np.ndarray]) -> dict[str, torch.Tensor]:
        if not self.bound:
            raise RuntimeError("TextInfilling.bind(tokenizer) must be called before corrupting.")
        g = self.rng()
        ids = torch.from_numpy(np.stack(blocks).astype(np.int64))  # (B, L)
        inputs = [torch.cat([self.corrupt(row, g)[0], torch.tensor([self.eos_id])]) for row in ids]
        input_ids = torch.full((len(inputs), ids.size(1) + 1), self.pad_id)
        attention_mask = torch.zeros_like(input_ids)
        for row, seq in enumerate(inputs):
            input_ids[row, : len(seq)] = seq
            attention_mask[row, : len(seq)] = 1
        targets = torch.cat([ids, torch.full((ids.size(0), 1), self.eos_id)], dim=1)  # (B, seq_len)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "decoder_input_ids": shift_right(targets, self.pad_id),
            "labels": targets,
        }


def shift_right(targets: torch.Tensor, start_id: int) -> torch.Tensor:
    """The decoder's input: ``start_id`` then the targets but their last token."""
    return torch.cat([torch.full((targets.size(0), 1), start_id), targets[:, :-1]], dim=1)
