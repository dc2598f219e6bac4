"""Text augmentation: each transform's statistics and determinism, the corpus hook, the CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import CONFIGS, SENTENCES
from lmforge.cli import main
from lmforge.data import (
    BackTranslation, DataSource, HFTranslator, SentencePermutation, SpanMasking, TextCorpus, TokenizerSpec,
    WordDeletion, WordSwap, apply_augmentations, train_tokenizer,
)
from lmforge.data.augment import Augmentation
from lmforge.data.sentences import split_sentences
from lmforge.errors import UserError
from lmforge.objectives import CausalLM

SYNONYMS = {"quick": "fast", "large": "big", "small": "little", "model": "network"}


def reverse_words(texts: list[str]) -> list[str]:
    return [" ".join(reversed(t.split())) for t in texts]


def toy_round_trip(texts: list[str]) -> list[str]:
    """A deterministic stand-in for en -> xx -> en: word order survives, some words change."""
    pivot = reverse_words([" ".join(SYNONYMS.get(w, w) for w in t.split()) for t in texts])
    return reverse_words(pivot)


def words(n_texts: int = 200, n_words: int = 50) -> list[str]:
    rng = np.random.default_rng(0)
    vocab = " ".join(SENTENCES).split()
    return [" ".join(rng.choice(vocab, n_words)) for _ in range(n_texts)]


def documents() -> list[str]:
    return [" ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(4)) for i in range(12)]


TRANSFORMS = [
    WordDeletion(0.2), WordSwap(0.2), SpanMasking(0.3, mean_span=2), SentencePermutation(),
    BackTranslation(toy_round_trip, p=0.5),
]


@pytest.mark.parametrize("transform", TRANSFORMS, ids=lambda t: type(t).__name__)
def test_same_seed_same_output_other_seed_other_output(transform: Augmentation) -> None:
    texts = documents()
    first = apply_augmentations(texts, [transform], seed=1)
    assert first == apply_augmentations(texts, [transform], seed=1)
    assert first != apply_augmentations(texts, [transform], seed=2)
    assert first != texts and len(first) == len(texts)


def test_a_transform_added_at_the_end_leaves_the_earlier_draws_unchanged() -> None:
    texts = documents()
    once = apply_augmentations(texts, [WordDeletion(0.3)], seed=5)
    assert apply_augmentations(texts, [WordDeletion(0.3), WordSwap(0.0)], seed=5) == once
    assert apply_augmentations(texts, [WordDeletion(0.3), SentencePermutation()], seed=5) != once


def test_word_deletion_rate_order_and_never_empty() -> None:
    texts = words()
    out = WordDeletion(0.3)(texts, np.random.default_rng(0))
    kept = sum(len(t.split()) for t in out) / sum(len(t.split()) for t in texts)
    assert kept == pytest.approx(0.7, abs=0.03)
    for before, after in zip(texts, out):  # the kept words are a subsequence, in order
        remaining = iter(before.split())
        assert all(w in remaining for w in after.split())
    everything = WordDeletion(1.0)(texts + ["one", ""], np.random.default_rng(0))
    assert [len(t.split()) for t in everything[:-2]] == [1] * len(texts)
    assert everything[-2:] == ["one", ""]


def test_word_swap_keeps_the_words_and_changes_their_order() -> None:
    texts = words(50, 20)
    out = WordSwap(0.1)(texts, np.random.default_rng(0))
    assert all(Counter(a.split()) == Counter(b.split()) for a, b in zip(texts, out))
    assert sum(a != b for a, b in zip(texts, out)) > 40  # repeated words can make a swap invisible
    assert WordSwap(0.0)(texts, np.random.default_rng(0)) == texts


def test_span_masking_masks_the_fraction_in_contiguous_spans() -> None:
    texts = words(100, 40)
    out = SpanMasking(p=0.25, mean_span=3.0, mask_token="[MASK]")(texts, np.random.default_rng(0))
    runs = []
    for before, after in zip(texts, out):
        masked = [w == "[MASK]" for w in after.split()]
        assert len(masked) == 40 and sum(masked) == 10
        assert all(a == b for a, b, m in zip(before.split(), after.split(), masked) if not m)
        runs += [len(r) for r in "".join("x" if m else " " for m in masked).split()]
    assert np.mean(runs) > 2.0  # spans, not scattered single words
    single = SpanMasking(p=0.25, mean_span=1.0)(texts, np.random.default_rng(0))
    assert all(t.split().count("<mask>") == 10 for t in single)


def test_sentence_permutation_keeps_the_sentences() -> None:
    texts = documents()
    out = SentencePermutation()(texts, np.random.default_rng(0))
    assert all(sorted(split_sentences(a)) == sorted(split_sentences(b)) for a, b in zip(texts, out))
    assert sum(a != b for a, b in zip(texts, out)) >= len(texts) - 1
    assert SentencePermutation()(["Only one sentence here."], np.random.default_rng(0)) == ["Only one sentence here."]


def test_back_translation_with_a_toy_translator_and_an_import_path() -> None:
    texts = ["the quick fox", "a large model", "nothing to change"]
    assert BackTranslation(toy_round_trip)(texts, np.random.default_rng(0)) == [
        "the fast fox", "a big network", "nothing to change",
    ]
    by_path = BackTranslation(f"{__name__}.toy_round_trip")
    assert by_path.translator is toy_round_trip
    assert BackTranslation(f"{__name__}:reverse_words")(texts, np.random.default_rng(0))[0] == "fox quick the"
    sent: list[list[str]] = []
    partial = BackTranslation(lambda batch: sent.append(batch) or toy_round_trip(batch), p=0.5)
    out = partial(words(100, 5), np.random.default_rng(0))
    assert 30 < len(sent[0]) < 70 and len(out) == 100  # only the drawn texts go to the translator


@pytest.mark.parametrize(
    "make",
    [
        lambda: WordDeletion(1.5), lambda: WordSwap(-0.1), lambda: SpanMasking(p=2.0),
        lambda: SpanMasking(mean_span=0.5), lambda: SpanMasking(mask_token="two words"),
        lambda: BackTranslation("no_such_module.translate"), lambda: BackTranslation("json.JSONDecoder"),
        lambda: BackTranslation("json"), lambda: BackTranslation(toy_round_trip, p=1.1),
        lambda: HFTranslator(batch_size=0),
    ],
)
def test_bad_arguments_are_user_errors(make) -> None:
    with pytest.raises(UserError):
        make()


def test_a_translator_that_loses_texts_is_a_user_error() -> None:
    with pytest.raises(UserError, match="one translation per text"):
        BackTranslation(lambda batch: batch[:-1])(["a b", "c d"], np.random.default_rng(0))


def test_hf_translator_loads_nothing_until_called() -> None:
    translator = HFTranslator("some/forward-model", "some/backward-model", device="cpu")
    assert translator._models == {} and "some/forward-model" in repr(translator)


def test_corpus_augments_the_training_documents_only(tiny_corpus: Path) -> None:
    augment = [BackTranslation(toy_round_trip), WordSwap(0.2)]
    dm = TextCorpus(source=DataSource(paths=str(tiny_corpus)), val_fraction=0.25, seq_len=16, augment=augment)
    dm.objective = CausalLM()
    train, val = dm.splits()
    tokenizer = train_tokenizer(train, TokenizerSpec(vocab_size=300))
    encoded: list[list[str]] = []
    encode_batch = tokenizer.encode_batch
    tokenizer.encode_batch = lambda texts: encoded.append(list(texts)) or encode_batch(texts)
    dm.tokenizer = tokenizer
    dm.setup("fit")  # prepares token shards: one chunk of documents, in corpus order
    labelled = list(dm.labelled_documents())
    augmented = iter(apply_augmentations(train, augment, dm.seed))
    assert encoded == [[next(augmented) if split == "train" else doc for split, doc in labelled]]
    assert encoded[0] != [doc for _, doc in labelled] and dm.splits() == (train, val)  # the splits stay as read


def test_cli_takes_an_augmentation_list(capsys: pytest.CaptureFixture) -> None:
    augment = [
        {"class_path": "lmforge.data.SpanMasking", "init_args": {"p": 0.2}},
        {"class_path": "lmforge.data.BackTranslation", "init_args": {
            "translator": {"class_path": "lmforge.data.HFTranslator", "init_args": {"device": "cuda"}}}},
        {"class_path": "lmforge.data.BackTranslation", "init_args": {"translator": f"{__name__}.toy_round_trip"}},
    ]
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(CONFIGS / "gpt" / "tiny.yaml"), "--data.augment", json.dumps(augment), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]["augment"]
    assert [a["class_path"] for a in printed] == [a["class_path"] for a in augment]
    assert printed[0]["init_args"] == {"p": 0.2, "mean_span": 3.0, "mask_token": "<mask>"}
    assert printed[1]["init_args"]["translator"]["init_args"]["device"] == "cuda"
    assert printed[2]["init_args"]["translator"].endswith("toy_round_trip")
