"""``lmforge export``: an lmforge checkpoint as a Hugging Face ``transformers`` model folder."""

from __future__ import annotations

from jsonargparse import CLI

from lmforge.start.export import export as export_checkpoint


def export(argv: list[str]) -> None:
    """``lmforge export --ckpt_path X --to DIR [--kind ...]``: see :func:`lmforge.start.export.export`."""
    CLI(export_checkpoint, args=argv, prog="lmforge export", as_positional=False)
