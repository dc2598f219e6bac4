"""``lmforge new [DIR]``: start a project built on lmforge from its cookiecutter template.

The template has one source, the repository's root (``cookiecutter.json``, ``hooks/`` and
``{{cookiecutter.project_slug}}/``), where ``cookiecutter <lmforge's repo>`` finds it; the
wheel carries the same files as ``lmforge/template`` (pyproject's ``force-include``). So
``lmforge new`` and ``cookiecutter`` render the same tree: this only finds the template,
turns its variables into options, and runs cookiecutter on it.

The families offered are :data:`FAMILIES`, each started from its ``configs/<family>/tiny.yaml``.
``cookiecutter.json`` carries what the template needs of those configs (the wheel has no
``configs/``), generated from them by ``python -m lmforge.scaffold`` and checked by a test.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lmforge.errors import UserError


@dataclass(frozen=True)
class FamilyChoice:
    """One choice of ``lmforge new --family``.

    Args:
        config: Its complete runnable config in lmforge's repository, whose model options and
            tokenizer the project's ``configs/pretrain.yaml`` starts from.
        title: What it pretrains, in words, for the project's README, docstrings and description.
    """

    config: str
    title: str


# The choices of `lmforge new --family`, the first the default: every network family, and the
# configurations of a network that pretrain it differently (RoBERTa, SimCSE on BERT's network).
FAMILIES: dict[str, FamilyChoice] = {
    "gpt": FamilyChoice("configs/gpt/tiny.yaml", "GPT (next-token prediction)"),
    "llama": FamilyChoice("configs/llama/tiny.yaml", "Llama (next-token prediction, RoPE and grouped-query attention)"),
    "bert": FamilyChoice("configs/bert/tiny.yaml", "BERT (masked LM and next sentence prediction)"),
    "roberta": FamilyChoice("configs/roberta/tiny.yaml", "RoBERTa (masked LM on full sentences)"),
    "contrastive": FamilyChoice("configs/contrastive/tiny.yaml", "SimCSE sentence encoder (contrastive)"),
    "electra": FamilyChoice("configs/electra/tiny.yaml", "ELECTRA (replaced-token detection)"),
    "t5": FamilyChoice("configs/t5/tiny.yaml", "T5 (span corruption)"),
    "elmo": FamilyChoice("configs/elmo/tiny.yaml", "ELMo (bidirectional LSTM language model)"),
}


def family_context(root: Path) -> dict[str, dict[str, Any]]:
    """``cookiecutter.json``'s ``_families``, read from the configs of :data:`FAMILIES` under
    ``root`` (lmforge's checkout): each choice's task and network class, its model options and
    tokenizer as YAML lines (comments kept; the vocabulary size is the template's), its batch size.

    Args:
        root: The repository (the folder of ``configs/``).
    """
    from lmforge.start.starting_point import import_class

    context = {}
    for choice, family in FAMILIES.items():
        text = (root / family.config).read_text(encoding="utf-8")
        config = yaml.safe_load(text)
        task, data = config["model"]["class_path"], config["data"]["init_args"]
        model = _block(text, ["model", "init_args"])
        tokenizer = [line for line in _block(text, ["data", "init_args", "tokenizer"])
                     if not line.startswith("vocab_size:")]
        expected = (config["model"]["init_args"], {k: v for k, v in data["tokenizer"].items() if k != "vocab_size"})
        if (yaml.safe_load("\n".join(model)), yaml.safe_load("\n".join(tokenizer))) != expected:
            raise ValueError(f"{family.config}: its model.init_args or data.init_args.tokenizer cannot be copied line by "
                             "line: indent by two spaces per level, one tokenizer key per line.")
        context[choice] = {"config": family.config, "title": family.title, "task": task.rsplit(".", 1)[1],
                           "net": import_class(task).network.__name__, "model": model, "tokenizer": tokenizer,
                           "batch_size": data["batch_size"]}
    return context


def _block(text: str, keys: list[str]) -> list[str]:
    """The lines of the YAML mapping at ``keys`` in ``text`` (two spaces per level), comments
    kept, indented from 0."""
    lines, indent, start = text.splitlines(), 0, 0
    for key in keys:
        start = next(i for i in range(start, len(lines)) if lines[i].startswith(f"{' ' * indent}{key}:")) + 1
        indent += 2
    end = next((i for i in range(start, len(lines)) if lines[i].strip() and not lines[i].startswith(" " * indent)),
               len(lines))
    return [line[indent:].rstrip() for line in lines[start:end] if line.strip()]


def write_template_context(root: Path) -> Path:
    """Rewrite the ``family`` choices and ``_families`` of ``root/cookiecutter.json`` from the
    configs (run ``python -m lmforge.scaffold`` after changing one); returns the file.

    Args:
        root: lmforge's checkout.
    """
    path = root / "cookiecutter.json"
    context = json.loads(path.read_text(encoding="utf-8"))
    context["_families"] = family_context(root)
    context["family"] = list(FAMILIES)
    path.write_text(json.dumps(context, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


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


if __name__ == "__main__":
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "configs").is_dir():
        sys.exit("python -m lmforge.scaffold regenerates cookiecutter.json from configs/: run it in lmforge's checkout.")
    print(f"Wrote {write_template_context(checkout)}")
