"""Hugging Face interop: read a ``transformers`` model folder (or hub id) into our networks,
and write ours as a folder ``transformers`` loads with identical logits. Used through
:mod:`lmforge.start.starting_point` (reading) and :mod:`lmforge.start.export` (writing).

Each architecture is one :class:`~lmforge.start.adapters.Adapter` (config both ways, the weight
table, the HF class, folder fix-ups) in one module per family, registered in :data:`ADAPTERS` by
HF ``model_type``; this module is the mechanism they share, with nothing per family.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from torch import nn

from lmforge.errors import UserError
from lmforge.start.adapters import Adapter, Table
from lmforge.start.hf_bert import BertAdapter, RobertaAdapter
from lmforge.start.hf_electra import ElectraAdapter
from lmforge.start.hf_gpt import GPT2Adapter
from lmforge.start.hf_llama import LlamaAdapter
from lmforge.start.hf_t5 import T5Adapter
from lmforge.tokenizer import ROLE_SPELLINGS, Tokenizer

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

# HF model_type -> its adapter; for a network several fit, the first that fits is export's default
ADAPTERS: dict[str, Adapter] = {
    "bert": BertAdapter("bert"),
    "roberta": RobertaAdapter("roberta"),
    "electra": ElectraAdapter("electra"),
    "gpt2": GPT2Adapter("gpt2"),
    "t5": T5Adapter("t5"),
    "llama": LlamaAdapter("llama"),
    "mistral": LlamaAdapter("mistral"),
    "qwen2": LlamaAdapter("qwen2"),
}


def _listing(kinds: list[str]) -> str:
    return ", ".join(kinds[:-1]) + f" and {kinds[-1]}" if len(kinds) > 1 else kinds[0]


def import_adapter(hf: dict[str, Any], source: str) -> Adapter:
    """The adapter of a ``config.json``'s ``model_type``; an architecture we do not read is refused.

    Args:
        hf: The parsed ``config.json``.
        source: The folder or hub id, for messages.
    """
    kind = hf.get("model_type")
    if kind not in ADAPTERS:
        raise UserError(f"'{source}' is a {kind!r} model; lmforge reads {_listing(list(ADAPTERS))} models.")
    return ADAPTERS[kind]


def refuse_unknown_kind(kind: str | None) -> None:
    """One sentence naming the valid kinds, for a ``--kind`` that no adapter registers.

    Args:
        kind: What the user gave, or None.
    """
    if kind is not None and kind not in ADAPTERS:
        raise UserError(f"--kind {kind!r} is not an architecture lmforge exports: use one of {', '.join(ADAPTERS)}.")


def export_adapter(network: type[nn.Module], config: Any, kind: str | None = None) -> Adapter:
    """The adapter that writes ``network`` with ``config`` as HF architecture ``kind`` (default:
    the first registered that fits), else one sentence that names the kinds that fit.

    Args:
        network: Our network class.
        config: Its config.
        kind: An HF ``model_type`` (a key of :data:`ADAPTERS`), or None.
    """
    refuse_unknown_kind(kind)
    own = [k for k, a in ADAPTERS.items() if a.network is network]
    if not own:
        families = sorted({a.network.family for a in ADAPTERS.values()})
        raise UserError(f"A {network.family} network has no transformers equivalent to export to (only "
                        f"{_listing(families)} networks have).")
    fits = [k for k in own if ADAPTERS[k].refusal(config) is None]
    if kind is None or ADAPTERS[kind].network is not network:
        if not fits:
            raise UserError(ADAPTERS[own[0]].refusal(config))
        if kind is None:
            return ADAPTERS[fits[0]]
        raise UserError(f"--kind {kind} writes a {ADAPTERS[kind].network.family} network, but the checkpoint holds a "
                        f"{network.family} network: give --kind {' or '.join(fits)}, or leave --kind out.")
    refusal = ADAPTERS[kind].refusal(config)
    if refusal is not None:
        raise UserError(f"{refusal.rstrip('.')}: give --kind {' or '.join(fits)}." if fits else refusal)
    return ADAPTERS[kind]


def config_to_hf(adapter: Adapter, config: Any, tokenizer: Tokenizer | None) -> dict[str, Any]:
    """The ``config.json`` of our config as ``adapter``'s architecture, with the tokenizer's special ids.

    Args:
        adapter: The architecture.
        config: Our config.
        tokenizer: The tokenizer that goes with the weights, if any.
    """
    roles = {"pad_token_id": "pad", "bos_token_id": "bos", "eos_token_id": "eos"}
    found = {key: tokenizer.role_id(role) for key, role in roles.items()} if tokenizer is not None else {}
    ids = {key: i for key, i in found.items() if i is not None}
    return {"model_type": adapter.model_type, "architectures": [adapter.architecture(config)],
            **adapter.config_to_hf(config, ids), **ids}


def hf_to_ours(state: dict[str, torch.Tensor], table: Table, source: str) -> dict[str, torch.Tensor]:
    """Our state dict from an HF one, by ``table``; a missing tensor is named in the error."""
    out = {}
    for ours, hf, how in table:
        if how == "also":  # a second name of a tensor read under its first
            continue
        names = hf if isinstance(hf, tuple) else (hf,)
        missing = [n for n in names if n not in state]
        if missing:
            raise UserError(f"'{source}' has no tensor '{missing[0]}' (needed for our '{ours}'): it is not a complete "
                            "checkpoint of its architecture.")
        tensors = [state[n] for n in names]
        out[ours] = torch.cat(tensors, 0) if how == "qkv" else tensors[0].t().contiguous() if how == "t" else tensors[0]
    return out


def ours_to_hf(state: dict[str, torch.Tensor], table: Table) -> dict[str, torch.Tensor]:
    """The HF state dict of ours, by ``table`` (tied tensors are written once, as HF names them;
    ``also`` entries write a tensor under a second name)."""
    out = {}
    for ours, hf, how in table:
        value = state[ours]
        if how == "qkv":
            out.update(zip(hf, (part.contiguous() for part in value.chunk(3, 0))))
        elif how == "also":  # a copy of its own: safetensors refuses two names on one storage
            out[hf] = value.clone()
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
    from its ``config.json`` and the names of its tensors (no weights read).

    Args:
        folder: The model folder.
        source: The name the user gave it, for messages.
    """
    hf = json.loads((folder / "config.json").read_text())
    adapter = import_adapter(hf, source)
    names = tensor_names(folder)
    config = adapter.fit_folder(adapter.config_from_hf(hf, source), names)
    return adapter.network, config, adapter.model_type, adapter.weight_table(config, names)


def export_hf(network: type[nn.Module], config: Any, state: dict[str, torch.Tensor], tokenizer: Tokenizer | None,
              out: Path, kind: str | Adapter | None = None) -> Path:
    """Write our network as a ``transformers`` folder: config.json, model.safetensors, tokenizer
    files. Everything is checked before anything is written; the files go to a temporary folder
    beside ``out``, renamed to ``out`` when complete and removed on any failure.

    Args:
        network: Our network class (one an adapter of :data:`ADAPTERS` writes).
        config: Its config.
        state: Our network's state dict.
        tokenizer: Written as tokenizer.json with a tokenizer_config.json naming its special tokens.
        out: The folder to create (it must not exist, or be empty).
        kind: HF architecture, a key of :data:`ADAPTERS` (default: the first registered for
            ``network`` that fits ``config``: ``roberta`` for positions offset by 2, ``qwen2`` for
            q/k/v biases, ``mistral`` for a sliding window), or an adapter outside it (ELECTRA's generator).
    """
    from safetensors.torch import save_file

    adapter = kind if isinstance(kind, Adapter) else export_adapter(network, config, kind)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"'{out}' already exists and is not empty: choose another --to folder.")
    hf_state = ours_to_hf(state, adapter.weight_table(config))
    files = {"config.json": json.dumps(config_to_hf(adapter, config, tokenizer), indent=2)}
    if tokenizer is not None:
        files["tokenizer_config.json"] = json.dumps(_tokenizer_config(tokenizer, config), indent=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        save_file(hf_state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        if tokenizer is not None:
            tokenizer.save(tmp / "tokenizer.json")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _tokenizer_config(tokenizer: Tokenizer, config: Any) -> dict[str, Any]:
    """``tokenizer_config.json``: the special tokens by HF's names, for ``AutoTokenizer``."""
    ids = {key: tokenizer.role_id(role) for key, role in {**ROLE_KEYS, "unk_token": "unk"}.items()}
    special = {key: tokenizer.backend.id_to_token(i) for key, i in ids.items() if i is not None}
    return {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": getattr(config, "max_seq_len", 512),
            **special}
