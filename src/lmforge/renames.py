"""Names that changed, so that what users already have keeps working: checkpoints, and the
``config.yaml`` a run saved, are translated when read; a user's own YAML or command line with
an old name is refused in one sentence that gives the new one (:func:`lmforge.commands.messages.unknown_key_hint`).

The tables are data: a rename or a move is one line here, next to the code that changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# old dotted class path -> new one (a class that moved between modules or packages)
MOVED_CLASSES: dict[str, str] = {
    # downstream data beside its tasks (issue 24): data/labeled.py, data/tagged.py -> evaluation/
    "lmforge.data.LabeledText": "lmforge.evaluation.LabeledText",
    "lmforge.data.labeled.LabeledText": "lmforge.evaluation.LabeledText",
    "lmforge.data.TaggedText": "lmforge.evaluation.TaggedText",
    "lmforge.data.tagged.TaggedText": "lmforge.evaluation.TaggedText",
}

# old config key -> new key, the same in every family's config (and the tokenizer spec).
# GPTConfig's and BertConfig's ``hidden_size`` became ``mlp_width``, but it was a property, never a
# key: it is not here (ElmoConfig's ``hidden_size``, the LSTM's cells as torch names them, stays).
RENAMED_KEYS: dict[str, str] = {
    "layer_norm_eps": "norm_eps",  # GPTConfig, BertConfig, T5Config: LlamaConfig's name
    "tie_word_embeddings": "tie_embeddings",  # T5Config: LlamaConfig's name
    "family": "specials",  # TokenizerSpec: a set of special tokens, not a network family
}

# Lightning's SaveConfigCallback starts the config.yaml of a run with this line: such a file was
# written by lmforge (maybe an older one), not by the user, so its old names are translated
SAVED_CONFIG_HEADER = "# lightning.pytorch=="
LOADER_MODE = "lmforge_yaml"


def new_keys(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored config dict (a checkpoint's ``model_config``) under today's key names.

    Args:
        config: The stored dict, or None.
    """
    if config is None:
        return None
    return {RENAMED_KEYS.get(key, key): value for key, value in config.items()}


def new_class_path(path: str) -> str:
    """Today's dotted path of a class a checkpoint or a saved config names.

    Args:
        path: The stored class path.
    """
    return MOVED_CLASSES.get(path, path)


def new_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's ``hyper_parameters`` under today's names: the keys of the network config
    entries (``config``, ``network_config``) and the task's class path.

    Args:
        hparams: The stored hyper-parameters.
    """
    out = dict(hparams)
    for key in ("config", "network_config"):
        if isinstance(out.get(key), dict):
            out[key] = new_keys(out[key])
    if isinstance(out.get("_class_path"), str):
        out["_class_path"] = new_class_path(out["_class_path"])
    return out


def renamed_tree(value: Any) -> Any:
    """``value`` (a parsed saved config) with every old key and old class path replaced, at any depth.

    Args:
        value: What the YAML loader read.
    """
    if isinstance(value, dict):
        return {RENAMED_KEYS.get(k, k) if isinstance(k, str) else k: renamed_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [renamed_tree(v) for v in value]
    return new_class_path(value) if isinstance(value, str) else value


def load_yaml(text: str) -> Any:
    """jsonargparse's YAML loader, translating the old names of a run's saved ``config.yaml``
    (recognised by Lightning's header line); anything else loads as it is.

    Args:
        text: A config file's text, or a value from the command line.
    """
    from jsonargparse import get_loader

    value = get_loader("yaml")(text)
    return renamed_tree(value) if text.startswith(SAVED_CONFIG_HEADER) else value


def parser_kwargs(subcommands: Iterable[str]) -> dict[str, Any]:
    """LightningCLI ``parser_kwargs`` that read configs with :func:`load_yaml`, for the main
    parser and each subcommand's (Lightning gives the main parser's to none of them).

    Args:
        subcommands: The CLI's subcommands (``LightningCLI.subcommands()``).
    """
    import yaml
    from jsonargparse import set_loader

    set_loader(LOADER_MODE, load_yaml, exceptions=(yaml.YAMLError,))
    return {"parser_mode": LOADER_MODE, **{name: {"parser_mode": LOADER_MODE} for name in subcommands}}
