"""The corpora: your own files or any hub dataset, the bundled default, and those of the
pretraining literature (Wikipedia, PubMed abstracts, books, FineWeb).

The literature's corpora read either their real distribution format from local files (a
MediaWiki XML dump, NLM PubMed XML, plain-text books, FineWeb's parquet shards) or a Hugging
Face dataset; how the markup becomes text is documented in :mod:`lmforge.data.readers`.
Every corpus is a :class:`~lmforge.data.corpus.CorpusDataModule` like any other: the shared
options (``max_documents``, ``deduplicate``, ``min_chars``, ``tokenizer``, ``seq_len``, ...)
pass through ``**kwargs``.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from lmforge.data.bundled import bundled_documents
from lmforge.data.corpus import CorpusDataModule
from lmforge.data.documents import TxtSplit, expand_paths, read_text
from lmforge.data.readers import read_pubmed_xml, read_wikipedia_dump, strip_gutenberg
from lmforge.data.source import DataSource
from lmforge.errors import UserError


def _nonempty(docs: Iterable[str], source: object, hint: str) -> Iterator[str]:
    """``docs``, lazily; an error naming ``source`` once they end if there was none."""
    count = 0
    for doc in docs:
        count += 1
        yield doc
    if not count:
        raise UserError(f"No documents were found in {source}: {hint}")


class TextCorpus(CorpusDataModule):
    """Documents from local files or a Hugging Face dataset.

    Args:
        source: Local files, folders or glob patterns (``.jsonl``, ``.json``, ``.parquet`` or
            ``.csv``, or plain UTF-8 text of any other extension, e.g. ``.txt`` or WikiText's
            ``.raw`` and ``.tokens``; each optionally ``.gz``; a folder is searched for those
            formats and ``.txt``, ``.raw``, ``.tokens``), or a hub dataset.
        txt_split: A plain-text file is one document (``file``) or one per blank-line block
            (``blank_line``).
        **kwargs: Options of :class:`~lmforge.data.corpus.CorpusDataModule`.
    """

    def __init__(self, source: DataSource = DataSource(), txt_split: TxtSplit = "file", **kwargs: Any):
        super().__init__(**kwargs)
        self.source = source
        self.txt_split = txt_split

    @property
    def name(self) -> str:
        return str(self.source)

    def load_documents(self) -> Iterator[str]:
        """The documents, read lazily (filters and ``max_documents`` apply downstream)."""
        self.source.require("corpus", "your text files")
        return self.source.texts(self.txt_split, self.streaming)


class BundledCorpus(CorpusDataModule):
    """The default corpus, no download needed: the English prose inside every CPython.

    It is the help text of ``pydoc_data.topics`` plus the standard library's docstrings,
    read with ``ast`` (about 2 MB).
    """

    @property
    def name(self) -> str:
        return "the bundled corpus"

    def load_documents(self) -> list[str]:
        return bundled_documents()

    def fingerprint_extra(self) -> str:
        return sys.version  # the bundled text is this Python's


class WikipediaCorpus(CorpusDataModule):
    """Wikipedia articles, from a local MediaWiki dump or the Hugging Face hub.

    From local ``source.paths`` the dump is streamed and its wikitext cleaned to plain text
    (only articles: no redirects, no talk or other namespaces); otherwise the hub dataset,
    already cleaned, is read.

    Args:
        source: Local ``*-pages-articles*.xml`` or ``.xml.bz2`` dump files (folders and globs
            allowed), or the hub dataset of cleaned articles and its configuration (dump date
            and language, e.g. ``20231101.en``).
        **kwargs: Options of :class:`~lmforge.data.corpus.CorpusDataModule`.
    """

    def __init__(
        self,
        source: DataSource = DataSource(hf_dataset="wikimedia/wikipedia", hf_config="20231101.en"),
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.source = source

    @property
    def name(self) -> str:
        return f"Wikipedia ({self.source})"

    def load_documents(self) -> Iterator[str]:
        """The articles' plain text, in dump order, read lazily (the dump is streamed)."""
        self.source.require("Wikipedia articles", "pages-articles dump files")
        if not self.source.is_local:
            return self.source.hub_texts(self.streaming)
        files = expand_paths(self.source.paths, (".xml", ".xml.bz2", ".xml.gz"), "MediaWiki dump")
        texts = (text for path in files for _, text in read_wikipedia_dump(path))
        hint = "the dump holds no article text (namespace 0, not a redirect); give a pages-articles dump."
        return _nonempty(texts, self.source.paths, hint)


class PubMedCorpus(CorpusDataModule):
    """PubMed titles and abstracts (as BioBERT pretrained on), from NLM XML files or the hub.

    One document per PMID: the title, then the abstract, a structured abstract's sections
    each on its own line as ``LABEL: text``.

    Args:
        source: Local ``pubmed*.xml`` or ``.xml.gz`` files of the NLM baseline and updates
            (folders and globs allowed, their files sorted by name, which is NLM's release
            order), applied in order so that updates and ``DeleteCitation`` records
            override the baseline; or a hub dataset with a text column.
        require_abstract: Skip citations with a title but no abstract.
        **kwargs: Options of :class:`~lmforge.data.corpus.CorpusDataModule`.
    """

    def __init__(self, source: DataSource = DataSource(), require_abstract: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.source = source
        self.require_abstract = require_abstract

    @property
    def name(self) -> str:
        return f"PubMed ({self.source})"

    def load_documents(self) -> Iterator[str]:
        """Title and abstract of every citation left after updates and deletions.

        Updates and deletions can touch any earlier citation, so the citations of all the
        files are collected before the first is returned: memory grows with the corpus.
        """
        self.source.require("PubMed corpus", "pubmed*.xml.gz files")
        if not self.source.is_local:
            return self.source.hub_texts(self.streaming)
        files = expand_paths(self.source.paths, (".xml", ".xml.gz"), "PubMed XML")
        docs = (text for _, text in read_pubmed_xml(files, self.require_abstract))
        if self.require_abstract:
            hint = "no citation has an abstract; set `require_abstract: false` to keep titles."
        else:
            hint = "the files hold no citation; give pubmed*.xml(.gz) files from the NLM baseline."
        return _nonempty(docs, self.source.paths, hint)


class BookCorpus(CorpusDataModule):
    """Books, one document each: plain-text files (Project Gutenberg licence removed) or the hub.

    Args:
        source: Local ``.txt`` or ``.txt.gz`` books (folders and globs allowed), or a hub
            dataset with a text column. A Project Gutenberg header and footer are removed
            when present; the text is otherwise kept as it is, with line endings normalised.
        **kwargs: Options of :class:`~lmforge.data.corpus.CorpusDataModule`.
    """

    def __init__(self, source: DataSource = DataSource(), **kwargs: Any):
        super().__init__(**kwargs)
        self.source = source

    @property
    def name(self) -> str:
        return f"books ({self.source})"

    def load_documents(self) -> Iterator[str]:
        """Each book's text, in sorted path order, one book at a time."""
        self.source.require("books", "a folder of .txt books")
        if not self.source.is_local:
            return self.source.hub_texts(self.streaming)
        files = expand_paths(self.source.paths, (".txt", ".txt.gz"), "plain-text book")
        books = (strip_gutenberg(read_text(path)) for path in files)
        return _nonempty((book for book in books if book), self.source.paths,
                         "every book is empty; give .txt files with text.")


class FineWebCorpus(CorpusDataModule):
    """FineWeb or FineWeb-Edu web pages, streamed from the hub or read from local parquet shards.

    The hub datasets are terabytes, so they are always read as a stream, and by default
    (``streaming``) tokenized on the fly while training. With ``streaming: false`` the pages
    are prepared into token shards once; reading stops when ``max_documents`` pages have
    passed every filter (this corpus's and the shared ``min_chars``/``deduplicate``). Local
    shards (the hub's own ``.parquet`` files) are read a batch at a time, only the columns a
    filter needs.

    Args:
        source: Local ``.parquet`` shards with FineWeb's columns (folders and globs allowed,
            sorted by name), or the hub dataset: ``HuggingFaceFW/fineweb-edu`` (pages an
            educational-quality classifier scored at least 3 of 5; the better data for a small
            budget) or ``HuggingFaceFW/fineweb`` (all of the filtered, deduplicated crawl), with
            a configuration: a sample (``sample-10BT``, ``sample-100BT``, ``sample-350BT``), one
            crawl (e.g. ``CC-MAIN-2024-10``) or ``default`` (everything).
        streaming: Tokenize and pack pages as they are read, no token shards (see
            :class:`~lmforge.data.corpus.CorpusDataModule`); on by default, for the hub's terabytes.
            The hub dataset is read as a stream either way.
        min_language_score: Keep pages whose ``language_score`` (fastText's confidence that
            the page is English, 0 to 1; FineWeb kept 0.65 and above) is at least this.
        min_edu_score: Keep pages whose ``score`` (FineWeb-Edu's classifier, 0 to 5; the
            dataset already holds only 2.5 and above) is at least this, e.g. ``3.5``.
            FineWeb itself has no ``score`` column: setting this on it is an error.
        **kwargs: Options of :class:`~lmforge.data.corpus.CorpusDataModule`.
    """

    def __init__(
        self,
        source: DataSource = DataSource(hf_dataset="HuggingFaceFW/fineweb-edu", hf_config="sample-10BT"),
        streaming: bool = True,
        min_language_score: float | None = None,
        min_edu_score: float | None = None,
        **kwargs: Any,
    ):
        super().__init__(streaming=streaming, **kwargs)
        self.source = source
        self.min_language_score = min_language_score
        self.min_edu_score = min_edu_score

    @property
    def name(self) -> str:
        return f"FineWeb ({self.source})"

    def _filters(self) -> dict[str, tuple[str, float]]:
        """option -> (column, threshold), for the filters that are set."""
        filters = {"min_language_score": ("language_score", self.min_language_score),
                   "min_edu_score": ("score", self.min_edu_score)}
        return {option: (column, value) for option, (column, value) in filters.items() if value is not None}

    def _check_columns(self, columns: list[str], source: str) -> None:
        if self.source.text_field not in columns:
            raise UserError(
                f"Column '{self.source.text_field}' is not in {source} (its columns: {', '.join(columns)}): "
                "set `source.text_field` to the column that holds the text."
            )
        for option, (column, _) in self._filters().items():
            if column not in columns:
                hint = " (only FineWeb-Edu has one: use HuggingFaceFW/fineweb-edu)" if column == "score" else ""
                raise UserError(
                    f"`{option}` is set but {source} has no '{column}' column{hint}; its columns: "
                    f"{', '.join(columns)}. Unset `{option}` or give FineWeb data."
                )

    def _parquet_rows(self, columns: list[str]) -> Iterator[dict[str, Any]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        for path in expand_paths(self.source.paths, (".parquet",), "FineWeb parquet"):
            try:
                shard = pq.ParquetFile(path)
            except (pa.ArrowException, OSError) as err:
                raise UserError(
                    f"'{path}' is not a readable parquet file ({err}): give FineWeb's .parquet shards."
                ) from err
            self._check_columns(shard.schema_arrow.names, f"'{path}'")
            for batch in shard.iter_batches(batch_size=1024, columns=columns):
                yield from batch.to_pylist()

    def _hub_rows(self, columns: list[str]) -> Iterator[dict[str, Any]]:
        import datasets

        hub = self.source
        source = f"dataset '{hub.hf_dataset}' (config {hub.hf_config!r})"
        try:
            # always read as a stream: the samples are terabytes, and prepare stops at max_documents
            ds = datasets.load_dataset(hub.hf_dataset, hub.hf_config, split=hub.hf_split, streaming=True)
        except Exception as err:  # offline, unknown name, bad config ...
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(
                f"Could not load the Hugging Face {source}, split '{hub.hf_split}': {first}. "
                "Check the name and your network, or download its parquet shards and point `source.paths` at them."
            ) from err
        if ds.column_names is not None:  # a stream may not know its columns before its first row
            self._check_columns(ds.column_names, source)
            ds = ds.select_columns(columns)
        for i, row in enumerate(ds):
            if i == 0 and ds.column_names is None:
                self._check_columns(list(row), source)
            yield row

    def _texts(self, rows: Iterator[dict[str, Any]], dropped: Counter[str]) -> Iterator[str]:
        filters = self._filters()
        for row in rows:
            text = row[self.source.text_field]
            if not isinstance(text, str) or not text.strip():
                continue
            failed = next((option for option, (column, least) in filters.items()
                           if row[column] is None or row[column] < least), None)
            if failed is not None:
                dropped[failed] += 1
                continue
            yield text

    def load_documents(self) -> Iterator[str]:
        """The pages' text that pass this corpus's filters, in shard order, read lazily."""
        columns = [self.source.text_field, *(column for column, _ in self._filters().values())]
        rows = self._parquet_rows(columns) if self.source.is_local else self._hub_rows(columns)
        dropped: Counter[str] = Counter()
        count = 0
        for text in self._texts(rows, dropped):
            count += 1
            yield text
        below = ", ".join(f"{n} below {option}={self._filters()[option][1]}" for option, n in dropped.items())
        if below:
            rank_zero_info(f"{self.name}: removed pages {below}.")
        if not count and dropped:
            relax = " or ".join(f"`{option}`" for option in dropped)
            raise UserError(f"No documents were found in {self.name} after filtering ({below}): lower {relax}.")
        if not count:
            raise UserError(f"No documents were found in {self.name}: every page is empty; give FineWeb data with text.")
