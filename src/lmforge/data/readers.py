"""Readers of real corpus formats: MediaWiki XML dumps, PubMed/MEDLINE XML, Project Gutenberg books.

XML is read by streaming (``iterparse``, each record cleared once read), so a dump of any
size takes the memory of one page or citation, plus the documents kept. Every problem a
user can cause (missing path, broken compression, malformed or truncated XML) becomes a
one-sentence :class:`~lmforge.errors.UserError` naming the file and what to do.

Extraction rules (an article's markup becomes text by those of :mod:`lmforge.data.wikitext`):

``read_wikipedia_dump`` keeps pages of namespace 0 that are not redirects (no ``<redirect>``
element and text not starting with ``#REDIRECT``), and whose text is not empty after
``wikitext_to_text``.

``read_pubmed_xml`` makes one document per PMID: the ``ArticleTitle``, a newline, then the
``AbstractText`` sections, one per line, a labelled section as ``LABEL: text``; whitespace
inside each is collapsed to single spaces. Files are read in the order given: a later record
of a PMID replaces the earlier one (keeping its position), a ``<DeleteCitation>`` removes
the PMIDs read before it.

``strip_gutenberg`` keeps what lies between the ``*** START OF THE/THIS PROJECT GUTENBERG
EBOOK ... ***`` and ``*** END OF ... ***`` lines, less a closing ``End of (the) Project
Gutenberg ...`` line (wrapped over at most 3 lines); in older files, what lies after the
``*END*THE SMALL PRINT`` line up to the first ``End of (the) Project Gutenberg`` line. It
drops a byte-order mark, normalises line endings to ``\\n`` and strips the result; a text
without markers gets only those changes. Everything else (transcriber credits such as
"Produced by ...", notes) is the book's text and stays.
"""

from __future__ import annotations

import bz2
import gzip
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from lmforge.data.wikitext import wikitext_to_text
from lmforge.errors import UserError

# -- paths and streaming XML ---------------------------------------------------------------


def _open_binary(path: Path) -> IO[bytes]:
    name = path.name.lower()
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _local(tag: str) -> str:
    """A tag without its ``{namespace}`` (MediaWiki dumps put one on every element)."""
    return tag.rpartition("}")[2]


def _iterparse(path: Path, events: tuple[str, ...], what: str, option: str) -> Iterator[tuple[str, ET.Element]]:
    """``ET.iterparse`` of a possibly compressed file, its errors turned into UserErrors."""
    compression = next((c for c in (".bz2", ".gz") if path.name.lower().endswith(c)), None)
    try:
        with _open_binary(path) as f:
            yield from ET.iterparse(f, events=events)
    except ET.ParseError as err:
        line, column = err.position
        reason = str(err).split(": line ")[0]
        raise UserError(
            f"'{path}' is not well-formed {what} XML at line {line}, column {column} ({reason}): "
            f"the file may be truncated or not XML; download it again or remove it from `{option}`."
        ) from err
    except (OSError, EOFError) as err:
        if compression is None:
            raise UserError(f"Could not read '{path}' ({err}): check the file, or remove it from `{option}`.") from err
        raise UserError(
            f"'{path}' is not a readable {compression[1:]} file ({err}): it may be truncated or not compressed; "
            f"download it again, or decompress it and give the .xml file."
        ) from err


def _text(elem: ET.Element | None) -> str:
    """All text inside an element (inline markup such as ``<i>`` included), whitespace collapsed."""
    return " ".join("".join(elem.itertext()).split()) if elem is not None else ""


def _child(elem: ET.Element, name: str) -> ET.Element | None:
    for child in elem:
        if _local(child.tag) == name:
            return child
    return None


# -- Wikipedia -----------------------------------------------------------------------------


def read_wikipedia_dump(path: str | Path) -> Iterator[tuple[str, str]]:
    """(title, plain text) of each article of a MediaWiki ``pages-articles`` dump, streamed.

    Pages outside the article namespace (0), redirects and pages empty after cleaning are
    skipped.

    Args:
        path: A dump file: ``.xml``, ``.xml.bz2`` (as Wikimedia publishes them) or ``.xml.gz``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"Wikipedia dump '{path}' does not exist: download a *-pages-articles*.xml.bz2 file and give its path."
        )
    root: ET.Element | None = None
    for event, elem in _iterparse(path, ("start", "end"), "MediaWiki", "source.paths"):
        if root is None:
            root = elem
            if _local(root.tag) != "mediawiki":
                raise UserError(
                    f"'{path}' is not a MediaWiki dump (its root element is <{_local(root.tag)}>, not <mediawiki>): "
                    "give a *-pages-articles*.xml(.bz2) file."
                )
            continue
        if event != "end" or _local(elem.tag) != "page":
            continue
        ns = _child(elem, "ns")
        revision = _child(elem, "revision")
        body = _child(revision, "text") if revision is not None else None
        markup = (body.text or "") if body is not None else ""
        article = (
            (ns is None or (ns.text or "").strip() == "0")
            and _child(elem, "redirect") is None
            and not markup.lstrip().upper().startswith("#REDIRECT")
        )
        title = _text(_child(elem, "title"))
        root.clear()  # the page is read: keep memory bounded to one page
        if article:
            text = wikitext_to_text(markup)
            if text:
                yield title, text


# -- PubMed --------------------------------------------------------------------------------


def _pubmed_document(citation: ET.Element) -> tuple[str, str, bool]:
    """(pmid, title + abstract, whether there is an abstract) of a ``MedlineCitation``."""
    pmid = _text(_child(citation, "PMID"))
    article = _child(citation, "Article")
    title, sections = "", []
    if article is not None:
        title = _text(_child(article, "ArticleTitle"))
        abstract = _child(article, "Abstract")
        for part in abstract if abstract is not None else ():
            if _local(part.tag) != "AbstractText":
                continue
            body = _text(part)
            label = (part.get("Label") or "").strip()
            if body:
                sections.append(f"{label}: {body}" if label else body)
    return pmid, "\n".join([title, *sections]).strip(), bool(sections)


def read_pubmed_xml(paths: str | Path | list[str | Path], require_abstract: bool = True) -> list[tuple[str, str]]:
    """(PMID, title and abstract) of every citation of NLM PubMed baseline/update files, streamed.

    Args:
        paths: ``pubmed*.xml`` or ``.xml.gz`` files, in the order to apply them (baseline
            first, then the updates): later records of a PMID replace earlier ones and
            ``<DeleteCitation>`` removes earlier ones.
        require_abstract: Skip citations without an abstract (title only).
    """
    files = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    docs: dict[str, str] = {}
    for path in files:
        if not path.is_file():
            raise UserError(f"PubMed file '{path}' does not exist: give pubmed*.xml(.gz) files from the NLM baseline.")
        root: ET.Element | None = None
        for event, elem in _iterparse(path, ("start", "end"), "PubMed", "source.paths"):
            if root is None:
                root = elem
                if _local(root.tag) != "PubmedArticleSet":
                    raise UserError(
                        f"'{path}' is not a PubMed file (its root element is <{_local(root.tag)}>, not "
                        "<PubmedArticleSet>): give pubmed*.xml(.gz) files from the NLM baseline or updates."
                    )
                continue
            if event != "end":
                continue
            tag = _local(elem.tag)
            if tag == "PubmedArticle":
                citation = _child(elem, "MedlineCitation")
                if citation is not None:
                    pmid, text, has_abstract = _pubmed_document(citation)
                    if pmid and text and (has_abstract or not require_abstract):
                        docs[pmid] = text
                    else:  # a newer record without an abstract still replaces the older one
                        docs.pop(pmid, None)
                root.clear()
            elif tag == "DeleteCitation":
                for pmid in elem:
                    docs.pop(_text(pmid), None)
                root.clear()
            elif tag == "PubmedBookArticle":  # book chapters have no MedlineCitation: not taken
                root.clear()
    return list(docs.items())


# -- Project Gutenberg ---------------------------------------------------------------------

_GUTENBERG_START = re.compile(
    r"^\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG E(?:BOOK|TEXT)\b.*$", re.IGNORECASE | re.MULTILINE
)
_GUTENBERG_END = re.compile(
    r"^\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG E(?:BOOK|TEXT)\b", re.IGNORECASE | re.MULTILINE
)
_SMALL_PRINT_END = re.compile(r"^.*\*END\*\s*THE SMALL PRINT.*$", re.IGNORECASE | re.MULTILINE)
_END_OF_LINE = re.compile(r"^[ \t]*End of (?:the )?Project Gutenberg\b.*$", re.IGNORECASE | re.MULTILINE)
# the closing line, wrapped over up to two more lines, when nothing follows it
_LAST_END_OF_LINE = re.compile(
    r"^[ \t]*End of (?:the )?Project Gutenberg\b.*(?:\n[^\n]*\S[^\n]*){0,2}\s*\Z", re.IGNORECASE | re.MULTILINE
)


def strip_gutenberg(text: str) -> str:
    """A Project Gutenberg book without its licence header and footer (rules in the module docstring).

    Args:
        text: The whole ``.txt`` file of a book.
    """
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    start = _GUTENBERG_START.search(text)
    if start:
        body = text[start.end() :]
        end = _GUTENBERG_END.search(body)
        if end:
            body = body[: end.start()]
        closing = _LAST_END_OF_LINE.search(body)  # "End of the Project Gutenberg EBook of ..."
    else:
        small_print = _SMALL_PRINT_END.search(text)
        if not small_print:
            return text.strip()
        body = text[small_print.end() :]
        closing = _END_OF_LINE.search(body)  # old files: the footer follows this line
    if closing:
        body = body[: closing.start()]
    return body.strip()
