"""Hugging Face interop of ELECTRA (``electra``), whose two networks ``transformers`` keeps in two
folders: ``ElectraForPreTraining`` (the discriminator, ``electra.*`` and
``discriminator_predictions``) and ``ElectraForMaskedLM`` (the generator, ``electra.*``,
``generator_predictions`` and ``generator_lm_head``, tied to the word embeddings). Each part's
encoder is BERT's table (:class:`~lmforge.start.hf_bert.BertAdapter`) under ``electra.`` plus the
projection of the factorised embeddings (``embeddings_project``, only when ``embedding_size`` is
not ``hidden_size``).

:data:`lmforge.start.hf.ADAPTERS` registers the discriminator (``init_from``, ``export``);
:data:`GENERATOR` writes the generator's folder (``export --generator``) and reads one
(:func:`lmforge.start.starting_point.with_generator`, for ``ElectraTask(generator_from=...)``). Our
two networks share one embedding layer: the discriminator's is kept (:func:`merge_generator`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from lmforge.errors import UserError
from lmforge.models.bert import BertConfig
from lmforge.models.electra import SHARED, Electra, ElectraConfig
from lmforge.start.adapters import Adapter, Table, d_ff_of
from lmforge.start.hf_bert import BertAdapter

# the generator's shape, as ElectraConfig names it, and the HF keys it comes from
GENERATOR_SHAPE = {"generator_d_model": "hidden_size", "generator_n_head": "num_attention_heads",
                   "generator_n_layer": "num_hidden_layers", "generator_d_ff": "intermediate_size"}
# what the two folders must agree on: the embeddings they share
SHARED_KEYS = ("vocab_size", "embedding_size", "max_position_embeddings", "type_vocab_size")


class _Encoder(BertAdapter):
    """BERT's table under ELECTRA's names: the encoder of either part, the generator's MLM head."""

    prefix = "electra."
    has_nsp = False
    mlm_head = ("generator_predictions.dense", "generator_predictions.LayerNorm", "generator_lm_head.bias")


class ElectraAdapter(Adapter):
    """``ElectraForPreTraining``: the discriminator with its replaced-token head (a bare
    ``ElectraModel`` reads too, its head fresh); our network's generator is not in the folder."""

    network = Electra
    part = "discriminator"
    architecture_name = "ElectraForPreTraining"

    def config_from_hf(self, hf: dict[str, Any], source: str) -> ElectraConfig:
        if "ElectraForMaskedLM" in hf.get("architectures", ()):
            raise UserError(f"'{source}' is an ELECTRA generator (ElectraForMaskedLM): start from the discriminator's "
                            "folder (ElectraForPreTraining) and give this one as model.generator_from.")
        if hf.get("hidden_act", "gelu") != "gelu" or hf.get("position_embedding_type", "absolute") != "absolute":
            raise UserError(f"'{source}' uses {hf.get('position_embedding_type', 'absolute')} positions / "
                            f"{hf.get('hidden_act')} activations; lmforge's ELECTRA has absolute positions and "
                            "exact GELU.")
        return ElectraConfig(vocab_size=hf["vocab_size"], max_seq_len=hf["max_position_embeddings"],
                             n_layer=hf["num_hidden_layers"], n_head=hf["num_attention_heads"],
                             d_model=hf["hidden_size"], d_ff=d_ff_of(hf["intermediate_size"], hf["hidden_size"]),
                             embedding_size=hf.get("embedding_size", 128), dropout=hf.get("hidden_dropout_prob", 0.1),
                             type_vocab_size=hf.get("type_vocab_size", 2), norm_eps=hf.get("layer_norm_eps", 1e-12))

    def shape(self, config: ElectraConfig) -> BertConfig:
        """This part's network shape."""
        return config.discriminator()

    def config_to_hf(self, config: ElectraConfig, ids: dict[str, int]) -> dict[str, Any]:
        c = self.shape(config)
        hf = _Encoder("electra").config_to_hf(c, ids)
        hf.pop("position_embedding_type")
        return {**hf, "embedding_size": c.embedding_width}  # tie_word_embeddings from the BERT table: true

    def architecture(self, config: ElectraConfig) -> str:
        return self.architecture_name

    def refusal(self, config: ElectraConfig) -> str | None:
        c = self.shape(config)
        if c.pre_norm or not c.bias:
            return ("An ELECTRA network with pre-LayerNorm blocks or without biases has no transformers equivalent, "
                    "so it cannot be exported.")
        return None

    def weight_table(self, config: ElectraConfig, hf_keys: set[str] | None = None) -> Table:
        c = self.shape(config)
        base = _Encoder("electra").weight_table(dataclasses.replace(c, mlm_head=True), hf_keys)
        prefix = "electra." if hf_keys is None or any(k.startswith("electra.") for k in hf_keys) else ""
        if c.embedding_width != c.d_model:
            base += [(f"proj_emb.{p}", f"{prefix}embeddings_project.{p}", "copy") for p in ("weight", "bias")]
        return [(f"{self.part}.{ours}", hf, how) for ours, hf, how in base if self._keeps(ours)] + \
            self._head(hf_keys)

    def _keeps(self, ours: str) -> bool:
        return not ours.startswith("mlm_head.")  # the discriminator has no MLM head

    def _head(self, hf_keys: set[str] | None) -> Table:
        if hf_keys is not None and "discriminator_predictions.dense.weight" not in hf_keys:
            return []  # a bare ElectraModel: the head starts fresh
        return [(f"discriminator_head.{ours}.{p}", f"discriminator_predictions.{hf}.{p}", "copy")
                for ours, hf in (("dense", "dense"), ("out", "dense_prediction")) for p in ("weight", "bias")]


class ElectraGeneratorAdapter(ElectraAdapter):
    """``ElectraForMaskedLM``: the generator, with the embeddings it shares with the discriminator."""

    part = "generator"
    architecture_name = "ElectraForMaskedLM"

    def shape(self, config: ElectraConfig) -> BertConfig:
        return config.generator()

    def _keeps(self, ours: str) -> bool:
        return True

    def _head(self, hf_keys: set[str] | None) -> Table:
        return []


GENERATOR = ElectraGeneratorAdapter("electra")


def generator_config(config: ElectraConfig, hf: dict[str, Any], source: str) -> ElectraConfig:
    """``config`` with the generator's shape of a generator folder's ``config.json``; a folder
    whose embeddings cannot be the discriminator's is refused.

    Args:
        config: The discriminator's start's config.
        hf: The generator folder's parsed ``config.json``.
        source: The generator folder, for messages.
    """
    if hf.get("model_type") != "electra" or "ElectraForPreTraining" in hf.get("architectures", ()):
        raise UserError(f"model.generator_from '{source}' is not an ELECTRA generator folder (ElectraForMaskedLM): "
                        "give the generator's folder, or leave generator_from out to start the generator fresh.")
    ours = {"vocab_size": config.vocab_size, "embedding_size": config.embedding_size or config.d_model,
            "max_position_embeddings": config.max_seq_len, "type_vocab_size": config.type_vocab_size}
    differ = [k for k in SHARED_KEYS if hf.get(k, 128 if k == "embedding_size" else None) != ours[k]]
    if differ:
        k = differ[0]
        raise UserError(f"model.generator_from '{source}' has {k}={hf.get(k)} but init_from has {ours[k]}: the two "
                        "networks share their embeddings, so give the generator trained with that discriminator.")
    shape = {ours_key: hf[key] for ours_key, key in GENERATOR_SHAPE.items()}
    return dataclasses.replace(config, **{**shape, "generator_d_ff": d_ff_of(shape["generator_d_ff"],
                                                                             shape["generator_d_model"])})


def merge_generator(state: dict[str, torch.Tensor], generator: dict[str, torch.Tensor],
                    source: str) -> dict[str, torch.Tensor]:
    """Our ELECTRA's weights: ``state`` (the discriminator's, perhaps a generator too) with the
    generator's ``generator``, whose embeddings give way to the discriminator's (ours share one
    layer; one log line says so when they differ).

    Args:
        state: Our network's weights from the ``init_from`` source.
        generator: The generator's, under our names (``generator.*``), from ``source``.
        source: The generator's folder, for the message.
    """
    def twin(key: str) -> str | None:  # the discriminator's name of a shared tensor
        name = key[len("generator."):]
        return "discriminator." + name if name.split(".")[0] in SHARED else None

    shared = {k: twin(k) for k in generator if twin(k) is not None}
    if any(not torch.equal(generator[k], state[d]) for k, d in shared.items()):
        rank_zero_info(f"model.generator_from '{source}': its embeddings differ from the discriminator's; ELECTRA "
                       "shares one embedding layer, so the discriminator's are kept.")
    return {**state, **generator, **{k: state[d] for k, d in shared.items()}}
