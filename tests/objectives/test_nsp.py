"""BERT's next-sentence pairs: balance, contiguity, segment ids, lengths, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmforge.data.tokenizer import TokenizerSpec, train_tokenizer
from lmforge.objectives import MaskedLM

SEQ_LEN = 64


def documents(n_docs: int = 60, seed: int = 0) -> list[list[list[int]]]:
    """Documents of sentences whose token ids say where they come from: doc * 1000 + position."""
    rng = np.random.default_rng(seed)
    docs = []
    for d in range(n_docs):
        position, sentences = 0, []
        for _ in range(int(rng.integers(2, 15))):
            n = int(rng.integers(3, 20))
            sentences.append([d * 1000 + position + k for k in range(n)])
            position += n
        docs.append(sentences)
    return docs


def test_pairs_are_balanced_contiguous_and_fit() -> None:
    examples = MaskedLM(nsp=True).build_examples(documents(), SEQ_LEN, seed=0)
    assert len(examples) > 100
    randoms = [r for _, _, r in examples]
    assert 0.4 < np.mean(randoms) < 0.6
    for a, b, is_random in examples:
        assert len(a) >= 1 and len(b) >= 1 and len(a) + len(b) <= SEQ_LEN - 3
        doc_a = a[0] // 1000
        assert np.all(np.diff(a) == 1), "A is a run of consecutive sentences"
        assert np.all(np.diff(b) == 1), "B is a run of consecutive sentences"
        if is_random:
            assert b[0] // 1000 != doc_a, "a random B comes from another document"
        else:
            assert b[0] // 1000 == doc_a and b[0] == a[-1] + 1, "the true B continues A"


def test_pairs_are_deterministic_from_the_seed() -> None:
    docs = documents()
    first = MaskedLM(nsp=True).build_examples(docs, SEQ_LEN, seed=3)
    again = MaskedLM(nsp=True).build_examples(docs, SEQ_LEN, seed=3)
    other = MaskedLM(nsp=True).build_examples(docs, SEQ_LEN, seed=4)
    same = lambda x, y: len(x) == len(y) and all(  # noqa: E731
        np.array_equal(a1, a2) and np.array_equal(b1, b2) and r1 == r2 for (a1, b1, r1), (a2, b2, r2) in zip(x, y)
    )
    assert same(first, again) and not same(first, other)


def test_collate_builds_cls_a_sep_b_sep_with_segments_and_labels() -> None:
    texts = ["the cat sat on the mat.", "a dog ran in the park.", "birds sing in the morning."] * 20
    tok = train_tokenizer(texts, TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=200, lowercase=True))
    objective = MaskedLM(nsp=True, mask_prob=0.15)
    objective.bind(tok)
    a1, b1 = np.array(tok.encode("the cat sat")), np.array(tok.encode("on the mat."))
    a2, b2 = np.array(tok.encode("a dog")), np.array(tok.encode("birds sing in the morning."))
    batch = objective([(a1, b1, 0), (a2, b2, 1)])
    cls, sep, pad = tok.role_id("cls"), tok.role_id("sep"), tok.role_id("pad")
    lengths = [len(a1) + len(b1) + 3, len(a2) + len(b2) + 3]
    assert batch["input_ids"].shape == (2, max(lengths))
    assert batch["next_sentence_label"].tolist() == [0, 1]
    for row, (a, b) in enumerate([(a1, b1), (a2, b2)]):
        n = lengths[row]
        original = torch.where(batch["labels"][row] != -100, batch["labels"][row], batch["input_ids"][row])
        assert original[:n].tolist() == [cls, *a.tolist(), sep, *b.tolist(), sep]
        assert batch["token_type_ids"][row, : len(a) + 2].eq(0).all()
        assert batch["token_type_ids"][row, len(a) + 2 : n].eq(1).all()
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (max(lengths) - n)
        assert batch["input_ids"][row, n:].eq(pad).all() and batch["labels"][row, n:].eq(-100).all()


def test_a_lone_document_still_gives_pairs_or_none_without_failing() -> None:
    docs = documents(n_docs=1)
    examples = MaskedLM(nsp=True).build_examples(docs, SEQ_LEN, seed=0)
    assert all(len(a) + len(b) <= SEQ_LEN - 3 for a, b, _ in examples)


@pytest.mark.parametrize("nsp", [False, True])
def test_objective_declares_what_data_it_needs(nsp: bool) -> None:
    assert MaskedLM(nsp=nsp).sentences is nsp
