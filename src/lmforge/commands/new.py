"""``lmforge new``: a new project built on lmforge, from the cookiecutter template."""

from __future__ import annotations

from lmforge.scaffold import new_command


def new(argv: list[str]) -> None:
    """``lmforge new [DIR] [--family ...] [--corpus ...] [--no_input]``: see :func:`lmforge.scaffold.new_command`."""
    new_command(argv)
