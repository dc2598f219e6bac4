"""A run's folder (``logs/<experiment>/version_<n>``): finding the newest complete checkpoint to
resume, resuming in the run's own folder, and taking back what a refused run wrote."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from lmforge.errors import UserError


def runs_root(cfg: Any) -> tuple[Path, Any] | None:
    """The folder of the experiment's version folders, and the logger's init args."""
    logger = cfg.trainer.get("logger")
    init = logger.get("init_args") if hasattr(logger, "get") else None
    if init is None:
        return None
    return Path(init.get("save_dir") or "logs") / (init.get("name") or ""), init


def newest_checkpoint(cfg: Any) -> Path:
    """The newest complete checkpoint of the experiment, ``last.ckpt`` first. A file cut
    short (not a whole zip archive: a kill during a write by another tool, a full disk) is
    moved aside as ``<name>.torn``, so the resumed run writes the usual names again."""
    found = runs_root(cfg)
    if found is None:
        raise UserError("`--ckpt_path last` needs a TensorBoard logger to find the runs: give the checkpoint's path.")
    root, _ = found
    candidates = [c for c in root.glob("version_*/checkpoints/*.ckpt") if re.fullmatch(r"version_\d+", c.parent.parent.name)]
    candidates.sort(key=lambda c: (c.stat().st_mtime_ns, c.name == "last.ckpt"), reverse=True)
    torn = [c for c in candidates if not zipfile.is_zipfile(c)]
    complete = [c for c in candidates if c not in torn]
    if not complete:
        if torn:
            raise UserError(f"`--ckpt_path last` found only damaged checkpoints under '{root}' "
                            f"({', '.join(str(c) for c in torn)}): their writes were cut short, so nothing can "
                            "be resumed from them; start a new run, or give another checkpoint's path.")
        raise UserError(f"`--ckpt_path last` found no checkpoint under '{root}/version_*/checkpoints': "
                        "start a run first.")
    newest = complete[0]
    for ckpt in torn:
        if ckpt.parent == newest.parent and os.environ.get("LOCAL_RANK", "0") == "0":
            aside = free_name(ckpt.with_name(ckpt.name + ".torn"))
            try:
                ckpt.rename(aside)
            except FileNotFoundError:
                continue  # another node's first process moved it (a shared file system)
            rank_zero_info(f"'{ckpt}' is incomplete (its write was cut short): moved aside to '{aside}'.")
    return newest


def continue_in_run_folder(cfg: Any, ckpt: Path) -> None:
    """A checkpoint of this experiment's run ``version_N`` resumes in that folder, so its
    TensorBoard curves and checkpoints continue (not a new version beside it)."""
    found = runs_root(cfg)
    if found is None or ckpt.parent.name != "checkpoints":
        return
    root, init = found
    run = ckpt.parent.parent
    match = re.fullmatch(r"version_(\d+)", run.name)
    if match and run.parent.resolve() == root.resolve() and init.get("version") is None:
        init.version = int(match.group(1))


class Snapshot:
    """The paths under a run folder before a run, to remove what a refused run added (only that:
    its new files, and the folders it created, such as ``logs/`` itself, once empty)."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.paths = set(folder.rglob("*")) if folder is not None and folder.exists() else set()
        # the folder and those of its parents the run will create
        self.new_folders = [] if folder is None else [d for d in (folder, *folder.parents) if not d.exists()]

    def undo(self) -> None:
        if self.folder is None or not self.folder.exists():
            return
        for path in sorted(self.folder.rglob("*"), reverse=True):  # a folder's files before the folder
            if path in self.paths:
                continue
            if path.is_file() or path.is_symlink():
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        for folder in self.new_folders:  # innermost first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def free_name(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2`` ... : the first that does not exist."""
    n, free = 0, path
    while free.exists():
        n += 1
        free = path.with_name(f"{path.name}.{n}")
    return free
