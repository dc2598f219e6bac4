"""Hugging Face interop of BERT (``bert``: BERT, BioBERT, MiniLM, ...) and RoBERTa (``roberta``):
their ``config.json`` to our :class:`BertConfig` and back, and the weight table. RoBERTa is BERT
with positions offset by 2, its own prefix and MLM-head names, and no NSP head.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lmforge.errors import UserError
from lmforge.models import Bert, BertConfig
from lmforge.start.adapters import Adapter, Table, d_ff_of

# our name in a block -> HF's, below ``encoder.layer.<i>.``
_BLOCK = {"attn.proj": "attention.output.dense", "ln_1": "attention.output.LayerNorm",
          "mlp.fc": "intermediate.dense", "mlp.proj": "output.dense", "ln_2": "output.LayerNorm"}


class BertAdapter(Adapter):
    """``BertForPreTraining`` (with the NSP head) or ``BertForMaskedLM``; a bare ``BertModel`` reads too."""

    network = Bert
    prefix = "bert."
    position_offset = 0  # HF BERT's positions start at 0
    has_nsp = True  # whether the architecture carries BERT's next-sentence head
    # HF's names of our MLM head's dense layer, its LayerNorm and its output bias
    mlm_head = ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm", "cls.predictions.bias")
    decoder = "cls.predictions.decoder.weight"  # the MLM output matrix, saved when not tied to the embeddings

    def config_from_hf(self, hf: dict[str, Any], source: str) -> BertConfig:
        if hf.get("position_embedding_type", "absolute") != "absolute" or hf.get("hidden_act", "gelu") != "gelu":
            raise UserError(f"'{source}' uses {hf.get('position_embedding_type')} positions / {hf.get('hidden_act')} "
                            "activations; lmforge's BERT has absolute positions and exact GELU.")
        return BertConfig(
            vocab_size=hf["vocab_size"], max_seq_len=hf["max_position_embeddings"] - self.position_offset,
            n_layer=hf["num_hidden_layers"], n_head=hf["num_attention_heads"], d_model=hf["hidden_size"],
            d_ff=d_ff_of(hf["intermediate_size"], hf["hidden_size"]), dropout=hf.get("hidden_dropout_prob", 0.1),
            type_vocab_size=hf.get("type_vocab_size", 2), position_offset=self.position_offset,
            norm_eps=hf.get("layer_norm_eps", 1e-12), nsp_head=self.has_nsp,
            tie_embeddings=hf.get("tie_word_embeddings", True))

    def config_to_hf(self, config: BertConfig, ids: dict[str, int]) -> dict[str, Any]:
        c = config
        return {"vocab_size": c.vocab_size, "max_position_embeddings": c.max_seq_len + c.position_offset,
                "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head, "hidden_size": c.d_model,
                "intermediate_size": c.mlp_width, "hidden_act": "gelu", "hidden_dropout_prob": c.dropout,
                "attention_probs_dropout_prob": c.dropout, "type_vocab_size": c.type_vocab_size,
                "layer_norm_eps": c.norm_eps, "position_embedding_type": "absolute",
                "tie_word_embeddings": c.tie_embeddings}

    def architecture(self, config: BertConfig) -> str:
        return "BertForPreTraining" if config.nsp_head else "BertForMaskedLM"

    def refusal(self, config: BertConfig) -> str | None:
        if config.pre_norm or not config.bias:
            option = "pre_norm: true" if config.pre_norm else "bias: false"
            return (f"A BERT network with {option} has no {self.model_type} equivalent (transformers' "
                    "encoder has post-LayerNorm blocks with biases), so it cannot be exported.")
        if config.position_offset != self.position_offset:
            return (f"A BERT network with position_offset: {config.position_offset} has no {self.model_type} "
                    f"equivalent (its positions start at {self.position_offset}).")
        if config.embedding_width != config.d_model or not config.mlm_head:
            return (f"A BERT network with factorised embeddings or no MLM head (an ELECTRA discriminator) has no "
                    f"{self.model_type} equivalent: use it within lmforge (fine-tuning, `lmforge evaluate`).")
        return None

    def fit_folder(self, config: BertConfig, hf_keys: set[str]) -> BertConfig:
        # a masked-LM checkpoint (most BERTs on the hub) or a bare encoder has no NSP head
        nsp = self.has_nsp and "cls.seq_relationship.weight" in hf_keys and self._has_heads(hf_keys)
        # a tied output matrix is saved once, as the embedding
        tied = config.tie_embeddings or self.decoder not in hf_keys
        return dataclasses.replace(config, nsp_head=nsp, tie_embeddings=tied)

    def _has_heads(self, hf_keys: set[str]) -> bool:
        return self.mlm_head[2] in hf_keys

    def weight_table(self, config: BertConfig, hf_keys: set[str] | None = None) -> Table:
        prefix, heads = self.prefix, True
        if hf_keys is not None:
            prefix = self.prefix if any(k.startswith(self.prefix) for k in hf_keys) else ""  # a bare encoder has none
            heads = self._has_heads(hf_keys)
        e = f"{prefix}embeddings."
        table: Table = [("wte.weight", e + "word_embeddings.weight", "copy"),
                        ("wpe.weight", e + "position_embeddings.weight", "copy"),
                        ("wse.weight", e + "token_type_embeddings.weight", "copy")]
        table += [(f"ln_emb.{p}", f"{e}LayerNorm.{p}", "copy") for p in ("weight", "bias")]
        for i in range(config.n_layer):
            src = f"{prefix}encoder.layer.{i}."
            for p in ("weight", "bias"):
                table.append((f"blocks.{i}.attn.qkv.{p}",
                              tuple(f"{src}attention.self.{n}.{p}" for n in ("query", "key", "value")), "qkv"))
                table += [(f"blocks.{i}.{ours}.{p}", f"{src}{hf}.{p}", "copy") for ours, hf in _BLOCK.items()]
        if not heads:
            return table
        dense, ln, bias = self.mlm_head
        table += [(f"mlm_head.{ours}.{p}", f"{hf}.{p}", "copy") for ours, hf in (("dense", dense), ("ln", ln))
                  for p in ("weight", "bias")]
        if config.tie_embeddings:
            table.append(("mlm_head.bias", bias, "copy"))
        else:  # transformers 5 reads the untied head's bias as decoder.bias; 4.x tied it to (and saved) `bias`
            decoder_bias = self.decoder.replace(".weight", ".bias")
            live = decoder_bias if hf_keys is None or decoder_bias in hf_keys else bias
            table += [("mlm_head.decoder.weight", self.decoder, "copy"), ("mlm_head.bias", live, "copy"),
                      ("mlm_head.bias", bias, "also")]
        if config.nsp_head and self.has_nsp:
            table += [(f"pooler.{p}", f"{prefix}pooler.dense.{p}", "copy") for p in ("weight", "bias")]
            table += [(f"nsp.{p}", f"cls.seq_relationship.{p}", "copy") for p in ("weight", "bias")]
        return table


class RobertaAdapter(BertAdapter):
    """``RobertaForMaskedLM``: BERT with positions offset past the padding index, no NSP head."""

    prefix = "roberta."
    position_offset = 2  # RoBERTa's table reserves the padding index and one more
    has_nsp = False  # an NSP head is not exported
    mlm_head = ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias")
    decoder = "lm_head.decoder.weight"

    def architecture(self, config: BertConfig) -> str:
        return "RobertaForMaskedLM"
