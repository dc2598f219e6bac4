"""Hugging Face interop of T5 (``t5``, ``T5ForConditionalGeneration``: v1.0 with ReLU and a tied
output, v1.1 with gated GELU and its own output matrix): its ``config.json`` to our
:class:`T5Config` and back, and the weight table."""

from __future__ import annotations

import dataclasses
from typing import Any

from lmforge.errors import UserError
from lmforge.models import T5, T5Config
from lmforge.start.adapters import Adapter, Table


class T5Adapter(Adapter):
    """``T5ForConditionalGeneration``, encoder and decoder with relative position buckets."""

    network = T5

    def config_from_hf(self, hf: dict[str, Any], source: str) -> T5Config:
        proj = hf.get("feed_forward_proj", "relu")
        if proj not in ("relu", "gated-gelu"):
            raise UserError(f"'{source}' has feed_forward_proj={proj!r}; lmforge's T5 has 'relu' or 'gated-gelu'.")
        decoder = hf.get("num_decoder_layers")
        return T5Config(
            vocab_size=hf["vocab_size"], d_model=hf["d_model"], d_kv=hf["d_kv"], d_ff=hf["d_ff"],
            n_layer=hf["num_layers"], n_decoder_layer=None if decoder in (None, hf["num_layers"]) else decoder,
            n_head=hf["num_heads"], relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
            relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
            dropout=hf.get("dropout_rate", 0.1), norm_eps=hf.get("layer_norm_epsilon", 1e-6),
            feed_forward=proj, tie_embeddings=hf.get("tie_word_embeddings", True))

    def config_to_hf(self, config: T5Config, ids: dict[str, int]) -> dict[str, Any]:
        t = config
        return {"vocab_size": t.vocab_size, "d_model": t.d_model, "d_kv": t.d_kv, "d_ff": t.d_ff,
                "num_layers": t.n_layer, "num_decoder_layers": t.decoder_layers, "num_heads": t.n_head,
                "relative_attention_num_buckets": t.relative_attention_num_buckets,
                "relative_attention_max_distance": t.relative_attention_max_distance, "dropout_rate": t.dropout,
                "layer_norm_epsilon": t.norm_eps, "feed_forward_proj": t.feed_forward,
                "is_gated_act": t.feed_forward == "gated-gelu",
                "dense_act_fn": "gelu_new" if t.feed_forward != "relu" else "relu",
                "tie_word_embeddings": t.tie_embeddings, "decoder_start_token_id": ids.get("pad_token_id", 0),
                "is_encoder_decoder": True}

    def architecture(self, config: T5Config) -> str:
        return "T5ForConditionalGeneration"

    def fit_folder(self, config: T5Config, hf_keys: set[str]) -> T5Config:
        if "lm_head.weight" not in hf_keys:  # a tied head is saved once, as the shared embedding
            return dataclasses.replace(config, tie_embeddings=True)
        return config

    def weight_table(self, config: T5Config, hf_keys: set[str] | None = None) -> Table:
        c = config
        table: Table = [("shared.weight", "shared.weight", "copy")]
        if not c.tie_embeddings:
            table.append(("lm_head.weight", "lm_head.weight", "copy"))
        mlp = {"mlp.fc": "wi_0", "mlp.up": "wi_1", "mlp.proj": "wo"} if c.feed_forward == "gated-gelu" else \
            {"mlp.fc": "wi", "mlp.proj": "wo"}
        for stack, n_layer in (("encoder", c.n_layer), ("decoder", c.decoder_layers)):
            table += [(f"{stack}.position_bias.buckets.weight",
                       f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "copy"),
                      (f"{stack}.ln_f.weight", f"{stack}.final_layer_norm.weight", "copy")]
            for i in range(n_layer):
                src, dst = f"{stack}.block.{i}.layer.", f"{stack}.blocks.{i}."
                subs = [("0", "SelfAttention", "attn", "ln_1")]
                if stack == "decoder":
                    subs.append(("1", "EncDecAttention", "cross_attn", "ln_cross"))
                ff = "2" if stack == "decoder" else "1"
                for n, hf_attn, attn, ln in subs:
                    table.append((f"{dst}{ln}.weight", f"{src}{n}.layer_norm.weight", "copy"))
                    table += [(f"{dst}{attn}.{x}.weight", f"{src}{n}.{hf_attn}.{x}.weight", "copy") for x in "qkvo"]
                table.append((f"{dst}ln_2.weight", f"{src}{ff}.layer_norm.weight", "copy"))
                table += [(f"{dst}{ours}.weight", f"{src}{ff}.DenseReluDense.{hf}.weight", "copy")
                          for ours, hf in mlp.items()]
        return table
