"""Hugging Face interop of the Llama family (``llama``: Llama 2/3, SmolLM2, ...; ``mistral``;
``qwen2``, with query/key/value biases): their ``config.json`` to our :class:`LlamaConfig` and
back, options we do not implement refused by name, and the weight table. Registered in
:data:`lmforge.start.hf.ADAPTERS`, which owns the mechanism shared by every architecture.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lmforge.errors import UserError
from lmforge.models import Llama, LlamaConfig
from lmforge.start.adapters import Adapter, Table

LLAMA_KINDS = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def refuse_llama_options(hf: dict[str, Any], kind: str, source: str) -> None:
    """One sentence for each option of a Llama-family config.json that our Llama does not implement."""
    # Mistral's window is one band for every layer (implemented); Qwen2's is per layer (max_window_layers)
    n_pos = hf.get("max_position_embeddings")
    window = hf.get("sliding_window") if kind == "qwen2" and hf.get("use_sliding_window") else None
    scaling = _rope_scaling(hf)
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    refused = {
        "rope_scaling": rope_type if rope_type not in ("default", "llama3") else None,
        "sliding_window": window if window is not None and (n_pos is None or window < n_pos) else None,
        "attention_bias": hf.get("attention_bias") or None,
        "mlp_bias": hf.get("mlp_bias") or None,
        "hidden_act": hf.get("hidden_act") if hf.get("hidden_act", "silu") != "silu" else None,
        "head_dim": hf.get("head_dim") if hf.get("head_dim") not in (None, hf["hidden_size"] // hf["num_attention_heads"])
        else None,
    }
    for key, value in refused.items():
        if value is not None:
            raise UserError(f"'{source}' has {key}={value!r} in its config.json, which lmforge's Llama does not "
                            f"implement: start from a {kind} model without it.")


LLAMA3_SCALING = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def _rope_scaling(hf: dict[str, Any]) -> dict[str, Any]:
    """The RoPE settings of a config.json (transformers 5 writes ``rope_parameters``, 4 ``rope_scaling``)."""
    return hf.get("rope_scaling") or hf.get("rope_parameters") or {}


def llama_config_from_hf(hf: dict[str, Any], kind: str, source: str) -> LlamaConfig:
    """Our config of a ``llama``, ``mistral`` or ``qwen2`` config.json (``source`` names it in errors)."""
    refuse_llama_options(hf, kind, source)
    scaling = _rope_scaling(hf)
    llama3 = {k: scaling[k] for k in LLAMA3_SCALING} if scaling.get("rope_type") == "llama3" else None
    rope = hf.get("rope_theta", scaling.get("rope_theta", 10000.0))
    window = hf.get("sliding_window") if kind == "mistral" else None
    return LlamaConfig(
        vocab_size=hf["vocab_size"], max_seq_len=hf["max_position_embeddings"], n_layer=hf["num_hidden_layers"],
        n_head=hf["num_attention_heads"], n_kv_head=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        d_model=hf["hidden_size"], d_ff=hf["intermediate_size"], rope_base=float(rope), rope_scaling=llama3,
        norm_eps=hf.get("rms_norm_eps", 1e-6), qkv_bias=kind == "qwen2",
        sliding_window=window if window is not None and window < hf["max_position_embeddings"] else None,
        tie_embeddings=hf.get("tie_word_embeddings", False), dropout=hf.get("attention_dropout", 0.0))


class LlamaAdapter(Adapter):
    """``LlamaForCausalLM``, ``MistralForCausalLM`` (one sliding window for every layer) or
    ``Qwen2ForCausalLM`` (query/key/value biases), as our :class:`Llama`."""

    network = Llama

    def config_from_hf(self, hf: dict[str, Any], source: str) -> LlamaConfig:
        return llama_config_from_hf(hf, self.model_type, source)

    def config_to_hf(self, config: LlamaConfig, ids: dict[str, int]) -> dict[str, Any]:
        c, kind = config, self.model_type
        extra = {"sliding_window": c.sliding_window} if kind == "mistral" else {"use_sliding_window": False} \
            if kind == "qwen2" else {"attention_bias": False, "mlp_bias": False}
        return {"vocab_size": c.vocab_size, "max_position_embeddings": c.max_seq_len, "num_hidden_layers": c.n_layer,
                "num_attention_heads": c.n_head, "num_key_value_heads": c.n_kv_head, "hidden_size": c.d_model,
                "intermediate_size": c.d_ff, "hidden_act": "silu", "rope_theta": c.rope_base,
                "rope_scaling": {"rope_type": "llama3", **c.rope_scaling} if c.rope_scaling else None,
                "rms_norm_eps": c.norm_eps, "tie_word_embeddings": c.tie_embeddings, "attention_dropout": c.dropout,
                **extra}

    def architecture(self, config: LlamaConfig) -> str:
        return LLAMA_KINDS[self.model_type]

    def refusal(self, config: LlamaConfig) -> str | None:
        c, kind = config, self.model_type
        if c.qk_norm:
            return f"A Llama with qk_norm: true has no {kind} equivalent in transformers: export needs qk_norm: false."
        if c.qkv_bias != (kind == "qwen2"):
            return (f"A Llama with qkv_bias: {str(c.qkv_bias).lower()} exports as "
                    f"{'qwen2' if c.qkv_bias else 'llama or mistral'}, not {kind}.")
        if c.sliding_window is not None and kind != "mistral":
            return f"A Llama with sliding_window: {c.sliding_window} exports as mistral, not {kind}."
        return None

    def fit_folder(self, config: LlamaConfig, hf_keys: set[str]) -> LlamaConfig:
        if "lm_head.weight" not in hf_keys:  # a tied head is saved once, as the embedding
            return dataclasses.replace(config, tie_embeddings=True)
        return config

    def weight_table(self, config: LlamaConfig, hf_keys: set[str] | None = None) -> Table:
        return llama_table(config)


def llama_table(c: LlamaConfig) -> Table:
    """Our parameter names and their HF tensors (one HF name each)."""
    p = "model."
    table = [("wte.weight", p + "embed_tokens.weight", "copy"), ("ln_f.weight", p + "norm.weight", "copy"),
             ("lm_head.weight", p + "embed_tokens.weight" if c.tie_embeddings else "lm_head.weight",
              "tied" if c.tie_embeddings else "copy")]
    linear = {"attn.q": "self_attn.q_proj", "attn.k": "self_attn.k_proj", "attn.v": "self_attn.v_proj",
              "attn.o": "self_attn.o_proj", "mlp.gate": "mlp.gate_proj", "mlp.up": "mlp.up_proj",
              "mlp.down": "mlp.down_proj", "ln_1": "input_layernorm", "ln_2": "post_attention_layernorm"}
    for i in range(c.n_layer):
        src, dst = f"{p}layers.{i}.", f"blocks.{i}."
        table += [(f"{dst}{ours}.weight", f"{src}{hf}.weight", "copy") for ours, hf in linear.items()]
        if c.qkv_bias:
            table += [(f"{dst}attn.{x}.bias", f"{src}self_attn.{x}_proj.bias", "copy") for x in "qkv"]
    return table
