"""Every ``lmforge`` subcommand, in one table: its name, where it lives, and one line of help.

A command is a module of this package with a function that takes the arguments after the
command's name. The table names it as ``"module:function"`` and imports it only when the
command runs, so ``lmforge --help`` lists them all at once without importing torch. Adding a
command is one module here and one line in :data:`COMMANDS`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One subcommand.

    Args:
        target: ``"lmforge.commands.<module>:<function>"``; the function takes the arguments
            that follow the command's name.
        summary: One line for ``lmforge --help``.
    """

    target: str
    summary: str

    def run(self, argv: list[str]) -> None:
        """Import the command's function and run it on ``argv``."""
        module, _, function = self.target.partition(":")
        getattr(importlib.import_module(module), function)(argv)


COMMANDS: dict[str, Command] = {
    "fit": Command("lmforge.commands.lightning:fit",
                   "Train: pretrain, continue from weights (--model.init_from), fine-tune; resume (--ckpt_path)."),
    "validate": Command("lmforge.commands.lightning:validate", "Compute the validation metrics of a checkpoint."),
    "test": Command("lmforge.commands.lightning:test", "Compute the test metrics of a checkpoint."),
    "predict": Command("lmforge.commands.lightning:predict", "Generate text from a checkpoint's prompts."),
    "prepare": Command("lmforge.commands.prepare:prepare",
                       "Tokenize a corpus into token shards now (the same -c configs as fit)."),
    "export": Command("lmforge.commands.export:export",
                      "Write a checkpoint as a Hugging Face transformers model folder."),
    "evaluate": Command("lmforge.commands.evaluate:evaluate",
                        "Fine-tune or score (zero/few-shot) a suite of tasks from several starting points; tabulate."),
    "tokenizer": Command("lmforge.commands.tokenizer:tokenizer",
                         "Train a tokenizer on a corpus (train), or measure and extend one (coverage)."),
    "plan": Command("lmforge.commands.plan:plan",
                    "Size a run: compute-optimal parameters and tokens of a budget, steps, wall-clock."),
    "new": Command("lmforge.commands.new:new", "Create a project built on lmforge from its template."),
}


def usage() -> str:
    """``lmforge --help``: every command with its line."""
    width = max(map(len, COMMANDS))
    lines = [f"  {name.ljust(width)}  {command.summary}" for name, command in COMMANDS.items()]
    return "\n".join([
        "usage: lmforge <command> [options]   (lmforge <command> --help for its options)", "",
        "Pretrain language models of every family with PyTorch Lightning.", "", "commands:", *lines,
    ])
