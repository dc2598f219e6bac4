"""Readers of real corpus formats: text extracted exactly, and one clear message per bad input."""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from lmforge.data.readers import read_pubmed_xml, read_wikipedia_dump, strip_gutenberg
from lmforge.data.wikitext import wikitext_to_text
from lmforge.errors import UserError

ARTICLE = """{{Short description|Political philosophy}}
{{Infobox philosophy
| name = Anarchism
| image = {{Flag|black|size={{small|20}}}}
}}
'''Anarchism''' is a [[political philosophy]] and [[Social movement|movement]] that is skeptical of authority.<ref name="a">{{cite book|title=X}}</ref> It is ''usually'' placed on the [[Left-wing politics|far left]].<ref name="b" />
[[File:Flag.svg|thumb|A flag with a [[Black (color)|black]] field]]

== Etymology ==
The word comes from [[Ancient Greek]] (<!-- a comment -->{{lang|grc|anarchia}}), see [https://example.org the dictionary] and a bare link[https://example.org/bare].<br />It has <small>small</small> text.

{| class="wikitable"
|-
! Year !! Event
|-
| 1840 || {{nowrap|Proudhon}}
|}

=== History ===
__TOC__
* First item with '''''bold italic''''' text
* Second&nbsp;item &amp; more



[[Category:Anarchism]]
[[Category:Political ideologies]]
"""

ARTICLE_TEXT = """Anarchism is a political philosophy and movement that is skeptical of authority. It is usually placed on the far left.

Etymology
The word comes from Ancient Greek, see the dictionary and a bare link. It has small text.

History
First item with bold italic text
Second item & more"""

# the lead of the real article (IPA and Greek templates, a caption with brackets), then appendices
ARISTOTLE = """{{Short description|Ancient Greek philosopher and polymath (384–322 BC)}}
{{Infobox philosopher
| name = Aristotle
| native_name = {{lang|grc|Ἀριστοτέλης}}
}}
'''Aristotle''' ({{IPAc-en|ˈ|ær|ɪ|s|t|ɒ|t|əl}};<ref>{{cite book|title=Dictionary}}</ref> {{lang-grc|Ἀριστοτέλης}}, ''Aristotélēs'', {{IPA-el|aristotélɛːs|pron}}; 384–322&nbsp;BC) was an [[Ancient Greece|Ancient Greek]] [[philosopher]].
[[File:Aristotle Altemps Inv8575.jpg|thumb|upright|Roman copy [after a bronze by [[Lysippos]]] of a bust; see [https://example.org/bust the catalogue]]]

== Name ==
The name comes from the Greek {{lang|grc|ἄριστος}}, i.e. "the best".

== See also ==
* [[Aristotelianism]]
* {{Portal|Philosophy}}

== Notes ==
{{notelist}}

== References ==
{{Reflist}}
=== Sources ===
* {{cite book |last=Barnes |first=Jonathan |title=Aristotle |year=1982}}

== Further reading ==
* Ross, W. D. (1995). ''Aristotle''.

== External links ==
* [https://plato.stanford.edu/entries/aristotle/ Aristotle] at the ''Stanford Encyclopedia of Philosophy''

{{Authority control}}
[[Category:Aristotle| ]]
[[Category:384 BC births]]
"""

ARISTOTLE_TEXT = """Aristotle (Aristotélēs; 384–322 BC) was an Ancient Greek philosopher.

Name
The name comes from the Greek, i.e. "the best"."""

ZETA = "'''Zeta''' is the sixth letter of the [[Greek alphabet]].{{citation needed|date=May 2024}} See [[:Category:Greek letters]]."
ZETA_TEXT = "Zeta is the sixth letter of the Greek alphabet. See Category:Greek letters."


def page(title: str, ns: int, markup: str, redirect: str | None = None) -> str:
    redirect_elem = f'\n    <redirect title="{redirect}" />' if redirect else ""
    return f"""  <page>
    <title>{title}</title>
    <ns>{ns}</ns>
    <id>{abs(hash(title)) % 1000}</id>{redirect_elem}
    <revision>
      <id>1</id>
      <model>wikitext</model>
      <format>text/x-wiki</format>
      <text bytes="{len(markup)}" xml:space="preserve">{escape(markup)}</text>
    </revision>
  </page>
"""


def mediawiki(*pages: str) -> str:
    return f"""<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="0.10" xml:lang="en">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="1" case="first-letter">Talk</namespace>
    </namespaces>
  </siteinfo>
{"".join(pages)}</mediawiki>
"""


DUMP = mediawiki(
    page("Anarchism", 0, ARTICLE),
    page("AccessibleComputing", 0, "#REDIRECT [[Computer accessibility]]", redirect="Computer accessibility"),
    page("Anarchy (philosophy)", 0, "#redirect [[Anarchism]] {{R from move}}"),
    page("Talk:Anarchism", 1, "This is a '''talk''' page, not an article."),
    page("Zeta", 0, ZETA),
    page("Aristotle", 0, ARISTOTLE),
)


def write_dump(folder: Path, content: str = DUMP, name: str = "enwiki-20240101-pages-articles1.xml") -> Path:
    path = folder / name
    if name.endswith(".bz2"):
        path.write_bytes(bz2.compress(content.encode("utf-8")))
    else:
        path.write_text(content, encoding="utf-8")
    return path


# -- Wikipedia -------------------------------------------------------------------------------


def test_wikitext_to_text_extracts_article_exactly() -> None:
    assert wikitext_to_text(ARTICLE) == ARTICLE_TEXT


@pytest.mark.parametrize(
    ("markup", "text"),
    [
        ("a {{x|{{y|{{z}}}}}} b", "a b"),
        ("before {{unclosed [[link]] after", "before unclosed link after"),
        ("[[Image:a.png|thumb|cap [[x]] and [[y|z]]]]kept", "kept"),
        ("[[Foo#Bar|the bar]] and [[Foo]]s", "the bar and Foos"),
        ("x<ref>a [[b]] {{c}}</ref> y<ref group=n>note</ref>z", "x yz"),
        ("==Lead==\ntext\n\n\n\n====Deep====\nmore", "Lead\ntext\n\nDeep\nmore"),
        ("{|\n| outer\n{|\n| inner\n|}\n| still outer\n|}\nafter", "after"),
        ("----\n# one\n#: two\n; term : def", "one\ntwo\nterm : def"),
    ],
)
def test_wikitext_rules(markup: str, text: str) -> None:
    assert wikitext_to_text(markup) == text


@pytest.mark.parametrize(
    ("markup", "text"),
    [
        (
            "Lead.\n[[File:X.jpg|thumb|A map [of something] with a [[link]] and [http://x.org label]]]\nNext.",
            "Lead.\nNext.",
        ),
        ("Text [[ image :Y.png|left|cap [1] by [[a|b]]]] more", "Text more"),
        ("[[File:Z.png|thumb|the range [0, 1) of [[x]]]] after", "after"),  # an unbalanced "[" in the caption
        ("Body.\n[[Category:Philosophers|Aristotle]]\n[[category: 384 BC births]]", "Body."),
        ("[[File:broken.png|thumb|no end", "[[File:broken.png|thumb|no end"),  # unclosed: kept as written
    ],
    ids=["single-brackets-nested-external", "inline-spaced-lowercase", "unbalanced-single", "categories", "unclosed"],
)
def test_wiki_file_and_category_links_go_with_their_captions(markup: str, text: str) -> None:
    assert wikitext_to_text(markup) == text


@pytest.mark.parametrize(
    ("markup", "text"),
    [
        (
            "'''Aristotle''' ({{IPAc-en|ˈ|ær|ɪ|s|t|ɒ|t|əl}}; {{lang-grc|Ἀριστοτέλης}}, ''Aristotélēs''; 384–322 BC)"
            " was a philosopher.",
            "Aristotle (Aristotélēs; 384–322 BC) was a philosopher.",
        ),
        ("from the Greek {{lang|grc|φιλοσοφία}}, i.e. love of wisdom.", "from the Greek, i.e. love of wisdom."),
        ("Smith (born 1950; {{d}}) and Jones {{ill|x}}, {{ill|y}}; Brown {{cn}}.", "Smith (born 1950) and Jones; Brown."),
        ("A word ({{lang|la|verbum}}) and {{IPA|x}} ( {{audio|y}} ).", "A word and."),
    ],
    ids=["aristotle", "greek-comma", "trailing-and-repeated", "empty-parens"],
)
def test_wiki_template_residue_is_tidied(markup: str, text: str) -> None:
    assert wikitext_to_text(markup) == text


@pytest.mark.parametrize(
    "text",
    [
        "Smith (born 1950) wrote (a, b) and f(x, y); see (i).",
        "It costs 0.5 or .5 units: the .NET runtime, a .22 rifle.",
        "He paused . . . then left... A wink ;) stays.",
    ],
)
def test_wiki_plain_parentheses_and_punctuation_survive(text: str) -> None:
    assert wikitext_to_text(text) == text


@pytest.mark.parametrize(
    ("markup", "text"),
    [
        (
            "Lead.\n\n== History ==\nKept [[link]].\n\n== See also ==\n* [[Plato]]\n* [[Stoicism|Stoics]]\n\n"
            "== References ==\n{{Reflist}}\n* {{cite book|title=X}}\n=== Sources ===\n* Barnes, ''Aristotle''\n\n"
            "==External links==\n* [http://x.org Official site]\n\n==  further   READING ==\n* Someone, ''A book''",
            "Lead.\n\nHistory\nKept link.",
        ),
        (
            "Lead.\n== Notes and references ==\n* a note\n=== Works cited ===\n* a work\n== Legacy ==\nStill here.\n"
            "=== Footnotes ===\n* dropped\n=== Influence ===\nKept too.",
            "Lead.\nLegacy\nStill here.\nInfluence\nKept too.",
        ),
    ],
    ids=["trailing-appendices", "body-after-appendix"],
)
def test_wiki_appendix_sections_are_dropped(markup: str, text: str) -> None:
    assert wikitext_to_text(markup) == text


@pytest.mark.parametrize("name", ["enwiki-20240101-pages-articles1.xml", "enwiki-20240101-pages-articles1.xml.bz2"])
def test_dump_yields_articles_only_plain_or_bz2(name: str, tmp_path: Path) -> None:
    """Redirects (element or #REDIRECT text) and the Talk namespace are skipped; bz2 reads the same."""
    path = write_dump(tmp_path, name=name)
    assert list(read_wikipedia_dump(path)) == [
        ("Anarchism", ARTICLE_TEXT),
        ("Zeta", ZETA_TEXT),
        ("Aristotle", ARISTOTLE_TEXT),
    ]


def test_missing_dump(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"'.*missing\.xml\.bz2' does not exist: download"):
        list(read_wikipedia_dump(tmp_path / "missing.xml.bz2"))


def test_dump_that_is_not_xml(tmp_path: Path) -> None:
    path = write_dump(tmp_path, "Just some text.\n")
    with pytest.raises(UserError, match=r"pages-articles1\.xml' is not well-formed MediaWiki XML at line 1, column 0 "
                                        r"\(syntax error\).*remove it from `source.paths`"):
        list(read_wikipedia_dump(path))


def test_truncated_dump_names_the_line(tmp_path: Path) -> None:
    cut = DUMP[: DUMP.index("<title>Zeta")]
    path = write_dump(tmp_path, cut)
    line = cut.count("\n") + 1
    with pytest.raises(UserError, match=rf"is not well-formed MediaWiki XML at line {line}, column \d+ \(no element found\)"):
        list(read_wikipedia_dump(path))


def test_bz2_that_is_not_compressed(tmp_path: Path) -> None:
    path = tmp_path / "enwiki-pages-articles.xml.bz2"
    path.write_text(DUMP, encoding="utf-8")
    with pytest.raises(UserError, match=r"pages-articles\.xml\.bz2' is not a readable bz2 file .*decompress it"):
        list(read_wikipedia_dump(path))


def test_xml_that_is_not_a_dump(tmp_path: Path) -> None:
    path = write_dump(tmp_path, "<PubmedArticleSet></PubmedArticleSet>")
    with pytest.raises(UserError, match=r"is not a MediaWiki dump \(its root element is <PubmedArticleSet>"):
        list(read_wikipedia_dump(path))


# -- PubMed ----------------------------------------------------------------------------------


def pubmed_article(pmid: str, title: str, abstract: str | None) -> str:
    abstract_elem = f"""
        <Abstract>
          {abstract}
          <CopyrightInformation>Copyright 2024 The Authors.</CopyrightInformation>
        </Abstract>""" if abstract is not None else ""
    return f"""  <PubmedArticle>
    <MedlineCitation Status="MEDLINE" Owner="NLM" IndexingMethod="Automated">
      <PMID Version="1">{pmid}</PMID>
      <DateCompleted><Year>2024</Year><Month>01</Month><Day>02</Day></DateCompleted>
      <Article PubModel="Print-Electronic">
        <Journal>
          <ISSN IssnType="Electronic">1234-5678</ISSN>
          <Title>Journal of Tests</Title>
        </Journal>
        <ArticleTitle>{title}</ArticleTitle>
        <Pagination><MedlinePgn>1-10</MedlinePgn></Pagination>{abstract_elem}
        <AuthorList CompleteYN="Y">
          <Author ValidYN="Y"><LastName>Doe</LastName><ForeName>Jane</ForeName></Author>
        </AuthorList>
        <Language>eng</Language>
      </Article>
      <MeshHeadingList>
        <MeshHeading><DescriptorName UI="D000001" MajorTopicYN="N">Aspirin</DescriptorName></MeshHeading>
      </MeshHeadingList>
    </MedlineCitation>
    <PubmedData>
      <PublicationStatus>ppublish</PublicationStatus>
      <ArticleIdList><ArticleId IdType="pubmed">{pmid}</ArticleId></ArticleIdList>
    </PubmedData>
  </PubmedArticle>
"""


def pubmed_set(*records: str) -> str:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2024//EN" "https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_240101.dtd">
<PubmedArticleSet>
{"".join(records)}</PubmedArticleSet>
"""


STRUCTURED = """<AbstractText Label="BACKGROUND" NlmCategory="BACKGROUND">Aspirin inhibits
            platelet aggregation.</AbstractText>
          <AbstractText Label="RESULTS" NlmCategory="RESULTS">Bleeding time rose by <b>20%</b>.</AbstractText>"""
BASELINE = pubmed_set(
    pubmed_article("100", "Aspirin and <i>in vitro</i> platelet function.", STRUCTURED),
    pubmed_article("200", "A deleted study.", "<AbstractText>It was retracted.</AbstractText>"),
    pubmed_article("300", "A title without abstract.", None),
)
UPDATE = pubmed_set(
    pubmed_article("100", "Aspirin and platelet function, revised.", "<AbstractText>New results.</AbstractText>"),
    "  <DeleteCitation>\n    <PMID Version=\"1\">200</PMID>\n  </DeleteCitation>\n",
)
DOC_100 = (
    "Aspirin and in vitro platelet function.\n"
    "BACKGROUND: Aspirin inhibits platelet aggregation.\n"
    "RESULTS: Bleeding time rose by 20%."
)


def write_pubmed(folder: Path, name: str, content: str) -> Path:
    path = folder / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(content.encode("utf-8")))
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_pubmed_title_and_labelled_abstract(tmp_path: Path) -> None:
    path = write_pubmed(tmp_path, "pubmed24n0001.xml.gz", BASELINE)
    assert read_pubmed_xml(path) == [
        ("100", DOC_100),
        ("200", "A deleted study.\nIt was retracted."),
    ]
    assert read_pubmed_xml(path, require_abstract=False)[-1] == ("300", "A title without abstract.")


def test_pubmed_update_replaces_and_deletes_across_files(tmp_path: Path) -> None:
    base = write_pubmed(tmp_path, "pubmed24n0001.xml.gz", BASELINE)
    update = write_pubmed(tmp_path, "pubmed24n1220.xml", UPDATE)
    assert read_pubmed_xml([base, update], require_abstract=False) == [
        ("100", "Aspirin and platelet function, revised.\nNew results."),
        ("300", "A title without abstract."),
    ]
    # a deletion applies to what was read before it, never to what comes after
    assert read_pubmed_xml([update, base]) == [("100", DOC_100), ("200", "A deleted study.\nIt was retracted.")]


def test_pubmed_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "pubmed24n0001.xml.gz"
    path.write_bytes(gzip.compress(BASELINE.encode("utf-8"))[:200])
    with pytest.raises(UserError, match=r"pubmed24n0001\.xml\.gz' is not a readable gz file .*download it again"):
        read_pubmed_xml(path)


def test_pubmed_truncated_xml_and_wrong_file(tmp_path: Path) -> None:
    cut = BASELINE[: BASELINE.index("<ArticleTitle>A deleted")]
    path = write_pubmed(tmp_path, "pubmed24n0002.xml", cut)
    with pytest.raises(UserError, match=rf"pubmed24n0002\.xml' is not well-formed PubMed XML at line {cut.count(chr(10)) + 1}, "
                                        r"column \d+ \(no element found\).*remove it from `source.paths`"):
        read_pubmed_xml(path)
    wiki = write_dump(tmp_path, DUMP)
    with pytest.raises(UserError, match=r"is not a PubMed file \(its root element is <mediawiki>"):
        read_pubmed_xml(wiki)
    with pytest.raises(UserError, match=r"PubMed file '.*pubmed99\.xml' does not exist"):
        read_pubmed_xml(tmp_path / "pubmed99.xml")


# -- Project Gutenberg ---------------------------------------------------------------------

BOOK_BODY = "CHAPTER I.\n\nIt was a dark night.\n  An indented line.\n\nTHE END"
GUTENBERG = (
    "\ufeffThe Project Gutenberg EBook of A Test, by Nobody\r\n\r\n"
    "This eBook is for the use of anyone anywhere at no cost.\r\n\r\n"
    "Title: A Test\r\n\r\nCharacter set encoding: UTF-8\r\n\r\n"
    "*** START OF THIS PROJECT GUTENBERG EBOOK A TEST ***\r\n\r\n\r\n\r\n"
    + BOOK_BODY.replace("\n", "\r\n")
    + "\r\n\r\n\r\n\r\nEnd of the Project Gutenberg EBook of A Test, by\r\nNobody\r\n\r\n"
    "*** END OF THIS PROJECT GUTENBERG EBOOK A TEST ***\r\n\r\n"
    "***** This file should be named 1-0.txt *****\r\n\r\n"
    "*** START: FULL LICENSE ***\r\nTHE FULL PROJECT GUTENBERG LICENSE\r\n"
)
OLD_STYLE = (
    "The Project Gutenberg Etext of Old Book\n**Welcome To The World of Free Plain Vanilla Electronic Texts**\n"
    "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n\n"
    + BOOK_BODY
    + "\n\nEnd of the Project Gutenberg Etext of Old Book\nMore licence text.\n"
)


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (GUTENBERG, BOOK_BODY),
        (GUTENBERG.replace("*** START OF THIS", "***START OF THE").replace("*** END OF THIS", "***END OF THE"), BOOK_BODY),
        (OLD_STYLE, BOOK_BODY),
        ("A plain book.\r\nNo header.\r\n", "A plain book.\nNo header."),
    ],
    ids=["current", "no-space-THE", "small-print", "no-markers"],
)
def test_strip_gutenberg(raw: str, text: str) -> None:
    assert strip_gutenberg(raw) == text


def test_end_of_line_inside_the_book_is_kept() -> None:
    """Only a closing line (wrapped over at most 3 lines, then nothing) is the footer's."""
    body = "End of Project Gutenberg mentions.\n\nA later paragraph."
    raw = f"*** START OF THE PROJECT GUTENBERG EBOOK X ***\n{body}\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\n"
    assert strip_gutenberg(raw) == body
