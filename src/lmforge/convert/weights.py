"""Load pretrained weights for ``init_from``: from an lmforge checkpoint (and, through
:mod:`lmforge.convert.hf`, from a Hugging Face folder or hub id)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmforge.tokenizer import Tokenizer
from lmforge.errors import UserError
from lmforge.models import BertConfig, ElmoConfig, GPTConfig, T5Config

# family -> its config class; the task that wrote a checkpoint names its family
FAMILIES: dict[str, type] = {"gpt": GPTConfig, "bert": BertConfig, "t5": T5Config, "elmo": ElmoConfig}
TASK_FAMILY = {"CausalLMTask": "gpt", "MaskedLMTask": "bert", "ContrastiveTask": "bert",
               "SpanCorruptionTask": "t5", "ElmoTask": "elmo"}


@dataclass
class LoadedWeights:
    """Pretrained weights ready for one of our networks.

    Args:
        family: ``gpt``, ``bert``, ``t5`` or ``elmo``.
        config: The network's config (its shape).
        state_dict: Weights under our networks' parameter names.
        tokenizer: The tokenizer the weights were trained with, if the source carries one.
        source: Where they came from, for messages.
        hf_model_type: The Hugging Face architecture they were read from (``bert``, ``roberta``,
            ``gpt2``, ``t5``), if any.
    """

    family: str
    config: Any
    state_dict: dict[str, torch.Tensor]
    tokenizer: Tokenizer | None
    source: str
    hf_model_type: str | None = None

    def require(self, family: str, wanted: str) -> LoadedWeights:
        """These weights if they are of ``family``, else one clear error (``wanted`` names the task)."""
        if self.family != family:
            raise UserError(f"init_from '{self.source}' holds {self.family} weights, but {wanted} needs {family} "
                            f"weights: start from a {family} checkpoint or model.")
        return self


def load_weights(source: str) -> LoadedWeights:
    """Weights from an lmforge ``.ckpt``, a Hugging Face model folder, or ``hf:<hub id>``.

    Args:
        source: The path or hub id.
    """
    if source.startswith("hf:") or Path(source).is_dir():
        from lmforge.convert.hf import load_hf

        return load_hf(source)
    return load_lmforge_checkpoint(source)


def load_lmforge_checkpoint(path: str | Path) -> LoadedWeights:
    """The network weights, config and tokenizer of a checkpoint written by an lmforge task."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"init_from '{path}' does not exist: give an lmforge .ckpt, a Hugging Face model folder, "
                        "or hf:<model id>.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or foreign file
        raise UserError(f"'{path}' is not a readable checkpoint ({type(err).__name__}): check the file.") from err
    meta = ckpt.get("lmforge") if isinstance(ckpt, dict) else None
    if not meta or "model_config" not in meta:
        raise UserError(f"'{path}' is not an lmforge checkpoint (no model config inside): give a .ckpt written by "
                        "`lmforge fit`, or a Hugging Face model folder.")
    family = TASK_FAMILY.get(meta.get("task", ""))
    if family is None:  # older checkpoints: recognise the config by its fields
        stored = set(meta["model_config"])
        family = next((f for f, cls in FAMILIES.items() if stored == set(cls.__dataclass_fields__)), None)
    if family is None:
        raise UserError(f"'{path}' was written by task {meta.get('task')!r}, which has no pretrained network to start from.")
    config = FAMILIES[family](**meta["model_config"])
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    tokenizer = Tokenizer.from_str(meta["tokenizer"]) if meta.get("tokenizer") else None
    return LoadedWeights(family, config, state, tokenizer, str(path))
