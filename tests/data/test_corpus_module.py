"""The corpus DataModule's run-folder side effects."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest

from lmforge.data import TextCorpus, TokenizerSpec
from lmforge.objectives import CausalLM


@pytest.mark.parametrize("logger", [False, True])
def test_trained_tokenizer_is_saved_into_the_run_folder_only(logger: bool, tiny_corpus: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """With a logger the trained tokenizer lands next to the logs; without one there is no run
    folder, and nothing is written into the working directory."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    dm = TextCorpus(paths=str(tiny_corpus), tokenizer=TokenizerSpec(vocab_size=300), seq_len=16)
    dm.objective = CausalLM()
    dm.trainer = L.Trainer(logger=logger, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    dm.setup("fit")
    saved = sorted(p.relative_to(workdir).as_posix() for p in workdir.rglob("tokenizer.json"))
    assert saved == (["lightning_logs/version_0/tokenizer.json"] if logger else [])
