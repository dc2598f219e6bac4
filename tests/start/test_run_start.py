"""A run's start is resolved once and handed down: each source is opened once per run (init_from
a checkpoint or a model folder, resume, predict), and the task and the data module hold one and
the same tokenizer, the start's."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from conftest import CONFIGS
from lmforge.cli import main
from lmforge.commands import lightning
from lmforge.start import connect, starting_point

LEGACY_GPT = Path(__file__).resolve().parents[1] / "assets" / "legacy" / "gpt" / "last.ckpt"  # an older lmforge's
TINY = ["-c", str(CONFIGS / "gpt" / "tiny.yaml"), "--model.config.n_layer", "1", "--model.config.d_model", "16",
        "--data.tokenizer.vocab_size", "300", "--data.seq_len", "16", "--data.batch_size", "4",
        "--data.max_documents", "20", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--sample.enabled", "false"]


@pytest.fixture
def handed(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """The (task, data, tokenizer) of each hand-over the command makes."""
    calls: list[tuple] = []

    def spy(task, data, tokenizer=None):
        calls.append((task, data, tokenizer))
        return connect(task, data, tokenizer)

    monkeypatch.setattr(lightning, "connect", spy)
    return calls


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """How often each source is opened (a checkpoint read; a model folder's config and tokenizer read)."""
    counts: Counter = Counter()
    for name in ("_open_checkpoint", "_open_hf"):
        original = getattr(starting_point, name)

        def counting(*args, _original=original, **kwargs):
            counts[str(Path(str(args[-1]).removeprefix("hf:")).resolve())] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(starting_point, name, counting)
    return counts


def one_tokenizer(handed: list[tuple], like: str | None = None) -> None:
    """The last hand-over gave task and data one tokenizer object (``like``'s, when given)."""
    task, data, tokenizer = handed[-1]
    assert task.tokenizer is data.tokenizer is tokenizer
    if like is not None:
        assert tokenizer.fingerprint == starting_point.open_start(like).tokenizer.fingerprint


def test_each_source_is_opened_once_and_task_and_data_hold_one_tokenizer(
        tmp_path: Path, opened: Counter, handed: list[tuple], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    steps = ["--trainer.max_steps", "2", "--trainer.val_check_interval", "2"]
    main(["fit", *TINY, *steps, "--model.init_from", str(LEGACY_GPT)])
    assert opened == {str(LEGACY_GPT): 1}
    one_tokenizer(handed, like=str(LEGACY_GPT))
    ckpt = tmp_path / "logs/gpt-tiny/version_0/checkpoints/last.ckpt"
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["init_from"] is None

    main(["export", "--ckpt_path", str(ckpt), "--to", "hf-gpt"])
    opened.clear()
    main(["fit", *TINY, *steps, "--model.init_from", "hf:hf-gpt", "--trainer.logger.init_args.name", "hf"])
    assert opened == {str((tmp_path / "hf-gpt").resolve()): 1}
    one_tokenizer(handed, like=str(ckpt))

    opened.clear()
    main(["fit", *TINY, "--trainer.max_steps", "3", "--ckpt_path", str(ckpt)])  # its task is read from it too
    assert opened == {str(ckpt): 1}
    one_tokenizer(handed, like=str(ckpt))

    opened.clear()
    main(["fit", *TINY, *steps, "--trainer.logger.init_args.name", "fresh"])  # the data trains the tokenizer
    assert opened == {}
    one_tokenizer(handed)

    opened.clear()
    main(["predict", "--ckpt_path", str(ckpt), "--model.prompts", "The", "--model.max_new_tokens", "2"])
    assert opened == {str(ckpt): 1} and capsys.readouterr().out.strip()
