"""A run's start is resolved once and handed down: each source is opened once per run (resume,
init_from, predict), and the task and the data module hold one and the same tokenizer."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from conftest import CONFIGS
from lmforge.cli import main
from lmforge.commands import lightning
from lmforge.start import connect, starting_point

TINY = ["-c", str(CONFIGS / "gpt" / "tiny.yaml"), "--model.config.n_layer", "1", "--model.config.d_model", "16",
        "--data.tokenizer.vocab_size", "300", "--data.seq_len", "16", "--data.batch_size", "4",
        "--data.max_documents", "20", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT run of 2 steps and its export as a transformers folder."""
    folder = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        main(["fit", *TINY, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2"])
        main(["export", "--ckpt_path", "logs/gpt-tiny/version_0/checkpoints/last.ckpt", "--to", "hf-gpt"])
    return folder


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """How often each source is opened (a checkpoint read, a model folder's config and tokenizer read)."""
    counts: Counter = Counter()
    for name in ("_open_checkpoint", "_open_hf"):
        original = getattr(starting_point, name)

        def counting(*args, _original=original, **kwargs):
            counts[str(Path(str(args[-1]).removeprefix("hf:")).resolve())] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(starting_point, name, counting)
    return counts


def test_each_source_is_opened_once_per_run(run: Path, opened: Counter, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(run)
    ckpt = run / "logs/gpt-tiny/version_0/checkpoints/last.ckpt"
    steps = ["--trainer.max_steps", "3", "--trainer.val_check_interval", "3"]
    main(["fit", *TINY, *steps, "--model.init_from", str(ckpt), "--trainer.logger.init_args.name", "from-ckpt"])
    assert opened == {str(ckpt.resolve()): 1}
    opened.clear()
    main(["fit", *TINY, *steps, "--model.init_from", f"hf:{run / 'hf-gpt'}", "--trainer.logger.init_args.name", "hf"])
    assert opened == {str((run / "hf-gpt").resolve()): 1}
    opened.clear()
    main(["fit", *TINY, *steps, "--ckpt_path", str(ckpt)])  # resume: the task is read from it too
    assert opened == {str(ckpt.resolve()): 1}
    opened.clear()
    main(["predict", "--ckpt_path", str(ckpt), "--model.prompts", "The", "--model.max_new_tokens", "2"])
    assert opened == {str(ckpt.resolve()): 1} and capsys.readouterr().out.strip()


@pytest.mark.parametrize("start", ["fresh", "init_from", "resume"])
def test_task_and_data_hold_one_tokenizer(start: str, run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(run)
    ckpt = str(run / "logs/gpt-tiny/version_0/checkpoints/last.ckpt")
    extra = {"fresh": ["--trainer.logger.init_args.name", "fresh"], "resume": ["--ckpt_path", ckpt],
             "init_from": ["--model.init_from", ckpt, "--trainer.logger.init_args.name", "init"]}[start]
    handed = []

    def spy(task, data, tokenizer=None):
        handed.append((task, data, tokenizer))
        return connect(task, data, tokenizer)

    monkeypatch.setattr(lightning, "connect", spy)
    main(["fit", *TINY, *extra, "--trainer.max_steps", "3", "--trainer.val_check_interval", "3"])
    ((task, data, tokenizer),) = handed
    assert task.tokenizer is data.tokenizer is tokenizer
    if start != "fresh":
        assert tokenizer.fingerprint == starting_point.open_start(ckpt).tokenizer.fingerprint
