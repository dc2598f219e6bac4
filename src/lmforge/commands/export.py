"""``lmforge export``: an lmforge checkpoint as a Hugging Face ``transformers`` model folder."""

from __future__ import annotations

import re
from typing import NoReturn

from jsonargparse import CLI, ArgumentParser

from lmforge.start.export import export as export_checkpoint
from lmforge.start.hf import refuse_unknown_kind


class _ExportParser(ArgumentParser):
    """jsonargparse's parser, but an unknown ``--kind`` is one sentence naming the valid ones."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        given = re.search(r'Parser key "kind":.*Given value: (.*)', message, re.DOTALL)
        if given is not None:
            refuse_unknown_kind(given.group(1).strip())
        super().error(message, ex)


def export(argv: list[str]) -> None:
    """``lmforge export --ckpt_path X --to DIR [--kind ...]``: see :func:`lmforge.start.export.export`."""
    CLI(export_checkpoint, args=argv, prog="lmforge export", as_positional=False, parser_class=_ExportParser)
