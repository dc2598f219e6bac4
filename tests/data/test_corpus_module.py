"""The corpus DataModule: run-folder side effects, and what its cache key covers."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import lightning as L
import pytest

from lmforge.data import DataSource, TextCorpus, TokenizerSpec
from lmforge.objectives import CausalLM


@pytest.mark.parametrize("logger", [False, True])
def test_trained_tokenizer_is_saved_into_the_run_folder_only(logger: bool, tiny_corpus: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """With a logger the trained tokenizer lands next to the logs; without one there is no run
    folder, and nothing is written into the working directory."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    dm = TextCorpus(source=DataSource(paths=str(tiny_corpus)), tokenizer=TokenizerSpec(vocab_size=300), seq_len=16)
    dm.objective = CausalLM()
    dm.trainer = L.Trainer(logger=logger, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    dm.setup("fit")
    saved = sorted(p.relative_to(workdir).as_posix() for p in workdir.rglob("tokenizer.json"))
    assert saved == (["lightning_logs/version_0/tokenizer.json"] if logger else [])


def test_a_subclass_outside_lmforge_is_prepared_again_when_its_code_changes(
        tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards and tokenizers are cached by the corpus fingerprint: a project's own corpus class
    (`lmforge new`'s data.py) changes its documents by code, so its source is in the key."""
    module_file = tmp_path / "my_corpus_module.py"
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.delitem(sys.modules, "my_corpus_module", raising=False)

    def fingerprint(clean: str) -> str:
        module_file.write_text(
            "from lmforge.data import TextCorpus\n\n\n"
            "class Mine(TextCorpus):\n"
            "    def load_documents(self):\n"
            f"        return ({clean} for text in super().load_documents())\n",
            encoding="utf-8",
        )
        importlib.invalidate_caches()
        module = importlib.reload(sys.modules["my_corpus_module"]) if "my_corpus_module" in sys.modules \
            else importlib.import_module("my_corpus_module")
        return module.Mine(source=DataSource(paths=str(tiny_corpus))).fingerprint()

    first, same, edited = fingerprint("text"), fingerprint("text"), fingerprint("text.lower()")
    assert first == same != edited
    assert TextCorpus(source=DataSource(paths=str(tiny_corpus))).fingerprint() not in (first, edited)
