"""Domain vocabulary: coverage of a corpus by a tokenizer, adding domain words, new embeddings."""

from __future__ import annotations

import json
import string
import warnings
from pathlib import Path

import pytest
import torch

from lmforge.cli import main
from lmforge.data.tokenizer import TokenizerSpec, train_tokenizer
from lmforge.tokenizer import Tokenizer
from lmforge.data.vocab import (
    CoverageReport,
    coverage,
    domain_words,
    extend_tokenizer,
    format_report,
    init_new_embeddings,
)
from lmforge.errors import UserError

GENERAL = [
    "The quick brown fox jumps over the lazy dog.",
    "A language model predicts the next token from the tokens before it.",
    "Pretraining on a large corpus teaches a model the statistics of text.",
    "Every document ends with an end of document token before the next begins.",
    "Lightning runs the training loop, and the task computes the loss.",
    "Small models overfit small corpora quickly, which is what a test wants.",
    "People walk their dogs in the park when the weather is warm and bright.",
    "She reads the news at breakfast and writes letters in the evening.",
] * 3

BIO = [
    "The kinase binds the receptor and the protein.",
    "Phosphorylation of the protein by the kinase activates the receptor.",
    "The antibody blocks the receptor, and the kinase stops phosphorylation.",
    "Kinase inhibitors reduce phosphorylation of the receptor protein.",
    "The protein kinase and the antibody bind the same receptor.",
]

# words of GENERAL (and of each other) that contain an added word, or that it begins
UNRELATED = [
    "proteins proteinase myprotein phosphorylations kinases",
    "The news is warm and the dogs walk in the park.",
]


def char_level_tokenizer() -> Tokenizer:
    """Uncased WordPiece with single characters only: a word of n letters is n pieces, one with a
    character outside a-z is a single [UNK]."""
    letters = " ".join(c + c for c in string.ascii_lowercase)  # each letter as a start and as ##
    return train_tokenizer([letters], TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=6, min_frequency=1,
                                                    lowercase=True))


# Hand-counted for char_level_tokenizer (16 words, 9 distinct):
#   the x4 (3 pieces), kinase x4 (6), receptor x2 (8), binds (5), a (1), il2 ([UNK], 1),
#   and (3), inhibitors (10), block (5)
EXACT_DOCS = [
    "The kinase binds the receptor.",
    "A kinase, IL2 and the receptor!",
    "Kinase inhibitors block the kinase.",
]


@pytest.fixture(scope="module")
def tokenizers_by_kind() -> dict[str, Tokenizer]:
    """Tokenizers trained on general text only, so domain words come out in pieces."""
    specs = {
        "bert-uncased": TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=180, min_frequency=1, lowercase=True),
        "bert-cased": TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=180, min_frequency=1),
        "gpt": TokenizerSpec(kind="byte_level_bpe", specials="gpt", vocab_size=360, min_frequency=1),
        "bpe": TokenizerSpec(kind="bpe", specials="gpt", vocab_size=150, min_frequency=1),
    }
    return {name: train_tokenizer(GENERAL, spec) for name, spec in specs.items()}


def replace_once(ids: list[int], pieces: list[int], new_id: int) -> list[int]:
    """``ids`` with the first run equal to ``pieces`` replaced by ``new_id``."""
    for i in range(len(ids) - len(pieces) + 1):
        if ids[i : i + len(pieces)] == pieces:
            return ids[:i] + [new_id] + ids[i + len(pieces) :]
    raise AssertionError(f"{pieces} not in {ids}")


# -- coverage ------------------------------------------------------------------------------
def test_coverage_numbers_counted_by_hand() -> None:
    report = coverage(char_level_tokenizer(), iter(EXACT_DOCS), top=3, min_count=2)
    assert (report.documents, report.words, report.distinct_words) == (3, 16, 9)
    assert report.pieces == 12 + 24 + 16 + 5 + 1 + 1 + 3 + 10 + 5 == 77
    assert report.pieces_per_word == pytest.approx(77 / 16)
    assert report.split_words == 14  # all but "a" and "il2"
    assert report.split_fraction == pytest.approx(14 / 16)
    assert report.unknown_pieces == 1 and report.unknown_rate == pytest.approx(1 / 77)
    # tokens saved = count * (pieces - 1): kinase 4*5, receptor 2*7, the 4*2
    assert [(w.word, w.count, w.saving) for w in report.top] == [("kinase", 4, 20), ("receptor", 2, 14), ("the", 4, 8)]
    assert report.top[0].pieces == ["k", "##i", "##n", "##a", "##s", "##e"]
    assert tuple(report.top[1]) == ("receptor", 2, ["r", "##e", "##c", "##e", "##p", "##t", "##o", "##r"])


def test_min_count_and_top_choose_the_listed_words() -> None:
    tokenizer = char_level_tokenizer()
    report = coverage(tokenizer, EXACT_DOCS, top=4, min_count=1)
    assert [w.word for w in report.top] == ["kinase", "receptor", "inhibitors", "the"]  # inhibitors: 1 * 9
    assert domain_words(report, 2) == ["kinase", "receptor"]
    assert coverage(tokenizer, EXACT_DOCS, top=5, min_count=5).top == []
    with pytest.raises(ValueError, match="top >= 5"):
        domain_words(report, 5)


def test_format_report_is_a_readable_table() -> None:
    report = coverage(char_level_tokenizer(), EXACT_DOCS, top=3)
    text = format_report(report)
    assert "words" in text and "16" in text and "(9 distinct)" in text
    assert "4.812" in text and "87.50%" in text  # 77 / 16 pieces per word, 14 / 16 split
    kinase = next(line for line in text.splitlines() if line.strip().startswith("kinase"))
    assert kinase.split() == ["kinase", "4", "6", "20", "k", "##i", "##n", "##a", "##s", "##e"]
    assert "receptor" not in format_report(report, rows=1)
    empty = CoverageReport(vocab_size=10, documents=0, words=0, distinct_words=0, pieces=0, split_words=0,
                           unknown_pieces=None, top=[], top_limit=3, min_count=2)
    assert "no unknown token" in format_report(empty) and empty.pieces_per_word == 0.0


@pytest.mark.parametrize("name", ["bert-uncased", "bert-cased", "gpt", "bpe"])
def test_coverage_counts_the_real_tokens(tokenizers_by_kind: dict[str, Tokenizer], name: str) -> None:
    """Text of words and single spaces: the pieces counted are the tokens the text encodes as."""
    tokenizer = tokenizers_by_kind[name]
    docs = ["Kinase binds the kinase receptor", "the protein kinase binds the protein receptor"]
    report = coverage(tokenizer, docs, top=10)
    # byte-level BPE tells "the" starting a text from " the"; an uncased tokenizer "Kinase" from "kinase" not
    assert report.words == 12 and report.distinct_words == {"bert-uncased": 5, "bert-cased": 6, "gpt": 7, "bpe": 6}[name]
    assert report.pieces == sum(len(tokenizer.encode(d)) for d in docs)
    words = [w.word for w in report.top]
    assert len(words) == len(set(words))  # byte-level "Kinase" at a text's start is not listed beside " kinase"
    assert set(words) >= {"kinase", "receptor", "protein"}
    assert [w.saving for w in report.top] == sorted((w.saving for w in report.top), reverse=True)


# -- extending a tokenizer -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bert-uncased", "bert-cased", "gpt", "bpe"])
def test_added_words_are_one_token_in_running_text_and_nothing_else_changes(
    tokenizers_by_kind: dict[str, Tokenizer], name: str
) -> None:
    old = tokenizers_by_kind[name]
    before = old.fingerprint
    size = old.vocab_size
    new, pieces = extend_tokenizer(old, ["protein", "phosphorylation"])
    assert old.fingerprint == before and old.vocab_size == size  # the input is not changed
    assert new.vocab_size == size + 2
    # the pieces are the old tokenizer's ids of each word in running text
    prefix = len(old.encode("the"))
    assert pieces == [old.encode("the " + w)[prefix:] for w in ("protein", "phosphorylation")]
    assert all(len(p) >= 2 for p in pieces)

    text = "The protein binds the receptor after phosphorylation"
    expected = replace_once(replace_once(old.encode(text), pieces[0], size), pieces[1], size + 1)
    assert new.encode(text) == expected
    assert new.encode(text).count(size) == 1
    for other in GENERAL + UNRELATED:
        assert new.encode(other) == old.encode(other), other

    sentence = "The protein kinase needs phosphorylation and then the protein binds."
    ids = new.encode(sentence)
    assert size in ids and size + 1 in ids
    readable = sentence.lower() if name == "bert-uncased" else sentence
    assert new.decode(ids) == readable  # no stray spaces or markers around the new tokens
    assert Tokenizer.from_str(new.to_str()).encode(text) == expected  # saved and loaded the same


def test_uncased_tokenizer_adds_the_lowercase_word(tokenizers_by_kind: dict[str, Tokenizer]) -> None:
    old = tokenizers_by_kind["bert-uncased"]
    new, _ = extend_tokenizer(old, ["Kinase"])
    assert new.backend.token_to_id("kinase") == old.vocab_size
    assert new.encode("KINASE kinase Kinase") == [old.vocab_size] * 3


def test_cased_tokenizer_keeps_other_spellings_apart(tokenizers_by_kind: dict[str, Tokenizer]) -> None:
    old = tokenizers_by_kind["bert-cased"]
    new, _ = extend_tokenizer(old, ["EGFR"])
    assert new.encode("the EGFR gene") == replace_once(old.encode("the EGFR gene"), old.encode("EGFR"), old.vocab_size)
    assert new.encode("the egfr gene and EGFRs") == old.encode("the egfr gene and EGFRs")


def test_byte_level_word_is_added_with_its_leading_space(tokenizers_by_kind: dict[str, Tokenizer]) -> None:
    old = tokenizers_by_kind["gpt"]
    new, pieces = extend_tokenizer(old, ["kinase"])
    assert new.backend.id_to_token(old.vocab_size) == "Ġkinase"
    assert pieces == [old.encode(" kinase")]
    assert new.decode([old.vocab_size]) == " kinase"
    # the start of a text and "(kinase" are not the word after a space: encoded as before
    assert new.encode("kinase (kinase)") == old.encode("kinase (kinase)")


def test_bpe_warns_when_whole_word_lookup_changes_a_token(tokenizers_by_kind: dict[str, Tokenizer]) -> None:
    """A vocabulary token that the merges never build (here one added by hand) is used as a whole
    word once whole words are looked up: the extension says so."""
    data = json.loads(tokenizers_by_kind["gpt"].to_str())
    data["model"]["vocab"]["Ġzq"] = size = len(data["model"]["vocab"])
    old = Tokenizer.from_str(json.dumps(data))
    assert old.encode(" zq") != [size]
    with pytest.warns(UserWarning, match="'Ġzq'"):
        new, _ = extend_tokenizer(old, ["protein"])
    assert new.encode(" zq") == [size] and new.backend.token_to_id("Ġprotein") == size + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extend_tokenizer(tokenizers_by_kind["gpt"], ["protein"])  # trained vocabularies are all built by merges


def test_coverage_after_extension_counts_the_word_as_one_piece() -> None:
    old = char_level_tokenizer()
    new, pieces = extend_tokenizer(old, domain_words(coverage(old, EXACT_DOCS, top=1), 1))
    assert pieces == [old.encode("kinase")]
    report = coverage(new, EXACT_DOCS, top=3)
    assert report.pieces == 77 - 4 * 5 and report.split_words == 14 - 4
    assert [w.word for w in report.top] == ["receptor", "the"]


def test_extension_refuses_bad_words(tokenizers_by_kind: dict[str, Tokenizer]) -> None:
    old = tokenizers_by_kind["bert-uncased"]
    with pytest.raises(UserError, match="already one token"):
        extend_tokenizer(old, ["the"])
    with pytest.raises(UserError, match="not a single word"):
        extend_tokenizer(old, ["protein kinase"])
    with pytest.raises(UserError, match="not a single word"):
        extend_tokenizer(old, ["il-6"])
    with pytest.raises(UserError, match="given twice"):
        extend_tokenizer(old, ["protein", "Protein"])
    new, pieces = extend_tokenizer(old, [])
    assert pieces == [] and new.fingerprint == old.fingerprint


def test_unigram_tokenizers_are_refused() -> None:
    unigram = train_tokenizer(GENERAL, TokenizerSpec(kind="unigram", specials="t5", vocab_size=150))
    with pytest.raises(UserError, match="Unigram"):
        extend_tokenizer(unigram, ["protein"])


# -- embeddings ------------------------------------------------------------------------------
def test_new_embedding_rows_are_the_mean_of_their_pieces() -> None:
    weight = torch.arange(12.0).view(4, 3)
    out = init_new_embeddings(weight, [[0, 2], [3], [1, 1, 2]])
    assert out.shape == (7, 3)
    assert torch.equal(out[:4], weight)
    assert torch.equal(out[4:], torch.tensor([[3.0, 4.0, 5.0], [9.0, 10.0, 11.0], [4.0, 5.0, 6.0]]))
    assert torch.equal(weight, torch.arange(12.0).view(4, 3))  # the input is unchanged
    param = torch.nn.Parameter(weight.to(torch.bfloat16))
    assert init_new_embeddings(param, [[1]]).dtype == torch.bfloat16
    assert torch.equal(init_new_embeddings(weight, []), weight)
    with pytest.raises(ValueError, match="below 4"):
        init_new_embeddings(weight, [[4]])
    with pytest.raises(ValueError):
        init_new_embeddings(weight, [[]])


# -- the command -------------------------------------------------------------------------------
@pytest.fixture
def bio_files(tmp_path: Path, tokenizers_by_kind: dict[str, Tokenizer]) -> tuple[Path, Path]:
    folder = tmp_path / "bio"
    folder.mkdir()
    for i, text in enumerate(BIO):
        (folder / f"doc{i}.txt").write_text(text + "\n", encoding="utf-8")
    tokenizer = tmp_path / "tokenizer.json"
    tokenizers_by_kind["bert-uncased"].save(tokenizer)
    return folder, tokenizer


def test_coverage_command_prints_the_report(bio_files: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    folder, tokenizer = bio_files
    main(["tokenizer", "coverage", "--tokenizer", str(tokenizer), "--source.paths", str(folder), "--top", "3"])
    out = capsys.readouterr().out
    report = coverage(Tokenizer.from_file(tokenizer), BIO, top=3)
    assert format_report(report).replace("5 documents", "") in out.replace("5 documents", "")
    assert "pieces per word" in out and report.top[0].word in out


def test_coverage_command_adds_words(bio_files: tuple[Path, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    folder, tokenizer = bio_files
    out = tmp_path / "extended" / "tokenizer.json"
    args = ["tokenizer", "coverage", "--tokenizer", str(tokenizer), "--source.paths", str(folder), "--top", "1",
            "--add", "2", "--out", str(out)]
    main(args)
    printed = capsys.readouterr().out
    old = Tokenizer.from_file(tokenizer)
    words = domain_words(coverage(old, BIO, top=2), 2)
    assert f"added 2 words as ids {old.vocab_size}..{old.vocab_size + 1}" in printed and " ".join(words) in printed
    new = Tokenizer.from_file(out)
    assert new.vocab_size == old.vocab_size + 2
    assert new.encode(f"the {words[0]} and the {words[1]}").count(old.vocab_size) == 1
    written = out.read_text()

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2 and "already exists" in capsys.readouterr().err
    assert out.read_text() == written
    main(args + ["--overwrite", "true"])
    assert out.read_text() == written


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tokenizer", "missing.json"], "does not exist"),
        (["--add", "2"], "--out"),
        (["--min_count", "0"], "min_count >= 1"),
    ],
)
def test_coverage_command_explains_bad_input(bio_files: tuple[Path, Path], capsys: pytest.CaptureFixture,
                                             extra: list[str], message: str) -> None:
    folder, tokenizer = bio_files
    with pytest.raises(SystemExit) as exit_info:
        main(["tokenizer", "coverage", "--tokenizer", str(tokenizer), "--source.paths", str(folder), *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
