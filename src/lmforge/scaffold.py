"""``lmforge new [DIR]``: start a project built on lmforge from its cookiecutter template.

The template has one source, the repository's root (``cookiecutter.json``, ``hooks/`` and
``{{cookiecutter.project_slug}}/``), where ``cookiecutter <lmforge's repo>`` finds it; the
wheel carries the same files as ``lmforge/template`` (pyproject's ``force-include``). So
``lmforge new`` and ``cookiecutter`` render the same tree: this only finds the template,
turns its variables into options, and runs cookiecutter on it.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from lmforge.errors import UserError

def template_dir() -> Path:
    """The folder of ``cookiecutter.json``: the source checkout lmforge runs from (an editable
    install: the files being edited, not the install's copy), else the installed package's."""
    here = Path(__file__).resolve().parent
    checkout = here.parents[1]
    if (checkout / "cookiecutter.json").is_file() and (checkout / "src" / "lmforge").is_dir():
        return checkout
    packaged = here / "template"
    if (packaged / "cookiecutter.json").is_file():
        return packaged
    raise UserError(f"lmforge's project template is missing (no '{packaged}/cookiecutter.json'): reinstall lmforge.")


def _yes_no(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("y", "yes", "true", "1", "on"):
        return True
    if lowered in ("n", "no", "false", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"'{value}' is not yes or no")


def _parser(context: dict[str, Any]) -> argparse.ArgumentParser:
    """The options of ``lmforge new``: one per template variable, read from ``cookiecutter.json``."""
    parser = argparse.ArgumentParser(
        prog="lmforge new",
        description="Create a project built on lmforge (its own package, configs, tests and README) "
                    "from lmforge's cookiecutter template. Asks for each value not given as an option.",
    )
    parser.add_argument("output_dir", nargs="?", default=".", metavar="DIR",
                        help="Folder to create the project's folder (named after project_slug) in; default: here.")
    parser.add_argument("--no_input", action="store_true",
                        help="Ask nothing: options given here, defaults for the rest.")
    prompts = context.get("__prompts__", {})
    for name, default in context.items():
        if name.startswith("_"):
            continue  # private to the template
        text = prompts.get(name, name.replace("_", " ").capitalize())
        if isinstance(default, list):
            parser.add_argument(f"--{name}", choices=default, help=f"{text} (default: {default[0]}).")
        elif isinstance(default, bool):
            parser.add_argument(f"--{name}", type=_yes_no, metavar="yes|no",
                                help=f"{text} (default: {'yes' if default else 'no'}).")
        else:
            shown = default if "{{" not in str(default) else "derived from the answers before"
            parser.add_argument(f"--{name}", help=f"{text} (default: {shown}).")
    return parser


def new_command(argv: list[str]) -> Path:
    """``lmforge new [DIR] [--family ...] [--corpus ...] [--no_input]``; returns the project's folder."""
    from cookiecutter.exceptions import FailedHookException, OutputDirExistsException
    from cookiecutter.main import cookiecutter

    template = template_dir()
    context = json.loads((template / "cookiecutter.json").read_text(encoding="utf-8"))
    args = vars(_parser(context).parse_args(argv))
    answers = {name: value for name, value in args.items() if name in context and value is not None}
    output_dir = Path(args["output_dir"])
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"'{output_dir}' is a file: give the folder to create the project in.")
    log = logging.getLogger("cookiecutter")
    level = log.level
    log.setLevel(logging.CRITICAL)  # a failed check is one sentence, not cookiecutter's traceback
    try:
        project = Path(cookiecutter(str(template), no_input=args["no_input"], extra_context=answers,
                                    output_dir=str(output_dir)))
    except OutputDirExistsException as err:
        where = str(err).removeprefix("Error: ")
        raise UserError(f"{where}: choose another project_slug or DIR (nothing was written).") from None
    except FailedHookException:
        raise SystemExit(1) from None  # the template's check printed what is wrong; nothing was written
    finally:
        log.setLevel(level)
    print(f"Created {project}. Next:\n  cd {project}\n  pip install -e . && lmforge fit -c configs/pretrain.yaml")
    return project
