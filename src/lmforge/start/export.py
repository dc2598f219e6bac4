"""``lmforge export``: an lmforge checkpoint as a Hugging Face ``transformers`` model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from lmforge.errors import UserError
from lmforge.start.hf import export_hf
from lmforge.start.starting_point import open_start


Kind = Literal["bert", "roberta", "llama", "mistral", "qwen2"]


def export(ckpt_path: str, to: str, kind: Kind | None = None) -> None:
    """Write a checkpoint's network, config and tokenizer as a folder that ``transformers`` loads
    (``AutoModelForMaskedLM`` for BERT/RoBERTa, ``AutoModelForCausalLM`` for GPT and Llama,
    ``AutoModelForSeq2SeqLM`` for T5; ``AutoTokenizer`` for the tokenizer), with identical logits.

    Args:
        ckpt_path: The lmforge ``.ckpt`` to export.
        to: The folder to write; it must not exist yet (or be empty).
        kind: The transformers architecture. For a BERT-family network ``bert`` or ``roberta``
            (default: ``roberta`` when positions are offset by 2 as RoBERTa's, else ``bert``); for
            a Llama ``llama``, ``mistral`` or ``qwen2`` (default: ``qwen2`` with q/k/v biases, else ``llama``).
    """
    if Path(ckpt_path).suffix != ".ckpt":
        raise UserError(f"'{ckpt_path}' is not an lmforge .ckpt: export writes lmforge checkpoints as "
                        "transformers folders.")
    start = open_start(ckpt_path)
    out = export_hf(start.network, start.config, start.state_dict(), start.tokenizer, Path(to), kind)
    print(f"Exported {start.family} weights of {ckpt_path} to {out} (config.json, model.safetensors"
          f"{', tokenizer.json' if start.tokenizer is not None else ''}).")
