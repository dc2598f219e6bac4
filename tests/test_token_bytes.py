"""Tokenizer.token_bytes: the text bytes each token id stands for, the denominator of bits per byte.
For each way a tokenizer spells text, the bytes of a text's ids add up to the text's UTF-8 bytes."""

from __future__ import annotations


import pytest

from conftest import byte_fallback_bpe
from lmforge.data.tokenizer import TokenizerSpec, train_tokenizer
from lmforge.tokenizer import Tokenizer

TEXT = "naïve café — 東京 costs 3€, the cat said"
CORPUS = [f"the cat and the dog {i} said hello to the naïve café — 東京 costs 3€, or so" for i in range(40)]
ENGLISH = [f"the cat and the dog {i} said hello to the baker, who costs less" for i in range(40)]


def _bytes_of(tokenizer: Tokenizer, ids: list[int]) -> int:
    table = tokenizer.token_bytes()
    return sum(table[i] for i in ids)


def test_byte_level_bpe_counts_each_byte_once() -> None:
    tokenizer = train_tokenizer(ENGLISH, TokenizerSpec(kind="byte_level_bpe", vocab_size=300, min_frequency=1))
    ids = tokenizer.encode(TEXT)  # the non-ASCII characters were never seen: pieces of their bytes
    assert len(ids) > len(TEXT.split()) and _bytes_of(tokenizer, ids) == len(TEXT.encode())
    assert len(tokenizer.token_bytes()) == tokenizer.vocab_size
    assert tokenizer.token_bytes()[tokenizer.eos_id] == 0
    assert tokenizer.token_bytes()[tokenizer.backend.token_to_id("Ġ")] == 1  # a space, not a 2-byte "Ġ"


@pytest.mark.parametrize("kind, specials", [("bpe", "gpt"), ("unigram", "t5")])
def test_metaspace_counts_the_marker_as_one_space(kind: str, specials: str) -> None:
    tokenizer = train_tokenizer(CORPUS, TokenizerSpec(kind=kind, specials=specials, vocab_size=110, min_frequency=1))
    assert tokenizer.backend.decode(tokenizer.encode(TEXT)) == TEXT  # every character has a token
    # a text is given a leading "▁" unless it starts with a space: that one space is counted
    assert _bytes_of(tokenizer, tokenizer.encode(TEXT)) == len(TEXT.encode()) + 1
    assert _bytes_of(tokenizer, tokenizer.encode(" " + TEXT)) == len((" " + TEXT).encode())


def test_byte_fallback_tokens_are_one_byte() -> None:
    tokenizer = byte_fallback_bpe(ENGLISH, vocab_size=120)
    ids = tokenizer.encode(TEXT)
    pieces = [tokenizer.backend.id_to_token(i) for i in ids]
    assert "<0xE2>" in pieces and "<0xE6>" in pieces  # "—" and "東" come as their bytes
    assert _bytes_of(tokenizer, ids) == len(TEXT.encode()) + 1  # + the "▁" prepended to the text
    assert [tokenizer.token_bytes()[tokenizer.role_id(r)] for r in ("unk", "bos", "eos")] == [0, 0, 0]


def test_wordpiece_counts_word_text_and_no_spaces() -> None:
    tokenizer = train_tokenizer(CORPUS, TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=80,
                                                      min_frequency=1))
    ids = tokenizer.encode(TEXT)
    assert any(tokenizer.backend.id_to_token(i).startswith("##") for i in ids)
    assert tokenizer.role_id("unk") not in ids
    assert _bytes_of(tokenizer, ids) == len("".join(TEXT.split()).encode())


def test_added_special_tokens_stand_for_no_text() -> None:
    tokenizer = train_tokenizer(ENGLISH, TokenizerSpec(vocab_size=300, min_frequency=1)).with_special_tokens(["<<"])
    ids = tokenizer.encode("the cat << said")
    assert tokenizer.backend.token_to_id("<<") in ids
    assert _bytes_of(tokenizer, ids) == len("the cat  said".encode())
