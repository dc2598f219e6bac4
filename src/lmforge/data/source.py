"""Where data comes from: local files, or else a Hugging Face hub dataset.

:class:`DataSource` is the one argument group every corpus, the sentence pairs, the labelled
fine-tuning data and the ``lmforge tokenizer`` commands take (``--data.source.paths``,
``--source.hf_dataset``, ...), so the rule is the same everywhere: local ``paths`` win when
given, else the hub dataset is read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from jsonargparse.typing import Path_fr

from lmforge.data.documents import TxtSplit, iter_hf, iter_local
from lmforge.errors import UserError


def plain_path(path: str | os.PathLike) -> str:
    """A path as a string: as written, unless the command line's parser resolved it next to
    the config file that names it (then absolute, as the working directory may differ).

    Args:
        path: A path, e.g. a ``Path_fr`` from jsonargparse.
    """
    if not isinstance(path, Path_fr):
        return os.fspath(path)
    return path.relative if os.path.abspath(path.cwd) == os.getcwd() else os.fspath(path)


@dataclass(frozen=True)
class DataSource:
    """Where the data comes from: local files, or else a Hugging Face hub dataset.

    Local ``paths`` win when given; without them the hub dataset is read. A relative file
    path written in a config file is looked up next to that file first, then in the working
    directory (folders and globs: in the working directory).

    Args:
        paths: Local files, folders or glob patterns, read instead of the hub dataset (which
            formats: see the corpus).
        hf_dataset: A Hugging Face hub dataset name, read when there are no ``paths``.
        hf_config: The hub dataset's configuration (subset), e.g. ``20231101.en``.
        hf_split: The hub dataset's split to read.
        text_field: The column (field) that holds the text, in the hub dataset and in local
            ``.jsonl``, ``.json``, ``.parquet`` and ``.csv`` files.
    """

    paths: Path_fr | str | list[Path_fr | str] | None = None
    hf_dataset: str | None = None
    hf_config: str | None = None
    hf_split: str = "train"
    text_field: str = "text"

    def __post_init__(self) -> None:
        if self.paths is not None:  # strings from here on: they enter cache keys and messages
            paths = plain_path(self.paths) if isinstance(self.paths, (str, os.PathLike)) else \
                [plain_path(p) for p in self.paths]
            object.__setattr__(self, "paths", paths)

    @property
    def is_local(self) -> bool:
        """Whether the data is read from local ``paths`` (the hub dataset otherwise)."""
        return bool(self.paths)

    def __str__(self) -> str:
        if self.hf_dataset and not self.is_local:
            return f"{self.hf_dataset} {self.hf_config}" if self.hf_config else self.hf_dataset
        return str(self.paths)

    def require(self, what: str, files: str) -> None:
        """Refuse a source with neither local ``paths`` nor a hub dataset.

        Args:
            what: What is missing, for the message (e.g. ``PubMed corpus``).
            files: Which local files to give, for the message (e.g. ``pubmed*.xml.gz files``).
        """
        if not self.is_local and not self.hf_dataset:
            raise UserError(f"No {what} given: set `data.source.paths` to {files} or `data.source.hf_dataset` "
                            "to a hub dataset.")

    def hub_texts(self, streaming: bool = False) -> Iterator[str]:
        """The non-blank texts of the hub dataset's ``text_field``, one at a time.

        Args:
            streaming: Stream the dataset instead of downloading it whole first.
        """
        return iter_hf(self.hf_dataset, self.hf_config, self.hf_split, self.text_field, streaming)

    def texts(self, txt_split: TxtSplit = "file", streaming: bool = False) -> Iterator[str]:
        """The documents, read lazily: from the local files (see
        :func:`~lmforge.data.documents.iter_local`), else from the hub dataset.

        Args:
            txt_split: A local plain-text file is one document (``file``) or one per blank-line block.
            streaming: Stream the hub dataset instead of downloading it whole first.
        """
        if self.is_local:
            return iter_local(self.paths, self.text_field, txt_split)
        return self.hub_texts(streaming)
