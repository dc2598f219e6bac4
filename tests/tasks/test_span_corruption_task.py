"""The T5 task: it learns to restore spans, logs its metrics, fills sentinels from a checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest

from lmforge.cli import main
from lmforge.data import DataSource, TextCorpus, TokenizerSpec
from lmforge.errors import UserError
from lmforge.models.t5 import T5Config
from lmforge.tasks import OptimizerConfig, SpanCorruptionTask
from lmforge.start import connect

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def _corpus(folder: Path, seq_len: int = 32) -> TextCorpus:
    spec = TokenizerSpec(kind="unigram", specials="t5", vocab_size=300)
    return TextCorpus(source=DataSource(paths=str(folder)),
                      tokenizer=spec, seq_len=seq_len, batch_size=8, val_fraction=0.2)


def _task(vocab_size: int, **kwargs) -> SpanCorruptionTask:
    config = T5Config(vocab_size=vocab_size, max_seq_len=32, n_layer=2, n_head=2, d_model=64, d_kv=32, d_ff=128,
                      dropout=0.0)
    return SpanCorruptionTask(config=config, **kwargs)


def _trainer(max_steps: int) -> L.Trainer:
    return L.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     limit_val_batches=4)


@pytest.mark.parametrize(("noise", "min_drop", "min_acc"), [("t5", 2.0, 0.3), ("bart", 3.5, 0.6)])
def test_learns_to_restore_corrupted_text(noise: str, min_drop: float, min_acc: float, tiny_corpus: Path) -> None:
    L.seed_everything(0)
    dm = _corpus(tiny_corpus)
    task = _task(dm.vocab_size, noise=noise, optimizer=OptimizerConfig(lr=3e-3, warmup_steps=10, weight_decay=0.0))
    connect(task, dm)
    before = _trainer(1).validate(task, dm, verbose=False)[0]
    _trainer(100).fit(task, dm)
    after = _trainer(1).validate(task, dm, verbose=False)[0]
    assert set(after) == {"val/loss", "val/ppl", "val/acc"}
    assert before["val/loss"] > math.log(dm.vocab_size) - 1.5  # untrained: about uniform over the vocabulary
    assert after["val/ppl"] == pytest.approx(math.exp(after["val/loss"]), rel=1e-4)
    # a handful of sentences repeated: spans become predictable (100 steps reach about 3.1 nats and 39%
    # for t5, which predicts only the dropped spans; bart copies most of its target: about 1.3 and 76%)
    assert after["val/loss"] < before["val/loss"] - min_drop, f"{before['val/loss']:.3f} -> {after['val/loss']:.3f}"
    assert after["val/acc"] > min_acc


def test_fit_then_fill_sentinels_from_the_checkpoint(tiny_corpus: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    main([
        "fit", "--model=lmforge.tasks.SpanCorruptionTask", "--model.config.n_layer=2", "--model.config.n_head=2",
        "--model.config.d_model=64", "--model.config.d_kv=32", "--model.config.d_ff=128",
        "--model.optimizer.lr=3e-3", "--model.optimizer.warmup_steps=5",
        "--data=lmforge.data.TextCorpus", f"--data.source.paths={tiny_corpus}", "--data.seq_len=32", "--data.batch_size=8",
        "--data.tokenizer.kind=unigram", "--data.tokenizer.specials=t5", "--data.tokenizer.vocab_size=300",
        "--trainer.max_steps=40", "--trainer.limit_val_batches=2", "--trainer.check_val_every_n_epoch=2",
        "--sample.prompt=The quick brown <extra_id_0> jumps", *QUIET,
    ])
    (ckpt,) = tmp_path.rglob("last.ckpt")
    capsys.readouterr()
    main(["predict", "--ckpt_path", str(ckpt), "--model.prompts", "The quick brown <extra_id_0> jumps over <extra_id_1>.",
          "--model.max_new_tokens=12", *QUIET])
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("The quick brown"))
    # the sentinels are replaced by the decoder's spans, each shown in brackets
    assert "<extra_id" not in line, line
    assert line.count("[") == line.count("]") == 2 and line.endswith("."), line

    with pytest.raises(SystemExit):  # no sentinel to fill: one clear sentence
        main(["predict", "--ckpt_path", str(ckpt), "--model.prompts", "nothing to fill", *QUIET])
    assert "has no sentinel to fill" in capsys.readouterr().err


def test_fill_is_deterministic_and_greedy_by_default(tiny_corpus: Path) -> None:
    dm = _corpus(tiny_corpus)
    task = _task(dm.vocab_size).eval()
    task.tokenizer = dm.tokenizer
    first = task.fill("Lightning runs the <extra_id_0> loop.")
    assert first == task.fill("Lightning runs the <extra_id_0> loop.")
    assert first.startswith("Lightning runs the [") and first.endswith("loop.")
    with pytest.raises(UserError, match="no sentinel"):
        task.fill("no gap here")


def test_unknown_noise_is_refused() -> None:
    with pytest.raises(UserError, match="Unknown noise 'mask'"):
        SpanCorruptionTask(config=T5Config(vocab_size=64, n_layer=1, d_model=16, d_kv=8, d_ff=32, n_head=2), noise="mask")


def test_optimizer_never_decays_the_relative_position_bias() -> None:
    from lmforge.tasks.optim import param_groups

    task = _task(100)
    decay, _ = param_groups(task.net, weight_decay=0.1)
    decayed = {id(p) for p in decay["params"]}
    names = [n for n, p in task.net.named_parameters() if id(p) in decayed]
    assert names and not any("relative" in n or "norm" in n or "embed" in n for n in names)
