"""The corpora of the pretraining literature: Wikipedia, PubMed abstracts, books.

Each reads either its real distribution format from local files (a MediaWiki XML dump, NLM
PubMed XML, plain-text books) or a Hugging Face dataset, and otherwise is a
:class:`~lmforge.data.text.CorpusDataModule` like any other: the shared options
(``max_documents``, ``tokenizer``, ``seq_len``, ...) pass through ``**kwargs``. How the
markup becomes text is documented in :mod:`lmforge.data.readers`.
"""

from __future__ import annotations

import itertools
from typing import Any

from lmforge.data.documents import read_hf, read_text
from lmforge.data.readers import expand_corpus_paths, read_pubmed_xml, read_wikipedia_dump, strip_gutenberg
from lmforge.data.text import CorpusDataModule
from lmforge.errors import UserError


def _read_hub(corpus: WikipediaCorpus | PubMedCorpus | BookCorpus) -> list[str]:
    return read_hf(
        corpus.hf_dataset, corpus.hf_config, corpus.hf_split, corpus.text_field, corpus.streaming, corpus.max_documents
    )


def _nonempty(docs: list[str], source: object, hint: str) -> list[str]:
    if not docs:
        raise UserError(f"No documents were found in {source} after filtering: {hint}")
    return docs


class WikipediaCorpus(CorpusDataModule):
    """Wikipedia articles, from a local MediaWiki dump or the Hugging Face hub.

    With ``dump_paths`` the dump is streamed and its wikitext cleaned to plain text (only
    articles: no redirects, no talk or other namespaces); otherwise the hub dataset,
    already cleaned, is read.

    Args:
        dump_paths: Local ``*-pages-articles*.xml`` or ``.xml.bz2`` dump files (folders and
            globs allowed), read instead of the hub dataset.
        hf_dataset: The Hugging Face dataset of cleaned articles.
        hf_config: Its configuration: dump date and language, e.g. ``20231101.en``.
        hf_split: The dataset split to read.
        streaming: Stream the hub dataset instead of downloading it whole.
        text_field: Column of the hub dataset that holds the text.
        **kwargs: Options of :class:`~lmforge.data.text.CorpusDataModule`.
    """

    def __init__(
        self,
        dump_paths: str | list[str] | None = None,
        hf_dataset: str = "wikimedia/wikipedia",
        hf_config: str | None = "20231101.en",
        hf_split: str = "train",
        streaming: bool = False,
        text_field: str = "text",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.dump_paths = dump_paths
        self.hf_dataset = hf_dataset
        self.hf_config = hf_config
        self.hf_split = hf_split
        self.streaming = streaming
        self.text_field = text_field

    @property
    def name(self) -> str:
        return f"Wikipedia ({self.dump_paths or f'{self.hf_dataset} {self.hf_config}'})"

    def load_documents(self) -> list[str]:
        """The articles' plain text, in dump order."""
        if not self.dump_paths:
            return _read_hub(self)
        files = expand_corpus_paths(self.dump_paths, (".xml", ".xml.bz2", ".xml.gz"), "MediaWiki dump")
        texts = (text for path in files for _, text in read_wikipedia_dump(path))
        docs = list(itertools.islice(texts, self.max_documents))  # a dump can be huge: stop early
        hint = "the dump holds no article text (namespace 0, not a redirect); give a pages-articles dump."
        return _nonempty(docs, self.dump_paths, hint)


class PubMedCorpus(CorpusDataModule):
    """PubMed titles and abstracts (as BioBERT pretrained on), from NLM XML files or the hub.

    One document per PMID: the title, then the abstract, a structured abstract's sections
    each on its own line as ``LABEL: text``.

    Args:
        paths: Local ``pubmed*.xml`` or ``.xml.gz`` files of the NLM baseline and updates
            (folders and globs allowed, their files sorted by name, which is NLM's release
            order), applied in order so that updates and ``DeleteCitation`` records
            override the baseline.
        require_abstract: Skip citations with a title but no abstract.
        hf_dataset: A Hugging Face dataset read instead of ``paths``.
        hf_config: Its configuration.
        hf_split: The dataset split to read.
        streaming: Stream the hub dataset instead of downloading it whole.
        text_field: Column of the hub dataset that holds the text.
        **kwargs: Options of :class:`~lmforge.data.text.CorpusDataModule`.
    """

    def __init__(
        self,
        paths: str | list[str] | None = None,
        require_abstract: bool = True,
        hf_dataset: str | None = None,
        hf_config: str | None = None,
        hf_split: str = "train",
        streaming: bool = False,
        text_field: str = "text",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.paths = paths
        self.require_abstract = require_abstract
        self.hf_dataset = hf_dataset
        self.hf_config = hf_config
        self.hf_split = hf_split
        self.streaming = streaming
        self.text_field = text_field

    @property
    def name(self) -> str:
        return f"PubMed ({self.hf_dataset or self.paths})"

    def load_documents(self) -> list[str]:
        """Title and abstract of every citation left after updates and deletions."""
        if self.hf_dataset:
            return _read_hub(self)
        if self.paths is None:
            raise UserError("No PubMed corpus given: set `data.paths` to pubmed*.xml.gz files or `data.hf_dataset`.")
        files = expand_corpus_paths(self.paths, (".xml", ".xml.gz"), "PubMed XML")
        docs = [text for _, text in read_pubmed_xml(files, self.require_abstract)]
        if self.require_abstract:
            hint = "no citation has an abstract; set `require_abstract: false` to keep titles."
        else:
            hint = "the files hold no citation; give pubmed*.xml(.gz) files from the NLM baseline."
        return _nonempty(docs, self.paths, hint)


class BookCorpus(CorpusDataModule):
    """Books, one document each: plain-text files (Project Gutenberg licence removed) or the hub.

    Args:
        paths: Local ``.txt`` or ``.txt.gz`` books (folders and globs allowed). A Project
            Gutenberg header and footer are removed when present; the text is otherwise kept
            as it is, with line endings normalised.
        hf_dataset: A Hugging Face dataset read instead of ``paths``.
        hf_config: Its configuration.
        hf_split: The dataset split to read.
        streaming: Stream the hub dataset instead of downloading it whole.
        text_field: Column of the hub dataset that holds the text.
        **kwargs: Options of :class:`~lmforge.data.text.CorpusDataModule`.
    """

    def __init__(
        self,
        paths: str | list[str] | None = None,
        hf_dataset: str | None = None,
        hf_config: str | None = None,
        hf_split: str = "train",
        streaming: bool = False,
        text_field: str = "text",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.paths = paths
        self.hf_dataset = hf_dataset
        self.hf_config = hf_config
        self.hf_split = hf_split
        self.streaming = streaming
        self.text_field = text_field

    @property
    def name(self) -> str:
        return f"books ({self.hf_dataset or self.paths})"

    def load_documents(self) -> list[str]:
        """Each book's text, in sorted path order."""
        if self.hf_dataset:
            return _read_hub(self)
        if self.paths is None:
            raise UserError("No books given: set `data.paths` to a folder of .txt books or `data.hf_dataset`.")
        files = expand_corpus_paths(self.paths, (".txt", ".txt.gz"), "plain-text book")
        books = (strip_gutenberg(read_text(path)) for path in files)
        docs = [book for book in itertools.islice((b for b in books if b), self.max_documents)]
        return _nonempty(docs, self.paths, "every book is empty; give .txt files with text.")
