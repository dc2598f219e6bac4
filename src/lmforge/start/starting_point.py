"""Weights to start from and the tokenizer that came with them, from any source, read once.

A source is an lmforge checkpoint (``.ckpt``), a ``transformers`` model folder
(``save_pretrained``), ``hf:<folder>`` (the same), or ``hf:<hub id>`` (downloaded and cached).
:func:`open_start` resolves it and reads its config and tokenizer; the weights are read when a
task asks for them (:meth:`Start.state_dict`). A command opens each of its run's sources once
(:class:`lmforge.start.RunStart`) and hands the opened :class:`Start` down.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lmforge.errors import UserError
from lmforge.renames import new_class_path, new_hparams, new_keys
from lmforge.start.hf import hf_to_ours, load_hf_tokenizer, read_hf_folder, read_state, resolve, tensor_names
from lmforge.start.hf_electra import GENERATOR, generator_config, merge_generator
from lmforge.tokenizer import Tokenizer


@dataclass
class Start:
    """Pretrained weights for one of our networks, and the tokenizer they were trained with.

    Args:
        source: The source as the user gave it, for messages.
        network: Our network class (``lmforge.models``); its ``family`` names it.
        config: The network's config (its shape).
        tokenizer: The tokenizer that came with the weights, normalised; ``None`` if the source has none.
        read_weights: Reads the weights under our parameter names (called by :meth:`state_dict`).
        task: For an lmforge checkpoint, the class path of the task that wrote it.
        hparams: For an lmforge checkpoint, the task's hyper-parameters.
        hf_model_type: For a Hugging Face source, its ``model_type`` (a key of :data:`lmforge.start.hf.ADAPTERS`).
    """

    source: str
    network: type[nn.Module]
    config: Any
    tokenizer: Tokenizer | None
    read_weights: Callable[[], dict[str, torch.Tensor]] = field(repr=False)
    task: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    hf_model_type: str | None = None

    @property
    def family(self) -> str:
        return self.network.family

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The weights, under our network's parameter names (read now; not kept here)."""
        return self.read_weights()

    def load_into(self, net: nn.Module, trained_heads: set[str], user: str) -> None:
        """Put the weights into ``net``. Pretraining heads the source lacks (``net.heads``: an
        encoder without its MLM head) start as ``net`` initialised them; one line names those
        that ``user`` trains (the others it never uses: not worth a word), and the loaded heads
        that it does not train. Anything else missing is an error.

        Args:
            net: A network of ``self.network``'s class.
            trained_heads: The heads the task's loss trains.
            user: The task, for messages.
        """
        heads = type(net).heads
        missing, unexpected = net.load_state_dict(self.state_dict(), strict=False)
        wrong = [k for k in missing if k.split(".")[0] not in heads] + list(unexpected)
        if wrong:
            raise UserError(f"init_from '{self.source}' does not fit this {type(net).__name__}: "
                            f"{', '.join(wrong[:3])} ... differ. Start from weights of the same architecture.")
        lacked = {k.split(".")[0] for k in missing}
        fresh = sorted(lacked & trained_heads)
        unused = sorted(h for h in heads if hasattr(net, h) and h not in lacked and h not in trained_heads)
        said = ([f"{', '.join(fresh)} not in the weights, initialised fresh"] if fresh else []) + \
            ([f"{', '.join(unused)} loaded but not used by {user}"] if unused else [])
        if said:
            rank_zero_info(f"init_from '{self.source}': {'; '.join(said)}.")

    def load_buffers(self, net: nn.Module) -> None:
        """Put only the source's non-learned tensors (buffers such as ELMo's spelling table) into
        ``net``: the architecture without the training, for a random-initialisation baseline."""
        learned = dict(net.named_parameters())
        net.load_state_dict({k: v for k, v in self.state_dict().items() if k not in learned}, strict=False)

    def encoder(self) -> Start:
        """The weights a downstream task fine-tunes: these, or the encoder part the network names
        with its ``encoder`` method (ELECTRA: its discriminator, as a BERT network)."""
        part = getattr(self.network, "encoder", None)
        if part is None:
            return self
        network, config, _ = part(self.config, {})
        return replace(self, network=network, config=config,
                       read_weights=lambda: part(self.config, self.read_weights())[2])

    def require(self, network: type[nn.Module], user: str) -> Start:
        """This start if it holds weights of ``network``, else one clear error (``user`` names the task)."""
        if self.network is not network:
            raise UserError(f"init_from '{self.source}' holds {self.family} weights, but {user} needs {network.family} "
                            f"weights: start from a {network.family} checkpoint or model.")
        return self


def open_start(source: str) -> Start:
    """The :class:`Start` of an lmforge ``.ckpt``, a Hugging Face model folder, ``hf:<folder>`` or ``hf:<hub id>``.

    Args:
        source: The path or hub id.
    """
    return _open_hf(source) if identity(source)[0] == "hf" else _open_checkpoint(Path(source), source)


def identity(source: str) -> tuple:
    """What makes two names of a source the same source (and a rewritten file another one)."""
    name = source[len("hf:"):] if source.startswith("hf:") else source
    path = Path(name)
    if path.is_dir():
        stats = [(f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in sorted(path.iterdir()) if f.is_file()]
        return ("hf", str(path.resolve()), tuple(stats))
    if source.startswith("hf:"):
        return ("hf", name)
    if not path.is_file():
        raise UserError(f"'{source}' does not exist: give an lmforge .ckpt, a Hugging Face model folder, "
                        "or hf:<model id>.")
    stat = path.stat()
    return ("ckpt", str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _open_hf(source: str) -> Start:
    folder = resolve(source)
    network, config, kind, table = read_hf_folder(folder, source)
    tokenizer = load_hf_tokenizer(folder, source)
    if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
        raise UserError(f"The tokenizer of '{source}' has {tokenizer.vocab_size} tokens but its embeddings only "
                        f"{config.vocab_size} rows: the folder's tokenizer does not belong to its weights.")
    return Start(source, network, config, tokenizer, lambda: hf_to_ours(read_state(folder), table, source),
                 hf_model_type=kind)


def with_generator(start: Start, source: str) -> Start:
    """An ELECTRA start (its discriminator) with the generator of the Hugging Face folder
    ``source`` (an ``ElectraForMaskedLM``) added: its shape and weights, the embeddings still the
    start's. A generator whose embeddings' shape or tokenizer differ from the start's is refused.

    Args:
        start: An opened start of ELECTRA weights.
        source: The generator's folder, ``hf:<folder>`` or ``hf:<hub id>``.
    """
    folder = resolve(source)
    config = generator_config(start.config, json.loads((folder / "config.json").read_text()), source)
    tokenizer = load_hf_tokenizer(folder, source)
    if tokenizer is not None and start.tokenizer is not None and tokenizer.fingerprint != start.tokenizer.fingerprint:
        raise UserError(f"model.generator_from '{source}' has another tokenizer than init_from '{start.source}': the "
                        "two networks share their embeddings, so give the generator trained with that discriminator.")
    table = GENERATOR.weight_table(config, tensor_names(folder))
    read = start.read_weights
    return replace(start, config=config,
                   read_weights=lambda: merge_generator(read(), hf_to_ours(read_state(folder), table, source), source))


def read_checkpoint(path: Path, resuming: bool = True) -> dict[str, Any]:
    """An lmforge checkpoint's contents, memory-mapped (tensors are read from disk when used).

    Args:
        path: The ``.ckpt`` file.
        resuming: The caller takes ``--ckpt_path`` (whose ``last`` finds the newest complete
            checkpoint): a damaged file's message points there.
    """
    if not path.is_file():
        raise UserError(f"Checkpoint '{path}' does not exist: give the path of a .ckpt file.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises many types for a damaged or foreign file
        raise UserError(f"'{path}' is not a complete checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:120]}): "
                        "its write was cut short or damaged; use another checkpoint (the run's best.ckpt" +
                        (", or `--ckpt_path last` to find the newest complete one)." if resuming else " or last.ckpt).")
                        ) from err
    meta = ckpt.get("lmforge") if isinstance(ckpt, dict) else None
    if not meta or "model_config" not in meta:
        raise UserError(f"'{path}' is not an lmforge checkpoint (no model config inside): give a .ckpt written by "
                        "`lmforge fit`, or a Hugging Face model folder.")
    return ckpt


def _open_checkpoint(path: Path, source: str) -> Start:
    ckpt = read_checkpoint(path)
    meta = ckpt["lmforge"]
    if not meta.get("network"):
        raise UserError(f"'{path}' was written by task {meta.get('task')!r}, which has no pretrained network to "
                        "start from.")
    network = import_class(new_class_path(meta["network"]))
    config = network.config_class(**new_keys(meta["model_config"]))
    tokenizer = Tokenizer.from_str(meta["tokenizer"]) if meta.get("tokenizer") else None

    def weights() -> dict[str, torch.Tensor]:
        return {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}

    return Start(source, network, config, tokenizer, weights, task=meta.get("task") and new_class_path(meta["task"]),
                 hparams=new_hparams(ckpt.get("hyper_parameters", {})))


def import_class(path: str) -> type:
    """The class named by a dotted path such as ``lmforge.models.bert.Bert``."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise UserError(f"Class '{path}' cannot be imported ({err}): install the package that defines it.") from err


def load_tokenizer(path: str, opened: Start | None = None) -> Tokenizer:
    """A tokenizer from a ``tokenizer.json``, an lmforge checkpoint, a Hugging Face folder or ``hf:<id>``.

    Args:
        path: Where it is.
        opened: ``path`` already opened as a :class:`Start` (a checkpoint read once per run).
    """
    name = path[len("hf:"):] if path.startswith("hf:") else path
    if path.startswith("hf:") or Path(name).is_dir():
        folder = resolve(path, need_config=False)
        tokenizer = load_hf_tokenizer(folder, path)
        if tokenizer is None:
            raise UserError(f"'{path}' has no tokenizer.json (or BERT vocab.txt): give the tokenizer as a tokenizer.json.")
        return tokenizer
    if Path(path).suffix == ".ckpt":
        tokenizer = (opened or open_start(path)).tokenizer
        if tokenizer is None:
            raise UserError(f"Checkpoint '{path}' carries no tokenizer: give the tokenizer it was trained with.")
        return tokenizer
    return Tokenizer.from_file(path)
