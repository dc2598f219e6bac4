"""``lmforge export``: an lmforge checkpoint as a Hugging Face ``transformers`` model folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from lmforge.errors import UserError
from lmforge.start.hf import ADAPTERS, export_hf, refuse_unknown_kind
from lmforge.start.hf_electra import GENERATOR
from lmforge.start.starting_point import open_start

Kind = Literal[tuple(ADAPTERS)]  # type: ignore[valid-type]  # the choices `--help` lists: the registry's keys


def export(ckpt_path: str, to: str, kind: Kind | None = None, generator: bool = False) -> None:
    """Write a checkpoint's network, config and tokenizer as a folder that ``transformers`` loads
    (``AutoModelForMaskedLM`` for BERT/RoBERTa, ``AutoModelForCausalLM`` for GPT and Llama,
    ``AutoModelForSeq2SeqLM`` for T5, ``ElectraForPreTraining`` for ELECTRA's discriminator;
    ``AutoTokenizer`` for the tokenizer), with identical logits.

    Args:
        ckpt_path: The lmforge ``.ckpt`` to export.
        to: The folder to write; it must not exist yet (or be empty).
        kind: The transformers architecture (HF ``model_type``); it must fit the checkpoint's
            network. Default: ``gpt2`` for a GPT, ``t5`` for a T5, ``electra`` for an ELECTRA; for
            a BERT ``roberta`` when positions are offset by 2 as RoBERTa's, else ``bert``; for a
            Llama ``qwen2`` with q/k/v biases, ``mistral`` with a sliding window, else ``llama``.
        generator: For an ELECTRA checkpoint, also write its generator (``ElectraForMaskedLM``,
            with the embeddings it shares with the discriminator) to ``<to>/generator``.
    """
    if Path(ckpt_path).suffix != ".ckpt":
        raise UserError(f"'{ckpt_path}' is not an lmforge .ckpt: export writes lmforge checkpoints as "
                        "transformers folders.")
    refuse_unknown_kind(kind)  # before the checkpoint is read
    start = open_start(ckpt_path)
    if generator and start.network is not GENERATOR.network:
        raise UserError(f"--generator writes an ELECTRA generator, but '{ckpt_path}' holds a {start.family} network: "
                        "leave --generator out.")
    state, out = start.state_dict(), Path(to)
    out = export_hf(start.network, start.config, state, start.tokenizer, out, kind)
    if generator:
        try:
            export_hf(start.network, start.config, state, start.tokenizer, out / "generator", GENERATOR)
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)  # all or nothing, as one folder
            raise
    print(f"Exported {start.family} weights of {ckpt_path} to {out} (config.json, model.safetensors"
          f"{', tokenizer.json' if start.tokenizer is not None else ''}"
          f"{'; the generator in ' + str(out / 'generator') if generator else ''}).")
