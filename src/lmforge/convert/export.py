"""``lmforge export``: an lmforge checkpoint as a Hugging Face ``transformers`` model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from lmforge.convert.hf import export_hf
from lmforge.convert.weights import load_lmforge_checkpoint


def export(ckpt_path: str, to: str, kind: Literal["bert", "roberta"] | None = None) -> None:
    """Write a checkpoint's network, config and tokenizer as a folder that ``transformers`` loads
    (``AutoModelForMaskedLM`` for BERT/RoBERTa, ``AutoModelForCausalLM`` for GPT,
    ``AutoModelForSeq2SeqLM`` for T5; ``AutoTokenizer`` for the tokenizer), with identical logits.

    Args:
        ckpt_path: The lmforge ``.ckpt`` to export.
        to: The folder to write; it must not exist yet (or be empty).
        kind: For a BERT-family network, the transformers architecture: ``bert`` or ``roberta``
            (default: ``roberta`` when positions are offset by 2 as RoBERTa's, else ``bert``).
    """
    loaded = load_lmforge_checkpoint(ckpt_path)
    out = export_hf(loaded.family, loaded.config, loaded.state_dict, loaded.tokenizer, Path(to), kind)
    print(f"Exported {loaded.family} weights of {ckpt_path} to {out} (config.json, model.safetensors"
          f"{', tokenizer.json' if loaded.tokenizer is not None else ''}).")


def export_command(argv: list[str]) -> None:
    """``lmforge export --ckpt_path X --to DIR``"""
    from jsonargparse import CLI

    CLI(export, args=argv, prog="lmforge export", as_positional=False)
