"""MediaWiki markup (wikitext) to plain text: what :func:`~lmforge.data.readers.read_wikipedia_dump`
keeps of each article.

Regular expressions and bracket counting, no parser: on the real-format pages of the tests and
``benchmarks/libraries.py`` they leave no more markup than ``mwparserfromhell`` (the parser of
Hugging Face's Wikipedia builder) with the same rules around it, and run 8 to 14 times faster.

``wikitext_to_text`` applies these rules, in this order:

1. HTML comments ``<!-- -->`` go; ``<ref>...</ref>``, ``<ref .../>`` and the non-prose
   elements ``gallery``, ``math``, ``timeline``, ``imagemap``, ``score`` go with their content.
2. Templates ``{{...}}`` go, nested ones included.
3. Tables ``{| ... |}`` (from the line that opens one to the line that closes it) go.
4. Appendix sections go: from a heading (any level; case and spacing aside) "See also",
   "Notes", "Footnotes", "References", "Citations", "Sources", "Bibliography", "Works
   cited", "Further reading", "External links", or two of them joined by "and"/"&", up to
   the next heading of the same or a higher level that is not one of them (normally the
   end of the article).
5. ``[[File:...]]``, ``[[Image:...]]`` and ``[[Category:...]]`` (any case, spaces allowed
   after ``[[``) go whole, their end found by bracket depth, so a caption holding links
   or single brackets (``[sic]``, ``[http://x label]``) goes too; alone on its line, the
   line goes. With a leading ``:`` (``[[:Category:X]]``) it is an ordinary link (step 6).
   An unclosed one stays as written.
6. Internal links, innermost first: ``[[target|text]]`` becomes ``text``, ``[[target]]``
   becomes ``target`` (a leading ``:`` dropped).
7. External links: ``[http://x text]`` becomes ``text``; a bare ``[http://x]`` goes.
8. Other HTML tags go and keep their content (``<br>`` becomes a space); magic words
   such as ``__TOC__`` go.
9. Headings ``== H ==`` (any level) become the line ``H`` (kept, on its own line: section
   titles are prose and mark topic changes).
10. Bold/italic quotes (``''`` to ``'''''``) go; list markers ``* # : ;`` at the start of a
    line go; ``----`` rules go.
11. HTML entities are decoded; spaces are collapsed within lines. Then, in each line, what
    removed templates leave around punctuation is mended: a space before a ``,`` ``;`` or
    ``.`` that a space or the line's end follows goes (``Greek , i.e.`` becomes ``Greek,
    i.e.``; ``.5``, ``.NET``, ``;)`` and ``. . .`` stay); a run such as ``;,`` becomes one
    mark (``;`` if it holds one); a parenthesis without nested ones loses the spaces,
    commas and semicolons just inside it (``(; , X; Y)`` becomes ``(X; Y)``), and goes
    with the space before it when nothing is left.
12. Lines are stripped, runs of blank lines become one blank line, and the text is stripped.
"""

from __future__ import annotations

import html
import re

_DROPPED_ELEMENTS = "ref|gallery|math|timeline|imagemap|score"
_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
_DROPPED_PAIRED = re.compile(rf"<({_DROPPED_ELEMENTS})\b[^>]*?(?<!/)>.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_DROPPED_EMPTY = re.compile(rf"<({_DROPPED_ELEMENTS})\b[^>]*/>", re.IGNORECASE)
_INNER_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
# links that show no text where they stand: an image and its caption, a category (a leading ":"
# makes a link to such a page an ordinary one, shown as its text)
_REMOVED_LINK = re.compile(r"\[\[\s*(?:file|image|category)\s*:", re.IGNORECASE)
_APPENDIX_NAME = (  # the end matter of an article (Manual of Style, Layout)
    r"(?:see also|notes|footnotes|references|citations|sources|bibliography|works cited|further reading|external links)"
)
_APPENDIX = re.compile(rf"{_APPENDIX_NAME}(?: (?:and|&) {_APPENDIX_NAME})?", re.IGNORECASE)
_EXTERNAL_LINK = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]*(?:\s+([^\]]*))?\]", re.IGNORECASE)
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TAG = re.compile(r"</?[a-zA-Z][^<>]*>")
_MAGIC_WORD = re.compile(r"^__[A-Z]+__[ \t]*\n|__[A-Z]+__", re.MULTILINE)  # a line of its own goes whole
_HEADING = re.compile(r"^(=+)[ \t]*(.*?)[ \t]*\1[ \t]*$", re.MULTILINE)
_QUOTES = re.compile(r"'{2,5}")
_LIST_MARKER = re.compile(r"^[*#:;]+[ \t]*", re.MULTILINE)
_RULE = re.compile(r"^-{4,}[ \t]*$", re.MULTILINE)
# a parenthesis on one line, with the spaces, commas and semicolons just inside it
_PARENS = re.compile(r"( ?)\([ ,;]*([^()\n]*?)[ ,;]*\)")
# the space before a comma, semicolon or period that a space or the line's end follows
# (not ".NET", ".5", ";)" or ". . .")
_SPACE_BEFORE_PUNCT = re.compile(r"(?<!\.) +(?=[,;.](?!\S)(?! \.))")
_PUNCT_RUN = re.compile(r"[,;](?: ?[,;])+")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def _remove_templates(text: str) -> str:
    """Drop ``{{...}}``, nested ones included; an unclosed ``{{`` keeps the text after it."""
    out: list[str] = []
    depth = 0
    start = 0  # where the outermost open template began
    i = 0
    n = len(text)
    while i < n:
        if text.startswith("{{", i):
            if depth == 0:
                start = i
            depth += 1
            i += 2
        elif depth and text.startswith("}}", i):
            depth -= 1
            i += 2
        else:
            if depth == 0:
                out.append(text[i])
            i += 1
    if depth:
        out.append(_remove_templates(text[start + 2 :]))
    return "".join(out)


def _remove_tables(text: str) -> str:
    """Drop every line from one opening ``{|`` to its closing ``|}`` (nested tables included)."""
    kept: list[str] = []
    depth = 0
    for line in text.split("\n"):
        stripped = line.lstrip()
        if stripped.startswith("{|"):
            depth += 1
        elif depth and stripped.startswith("|}"):
            depth -= 1
        elif depth == 0:
            kept.append(line)
    return "\n".join(kept)


def _drop_appendices(text: str) -> str:
    """Drop the appendix sections ("See also", "References", ...) with their subsections.

    An appendix heading drops every line up to the next heading of its level or a higher one
    that is not an appendix itself (in an article: normally to the end).

    Args:
        text: Wikitext whose headings are still ``== H ==`` lines.
    """
    kept: list[str] = []
    dropping = 0  # the level of the appendix heading being dropped; 0 while keeping
    for line in text.split("\n"):
        heading = _HEADING.fullmatch(line)
        if heading:
            level = len(heading.group(1))
            if not dropping or level <= dropping:
                title = " ".join(heading.group(2).split())
                dropping = level if _APPENDIX.fullmatch(title) else 0
        if not dropping:
            kept.append(line)
    return "\n".join(kept)


def _link_end(text: str, start: int) -> int | None:
    """Where the ``[[`` link opening at ``start`` ends (just past its ``]]``); None if unclosed.

    Brackets are matched by depth, single ones included (``[http://x label]``, ``[sic]`` in a
    caption); when single brackets do not balance, only ``[[`` and ``]]`` are counted.

    Args:
        text: The wikitext.
        start: The index of the link's ``[[``.
    """
    for count_single in (True, False):
        open_brackets: list[int] = []  # 2 for each open "[[", 1 for each open "["
        i = start
        while i < len(text):
            if text.startswith("[[", i):
                open_brackets.append(2)
                i += 2
            elif text[i] == "[" and count_single:
                open_brackets.append(1)
                i += 1
            elif text[i] == "]" and open_brackets:
                width = open_brackets[-1]
                if text.startswith("]" * width, i):
                    open_brackets.pop()
                    i += width
                    if not open_brackets:
                        return i
                else:  # a lone "]" inside a link is text
                    i += 1
            else:
                i += 1
    return None


def _whole_line(text: str, start: int, end: int) -> tuple[int, int]:
    """``(start, end)``, or its whole line with the newline when nothing but spaces surrounds it there.

    Args:
        text: The text.
        start: Where the span begins.
        end: Where the span ends (exclusive).
    """
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end) + 1 or len(text)
    if text[line_start:start].strip() or text[end:line_end].strip():
        return start, end
    return line_start, line_end


def _remove_hidden_links(text: str) -> str:
    """Drop file, image and category links whole, nested links and brackets in a caption included.

    A link alone on its line goes with the line; an unclosed one is kept as it is.

    Args:
        text: Wikitext without templates.
    """
    out: list[str] = []
    i = 0
    while match := _REMOVED_LINK.search(text, i):
        end = _link_end(text, match.start())
        if end is None:
            out.append(text[i : match.end()])
            i = match.end()
            continue
        start, end = _whole_line(text, match.start(), end)
        out.append(text[i:start])
        i = end
    out.append(text[i:])
    return "".join(out)


def _tidy_punctuation(line: str) -> str:
    """Mend what removed markup leaves around punctuation: ``Greek , i.e.``, ``(; , X; Y)``, ``()``.

    Spaces before a comma, semicolon or period that a space or the line's end follows go; a
    run of commas and semicolons becomes one (a semicolon if there is one); a parenthesis
    loses the spaces, commas and semicolons just inside it, and goes with the space before it
    when nothing is left.

    Args:
        line: One line of text, its spaces already collapsed.
    """
    line = _SPACE_BEFORE_PUNCT.sub("", line)
    line = _PUNCT_RUN.sub(lambda m: ";" if ";" in m.group() else ",", line)
    return _PARENS.sub(lambda m: f"{m.group(1)}({m.group(2)})" if m.group(2) else "", line)


def _link_text(match: re.Match) -> str:
    inner = match.group(1)
    target, _, label = inner.partition("|")
    return (label if label.strip() else target).strip().lstrip(":")


def wikitext_to_text(markup: str) -> str:
    """Plain text of one article's MediaWiki markup (rules in this module's docstring).

    Args:
        markup: The wikitext of a page, as in a dump's ``<text>`` element.
    """
    text = markup.replace("\r\n", "\n")
    text = _COMMENT.sub("", text)
    text = _DROPPED_PAIRED.sub("", text)
    text = _DROPPED_EMPTY.sub("", text)
    text = _remove_templates(text)
    text = _remove_tables(text)
    text = _drop_appendices(text)
    text = _remove_hidden_links(text)
    while True:  # innermost links first: a label may hold links
        text, count = _INNER_LINK.subn(_link_text, text)
        if not count:
            break
    text = _EXTERNAL_LINK.sub(lambda m: m.group(1) or "", text)
    text = _BR.sub(" ", text)
    text = _TAG.sub("", text)
    text = _MAGIC_WORD.sub("", text)
    text = _HEADING.sub(lambda m: m.group(2), text)
    text = _QUOTES.sub("", text)
    text = _LIST_MARKER.sub("", text)
    text = _RULE.sub("", text)
    text = html.unescape(text)
    lines = [_tidy_punctuation(_SPACES.sub(" ", line).strip()).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
