"""Prepared token shards: round trip, reuse, atomic writes, refusal of damaged or foreign shards."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import CONFIGS
from lmforge.cli import main
from lmforge.data import DataSource, TextCorpus, TokenizerSpec, train_tokenizer
from lmforge.data.shards import PreparedCorpus, ShardBlocks, ShardWriter, open_shard, write_prepared
from lmforge.errors import UserError
from lmforge.tokenizer import Tokenizer


def _corpus(folder: Path, tmp_path: Path, **kwargs) -> TextCorpus:
    corpus = TextCorpus(source=DataSource(paths=str(folder)),
                        cache_dir=str(tmp_path / "shards"), val_fraction=0.25, **kwargs)
    corpus.tokenizer = train_tokenizer(list(corpus.documents()), TokenizerSpec(vocab_size=300))
    return corpus


def _documents(prepared: PreparedCorpus, split: str) -> list[list[int]]:
    return [shard.document(i)[:-1].tolist() for shard in prepared.shards[split] for i in range(len(shard.doc_ends))]


def test_shards_round_trip_to_the_tokenized_documents(tiny_corpus: Path, tmp_path: Path) -> None:
    corpus = _corpus(tiny_corpus, tmp_path)
    prepared = corpus.prepare(progress=False)
    tok = corpus.tokenizer
    train, val = corpus.splits()
    assert train and val
    assert _documents(prepared, "train") == tok.encode_batch(train)
    assert _documents(prepared, "val") == tok.encode_batch(val)
    shard = prepared.shards["train"][0]
    assert shard.tokens.dtype == np.uint16 and isinstance(shard.tokens, np.memmap)
    assert all(shard.document(i)[-1] == tok.eos_id for i in range(len(shard.doc_ends)))
    assert tok.decode(shard.document(0)[:-1].tolist()) == train[0]
    meta = json.loads((prepared.folder / "meta.json").read_text())
    assert meta["tokenizer"] == tok.fingerprint and meta["splits"]["train"][0]["documents"] == len(train)


def test_prepare_is_reused_and_keyed_by_corpus_and_tokenizer(tiny_corpus: Path, tmp_path: Path) -> None:
    corpus = _corpus(tiny_corpus, tmp_path)
    first = corpus.prepare(progress=False)
    calls = []
    encode = corpus.tokenizer.encode_batch
    corpus.tokenizer.encode_batch = lambda texts: calls.append(len(texts)) or encode(texts)
    assert corpus.prepare(progress=False).folder == first.folder and calls == []  # nothing tokenized again
    # any family reuses it: block length is chosen when reading, not when preparing
    assert len(ShardBlocks(first.shards["train"], 16)) > len(ShardBlocks(first.shards["train"], 32)) > 0
    other_filter = _corpus(tiny_corpus, tmp_path, min_chars=10)
    assert other_filter.prepared_folder().name.split("-")[0] != first.folder.name.split("-")[0]
    other_tokenizer = _corpus(tiny_corpus, tmp_path)
    other_tokenizer.tokenizer = train_tokenizer(corpus.splits()[0], TokenizerSpec(vocab_size=280))
    assert other_tokenizer.prepared_folder().name.split("-")[1] != first.folder.name.split("-")[1]
    (tiny_corpus / "doc00.txt").write_text("Changed text.", encoding="utf-8")  # a file edit changes the key
    assert _corpus(tiny_corpus, tmp_path).prepared_folder() != first.folder


def test_interrupted_prepare_leaves_nothing_that_looks_complete(tiny_corpus: Path, tmp_path: Path) -> None:
    corpus = _corpus(tiny_corpus, tmp_path)
    tok = corpus.tokenizer
    folder = tmp_path / "out" / "prepared"
    done = []

    def encode(texts: list[str]) -> list[list[int]]:
        if done:
            raise KeyboardInterrupt
        done.append(1)
        return tok.encode_batch(texts)

    with pytest.raises(KeyboardInterrupt):
        write_prepared(folder, corpus.labelled_documents(), encode, tok.vocab_size, tok.eos_id, tok.fingerprint,
                       {}, chunk_chars=100)
    assert done and not folder.exists() and list(folder.parent.iterdir()) == []
    folder.mkdir()
    with pytest.raises(UserError, match="not a complete prepared corpus"):
        PreparedCorpus.open(folder)


def test_truncated_foreign_and_mismatched_shards_are_refused(tiny_corpus: Path, tmp_path: Path) -> None:
    prepared = _corpus(tiny_corpus, tmp_path).prepare(progress=False)
    path = prepared.shards["train"][0].path
    fingerprint = prepared.meta["tokenizer"]
    data = path.read_bytes()
    path.write_bytes(data[:-6])
    with pytest.raises(UserError, match=r"truncated or damaged: .* bytes where its header promises"):
        PreparedCorpus.open(prepared.folder, fingerprint)
    path.write_bytes(np.arange(50, dtype=np.uint16).tobytes())  # e.g. another tool's raw token file
    with pytest.raises(UserError, match="is not an lmforge token shard"):
        open_shard(path)
    path.write_bytes(data)
    with pytest.raises(UserError, match="was tokenized with tokenizer .* not the configured"):
        open_shard(path, "0123456789abcdef")
    assert len(open_shard(path, fingerprint).tokens) == prepared.meta["splits"]["train"][0]["tokens"]


def test_writer_rolls_shards_on_document_boundaries_and_widens_dtype(tmp_path: Path) -> None:
    docs = [[i] * n for i, n in enumerate([3, 5, 2, 9, 1, 4], start=1)]
    writer = ShardWriter(tmp_path, "train", vocab_size=70_000, eos_id=69_999, tokenizer_fp="f" * 16, shard_tokens=8)
    writer.add(docs[:4])
    writer.add(docs[4:])
    infos = writer.close()
    shards = [open_shard(tmp_path / info["file"], "f" * 16) for info in infos]
    assert shards[0].tokens.dtype == np.uint32 and len(infos) > 1
    back = [s.document(i).tolist() for s in shards for i in range(len(s.doc_ends))]
    assert back == [d + [69_999] for d in docs]  # every document whole, in order
    assert all(len(s.tokens) <= 8 or len(s.doc_ends) == 1 for s in shards)
    blocks = ShardBlocks(shards, 3)
    assert len(blocks) == sum(len(s.tokens) // 3 for s in shards)
    assert all(len(blocks[i]) == 3 for i in range(len(blocks)))
    with pytest.raises(IndexError):
        blocks[len(blocks)]


def test_small_chunks_keep_order_report_progress_and_a_folder_prepared_first_is_kept(tmp_path: Path) -> None:
    texts = [("train" if i % 4 else "val", "x" * (i + 1)) for i in range(10)]
    encode = lambda batch: [[len(t)] for t in batch]  # noqa: E731 (one token per text: its length)
    progress: list[tuple[int, int]] = []
    folder = tmp_path / "prepared"
    prepared = write_prepared(folder, texts, encode, vocab_size=100, eos_id=0, tokenizer_fp="f" * 16, meta={},
                              chunk_chars=7, on_progress=lambda chars, docs: progress.append((chars, docs)))
    assert _documents(prepared, "train") == [[n] for n in range(1, 11) if (n - 1) % 4]  # in corpus order
    assert _documents(prepared, "val") == [[1], [5], [9]]
    assert len(progress) > 2 and progress[-1] == (55, 10) and progress == sorted(progress)
    assert prepared.meta["characters"] == 55
    # another process finished the same folder first: its result is kept, the second write leaves no trace
    again = write_prepared(folder, [("train", "yy"), ("val", "z")], encode, vocab_size=100, eos_id=0,
                           tokenizer_fp="f" * 16, meta={})
    assert _documents(again, "val") == [[1], [5], [9]] and sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_a_single_document_serves_both_splits(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "a.txt").write_text("just one document here", encoding="utf-8")
    prepared = _corpus(tmp_path / "only", tmp_path).prepare(progress=False)
    assert _documents(prepared, "train") == _documents(prepared, "val") != []


def test_prepare_command_writes_what_fit_reads(tiny_corpus: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({
        "model": {"class_path": "lmforge.tasks.CausalLMTask"}, "trainer": {"max_steps": 3}, "sample": {"prompt": "The"},
        "data": {"class_path": "lmforge.data.TextCorpus", "init_args": {
            "source": {"paths": str(tiny_corpus)}, "tokenizer": {"vocab_size": 300}, "cache_dir": str(tmp_path / "c")}},
    }))
    main(["prepare", "-c", str(config), "--data.seq_len", "16"])
    out = capsys.readouterr().out
    assert "Prepared" in out and "train" in out
    folders = [p for p in (tmp_path / "c").iterdir() if (p / "meta.json").is_file()]
    assert len(folders) == 1
    with pytest.raises(SystemExit):
        main(["prepare", "-c", str(config), "--data.max_documentz", "3"])
    assert "max_documentz" in capsys.readouterr().err


def test_a_second_prepare_and_the_fit_after_it_reuse_the_cached_tokenizer_and_shards(
        tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import lmforge.data.tokenizer as tokenizer_module

    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # the fit's run folder
    trained: list[TokenizerSpec] = []
    train = tokenizer_module.train_tokenizer
    monkeypatch.setattr(tokenizer_module, "train_tokenizer",
                        lambda texts, spec: trained.append(spec) or train(texts, spec))
    caplog.set_level(logging.INFO)
    args = ["-c", str(CONFIGS / "gpt" / "tiny.yaml"), "--data=lmforge.data.TextCorpus",
            f"--data.source.paths={tiny_corpus}", "--data.seq_len=16", "--data.tokenizer.vocab_size=300"]
    main(["prepare", *args])
    assert len(trained) == 1 and f"Training a byte_level_bpe tokenizer (300 tokens) on {tiny_corpus} ..." in caplog.text
    cached = {p: p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    [tokenizer_file] = [p for p in cached if p.parent.name == "tokenizers"]
    [folder] = {p.parent for p in cached if p.name == "meta.json"}
    mtimes = {p: p.stat().st_mtime_ns for p in cached}

    for command in (["prepare"], ["fit", "--trainer.fast_dev_run=true", "--trainer.enable_progress_bar=false",
                                  "--trainer.enable_model_summary=false"]):
        caplog.clear()
        main([*command, *args])
        assert len(trained) == 1, command  # the tokenizer was not trained again
        assert "Training a" not in caplog.text
        assert (f"Reusing the byte_level_bpe tokenizer ({Tokenizer.from_file(str(tokenizer_file)).vocab_size} tokens) "
                f"trained on {tiny_corpus} before: {tokenizer_file}") in caplog.text
        assert caplog.text.count(f"Reusing the token shards of {tiny_corpus} prepared before at {folder}: nothing to "
                                 "redo.") == 1
        assert "Preparing" not in caplog.text
        assert {p: p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file()} == cached
        assert {p: p.stat().st_mtime_ns for p in cached} == mtimes  # nothing rewritten either
