"""Preparing a corpus into token shards (:mod:`lmforge.data.shards`): once per corpus and
tokenizer, by rank 0, while the other ranks wait for it; with a progress bar.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from lmforge.data.documents import PLAIN_TEXT
from lmforge.data.fingerprint import file_stats
from lmforge.data.shards import PreparedCorpus, write_prepared
from lmforge.errors import UserError
from lmforge.tokenizer import Tokenizer


def prepare_shards(folder: Path, documents: Iterable[tuple[str, str]], tokenizer: Tokenizer, name: str,
                   size_hint: int | None = None, progress: bool = True, timeout: float = 24 * 3600) -> PreparedCorpus:
    """The token shards in ``folder``: written now from ``documents``, or reused from an earlier prepare.

    Rank 0 writes; the other ranks wait until the folder is complete, then read it.

    Args:
        folder: The prepared corpus's folder, named by the corpus and tokenizer fingerprints.
        documents: ``(split, text)`` of every document, read only if rank 0 writes.
        tokenizer: Tokenizes the documents.
        name: The corpus, for messages.
        size_hint: Bytes of text to read, if known, for the progress bar's ETA.
        progress: Show a progress bar (rank 0 only).
        timeout: Seconds a rank waits for rank 0 before giving up.
    """
    if not (folder / "meta.json").is_file() and rank_zero_only.rank != 0:
        wait_for_rank_zero(folder, timeout)
    if (folder / "meta.json").is_file():
        prepared = PreparedCorpus.open(folder, tokenizer.fingerprint)
        rank_zero_info(f"Reusing the token shards of {name} prepared before at {folder}: nothing to redo.")
        return prepared
    rank_zero_info(f"Preparing {name} into token shards at {folder} ...")
    meta = {"corpus": name, "fingerprint": folder.name.split("-")[0]}
    with PrepareProgress(size_hint, enabled=progress and rank_zero_only.rank == 0) as bar:
        prepared = write_prepared(folder, documents, tokenizer.encode_batch, tokenizer.vocab_size, tokenizer.eos_id,
                                  tokenizer.fingerprint, meta, on_progress=bar.update)
    if not any(s["documents"] for split in prepared.meta["splits"].values() for s in split):
        shutil.rmtree(folder, ignore_errors=True)
        raise UserError(f"Corpus {name} has no text: every document is empty.")
    m = prepared.meta
    rank_zero_info(
        f"Prepared {name}: {m['characters'] / 1e6:.1f} M characters -> {prepared.num_tokens('train'):,} train / "
        f"{prepared.num_tokens('val'):,} val tokens ({m['dtype']}) in {m['seconds']:.1f} s."
    )
    return prepared


def wait_for_rank_zero(folder: Path, timeout: float) -> None:
    """Return once rank 0 has completed ``folder`` (its ``meta.json`` is written last).

    Args:
        folder: The prepared corpus's folder.
        timeout: Seconds to wait before giving up with an error.
    """
    deadline = time.monotonic() + timeout
    while not (folder / "meta.json").is_file():
        if time.monotonic() > deadline:
            raise UserError(f"Waited {timeout:.0f} s for rank 0 to prepare '{folder}': run `lmforge prepare` "
                            "first, on a file system every node shares.")
        time.sleep(1)


def size_hint(paths: str | list[str] | None, max_documents: int | None) -> int | None:
    """Bytes of text a prepare reads, when known: all of uncompressed local plain-text (``.txt``,
    ``.raw``, ``.tokens``), ``.jsonl`` or ``.csv`` files; ``None`` otherwise (a hub dataset, other
    formats, a ``max_documents`` cut).

    Args:
        paths: The local files the corpus reads, if it reads local files.
        max_documents: The corpus's cut, which stops reading early.
    """
    if not paths or max_documents is not None:
        return None
    stats = file_stats(paths)
    if not stats or any(not name.lower().endswith((*PLAIN_TEXT, ".jsonl", ".csv")) for name, _, _ in stats):
        return None
    return sum(size for _, size, _ in stats)


class PrepareProgress:
    """A rich progress bar for :func:`prepare_shards`: MB read, MB/s, and ETA when the size is known.

    Args:
        total_bytes: Bytes to read, if known.
        enabled: Show it (rank 0 only).
    """

    def __init__(self, total_bytes: int | None, enabled: bool = True):
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.progress = Progress(TextColumn("tokenizing"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[docs]:,} documents"),
                                 disable=not enabled)
        self.task = self.progress.add_task("prepare", total=total_bytes, docs=0)

    def __enter__(self) -> PrepareProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def update(self, chars: int, docs: int) -> None:
        """Show the progress so far.

        Args:
            chars: Characters read (the bar counts them as bytes: exact for ASCII text).
            docs: Documents read.
        """
        self.progress.update(self.task, completed=chars, docs=docs)
