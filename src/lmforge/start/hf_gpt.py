"""Hugging Face interop of GPT-2 (``gpt2``, ``GPT2LMHeadModel``): its ``config.json`` to our
:class:`GPTConfig` and back, and the weight table (GPT-2's ``Conv1D`` weights are transposed)."""

from __future__ import annotations

from typing import Any

from lmforge.errors import UserError
from lmforge.models import GPT, GPTConfig
from lmforge.start.adapters import Adapter, Table, d_ff_of

# our linear layer in a block -> GPT-2's Conv1D
_LINEAR = {"attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj", "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}


class GPT2Adapter(Adapter):
    """``GPT2LMHeadModel``: tanh-GELU, learned positions, the output tied to the token embedding."""

    network = GPT

    def config_from_hf(self, hf: dict[str, Any], source: str) -> GPTConfig:
        if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise UserError(f"'{source}' uses {hf['activation_function']} activations; lmforge's GPT has tanh-GELU.")
        return GPTConfig(
            vocab_size=hf["vocab_size"], max_seq_len=hf["n_positions"], n_layer=hf["n_layer"], n_head=hf["n_head"],
            d_model=hf["n_embd"], d_ff=d_ff_of(hf.get("n_inner"), hf["n_embd"]), dropout=hf.get("resid_pdrop", 0.1),
            norm_eps=hf.get("layer_norm_epsilon", 1e-5))

    def config_to_hf(self, config: GPTConfig, ids: dict[str, int]) -> dict[str, Any]:
        g = config
        return {"vocab_size": g.vocab_size, "n_positions": g.max_seq_len, "n_layer": g.n_layer, "n_head": g.n_head,
                "n_embd": g.d_model, "n_inner": g.mlp_width, "activation_function": "gelu_new",
                "resid_pdrop": g.dropout, "embd_pdrop": g.dropout, "attn_pdrop": g.dropout,
                "layer_norm_epsilon": g.norm_eps, "tie_word_embeddings": True}

    def architecture(self, config: GPTConfig) -> str:
        return "GPT2LMHeadModel"

    def refusal(self, config: GPTConfig) -> str | None:
        if not config.bias:
            return "A GPT without bias terms has no GPT-2 equivalent in transformers: export needs bias: true."
        return None

    def weight_table(self, config: GPTConfig, hf_keys: set[str] | None = None) -> Table:
        p = "transformer."
        table: Table = [("wte.weight", p + "wte.weight", "copy"), ("wpe.weight", p + "wpe.weight", "copy"),
                        ("lm_head.weight", p + "wte.weight", "tied"),
                        ("ln_f.weight", p + "ln_f.weight", "copy"), ("ln_f.bias", p + "ln_f.bias", "copy")]
        for i in range(config.n_layer):
            src, dst = f"{p}h.{i}.", f"blocks.{i}."
            for ln in ("ln_1", "ln_2"):
                table += [(f"{dst}{ln}.{w}", f"{src}{ln}.{w}", "copy") for w in ("weight", "bias")]
            for ours, hf in _LINEAR.items():
                table += [(f"{dst}{ours}.weight", f"{src}{hf}.weight", "t"),
                          (f"{dst}{ours}.bias", f"{src}{hf}.bias", "copy")]
        return table
