"""What the ``lmforge`` command prints besides results: Lightning's lines a user cannot act on
dropped, a user's mistake as one ``lmforge: error: ...`` line (and a warning as one
``lmforge: warning: ...`` line), an unknown option named with the nearest valid one."""

from __future__ import annotations

import difflib
import logging
import re
import warnings
from collections.abc import Iterator
from typing import NoReturn
from contextlib import contextmanager

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser

from lmforge.errors import UserError, UserInputWarning
from lmforge.renames import MOVED_CLASSES, RENAMED_KEYS
from lmforge.start.starting_point import import_class

# Lines Lightning prints that a user cannot act on (advertisements, accelerators absent here)
_LIGHTNING_NOISE = ("💡 Tip", "TPU available", "HPU available", "IPU available",
                    "Trainer already configured with model summary")
_WARNING_NOISE = (
    r".*isinstance\(treespec, LeafSpec\)",  # Lightning's own use of a deprecated torch API
    r".*RNN module weights are not part of single contiguous chunk",
    r".*oneDNN",
    r".*callbacks used to create the checkpoint need to be provided",  # predict runs without training callbacks
    r".*The dirpath has changed from",  # validating another run's checkpoint: nothing to reload into
)


class _Drop(logging.Filter):
    """Drops the log records that start with one of ``_LIGHTNING_NOISE``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_LIGHTNING_NOISE)


def quiet_lightning() -> None:
    """Drop Lightning's lines and warnings a user cannot act on; keep everything else."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in log.filters):
            log.addFilter(_Drop())
    for pattern in _WARNING_NOISE:
        warnings.filterwarnings("ignore", message=pattern)


def unknown_key_hint(message: str, options: list[str] | tuple[str, ...] = ()) -> str | None:
    """``unknown option 'model.config.n_heads': did you mean 'model.config.n_head'?`` for a
    jsonargparse error about an option a class does not take, else None; for a key lmforge
    renamed (:data:`lmforge.renames.RENAMED_KEYS`), ``'model.config.layer_norm_eps' was renamed
    'model.config.norm_eps': use the new name.``

    Args:
        message: jsonargparse's error message.
        options: The parser's own option names (``trainer.max_steps`` ...), for an unknown
            option outside a class chosen by ``class_path``.
    """
    found = (re.search(r"Group '([\w.]+)' does not accept option '([\w.]+)'", message)
             or re.search(r"Option '([\w.]+)' is not accepted", message)
             or re.search(r"nrecognized arguments: --([\w.]+)", message))
    if found is None:
        return None
    bad = ".".join(found.groups())
    top = re.search(r'Parser key "([\w.]+)"', message)
    # the innermost class (a corpus inside a mixture's sources, say) is the one that refused the key
    owner = ([None] + list(re.finditer(r"Problem with given class_path '([\w.]+)'", message)))[-1]
    valid: list[str] = [] if owner is not None else list(options)
    if owner is not None:
        try:
            parser = LightningArgumentParser(exit_on_error=False)
            parser.add_class_arguments(import_class(owner.group(1)), fail_untyped=False)
            valid = [a.dest for a in parser._actions if a.dest not in ("help", "config")]
        except Exception:  # the hint is a courtesy: never hide the original error behind another
            valid = []
    prefix = f"{top.group(1)}." if top is not None and owner is not None else ""
    nested = re.search(r"NestedArg\(key='([\w.]+)'", message)  # given on the command line, under a class
    if prefix and nested is not None and nested.group(1).endswith(bad):
        prefix += nested.group(1)[: len(nested.group(1)) - len(bad)]
    old = bad.rsplit(".", 1)[-1]
    renamed = bad[: len(bad) - len(old)] + RENAMED_KEYS.get(old, old)
    if old in RENAMED_KEYS and (not valid or renamed in valid):
        return f"lmforge: '{prefix}{bad}' was renamed '{prefix}{renamed}': use the new name."
    nearest = difflib.get_close_matches(bad, valid, n=1, cutoff=0.6)
    where = f" of {owner.group(1)}" if owner is not None else ""
    if nearest:
        return f"lmforge: unknown option '{prefix}{bad}'{where}: did you mean '{prefix}{nearest[0]}'?"
    return f"lmforge: unknown option '{prefix}{bad}'{where}: see `--help` for the options."


def moved_class_hint(message: str) -> str | None:
    """``'lmforge.data.LabeledText' moved to 'lmforge.evaluation.LabeledText': ...`` for a
    jsonargparse error that names a class path lmforge moved (:data:`lmforge.renames.MOVED_CLASSES`).

    Args:
        message: jsonargparse's error message.
    """
    named = re.findall(r"[\w.]+", message)
    old = next((n for n in named if n in MOVED_CLASSES), None)
    if old is None:
        return None
    return f"lmforge: '{old}' moved to '{MOVED_CLASSES[old]}': use the new class path."


class LmforgeParser(LightningArgumentParser):
    """Lightning's parser whose error for an unknown option ends with one line naming the key
    and the nearest valid one (or its new name, or a moved class's new path). Every command
    that parses with jsonargparse uses it."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        parser = getattr(ex, "subcommand_parser", None) or self
        hint = unknown_key_hint(message, [a.dest for a in parser._actions if a.dest not in ("help", "config")]) \
            or moved_class_hint(message)
        super().error(f"{message}\n{hint}" if hint else message, ex)


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Show a :class:`~lmforge.errors.UserInputWarning` as ``lmforge: warning: ...`` on one line
    (the counterpart of ``lmforge: error: ...``); other warnings keep their format."""
    previous = warnings.formatwarning

    def format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                       line: str | None = None) -> str:
        if issubclass(category, UserInputWarning):
            return f"lmforge: warning: {message}\n"
        return previous(message, category, filename, lineno, line)

    warnings.formatwarning = format_warning
    try:
        yield
    finally:
        warnings.formatwarning = previous


def find_user_error(err: BaseException) -> BaseException | None:
    """The mistake of the user's behind ``err`` (jsonargparse and Lightning wrap exceptions): a
    UserError, or Lightning's refusal of a trainer setting; None for anything else (a bug)."""
    seen: set[int] = set()
    chain: BaseException | None = err
    while chain is not None and id(chain) not in seen:
        if isinstance(chain, (UserError, MisconfigurationException)):
            return chain
        seen.add(id(chain))
        chain = chain.__cause__ or chain.__context__
    return None
