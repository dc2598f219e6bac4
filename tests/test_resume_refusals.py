"""A resume that cannot continue the same run is refused with one sentence saying what differs,
and writes nothing into the run folder; a run folder that holds another run's checkpoints is
never written into (issue 7: refused mismatches, bad input never loses data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import CONFIGS
from lmforge.cli import main
from lmforge.data import Tokenizer, TokenizerSpec
from lmforge.data.bundled import bundled_documents
from lmforge.data.tokenizer import train_tokenizer

TINY = str(CONFIGS / "gpt" / "tiny.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--sample.enabled=false",
         "--data.max_documents=60", "--trainer.limit_val_batches=2"]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-step tiny GPT run with its last.ckpt."""
    workdir = tmp_path_factory.mktemp("refusals")
    cwd = Path.cwd()
    try:
        os.chdir(workdir)
        main(["fit", "-c", TINY, "--trainer.max_steps=3", *QUIET])
    finally:
        os.chdir(cwd)
    return workdir


def refused(run: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    monkeypatch.chdir(run)
    folder = run / "logs" / "gpt-tiny" / "version_0"
    before = snapshot(folder)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", TINY, "--trainer.max_steps=6", *QUIET, *args])
    assert exit_info.value.code == 2
    # nothing written or changed: no config.resumed-N.yaml, no checkpoint, no event file, the
    # run's tokenizer.json not rewritten
    assert snapshot(folder) == before
    assert not (run / "logs" / "gpt-tiny" / "version_1").exists()
    err = capsys.readouterr().err
    assert err.count("lmforge: error:") == 1
    return err


def test_another_tokenizer_of_the_same_size_is_refused(run: Path, capsys: pytest.CaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    texts = [doc.upper() for doc in bundled_documents()[:60]]  # other text, so other merges
    other = train_tokenizer(texts, TokenizerSpec(kind="byte_level_bpe", vocab_size=1024, specials="gpt"))
    assert other.vocab_size == Tokenizer.from_file(run / "logs/gpt-tiny/version_0/tokenizer.json").vocab_size
    other.save(tmp_path / "other.json")
    err = refused(run, capsys, monkeypatch, "--ckpt_path", "last", f"--data.tokenizer.path={tmp_path / 'other.json'}")
    assert "The data's tokenizer" in err and "is not the checkpoint's" in err


def test_another_sequence_length_is_refused(run: Path, capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    err = refused(run, capsys, monkeypatch, "--ckpt_path", "last", "--data.seq_len=32")
    assert "max_seq_len=64 (this run: 32)" in err and "data.seq_len" in err


def test_another_seed_is_refused(run: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    err = refused(run, capsys, monkeypatch, "--ckpt_path", "last", "--data.seed=7")
    assert "other data (seed 1234, this run has 7)" in err


def test_another_corpus_is_refused(run: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    err = refused(run, capsys, monkeypatch, "--ckpt_path", "last", "--data.max_documents=50")
    assert "other data (training examples (their number or their tokens) than this run's)" in err


def test_a_run_folder_with_checkpoints_is_never_written_into(run: Path, capsys: pytest.CaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    err = refused(run, capsys, monkeypatch, "--trainer.logger.init_args.version=0")
    assert "already holds the checkpoints of another run" in err and "--ckpt_path last" in err
