"""TaggedText: CoNLL files as the real ones are written, piece alignment with trained WordPiece and
byte-level BPE tokenizers, long sentences split into windows, and one clear error per bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.data import DataSource, TokenizerSpec, train_tokenizer
from lmforge.errors import UserError
from lmforge.evaluation import TaggedText
from lmforge.evaluation.entities import EntityF1, entity_spans, entity_types
from lmforge.evaluation.tagged_data import read_conll

SENTENCES = [
    (["Interleukin-2", "activates", "T", "cells", "."], ["B-protein", "O", "B-cell_type", "I-cell_type", "O"]),
    (["NF-kappaB", "binds", "DNA"], ["B-protein", "O", "B-DNA"]),
    (["The", "IL-2", "gene", "promoter", "is", "active"], ["O", "B-DNA", "I-DNA", "I-DNA", "O", "O"]),
]
WORDS = sorted({w for ws, _ in SENTENCES for w in ws})


def write_tab(path: Path, sentences=SENTENCES) -> str:
    """JNLPBA's layout: tab-separated, a -DOCSTART- line with a tag, the tag last of 4 columns."""
    blocks = ["-DOCSTART-\tO"] + ["\n".join(f"{w}\tNN\tO\t{t}" for w, t in zip(ws, ts)) for ws, ts in sentences]
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return str(path)


def write_space_io(path: Path) -> str:
    """SciERC's layout: space-separated, ``-DOCSTART- NN O O``, 4 columns, IO tags."""
    rows = [["Neural", "I-Method"], ["parsing", "I-Method"], ["of", "O"], ["text", "I-Task"], ["works", "O"]]
    lines = ["-DOCSTART- NN O O", ""] + [f"{w} NN O {t}" for w, t in rows] + ["", "it O O O", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def wordpiece():
    texts = [" ".join(ws) for ws, _ in SENTENCES] * 4
    return train_tokenizer(texts, TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=90, min_frequency=1))


@pytest.fixture(scope="module")
def bpe():
    texts = [" ".join(ws) for ws, _ in SENTENCES] * 4
    return train_tokenizer(texts, TokenizerSpec(kind="byte_level_bpe", specials="gpt", vocab_size=270))


def data(tmp_path: Path, tokenizer, **kwargs) -> TaggedText:
    train = write_tab(tmp_path / "train.txt")
    d = TaggedText(source=DataSource(paths=train), validation=train, **{"batch_size": 4, "seq_len": 64, **kwargs})
    d.tokenizer = tokenizer
    return d


def test_reads_tab_and_space_files_skipping_docstart(tmp_path: Path) -> None:
    tab = read_conll(write_tab(tmp_path / "a.txt"))
    assert [s.words for s in tab] == [ws for ws, _ in SENTENCES]
    assert [s.tags for s in tab] == [ts for _, ts in SENTENCES]
    d = TaggedText(source=DataSource(paths=write_space_io(tmp_path / "b.txt")), validation=str(tmp_path / "b.txt"))
    raw = d.raw()
    assert raw["train"][0].words == ["Neural", "parsing", "of", "text", "works"]
    assert raw["train"][0].tags == ["B-Method", "I-Method", "O", "B-Task", "O"]  # IO detected, read as BIO
    assert d.labels == ["O", "B-Method", "B-Task", "I-Method", "I-Task"]
    assert d.task_type == "token_classification"


def test_first_piece_of_each_word_carries_its_tag(tmp_path: Path, wordpiece, bpe) -> None:
    for tokenizer, template in ((wordpiece, True), (bpe, False)):
        d = data(tmp_path, tokenizer)
        d.setup("fit")
        batch = d.collate(d.datasets["train"])
        assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels", "word_index"}
        ids = {t: i for i, t in enumerate(d.labels)}
        for row, (words, tags) in enumerate(SENTENCES):
            first = batch["word_index"][row] >= 0
            assert batch["word_index"][row][first].tolist() == list(range(len(words)))
            assert batch["labels"][row][first].tolist() == [ids[t] for t in tags]
            assert (batch["labels"][row][~first] == -100).all()
            n = int(batch["attention_mask"][row].sum())
            real = batch["input_ids"][row][:n].tolist()
            pieces = [tokenizer.backend.id_to_token(i) for i in real]
            if template:
                assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
            else:
                assert real[0] == real[-1] == tokenizer.eos_id
            # the pieces from each first piece to the next decode back to the word
            starts = first.nonzero().flatten().tolist() + [n - 1]
            for k, word in enumerate(words):
                text = tokenizer.decode(real[starts[k]:starts[k + 1]]).replace(" ", "").replace("##", "")
                assert text.lower() == word.lower()
            if not template:  # byte-level: each word gets its prefix space
                assert all(pieces[p].startswith("Ġ") for p in first.nonzero().flatten().tolist())


def test_long_sentence_is_split_into_windows_covering_each_word_once(tmp_path: Path, wordpiece) -> None:
    words = (["IL-2", "activates", "T", "cells"] * 10)[:37]
    tags = (["B-protein", "O", "B-cell_type", "I-cell_type"] * 10)[:37]
    path = write_tab(tmp_path / "long.txt", [(words, tags)] + SENTENCES)
    d = TaggedText(source=DataSource(paths=path), validation=path, seq_len=16)
    d.tokenizer = wordpiece
    with pytest.warns(UserWarning, match="1 train sentences"):
        examples = d.encode(d.raw()["train"], "train")
    windows = examples[:-3]  # the long sentence's; the 3 short ones follow
    assert len(windows) > 1 and all(len(e["input_ids"]) <= 16 for e in examples)
    covered = sorted(int(i) for e in windows for i in e["word_index"] if i >= 0)
    assert covered == list(range(37))
    # no window starts inside an entity (an I- word) where another boundary fits
    firsts = [int(e["word_index"][e["word_index"] >= 0][0]) for e in windows]
    assert all(not tags[f].startswith("I-") for f in firsts)


def test_predict_file_keeps_its_lines(tmp_path: Path, wordpiece) -> None:
    path = tmp_path / "new.txt"
    path.write_text("IL-2 NN\nbinds NN\n\nDNA NN\n", encoding="utf-8")
    d = data(tmp_path, wordpiece, predict=str(path))
    d.setup("predict")
    batch = next(iter(d.predict_dataloader()))
    assert batch["lines"] == [["IL-2 NN", "binds NN"], ["DNA NN"]]
    assert batch["sentence"].tolist() == [0, 1] and batch["first_word"].tolist() == [0, 0]
    assert (batch["labels"] == -100).all()


@pytest.mark.parametrize("content, message", [
    (b"IL-2\tB-protein\nbinds\n", "line 2: 1 column"),
    (b"", "holds no sentences"),
    (b"IL-2\tB-protein\n\xff\tO\n", "line 2: not UTF-8"),
])
def test_bad_files_are_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as err:
        read_conll(path)
    assert "bad.txt" in str(err.value)
    with pytest.raises(UserError, match="does not exist"):
        read_conll(tmp_path / "missing.txt")


def test_unknown_validation_tag_and_overlong_word_are_errors(tmp_path: Path, wordpiece) -> None:
    train = write_tab(tmp_path / "train.txt")
    val = write_tab(tmp_path / "val.txt", [(["p53"], ["B-RNA"])])
    d = TaggedText(source=DataSource(paths=train), validation=val)
    d.tokenizer = wordpiece
    with pytest.raises(UserError, match=r"val tags \['B-RNA'\]"):
        d.setup("fit")
    d = TaggedText(source=DataSource(paths=train), validation=train, seq_len=3)
    d.tokenizer = wordpiece
    with pytest.raises(UserError, match="seq_len=3"):
        d.setup("fit")


# One hand-tagged text in three schemes: a three-word entity, a one-word entity, two adjacent
# entities of the same type, and a one-word entity ending the sentence.
SCHEMES = {
    "BIO": [["B-protein", "I-protein", "I-protein", "O", "B-DNA"], ["B-cell", "B-cell", "I-cell", "O", "B-RNA"]],
    "BIOES": [["B-protein", "I-protein", "E-protein", "O", "S-DNA"], ["S-cell", "B-cell", "E-cell", "O", "S-RNA"]],
    "BILOU": [["B-protein", "I-protein", "L-protein", "O", "U-DNA"], ["U-cell", "B-cell", "L-cell", "O", "U-RNA"]],
}
SCHEME_WORDS = [["IL-2", "receptor", "alpha", "binds", "DNA"], ["T", "B", "cells", "express", "mRNA"]]


def test_bioes_and_bilou_files_give_the_bio_file_entities_and_f1(tmp_path: Path) -> None:
    pred = [["B-protein", "I-protein", "O", "O", "B-DNA"], ["B-cell", "B-cell", "I-cell", "O", "B-protein"]]
    read, f1 = {}, {}
    for name, tags in SCHEMES.items():
        path = write_tab(tmp_path / f"{name}.txt", list(zip(SCHEME_WORDS, tags)))
        for scheme in ([name, "auto"] + (["IOBES"] if name == "BIOES" else [])):
            d = TaggedText(source=DataSource(paths=path), validation=path, scheme=scheme)
            raw = d.raw()
            read[name, scheme] = [entity_spans(s.tags) for s in raw["val"]], d.labels
            metric = EntityF1(entity_types(d.labels))
            metric.update(pred, [s.tags for s in raw["val"]])
            f1[name, scheme] = metric.compute()
    assert read[("BIO", "BIO")][0] == [{("protein", 0, 3), ("DNA", 4, 5)},
                                       {("cell", 0, 1), ("cell", 1, 3), ("RNA", 4, 5)}]
    assert all(r == read[("BIO", "BIO")] for r in read.values()) and len(read) == 7
    # 3 of the 5 predicted entities are right, of 5 gold ones
    assert {k: round(float(v["f1"]), 6) for k, v in f1.items()} == {k: 0.6 for k in f1}
    assert all(float(v["f1_cell"]) == 1.0 and float(v["f1_protein"]) == 0.0 for v in f1.values())


# write_tab puts -DOCSTART- on line 1 and the first sentence on lines 3-7: its third tag is on line 5.
@pytest.mark.parametrize("train_scheme, val_scheme, declared, message", [
    ("BIO", "BIOES", "BIO", r"val.txt' line 5 tag 'E-protein' is not a BIO tag: the file looks like BIOES; "
                            r"set data.scheme: BIOES\.$"),
    ("BIOES", "BIOES", "BIO", r"train.txt' line 5 tag 'E-protein' is not a BIO tag: the file looks like BIOES"),
    ("BILOU", "BILOU", "IOBES", r"train.txt' line 5 tag 'L-protein' is not an IOBES tag: the file looks like "
                                r"BILOU; set data.scheme: BILOU\.$"),
    ("BIOES", "BILOU", "auto", r"val.txt' line 5 tag 'L-protein' is not a BIOES tag: the file looks like BILOU"),
])
def test_a_file_in_another_scheme_is_refused_with_its_line(tmp_path: Path, train_scheme: str, val_scheme: str,
                                                           declared: str, message: str) -> None:
    train = write_tab(tmp_path / "train.txt", list(zip(SCHEME_WORDS, SCHEMES[train_scheme])))
    val = write_tab(tmp_path / "val.txt", list(zip(SCHEME_WORDS, SCHEMES[val_scheme])))
    d = TaggedText(source=DataSource(paths=train), validation=val, scheme=declared)
    with pytest.raises(UserError, match=message):
        d.raw()
    d = TaggedText(source=DataSource(paths=train), val_fraction=0.5, scheme=declared)  # held out: still the file
    if train_scheme != declared and declared != "auto":
        with pytest.raises(UserError, match=r"train.txt' line \d+ tag"):
            d.raw()
