"""What a Hugging Face adapter gives: how one ``transformers`` architecture (its ``model_type``)
maps onto one of our networks, both ways. One module per family implements it
(:mod:`lmforge.start.hf_bert`, ``hf_gpt``, ``hf_t5``, ``hf_llama``); :data:`lmforge.start.hf.ADAPTERS`
registers them, and :mod:`lmforge.start.hf` runs import and export through them alone.

A weight table lists each of our parameters with the HF tensor(s) it corresponds to and how:
``copy``; ``t`` (GPT-2's ``Conv1D`` stores ``(in, out)``); ``qkv`` (our fused query/key/value
projection is HF's three stacked along the output dimension); ``tied`` (our name for a tensor
tied to another: read, not written); ``also`` (a second HF name our tensor is written under, as
``transformers`` keeps it twice: written, not read). The same table reads and writes, so import
and export cannot drift apart.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

Table = list[tuple[str, "str | tuple[str, ...]", str]]  # (ours, hf name(s), how)


def d_ff_of(hidden: int | None, d_model: int) -> int | None:
    """Our ``d_ff`` of an HF MLP width: ``None`` stands for the usual ``4 * d_model``.

    Args:
        hidden: HF's MLP width (``intermediate_size``, ``n_inner``), if given.
        d_model: The model width.
    """
    return None if hidden in (None, 4 * d_model) else hidden


class Adapter:
    """One ``transformers`` architecture as one of our networks. Subclasses set ``network`` and
    implement the four conversions; the defaults of :meth:`refusal` and :meth:`fit_folder` suit
    an architecture that exports every config of its network and needs no fix-up.

    Args:
        model_type: HF's ``model_type`` (the registry's key).
    """

    network: ClassVar[type[nn.Module]]

    def __init__(self, model_type: str):
        self.model_type = model_type

    def config_from_hf(self, hf: dict[str, Any], source: str) -> Any:
        """Our config of a ``config.json``; an option we do not implement is refused by name.

        Args:
            hf: The parsed ``config.json``.
            source: The folder or hub id, for messages.
        """
        raise NotImplementedError

    def config_to_hf(self, config: Any, ids: dict[str, int]) -> dict[str, Any]:
        """The architecture's own keys of the ``config.json`` of ``config`` (the caller adds
        ``model_type``, ``architectures`` and the special ids).

        Args:
            config: Our config.
            ids: The tokenizer's ``pad_token_id``, ``bos_token_id``, ``eos_token_id`` that it has.
        """
        raise NotImplementedError

    def weight_table(self, config: Any, hf_keys: set[str] | None = None) -> Table:
        """Our parameter names and their HF tensors.

        Args:
            config: Our config.
            hf_keys: When importing, the HF folder's tensor names (where they decide prefixes or heads).
        """
        raise NotImplementedError

    def architecture(self, config: Any) -> str:
        """The ``transformers`` class an export of ``config`` is (``config.json``'s ``architectures``).

        Args:
            config: Our config.
        """
        raise NotImplementedError

    def refusal(self, config: Any) -> str | None:
        """Why ``config`` cannot be exported as this architecture (one sentence), else None.

        Args:
            config: Our config.
        """
        return None

    def fit_folder(self, config: Any, hf_keys: set[str]) -> Any:
        """``config`` as the folder's tensors show it (a tied head saved once, a missing head).

        Args:
            config: Our config from the folder's ``config.json``.
            hf_keys: The folder's tensor names.
        """
        return config
