"""Hugging Face interop: read a ``transformers`` model folder (or hub id) into our networks,
and write ours as a folder ``transformers`` loads with identical logits. Used through
:mod:`lmforge.start.starting_point` (reading) and :mod:`lmforge.start.export` (writing).

One table per architecture lists each of our parameters with the Hugging Face tensor(s) it
corresponds to and how (``copy``; ``t``: GPT-2's ``Conv1D`` stores ``(in, out)``; ``qkv``:
our fused query/key/value projection is HF's three stacked along the output dimension;
``tied``: our name for a tensor tied to another, read but not written). The
same table reads and writes, so import and export cannot drift apart.

Architectures: BERT (``bert``: BERT, BioBERT, MiniLM, ...), RoBERTa (``roberta``), GPT-2
(``gpt2``), T5 (``t5``: v1.0 ReLU and v1.1 gated-GELU), and the Llama family (``llama``:
Llama 2/3, SmolLM2, ...; ``mistral``; ``qwen2``, with query/key/value biases), whose config and
table live in :mod:`lmforge.start.hf_llama`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from torch import nn

from lmforge.errors import UserError
from lmforge.models import GPT, T5, Bert, BertConfig, GPTConfig, Llama, T5Config
from lmforge.start.hf_llama import LLAMA_KINDS, llama_config_from_hf, llama_config_to_hf, llama_table
from lmforge.tokenizer import ROLE_SPELLINGS, Tokenizer

Table = list[tuple[str, "str | tuple[str, ...]", str]]  # (ours, hf name(s), how)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


# -- configs --------------------------------------------------------------------------------
def _d_ff(hidden: int | None, d_model: int) -> int | None:
    """Our ``d_ff``: ``None`` stands for the usual ``4 * d_model``."""
    return None if hidden in (None, 4 * d_model) else hidden


def config_from_hf(hf: dict[str, Any], source: str) -> tuple[type[nn.Module], Any, str]:
    """(our network class, its config, HF model type) from a ``config.json``."""
    kind = hf.get("model_type")
    if kind in ("bert", "roberta"):
        if hf.get("position_embedding_type", "absolute") != "absolute" or hf.get("hidden_act", "gelu") != "gelu":
            raise UserError(f"'{source}' uses {hf.get('position_embedding_type')} positions / {hf.get('hidden_act')} "
                            "activations; lmforge's BERT has absolute positions and exact GELU.")
        offset = 2 if kind == "roberta" else 0
        config = BertConfig(
            vocab_size=hf["vocab_size"], max_seq_len=hf["max_position_embeddings"] - offset,
            n_layer=hf["num_hidden_layers"], n_head=hf["num_attention_heads"], d_model=hf["hidden_size"],
            d_ff=_d_ff(hf["intermediate_size"], hf["hidden_size"]), dropout=hf.get("hidden_dropout_prob", 0.1),
            type_vocab_size=hf.get("type_vocab_size", 2), position_offset=offset,
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12), nsp_head=True)
        return Bert, config, kind
    if kind == "gpt2":
        if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise UserError(f"'{source}' uses {hf['activation_function']} activations; lmforge's GPT has tanh-GELU.")
        config = GPTConfig(
            vocab_size=hf["vocab_size"], max_seq_len=hf["n_positions"], n_layer=hf["n_layer"], n_head=hf["n_head"],
            d_model=hf["n_embd"], d_ff=_d_ff(hf.get("n_inner"), hf["n_embd"]), dropout=hf.get("resid_pdrop", 0.1),
            layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5))
        return GPT, config, kind
    if kind == "t5":
        proj = hf.get("feed_forward_proj", "relu")
        if proj not in ("relu", "gated-gelu"):
            raise UserError(f"'{source}' has feed_forward_proj={proj!r}; lmforge's T5 has 'relu' or 'gated-gelu'.")
        config = T5Config(
            vocab_size=hf["vocab_size"], d_model=hf["d_model"], d_kv=hf["d_kv"], d_ff=hf["d_ff"],
            n_layer=hf["num_layers"],
            n_decoder_layer=None if hf.get("num_decoder_layers") in (None, hf["num_layers"]) else hf["num_decoder_layers"],
            n_head=hf["num_heads"],
            relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
            relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
            dropout=hf.get("dropout_rate", 0.1), layer_norm_eps=hf.get("layer_norm_epsilon", 1e-6),
            feed_forward=proj, tie_word_embeddings=hf.get("tie_word_embeddings", True))
        return T5, config, kind
    if kind in LLAMA_KINDS:
        return Llama, llama_config_from_hf(hf, kind, source), kind
    raise UserError(f"'{source}' is a {kind!r} model; lmforge reads bert, roberta, gpt2, t5, llama, mistral and "
                    "qwen2 models.")


def config_to_hf(config: Any, kind: str, tokenizer: Tokenizer | None) -> dict[str, Any]:
    """The ``config.json`` of our config as HF architecture ``kind``."""
    ids = {}
    if tokenizer is not None:
        for role, key in (("pad", "pad_token_id"), ("bos", "bos_token_id"), ("eos", "eos_token_id")):
            if tokenizer.role_id(role) is not None:
                ids[key] = tokenizer.role_id(role)
    if kind in ("bert", "roberta"):
        c: BertConfig = config
        head = "BertForPreTraining" if kind == "bert" and c.nsp_head else \
            "BertForMaskedLM" if kind == "bert" else "RobertaForMaskedLM"
        return {"model_type": kind, "architectures": [head], "vocab_size": c.vocab_size,
                "max_position_embeddings": c.max_seq_len + c.position_offset, "num_hidden_layers": c.n_layer,
                "num_attention_heads": c.n_head, "hidden_size": c.d_model, "intermediate_size": c.hidden_size,
                "hidden_act": "gelu", "hidden_dropout_prob": c.dropout, "attention_probs_dropout_prob": c.dropout,
                "type_vocab_size": c.type_vocab_size, "layer_norm_eps": c.layer_norm_eps,
                "position_embedding_type": "absolute", **ids}
    if kind == "gpt2":
        g: GPTConfig = config
        if not g.bias:
            raise UserError("A GPT without bias terms has no GPT-2 equivalent in transformers: export needs bias: true.")
        return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": g.vocab_size,
                "n_positions": g.max_seq_len, "n_layer": g.n_layer, "n_head": g.n_head, "n_embd": g.d_model,
                "n_inner": g.hidden_size, "activation_function": "gelu_new", "resid_pdrop": g.dropout,
                "embd_pdrop": g.dropout, "attn_pdrop": g.dropout, "layer_norm_epsilon": g.layer_norm_eps,
                "tie_word_embeddings": True, **ids}
    if kind in LLAMA_KINDS:
        return llama_config_to_hf(config, kind, ids)
    t: T5Config = config
    return {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "vocab_size": t.vocab_size,
            "d_model": t.d_model, "d_kv": t.d_kv, "d_ff": t.d_ff, "num_layers": t.n_layer,
            "num_decoder_layers": t.decoder_layers, "num_heads": t.n_head,
            "relative_attention_num_buckets": t.relative_attention_num_buckets,
            "relative_attention_max_distance": t.relative_attention_max_distance, "dropout_rate": t.dropout,
            "layer_norm_epsilon": t.layer_norm_eps, "feed_forward_proj": t.feed_forward,
            "is_gated_act": t.feed_forward == "gated-gelu", "dense_act_fn": "gelu_new" if t.feed_forward != "relu"
            else "relu", "tie_word_embeddings": t.tie_word_embeddings, "decoder_start_token_id": ids.get(
                "pad_token_id", 0), "is_encoder_decoder": True, **ids}


# -- weight tables --------------------------------------------------------------------------
def _bert_table(c: BertConfig, kind: str, prefix: str, heads: bool) -> Table:
    e = f"{prefix}embeddings."
    table: Table = [("wte.weight", e + "word_embeddings.weight", "copy"),
                    ("wpe.weight", e + "position_embeddings.weight", "copy"),
                    ("wse.weight", e + "token_type_embeddings.weight", "copy"),
                    ("ln_emb.weight", e + "LayerNorm.weight", "copy"), ("ln_emb.bias", e + "LayerNorm.bias", "copy")]
    sub = {"attn.proj": "attention.output.dense", "ln_1": "attention.output.LayerNorm",
           "mlp.fc": "intermediate.dense", "mlp.proj": "output.dense", "ln_2": "output.LayerNorm"}
    for i in range(c.n_layer):
        src = f"{prefix}encoder.layer.{i}."
        for p in ("weight", "bias"):
            table.append((f"blocks.{i}.attn.qkv.{p}",
                          tuple(f"{src}attention.self.{n}.{p}" for n in ("query", "key", "value")), "qkv"))
            table += [(f"blocks.{i}.{ours}.{p}", f"{src}{hf}.{p}", "copy") for ours, hf in sub.items()]
    if not heads:
        return table
    if kind == "bert":
        t = "cls.predictions.transform."
        table += [("mlm_head.dense.weight", t + "dense.weight", "copy"), ("mlm_head.dense.bias", t + "dense.bias", "copy"),
                  ("mlm_head.ln.weight", t + "LayerNorm.weight", "copy"), ("mlm_head.ln.bias", t + "LayerNorm.bias", "copy"),
                  ("mlm_head.bias", "cls.predictions.bias", "copy")]
        if c.nsp_head:
            table += [("pooler.weight", f"{prefix}pooler.dense.weight", "copy"),
                      ("pooler.bias", f"{prefix}pooler.dense.bias", "copy"),
                      ("nsp.weight", "cls.seq_relationship.weight", "copy"),
                      ("nsp.bias", "cls.seq_relationship.bias", "copy")]
    else:
        table += [("mlm_head.dense.weight", "lm_head.dense.weight", "copy"), ("mlm_head.dense.bias", "lm_head.dense.bias", "copy"),
                  ("mlm_head.ln.weight", "lm_head.layer_norm.weight", "copy"),
                  ("mlm_head.ln.bias", "lm_head.layer_norm.bias", "copy"), ("mlm_head.bias", "lm_head.bias", "copy")]
    return table


def _gpt2_table(c: GPTConfig) -> Table:
    p = "transformer."
    table: Table = [("wte.weight", p + "wte.weight", "copy"), ("wpe.weight", p + "wpe.weight", "copy"),
                    ("lm_head.weight", p + "wte.weight", "tied"),
                    ("ln_f.weight", p + "ln_f.weight", "copy"), ("ln_f.bias", p + "ln_f.bias", "copy")]
    linear = {"attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj", "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}
    for i in range(c.n_layer):
        src, dst = f"{p}h.{i}.", f"blocks.{i}."
        for ln in ("ln_1", "ln_2"):
            table += [(f"{dst}{ln}.{w}", f"{src}{ln}.{w}", "copy") for w in ("weight", "bias")]
        for ours, hf in linear.items():
            table += [(f"{dst}{ours}.weight", f"{src}{hf}.weight", "t"), (f"{dst}{ours}.bias", f"{src}{hf}.bias", "copy")]
    return table


def _t5_table(c: T5Config) -> Table:
    table: Table = [("shared.weight", "shared.weight", "copy")]
    if not c.tie_word_embeddings:
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
            table += [(f"{dst}{ours}.weight", f"{src}{ff}.DenseReluDense.{hf}.weight", "copy") for ours, hf in mlp.items()]
    return table


def weight_table(config: Any, kind: str, hf_keys: set[str] | None = None) -> Table:
    """Our parameter names and their HF tensors for HF architecture ``kind``; ``hf_keys`` (when
    importing) decides the BERT/RoBERTa prefix and whether the checkpoint has the heads."""
    if kind == "gpt2":
        return _gpt2_table(config)
    if kind == "t5":
        return _t5_table(config)
    if kind in LLAMA_KINDS:
        return llama_table(config)
    base = "roberta." if kind == "roberta" else "bert."
    if hf_keys is None:
        return _bert_table(config, kind, base, heads=True)
    prefix = base if any(k.startswith(base) for k in hf_keys) else ""  # a bare BertModel has no prefix
    heads = "cls.predictions.bias" in hf_keys or "lm_head.bias" in hf_keys
    return _bert_table(config, kind, prefix, heads)


def hf_to_ours(state: dict[str, torch.Tensor], table: Table, source: str) -> dict[str, torch.Tensor]:
    """Our state dict from an HF one, by ``table``; a missing tensor is named in the error."""
    out = {}
    for ours, hf, how in table:
        names = hf if isinstance(hf, tuple) else (hf,)
        missing = [n for n in names if n not in state]
        if missing:
            raise UserError(f"'{source}' has no tensor '{missing[0]}' (needed for our '{ours}'): it is not a complete "
                            "checkpoint of its architecture.")
        tensors = [state[n] for n in names]
        out[ours] = torch.cat(tensors, 0) if how == "qkv" else tensors[0].t().contiguous() if how == "t" else tensors[0]
    return out


def ours_to_hf(state: dict[str, torch.Tensor], table: Table) -> dict[str, torch.Tensor]:
    """The HF state dict of ours, by ``table`` (tied tensors are written once, as HF names them)."""
    out = {}
    for ours, hf, how in table:
        value = state[ours]
        if how == "qkv":
            out.update(zip(hf, (part.contiguous() for part in value.chunk(3, 0))))
        elif how != "tied":  # a tied tensor is its twin, written once
            out[hf] = value.t().contiguous() if how == "t" else value.contiguous()
    return out


# -- reading a folder or hub id ------------------------------------------------------------------
def resolve(source: str, need_config: bool = True) -> Path:
    """The local folder of ``source``: a folder as is, ``hf:<folder>`` the same, ``hf:<id>`` downloaded
    from the hub (cached by ``huggingface_hub``)."""
    name = source[len("hf:"):] if source.startswith("hf:") else source
    if not source.startswith("hf:") or Path(name).is_dir():
        folder = Path(name)
        if need_config and not (folder / "config.json").is_file():
            raise UserError(f"'{folder}' has no config.json: give a Hugging Face model folder (save_pretrained).")
        return folder
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.bin", "vocab.txt",
                                                             "merges.txt"]))
    except Exception as err:  # offline, unknown id, gated repo ...
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"Could not download '{name}' from the Hugging Face hub: {first}. Check the id and your "
                        "network, or download it and give the folder.") from err


def read_state(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a model folder: ``model.safetensors``, ``pytorch_model.bin`` or their sharded forms."""
    from safetensors.torch import load_file

    for name in WEIGHT_FILES:
        index = folder / f"{name}.index.json"
        files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else \
            [name] if (folder / name).is_file() else []
        if files:
            state: dict[str, torch.Tensor] = {}
            for f in files:
                path = folder / f
                part = load_file(str(path)) if f.endswith(".safetensors") else \
                    torch.load(path, map_location="cpu", weights_only=True)
                state.update(part)
            return state
    raise UserError(f"'{folder}' holds no model.safetensors or pytorch_model.bin: give a complete model folder.")


def tensor_names(folder: Path) -> set[str]:
    """The names of a model folder's tensors, read from the file headers only."""
    from safetensors import safe_open

    for name in WEIGHT_FILES:
        index = folder / f"{name}.index.json"
        if index.is_file():
            return set(json.loads(index.read_text())["weight_map"])
        if (folder / name).is_file():
            if name.endswith(".safetensors"):
                with safe_open(str(folder / name), "pt") as f:
                    return set(f.keys())
            return set(torch.load(folder / name, map_location="cpu", weights_only=True, mmap=True))
    raise UserError(f"'{folder}' holds no model.safetensors or pytorch_model.bin: give a complete model folder.")


# HF's names for the roles lmforge finds by spelling (tokenizer_config.json, special_tokens_map.json)
ROLE_KEYS = {"pad_token": "pad", "mask_token": "mask", "cls_token": "cls", "sep_token": "sep", "bos_token": "bos",
             "eos_token": "eos"}


def declared_tokens(folder: Path) -> dict[str, str]:
    """``{role key: token}`` that a folder's ``special_tokens_map.json`` / ``tokenizer_config.json`` declare."""
    declared: dict[str, str] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if not path.is_file():
            continue
        for key, value in json.loads(path.read_text(encoding="utf-8")).items():
            token = value.get("content") if isinstance(value, dict) else value
            if key in ROLE_KEYS and isinstance(token, str):
                declared[key] = token
    return declared


def load_hf_tokenizer(folder: Path, source: str) -> Tokenizer | None:
    """The folder's ``tokenizer.json``, else a WordPiece tokenizer from a BERT ``vocab.txt``, with
    each special token the folder declares checked against the role lmforge gives it."""
    if (folder / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_file(folder / "tokenizer.json")
    elif (folder / "vocab.txt").is_file():
        tokenizer = _wordpiece_from_vocab(folder)
    else:
        return None
    for key, token in declared_tokens(folder).items():
        role = ROLE_KEYS[key]
        token_id = tokenizer.backend.token_to_id(token)
        if token_id is not None and tokenizer.role_id(role) != token_id:
            raise UserError(
                f"'{source}' declares {key} '{token}', but lmforge finds the {role} token by the spellings "
                f"{', '.join(ROLE_SPELLINGS[role])}: this tokenizer's special tokens are not supported."
            )
    return tokenizer


def _wordpiece_from_vocab(folder: Path) -> Tokenizer:
    """A BERT ``vocab.txt`` as the WordPiece tokenizer ``BertTokenizerFast`` builds from it."""
    from tokenizers import Tokenizer as Backend, decoders, models, normalizers, pre_tokenizers, processors

    settings = folder / "tokenizer_config.json"
    lower = json.loads(settings.read_text()).get("do_lower_case", True) if settings.is_file() else True
    backend = Backend(models.WordPiece.from_file(str(folder / "vocab.txt"), unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=lower)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    if cls is not None and sep is not None:
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    specials = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if backend.token_to_id(t) is not None]
    backend.add_special_tokens(specials)
    return Tokenizer(backend)


def read_hf_folder(folder: Path, source: str) -> tuple[type[nn.Module], Any, str, Table]:
    """(network class, config, HF model type, weight table) of a ``transformers`` model folder,
    from its ``config.json`` and the names of its tensors (no weights read)."""
    network, config, kind = config_from_hf(json.loads((folder / "config.json").read_text()), source)
    names = tensor_names(folder)
    if kind == "t5" and "lm_head.weight" not in names:
        config = dataclasses.replace(config, tie_word_embeddings=True)
    if kind in LLAMA_KINDS and "lm_head.weight" not in names:  # a tied head is saved once, as the embedding
        config = dataclasses.replace(config, tie_embeddings=True)
    table = weight_table(config, kind, names)
    if network is Bert and not ("cls.seq_relationship.weight" in names and any(r[0].startswith("nsp.") for r in table)):
        # a masked-LM checkpoint (RoBERTa, most BERTs on the hub) or a bare encoder: no NSP head
        config = dataclasses.replace(config, nsp_head=False)
        table = [row for row in table if not row[0].startswith(("pooler.", "nsp."))]
    return network, config, kind, table


def export_hf(network: type[nn.Module], config: Any, state: dict[str, torch.Tensor], tokenizer: Tokenizer | None,
              out: Path, kind: str | None = None) -> Path:
    """Write our network as a ``transformers`` folder: config.json, model.safetensors, tokenizer files.

    Args:
        network: Our network class (GPT, Bert, T5 or Llama).
        config: Its config.
        state: Our network's state dict.
        tokenizer: Written as tokenizer.json with a tokenizer_config.json naming its special tokens.
        out: The folder to create (it must not exist, or be empty).
        kind: HF architecture: ``bert`` or ``roberta`` for the BERT family (default: ``roberta``
            when positions are offset by 2, else ``bert``); ``llama``, ``mistral`` or ``qwen2`` for
            a Llama (default: ``qwen2`` with q/k/v biases, else ``llama``).
    """
    from safetensors.torch import save_file

    if network not in (GPT, Bert, T5, Llama):
        raise UserError(f"A {network.family} network has no transformers equivalent to export to "
                        "(bert, roberta, gpt2, t5, llama have).")
    if network is Llama:
        kind = kind or ("qwen2" if config.qkv_bias else "mistral" if config.sliding_window else "llama")
    kind = kind or {GPT: "gpt2", T5: "t5"}.get(network) or ("roberta" if config.position_offset == 2 else "bert")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"'{out}' already exists and is not empty: choose another --to folder.")
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    hf_state = ours_to_hf(state, weight_table(config, kind))
    save_file(hf_state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(config_to_hf(config, kind, tokenizer), indent=2))
    if tokenizer is not None:
        tokenizer.save(tmp / "tokenizer.json")
        names = {"pad_token": "pad", "unk_token": "unk", "mask_token": "mask", "cls_token": "cls",
                 "sep_token": "sep", "bos_token": "bos", "eos_token": "eos"}
        special = {key: tokenizer.backend.id_to_token(tokenizer.role_id(role)) for key, role in names.items()
                   if tokenizer.role_id(role) is not None}
        (tmp / "tokenizer_config.json").write_text(json.dumps(
            {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": getattr(config, "max_seq_len", 512),
             **special}, indent=2))
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out
