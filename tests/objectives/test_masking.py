"""The masked-LM objective: dynamic 80/10/10 masking, special tokens and padding, whole words, workers."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lmforge.errors import UserError
from lmforge.data import Tokenizer, TokenizerSpec, train_tokenizer
from lmforge.data.packing import concat_documents
from lmforge.objectives import MaskedLM
from lmforge.objectives.masked_lm import IGNORE

SUBJECTS = ["the cat", "a dog", "my friend", "the old farmer", "our teacher", "the little bird", "a young girl",
            "the tall man", "every student", "the quiet neighbour", "her brother", "the baker", "a sailor",
            "the doctor", "his grandmother", "the children", "a stranger", "the captain", "my sister", "the king"]
VERBS = ["sees", "likes", "follows", "paints", "finds", "carries", "watches", "remembers", "builds", "answers",
         "borrows", "describes", "forgets", "gathers", "imagines", "juggles", "knocks over", "measures", "opens",
         "praises"]
ADJECTIVES = ["red", "green", "old", "bright", "heavy", "small", "wooden", "famous", "broken", "curious",
              "golden", "hungry", "silent", "warm", "yellow", "narrow", "ancient", "empty", "shiny", "strange"]
NOUNS = ["ball", "house", "river", "apple", "train", "boat", "garden", "bread", "moon", "stone",
         "window", "letter", "mountain", "bicycle", "lantern", "violin", "basket", "mirror", "carpet", "castle"]
ENDINGS = ["today", "every morning", "near the river", "in the garden", "before dinner", "with great care",
           "after school", "at night", "quietly", "again", "on sunday", "during the storm", "without a word",
           "for an hour", "under the bridge", "beside the fire", "in the winter", "at the market", "slowly", "twice"]


def make_documents(n: int = 800, sentences: int = 4, seed: int = 7) -> list[str]:
    """Deterministic English-like documents of a few sentences, with capitals, punctuation and numbers."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        parts = []
        for _ in range(sentences):
            s = (f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} the {rng.choice(ADJECTIVES)} "
                 f"{rng.choice(NOUNS)} {rng.choice(ENDINGS)}.")
            if rng.random() < 0.2:
                s += f" It took {rng.randint(2, 999)} minutes!"
            parts.append(s[0].upper() + s[1:])
        docs.append(" ".join(parts))
    return docs


DOCS = make_documents()
VOCAB = 400
SEQ_LEN = 128
BLOCK = SEQ_LEN - 2
FAMILIES = {"bert": "wordpiece", "roberta": "byte_level_bpe"}


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Tokenizer]:
    return {
        family: train_tokenizer(DOCS, TokenizerSpec(kind=kind, specials=family, vocab_size=VOCAB, lowercase=True))
        for family, kind in FAMILIES.items()
    }


@pytest.fixture(scope="module")
def streams(tokenizers: dict[str, Tokenizer]) -> dict[str, np.ndarray]:
    """Each tokenizer's packed token stream: documents separated by its eos ([SEP] or </s>)."""
    return {f: concat_documents(t.encode_batch(DOCS), t.eos_id, np.dtype(np.uint16)) for f, t in tokenizers.items()}


def blocks_of(stream: np.ndarray, n: int, length: int = BLOCK) -> list[np.ndarray]:
    assert len(stream) >= n * length, "the corpus is too small for this many blocks"
    return list(stream[: n * length].reshape(n, length))


def bound(tok: Tokenizer, **kwargs: object) -> MaskedLM:
    objective = MaskedLM(**kwargs)  # type: ignore[arg-type]
    objective.bind(tok)
    return objective


def wrapped(tok: Tokenizer, blocks: list[np.ndarray]) -> torch.Tensor:
    """The ids the objective masks: ``[CLS] block [SEP]``, built independently of it."""
    body = torch.from_numpy(np.stack(blocks).astype(np.int64))
    cls, sep = tok.role_id("cls"), tok.role_id("sep")
    return torch.cat([torch.full((len(blocks), 1), cls), body, torch.full((len(blocks), 1), sep)], dim=1)


def special_ids(tok: Tokenizer) -> set[int]:
    return {i for i, t in tok.backend.get_added_tokens_decoder().items() if t.special}


def is_special(tok: Tokenizer, ids: torch.Tensor) -> torch.Tensor:
    return torch.isin(ids, torch.tensor(sorted(special_ids(tok))))


@pytest.fixture(params=list(FAMILIES))
def family(request: pytest.FixtureRequest) -> str:
    return request.param


# -- shapes, labels, the 80/10/10 split ------------------------------------------------------
def test_block_length_leaves_room_for_cls_and_sep() -> None:
    assert MaskedLM().block_length(SEQ_LEN) == BLOCK
    assert MaskedLM().block_length(32) == 30


def test_output_shape_and_cls_sep(tokenizers: dict, streams: dict, family: str) -> None:
    tok = tokenizers[family]
    blocks = blocks_of(streams[family], 8)
    out = bound(tok)(blocks)
    assert set(out) >= {"input_ids", "labels"}
    for key in ("input_ids", "labels"):
        assert out[key].shape == (8, SEQ_LEN) and out[key].dtype == torch.int64, key
    # packed blocks have no padding: an attention mask, if any, keeps every position
    if "attention_mask" in out:
        assert out["attention_mask"].shape == (8, SEQ_LEN) and (out["attention_mask"] == 1).all()
    assert (out["input_ids"][:, 0] == tok.role_id("cls")).all()
    assert (out["input_ids"][:, -1] == tok.role_id("sep")).all()
    assert (out["labels"][:, [0, -1]] == IGNORE).all()


def test_masking_statistics(tokenizers: dict, streams: dict, family: str) -> None:
    tok = tokenizers[family]
    blocks = blocks_of(streams[family], 256)  # 256 x 126 tokens of real text
    ids = wrapped(tok, blocks)
    out = bound(tok, seed=11)(blocks)
    inputs, labels = out["input_ids"], out["labels"]
    maskable = ~is_special(tok, ids)
    selected = labels != IGNORE

    # labels are the original ids exactly where selected, -100 elsewhere
    assert torch.equal(labels, torch.where(selected, ids, IGNORE))
    # about 15% of the non-special tokens are selected
    fraction = selected.sum().item() / maskable.sum().item()
    assert fraction == pytest.approx(0.15, abs=0.01)
    # tokens not selected are passed through untouched
    assert torch.equal(inputs[~selected], ids[~selected])

    n = selected.sum().item()
    to_mask = (inputs == tok.role_id("mask")) & selected
    changed = (inputs != ids) & ~to_mask & selected  # replaced by a random token (not the mask)
    unchanged = (inputs == ids) & selected
    assert to_mask.sum().item() / n == pytest.approx(0.8, abs=0.03)
    # a random replacement equals the original with probability 1/V: a hair under 10% change
    assert changed.sum().item() / n == pytest.approx(0.1 * (1 - 1 / tok.vocab_size), abs=0.03)
    assert unchanged.sum().item() / n == pytest.approx(0.1, abs=0.03)
    # random replacements are drawn from the whole vocabulary, not a few ids
    random_ids = inputs[changed]
    assert random_ids.min() >= 0 and random_ids.max() < tok.vocab_size
    assert random_ids.unique().numel() > 100


def test_special_tokens_are_never_selected(tokenizers: dict, streams: dict, family: str) -> None:
    tok = tokenizers[family]
    blocks = [b.copy() for b in blocks_of(streams[family], 64)]
    # padding, cls and mask tokens inside the blocks too (eos already separates documents)
    rng = np.random.default_rng(0)
    for b in blocks:
        b[rng.choice(BLOCK, size=6, replace=False)] = [tok.role_id(r) for r in ("pad", "pad", "cls", "unk", "sep", "mask")]
    ids = wrapped(tok, blocks)
    special = is_special(tok, ids)
    eos_inside = ids[:, 1:-1] == tok.eos_id
    assert eos_inside.sum() > 64 + 10, "the blocks should hold document separators"
    # with half of the tokens selected, a special token would be hit many times over
    out = bound(tok, mask_prob=0.5, seed=1)(blocks)
    selected = out["labels"] != IGNORE
    assert not (selected & special).any()
    assert torch.equal(out["input_ids"][special], ids[special])
    assert (selected & ~special).float().sum() / (~special).sum() == pytest.approx(0.5, abs=0.03)


def test_padding_is_never_selected(tokenizers: dict, streams: dict, family: str) -> None:
    tok = tokenizers[family]
    ids = wrapped(tok, blocks_of(streams[family], 32))
    lengths = torch.randint(10, SEQ_LEN, (32,), generator=torch.Generator().manual_seed(0))
    attention_mask = (torch.arange(SEQ_LEN)[None, :] < lengths[:, None]).long()
    # ordinary word ids under the padding: only the attention mask keeps them out
    out = bound(tok, mask_prob=0.5, seed=2).mask(ids, attention_mask)
    selected = out["labels"] != IGNORE
    padding = attention_mask == 0
    assert padding.sum() > 500 and not is_special(tok, ids[padding]).all()
    assert not (selected & padding).any()
    assert torch.equal(out["input_ids"][padding], ids[padding])
    assert torch.equal(out["attention_mask"], attention_mask)
    real = ~padding & ~is_special(tok, ids)
    assert (selected & real).float().sum() / real.sum() == pytest.approx(0.5, abs=0.03)


# -- dynamic and reproducible --------------------------------------------------------------
def test_masks_are_fresh_per_call_and_reproducible_from_the_seed(tokenizers: dict, streams: dict) -> None:
    tok = tokenizers["bert"]
    blocks = blocks_of(streams["bert"], 16)
    first = bound(tok, seed=5)
    a, b = first(blocks), first(blocks)
    assert not torch.equal(a["labels"], b["labels"])  # a new mask every batch (every epoch)
    assert not torch.equal(a["input_ids"], b["input_ids"])

    again = bound(tok, seed=5)  # the same seed replays the same sequence of masks
    a2, b2 = again(blocks), again(blocks)
    for x, y in ((a, a2), (b, b2)):
        assert torch.equal(x["labels"], y["labels"]) and torch.equal(x["input_ids"], y["input_ids"])

    other = bound(tok, seed=6)(blocks)
    assert not torch.equal(other["labels"], a["labels"])


# -- whole-word masking ------------------------------------------------------------------------
def word_starts(tok: Tokenizer, ids: torch.Tensor, family: str) -> torch.Tensor:
    """Where a word starts, by the rule of ``MaskedLM.bind`` spelled out on the token strings:
    WordPiece continues a word with '##' pieces; byte-level with pieces that lack the 'Ġ'
    marker and begin with a letter or digit; a special token always starts a word."""
    special = special_ids(tok)

    def continues(token_id: int) -> bool:
        if token_id in special:
            return False
        token = tok.backend.id_to_token(token_id)
        if family == "bert":
            return token.startswith("##")
        return not token.startswith("Ġ") and token[:1].isalnum()

    table = torch.tensor([continues(i) for i in range(tok.vocab_size)])
    starts = ~table[ids]
    starts[:, 0] = True
    return starts


def split_words(selected: torch.Tensor, starts: torch.Tensor, maskable: torch.Tensor) -> list[tuple[int, int]]:
    """(pieces, selected pieces) of each word, counting its maskable pieces only."""
    words = []
    for row_sel, row_start, row_ok in zip(selected.tolist(), starts.tolist(), maskable.tolist()):
        pieces = chosen = 0
        for sel, start, ok in zip(row_sel, row_start, row_ok):
            if start and pieces:
                words.append((pieces, chosen))
                pieces = chosen = 0
            pieces += ok
            chosen += sel
        if pieces:
            words.append((pieces, chosen))
    return words


def test_whole_word_selects_all_pieces_of_a_word_or_none(tokenizers: dict, streams: dict, family: str) -> None:
    tok = tokenizers[family]
    blocks = blocks_of(streams[family], 128)
    ids = wrapped(tok, blocks)
    starts, maskable = word_starts(tok, ids, family), ~is_special(tok, ids)
    multi = [p for p, _ in split_words(torch.zeros_like(ids, dtype=torch.bool), starts, maskable) if p > 1]
    assert len(multi) > 500, "the tokenizer should split many words into several pieces"

    out = bound(tok, whole_word=True, seed=3)(blocks)
    selected = out["labels"] != IGNORE
    assert not (selected & ~maskable).any()
    words = split_words(selected, starts, maskable)
    partial = [(p, c) for p, c in words if 0 < c < p]
    assert not partial, f"{len(partial)} words partly selected, e.g. {partial[:5]}"
    chosen_multi = sum(1 for p, c in words if p > 1 and c == p)
    assert chosen_multi > 0.1 * len(multi), "words of several pieces must be selected too"
    assert selected.sum().item() / maskable.sum().item() == pytest.approx(0.15, abs=0.03)
    # the 80/10/10 split applies to whole-word selections as well
    to_mask = (out["input_ids"] == tok.role_id("mask")) & selected
    assert to_mask.sum().item() / selected.sum().item() == pytest.approx(0.8, abs=0.05)

    # the check above has teeth: piece-wise masking splits words
    piecewise = bound(tok, whole_word=False, seed=3)(blocks)["labels"] != IGNORE
    assert any(0 < c < p for p, c in split_words(piecewise, starts, maskable))


# -- errors ------------------------------------------------------------------------------------
def test_bind_needs_a_mask_token() -> None:
    gpt = train_tokenizer(DOCS[:100], TokenizerSpec(kind="byte_level_bpe", specials="gpt", vocab_size=300))
    with pytest.raises(UserError, match=r"no mask, cls, sep token \(mask: one of <mask> \[MASK\].*which masked LM needs"):
        MaskedLM().bind(gpt)


def test_masking_before_bind_is_an_error(streams: dict) -> None:
    with pytest.raises(RuntimeError, match="bind"):
        MaskedLM()(blocks_of(streams["bert"], 2))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mask_prob": 0.0},
        {"mask_prob": 1.0},
        {"mask_prob": -0.1},
        {"mask_prob": 1.5},
        {"mask_token_prob": 0.95, "random_token_prob": 0.1},
        {"mask_token_prob": 1.2, "random_token_prob": 0.0},
    ],
    ids=["zero", "one", "negative", "above-one", "sum-above-one", "mask-above-one"],
)
def test_invalid_probabilities_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="mask_prob"):
        MaskedLM(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"mask_token_prob": -0.1, "random_token_prob": 0.1}, {"mask_token_prob": 0.8, "random_token_prob": -0.2}],
    ids=["negative-mask-token", "negative-random-token"],
)
def test_negative_replacement_probabilities_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        MaskedLM(**kwargs)


# -- DataLoader workers ------------------------------------------------------------------------
def test_each_dataloader_worker_draws_its_own_masks(tokenizers: dict, streams: dict) -> None:
    tok = tokenizers["bert"]
    block = blocks_of(streams["bert"], 1)[0]
    objective = bound(tok, seed=0)
    objective(blocks_of(streams["bert"], 2))  # used in the main process first: workers must still reseed
    dataset = [block.copy() for _ in range(8)]  # identical blocks everywhere
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=objective)
    batches = [b["labels"] for b in loader]  # in order: batches 0, 2 from worker 0; 1, 3 from worker 1
    assert len(batches) == 4
    by_worker = [torch.cat(batches[0::2]), torch.cat(batches[1::2])]
    patterns = [{tuple(row.tolist()) for row in labels} for labels in by_worker]
    assert len(patterns[0]) == 4 and len(patterns[1]) == 4  # fresh masks within each worker
    assert not patterns[0] & patterns[1], "two workers drew the same masks"
    # and neither replays the main process's stream
    main = bound(tok, seed=0)
    main_rows = {tuple(row.tolist()) for row in torch.cat([main(dataset[:2]) ["labels"] for _ in range(2)])}
    assert not main_rows & (patterns[0] | patterns[1])
