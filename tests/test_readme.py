"""Every ``lmforge`` command of the README's ``bash`` blocks runs as written on a fresh clone.

The commands are read from README.md itself (so a rewrite is tested as it stands), run in
order in a folder holding the repository's ``configs/``, each through ``lmforge.cli.main``, with
tiny trainer and data overrides appended so the whole README takes seconds. A command that needs
what a fresh clone cannot have (GPUs, the user's own data or checkpoints, the network, a person
answering prompts) is skipped by the explicit rules of ``SKIPS``; every other one must exit 0,
and every file it names must be in the repository or written by an earlier command.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import ROOT
from lmforge.cli import main

README = ROOT / "README.md"

# A command naming one of these is not run, for the reason given: what a fresh clone on a CPU
# without network cannot have. Everything else must run.
SKIPS: dict[str, str] = {
    "configs/trainer/gpu.yaml": "needs a GPU",
    "configs/trainer/ddp.yaml": "needs several GPUs",
    "configs/trainer/fsdp.yaml": "needs several GPUs",
    "my_corpus/": "the user's own corpus",
    "pubmed/": "PubMed's XML files, downloaded by the user",
    "scibert/data": "SciBERT's downstream data, downloaded by the user",
    "general.ckpt": "the user's own checkpoints",
    "configs/eval/zeroshot.yaml": "its tasks' data comes from the Hugging Face hub",
    "configs/eval/glue.yaml": "GLUE comes from the Hugging Face hub",
    "configs/eval/qa.yaml": "SQuAD comes from the Hugging Face hub",
}
# `lmforge new` without arguments asks for each value: it needs a person at the keyboard
INTERACTIVE = "lmforge new"

# Placeholders for the user's data that the test stands in for with a few tiny files (linked
# into the working folder), so the commands that follow from them (continued pretraining,
# export) run too.
STAND_INS = {"my_domain/": "the user's domain text: conftest's tiny_corpus (24 short .txt documents)"}

# Options whose value is a file or folder the command writes (and `lmforge new DIR`); every
# other path a command names must exist before it runs
OUTPUT_OPTIONS = {"--model.embeddings_out", "--to", "--out", "new"}
PATH_SUFFIXES = (".yaml", ".ckpt", ".csv", ".tsv", ".txt", ".jsonl", ".npy", ".safetensors", ".json", ".conll")

# Appended to `fit` and `validate` with configs: a couple of steps on a few documents. `fit`'s
# max_steps leaves room for one resumed step (`--ckpt_path last`).
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
TINY_DATA = ["--data.init_args.max_documents=30"]
TINY_FIT = ["--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1",
            "--trainer.num_sanity_val_steps=0", "--trainer.log_every_n_steps=1"]
TINY_RESUME = ["--trainer.max_steps=3", *TINY_FIT[1:]]
TINY_VALIDATE = ["--trainer.limit_val_batches=1"]

MIN_RUN = 21  # the README holds 23 runnable commands; fewer means extraction or the README broke


@dataclass
class Command:
    """One ``lmforge`` command of the README."""

    text: str
    args: list[str]  # after ``lmforge``
    skip: str | None = None  # why it is not run here
    inputs: list[str] = field(default_factory=list)  # paths it reads
    outputs: list[str] = field(default_factory=list)  # paths it writes


def looks_like_path(value: str) -> bool:
    """Whether an argument names a file or folder (not a class path, prompt or hub id)."""
    if " " in value or "<" in value or value.startswith(("hf:", "[")):
        return False
    return "/" in value or value.endswith(PATH_SUFFIXES)


def readme_commands(text: str) -> list[Command]:
    """The ``lmforge`` commands of the ``bash`` blocks of ``text``, in order, classified.

    Continuation lines are joined, ``# comments`` dropped, ``a && b`` split, and only the parts
    that start with ``lmforge`` kept (not ``pip``, ``tensorboard``, ``torchrun`` or ``srun``).

    Args:
        text: The README.
    """
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            parts: list[list[str]] = [[]]
            for token in tokens:
                parts.append([]) if token == "&&" else parts[-1].append(token)
            for part in parts:
                if part[:1] != ["lmforge"]:
                    continue
                command = Command(text=shlex.join(part), args=part[1:])
                reasons = [reason for marker, reason in SKIPS.items() if marker in command.text]
                if command.text == INTERACTIVE:
                    reasons.append("interactive: asks for each value")
                command.skip = "; ".join(reasons) or None
                for option, value in zip(part, part[1:]):
                    if looks_like_path(value):
                        (command.outputs if option in OUTPUT_OPTIONS else command.inputs).append(value)
                commands.append(command)
    return commands


def tiny_overrides(args: list[str]) -> list[str]:
    """What to append to a README command so it runs in seconds (nothing for help and printing)."""
    if "--print_config" in args or any(a.endswith(".help") for a in args) or "-c" not in args:
        return QUIET if args[0] == "predict" else []
    if args[0] == "fit":
        resume = args[args.index("--ckpt_path") + 1] == "last" if "--ckpt_path" in args else False
        return [*(TINY_RESUME if resume else TINY_FIT), *TINY_DATA, *QUIET]
    if args[0] == "validate":
        return [*TINY_VALIDATE, *TINY_DATA, *QUIET]
    return []


def checkpoints() -> dict[Path, int]:
    """Every ``last.ckpt`` under ``logs/`` of the working folder, with its modification time."""
    return {path: path.stat().st_mtime_ns for path in Path("logs").glob("**/last.ckpt")}


def test_readme_commands_are_found_and_classified() -> None:
    """The extraction sees the README's commands, and skips only what a fresh clone cannot run."""
    commands = readme_commands(README.read_text(encoding="utf-8"))
    texts = [c.text for c in commands]
    assert "lmforge fit -c configs/quickstart.yaml" in texts  # after `pip install -e . &&`
    assert not any(t.startswith(("pip", "tensorboard", "torchrun", "srun")) for t in texts)
    assert all("#" not in t for t in texts)  # comments dropped
    runnable = [c for c in commands if c.skip is None]
    assert len(runnable) >= MIN_RUN, [c.text for c in runnable]
    for command in runnable:  # what a command reads is shipped, stood in for, or an earlier run's
        for path in command.inputs:
            if path.startswith("configs/"):
                assert (ROOT / path).is_file(), f"{command.text}: '{path}' is not in the repository"
            else:
                assert path in STAND_INS or path.startswith("logs/"), f"{command.text}: '{path}' is not shipped"
    for stand_in in STAND_INS:  # each stand-in is still needed
        assert any(stand_in in c.inputs for c in runnable), stand_in


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every runnable README command exits 0, in order, in a fresh folder with the repository's configs."""
    workdir = tmp_path / "clone"
    workdir.mkdir()
    (workdir / "configs").symlink_to(ROOT / "configs", target_is_directory=True)
    for stand_in in STAND_INS:
        (workdir / stand_in.rstrip("/")).symlink_to(tiny_corpus, target_is_directory=True)
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # `lmforge new ~/work` writes under it
    commands = readme_commands(README.read_text(encoding="utf-8"))
    ran = []
    for command in commands:
        if command.skip:
            continue
        args = [os.path.expanduser(a) if a.startswith("~") else a for a in command.args]
        for path in command.inputs:
            assert Path(path).exists(), f"{command.text}: '{path}' is neither shipped nor written by an earlier command"
        extra = tiny_overrides(args)
        before = checkpoints()
        try:
            main([*args, *extra])
        except SystemExit as exit_info:  # --print_config and --help exit by themselves
            assert exit_info.code in (0, None), f"{command.text}: exit status {exit_info.code}"
        if args[0] == "fit" and extra:  # it trained (no "No training batches" exit 0) and saved
            assert checkpoints() != before, f"{command.text}: wrote no last.ckpt"
        for path in command.outputs:
            assert Path(os.path.expanduser(path)).exists(), f"{command.text}: did not write '{path}'"
        ran.append(command.text)
    assert len(ran) >= MIN_RUN
