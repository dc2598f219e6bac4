"""Shared fixtures: the repository paths and a tiny text corpus on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

# Test tensors are tiny: intra-op threads gain nothing, and on a loaded machine OpenMP threads
# waiting for each other make every op up to ~100x slower. One thread, for every test.
torch.set_num_threads(1)

# Tests run offline, always: a hub lookup must fail fast rather than hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A language model predicts the next token from the tokens before it.",
    "Pretraining on a large corpus teaches a model the statistics of text.",
    "Every document ends with an end-of-document token before the next begins.",
    "Lightning runs the training loop, and the task computes the loss.",
    "Small models overfit small corpora quickly, which is what a test wants.",
]


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tests never read or write the user's ~/.cache/lmforge (bundled corpus, tokenizers)."""
    path = tmp_path_factory.mktemp("lmforge-cache")
    os.environ["LMFORGE_CACHE_DIR"] = str(path)
    return path


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    """A folder of 24 short .txt documents, one per file."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(24):
        text = " ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(4))
        (folder / f"doc{i:02d}.txt").write_text(f"Document {i}. {text}\n", encoding="utf-8")
    return folder


def fit_tiny_gpt(folder: Path, steps: int, *args: str, version: int = 0) -> dict:
    """Run ``lmforge fit`` in-process on configs/gpt/tiny.yaml for ``steps`` steps (a few documents,
    validation every 3 steps) in ``folder`` (made if missing); returns the last checkpoint of its
    run folder ``version_<version>``."""
    from lmforge.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        main(["fit", "-c", str(CONFIGS / "gpt" / "tiny.yaml"), f"--trainer.max_steps={steps}",
              "--trainer.val_check_interval=3", "--trainer.limit_val_batches=1", "--trainer.log_every_n_steps=1",
              "--data.max_documents=60", "--sample.enabled=false", "--trainer.enable_progress_bar=false",
              "--trainer.enable_model_summary=false", *args])
    finally:
        os.chdir(cwd)
    ckpt = torch.load(folder / "logs" / "gpt-tiny" / f"version_{version}" / "checkpoints" / "last.ckpt",
                      weights_only=True)
    assert ckpt["global_step"] == steps
    return ckpt


def refused(capsys: pytest.CaptureFixture, *args: str) -> str:
    """The one error line of ``lmforge *args`` refused (exit status 2, no traceback)."""
    from lmforge.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def byte_fallback_bpe(texts: list[str], vocab_size: int = 200):
    """A Llama-2-style tokenizer as its tokenizer.json is shaped: ``▁`` for spaces (a normaliser
    prepends one to every text), BPE with the 256 ``<0xNN>`` byte tokens to fall back on."""
    import json

    from tokenizers import Tokenizer as Backend, decoders, models, normalizers, trainers

    from lmforge.tokenizer import Tokenizer

    specials = ["<unk>", "<s>", "</s>"]
    backend = Backend(models.BPE(unk_token="<unk>"))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials))
    spec = json.loads(backend.to_str())
    learned = sorted(spec["model"]["vocab"], key=spec["model"]["vocab"].get)
    tokens = specials + [f"<0x{b:02X}>" for b in range(256)] + [t for t in learned if t not in specials]
    spec["model"].update(vocab={t: i for i, t in enumerate(tokens)}, byte_fallback=True, fuse_unk=True)
    backend = Backend.from_str(json.dumps(spec))
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    return Tokenizer(backend)


def record_batches(data, folder: Path, max_steps: int, ckpt_path: Path | None = None) -> list:
    """Train a one-layer GPT on ``data`` (a corpus or mixture with its tokenizer, ``seq_len`` 16) for
    ``max_steps`` steps, a checkpoint at every step in ``folder`` (``step=N.ckpt`` and ``last.ckpt``),
    resuming from ``ckpt_path``; returns ``(epoch, input ids)`` of every training batch, in order."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lmforge.models import GPTConfig
    from lmforge.start import connect
    from lmforge.tasks import CausalLMTask, OptimizerConfig

    class Recorder(L.Callback):
        def __init__(self) -> None:
            self.batches: list[tuple[int, list]] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.batches.append((trainer.current_epoch, batch["input_ids"].tolist()))

    L.seed_everything(0)
    # the schedule sizes itself from estimated_stepping_batches (no decay_steps), before the restore
    task = CausalLMTask(config=GPTConfig(vocab_size=data.vocab_size, max_seq_len=16, n_layer=1, n_head=2, d_model=32),
                        optimizer=OptimizerConfig(warmup_steps=2))
    connect(task, data)
    recorder = Recorder()
    trainer = L.Trainer(
        max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=1, val_check_interval=5,
        callbacks=[recorder, ModelCheckpoint(folder, "{step}", save_last=True, every_n_train_steps=1, save_top_k=-1)],
    )
    trainer.fit(task, data, ckpt_path=ckpt_path)
    return recorder.batches
