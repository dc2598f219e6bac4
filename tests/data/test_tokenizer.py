"""Tests for training, loading and using tokenizers."""

from __future__ import annotations

import random
import re
import warnings
from pathlib import Path

import pytest
import torch

from lmforge.data.tokenizer import SPECIAL_TOKENS, TokenizerSpec, train_tokenizer, train_tokenizer_cached
from lmforge.errors import UserError, UserInputWarning
from lmforge.tokenizer import Tokenizer

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


def make_corpus(n: int = 600, seed: int = 1234) -> list[str]:
    """Deterministic English-like sentences, some capitalised, with punctuation and numbers."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        s = (
            f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} the {rng.choice(ADJECTIVES)} "
            f"{rng.choice(NOUNS)} {rng.choice(ENDINGS)}"
        )
        if i % 3 == 0:
            s = s[0].upper() + s[1:] + "."
        if i % 7 == 0:
            s += f" It took {rng.randint(2, 999)} minutes, or so they say!"
        out.append(s)
    return out


CORPUS = make_corpus()
VOCAB = 400
KINDS = [("byte_level_bpe", "gpt"), ("bpe", "gpt"), ("wordpiece", "bert"), ("unigram", "t5")]
KIND_IDS = [f"{k}-{f}" for k, f in KINDS]
EOS = {"gpt": "<|endoftext|>", "bert": "[SEP]", "roberta": "</s>", "t5": "</s>"}

# Novel combinations of corpus words: lowercase ascii, no punctuation.
PLAIN = [
    "the hungry captain describes the golden violin under the bridge",
    "my sister juggles the empty basket at the market",
    "a stranger measures the ancient castle twice",
    "the king forgets the shiny mirror",
]
UNICODE = [
    "naïve café — 東京",
    "Emoji 🤗 and ümlauts: Grüße, Ελληνικά, русский.",
    "  leading spaces, double  spaces, trailing tab\t",
    "line one\nline two\r\n\nTHE END!",
    "The Baker OPENS the Golden Violin.",
]


def train(kind: str, family: str, vocab_size: int = VOCAB, **kwargs: object) -> Tokenizer:
    spec = TokenizerSpec(kind=kind, specials=family, vocab_size=vocab_size, **kwargs)  # type: ignore[arg-type]
    return train_tokenizer(CORPUS, spec)


@pytest.fixture(scope="module")
def trained() -> dict[tuple[str, str], Tokenizer]:
    return {(kind, family): train(kind, family) for kind, family in KINDS}


@pytest.fixture(params=KINDS, ids=KIND_IDS)
def case(request: pytest.FixtureRequest, trained: dict) -> tuple[str, str, Tokenizer]:
    kind, family = request.param
    return kind, family, trained[(kind, family)]


def test_vocab_size_within_request(case: tuple[str, str, Tokenizer]) -> None:
    _, family, tok = case
    assert len(SPECIAL_TOKENS[family]) < tok.vocab_size <= VOCAB
    assert tok.vocab_size == tok.backend.get_vocab_size(with_added_tokens=True)


def test_special_tokens_first_and_in_order(case: tuple[str, str, Tokenizer]) -> None:
    _, family, tok = case
    expected = SPECIAL_TOKENS[family]
    assert tok.special_tokens() == expected
    assert [tok.backend.token_to_id(t) for t in expected] == list(range(len(expected)))


def test_eos_is_the_family_token(case: tuple[str, str, Tokenizer]) -> None:
    _, family, tok = case
    assert tok.eos_id == tok.backend.token_to_id(EOS[family])
    assert tok.backend.id_to_token(tok.eos_id) == EOS[family]


@pytest.mark.parametrize("text", PLAIN)
def test_round_trip_plain_text(case: tuple[str, str, Tokenizer], text: str) -> None:
    _, _, tok = case
    ids = tok.encode(text)
    assert len(ids) > 0
    assert tok.decode(ids) == text


@pytest.mark.parametrize("text", PLAIN + UNICODE + ["", " ", "\n\n"])
def test_byte_level_round_trip_is_exact(trained: dict, text: str) -> None:
    tok = trained[("byte_level_bpe", "gpt")]
    assert tok.decode(tok.encode(text)) == text


def test_wordpiece_lowercase_uses_bert_normalizer() -> None:
    lower = train("wordpiece", "bert", lowercase=True)
    assert lower.backend.normalizer.__class__.__name__ == "BertNormalizer"
    # lowercases and (since lowercase implies strip_accents) removes accents
    assert lower.decode(lower.encode("The Baker OPENS the Golden Violin")) == "the baker opens the golden violin"
    assert lower.decode(lower.encode("Café")) == "cafe"
    cased = train("wordpiece", "bert", lowercase=False)
    assert cased.decode(cased.encode("The baker opens the window")) == "The baker opens the window"
    assert cased.encode("The baker") != cased.encode("the baker")


def test_encode_adds_no_special_tokens(case: tuple[str, str, Tokenizer]) -> None:
    _, family, tok = case
    special_ids = {tok.backend.token_to_id(t) for t in SPECIAL_TOKENS[family]}
    for text in PLAIN + ["a b"]:
        ids = tok.encode(text)
        assert ids and not special_ids & set(ids)
        assert ids == tok.backend.encode(text, add_special_tokens=False).ids


def test_encode_batch_equals_encode(case: tuple[str, str, Tokenizer]) -> None:
    _, _, tok = case
    texts = PLAIN + CORPUS[:20] + ["", "naïve café"]
    batch = tok.encode_batch(texts)
    assert batch == [tok.encode(t) for t in texts]
    assert tok.encode_batch([]) == []


@pytest.mark.parametrize(
    ("family", "kind", "cls", "sep"),
    [("bert", "wordpiece", "[CLS]", "[SEP]"), ("roberta", "byte_level_bpe", "<s>", "</s>")],
)
def test_encoder_post_processor_wraps_text(family: str, kind: str, cls: str, sep: str) -> None:
    tok = train(kind, family)
    ids = tok.backend.encode("a b").ids
    assert ids[0] == tok.backend.token_to_id(cls)
    assert ids[-1] == tok.backend.token_to_id(sep)
    assert ids[1:-1] == tok.encode("a b")
    pair = tok.backend.encode("a", "b").ids
    assert pair == [ids[0], *tok.encode("a"), ids[-1], *tok.encode("b"), ids[-1]]


def test_decoder_families_have_no_post_processor(trained: dict) -> None:
    for key in [("byte_level_bpe", "gpt"), ("bpe", "gpt"), ("unigram", "t5")]:
        tok = trained[key]
        assert tok.backend.encode("a b").ids == tok.encode("a b")


@pytest.mark.parametrize(("kind", "family"), KINDS[:2], ids=KIND_IDS[:2])
def test_training_is_deterministic(kind: str, family: str, trained: dict) -> None:
    again = train(kind, family)
    assert again.fingerprint == trained[(kind, family)].fingerprint
    assert again.to_str() == trained[(kind, family)].to_str()


@pytest.mark.parametrize(("kind", "family"), KINDS, ids=KIND_IDS)
def test_cached_training_gives_every_process_the_same_tokenizer(
    kind: str, family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # WordPiece and Unigram training in `tokenizers` is not deterministic (hash-map order),
    # so processes of one run must share one trained tokenizer through the cache
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path))
    spec = TokenizerSpec(kind=kind, specials=family, vocab_size=VOCAB)
    first = train_tokenizer_cached(CORPUS, spec)
    assert len(list((tmp_path / "tokenizers").glob("*.json"))) == 1
    assert train_tokenizer_cached(CORPUS, spec).fingerprint == first.fingerprint
    assert train_tokenizer_cached(CORPUS, spec, wait=True, timeout=0).fingerprint == first.fingerprint
    other = train_tokenizer_cached(CORPUS[:-1], spec)  # other texts: another cache entry
    assert len(list((tmp_path / "tokenizers").glob("*.json"))) == 2
    assert other.vocab_size > 0


@pytest.mark.parametrize(("kind", "family", "hint"), [
    ("byte_level_bpe", "gpt", " (a merge must occur min_frequency=2 times or more); add text, lower min_frequency,"),
    ("wordpiece", "bert", " (a merge must occur min_frequency=2 times or more); add text, lower min_frequency,"),
    ("unigram", "t5", "; add text,"),  # Unigram training has no min_frequency
])
def test_a_vocabulary_smaller_than_asked_for_is_one_warning(kind: str, family: str, hint: str) -> None:
    with pytest.warns(UserInputWarning) as record:
        tok = train_tokenizer(CORPUS, TokenizerSpec(kind=kind, specials=family, vocab_size=30522))
    obtained = tok.vocab_size
    assert VOCAB < obtained < 30522
    assert [str(w.message) for w in record if w.category is UserInputWarning] == [
        f"The {kind} tokenizer has {obtained} tokens, not the vocab_size=30522 asked for: the corpus is too small "
        f"for that many{hint} or ask for vocab_size={obtained}."
    ]
    with warnings.catch_warnings():  # a vocabulary of the size asked for: no warning
        warnings.simplefilter("error", UserInputWarning)
        assert train_tokenizer(CORPUS, TokenizerSpec(kind=kind, specials=family, vocab_size=VOCAB)).vocab_size == VOCAB


def test_a_run_s_tokenizer_warns_when_trained_and_not_when_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  tiny_corpus: Path) -> None:
    from lmforge.data import DataSource, TextCorpus

    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path))
    def corpus() -> TextCorpus:
        return TextCorpus(source=DataSource(paths=str(tiny_corpus)), tokenizer=TokenizerSpec(vocab_size=30522))

    asked = r"^The byte_level_bpe tokenizer has \d+ tokens, not the vocab_size=30522 asked for"
    with pytest.warns(UserInputWarning, match=asked):
        trained = corpus().tokenizer
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserInputWarning)
        assert corpus().tokenizer.fingerprint == trained.fingerprint  # from the cache: warned once, when trained


def test_waiting_for_a_tokenizer_nobody_trains_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path))
    with pytest.raises(UserError, match="data.tokenizer.path"):
        train_tokenizer_cached(CORPUS, TokenizerSpec(vocab_size=VOCAB), wait=True, timeout=0)


def test_fingerprint_depends_on_vocab_size(case: tuple[str, str, Tokenizer]) -> None:
    kind, family, tok = case
    smaller = train(kind, family, vocab_size=VOCAB - 50)
    assert smaller.vocab_size < tok.vocab_size
    assert smaller.fingerprint != tok.fingerprint
    assert re.fullmatch(r"[0-9a-f]{16}", tok.fingerprint)


def test_save_and_load_keeps_tokenization(case: tuple[str, str, Tokenizer], tmp_path: Path) -> None:
    _, family, tok = case
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    loaded = Tokenizer.from_file(path)
    texts = PLAIN + CORPUS + UNICODE
    assert loaded.encode_batch(texts) == tok.encode_batch(texts)
    assert loaded.vocab_size == tok.vocab_size
    assert loaded.eos_id == tok.eos_id
    assert loaded.special_tokens() == SPECIAL_TOKENS[family]
    assert loaded.backend.encode("a b").ids == tok.backend.encode("a b").ids  # post-processor kept


def test_save_and_load_keeps_fingerprint(
    case: tuple[str, str, Tokenizer], tmp_path: Path
) -> None:
    kind, _, tok = case
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    assert Tokenizer.from_file(path).fingerprint == tok.fingerprint
    assert Tokenizer.from_file(str(path)).to_str() == tok.to_str()
    assert Tokenizer.from_str(tok.to_str()).fingerprint == tok.fingerprint


def test_reloaded_fingerprint_is_stable(case: tuple[str, str, Tokenizer], tmp_path: Path) -> None:
    _, _, tok = case
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    once = Tokenizer.from_file(path)
    once.save(tmp_path / "again.json")
    assert Tokenizer.from_file(tmp_path / "again.json").fingerprint == once.fingerprint
    assert Tokenizer.from_str(once.to_str()).to_str() == once.to_str()


def test_from_file_reads_tokenizer_json_only(trained: dict, tmp_path: Path) -> None:
    (tmp_path / "model.ckpt").write_bytes(b"")
    for other in (tmp_path / "model.ckpt", tmp_path):  # checkpoints and folders are read by lmforge.start
        with pytest.raises(UserError, match=re.escape(f"'{other}' is not a tokenizer.json")):
            Tokenizer.from_file(other)


def test_from_file_missing(tmp_path: Path) -> None:
    for name in ("missing.json",):
        with pytest.raises(UserError, match=re.escape(f"'{tmp_path / name}'")):
            Tokenizer.from_file(tmp_path / name)


@pytest.mark.parametrize("content", ['{"version": "1.0", "model": ', "", "[1, 2, 3]"])
def test_from_file_malformed(tmp_path: Path, content: str) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=re.escape(f"'{path}' is not a valid tokenizer.json")):
        Tokenizer.from_file(path)


@pytest.mark.parametrize(("family", "kind"), [("gpt", "byte_level_bpe"), ("bert", "wordpiece"), ("t5", "unigram")])
def test_vocab_too_small_for_special_tokens(family: str, kind: str) -> None:
    too_small = len(SPECIAL_TOKENS[family])
    with pytest.raises(UserError, match=f"vocab_size={too_small}"):
        train(kind, family, vocab_size=too_small)
    with pytest.raises(UserError, match="vocab_size=1 "):
        train(kind, family, vocab_size=1)


def test_byte_level_vocab_below_its_alphabet_is_refused() -> None:
    # byte-level BPE keeps all 256 bytes: a smaller vocabulary cannot be honoured
    with pytest.raises(UserError, match="at least 257"):
        train("byte_level_bpe", "gpt", vocab_size=200)
    assert train("byte_level_bpe", "gpt", vocab_size=257).vocab_size == 257


@pytest.mark.parametrize("kind,family", [("byte_level_bpe", "gpt"), ("bpe", "gpt"), ("wordpiece", "bert"),
                                         ("unigram", "t5")])
def test_long_texts_encoded_in_pieces_give_the_ids_of_the_whole(kind: str, family: str) -> None:
    from lmforge.tokenizer import PIECE_CHARS, _pieces

    words = "Pretraining, at scale: the model reads 1,024 tokens\n\nthen   predicts the next one. ".split(" ")
    rng = random.Random(0)
    text = " ".join(rng.choice(words) for _ in range(3 * PIECE_CHARS // 5))
    assert len(text) > 2 * PIECE_CHARS and len(_pieces(text)) >= 2 and "".join(_pieces(text)) == text
    tok = train_tokenizer([text[:5000]], TokenizerSpec(kind=kind, specials=family, vocab_size=300, min_frequency=1))
    whole = tok.backend.encode(text, add_special_tokens=False).ids
    assert tok.encode_batch(["short one", text]) == [tok.encode("short one"), whole]
    assert tok._pieces_exact is True
