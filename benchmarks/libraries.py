"""Libraries against lmforge's own code, measured before choosing (issue 24).

1. ``ClassF1`` (torchmetrics' ``MulticlassStatScores`` underneath) against scikit-learn's
   ``f1_score`` with ``labels=`` and against the confusion matrix it counted before, on random
   labels with one class left out: the largest difference, and the time per update + compute.
2. Wikipedia markup: :func:`lmforge.data.wikitext.wikitext_to_text` against ``mwparserfromhell``
   (the parser of Hugging Face's Wikipedia builder), once with the builder's rules (file links,
   refs and tables removed, then ``strip_code``) and once with lmforge's rules around it
   (appendices, categories, punctuation). On the pages of ``tests/data/test_readers.py`` and one
   page written here in the real article layout (:data:`PAGE`): markup left over (each pattern of
   :data:`RESIDUE` counted beyond what the expected text holds), words lost, words added (an
   appendix or a caption let through), and microseconds per page.
3. Sentence splitting on the OHSUMED abstracts (``biomed/ohsumed_train.jsonl``: each title and
   each abstract one paragraph, its line breaks joined): lmforge's splitter against NLTK's Punkt
   (no model ships offline, so ``PunktTrainer`` learns one, unsupervised, from these abstracts, as
   Punkt is meant to be used), pysbd and sentencex. Each ``.``/``!``/``?`` (and closing quotes or
   brackets) followed by a space, or by a bracket and a capital, is a candidate, labelled by
   rules that use no splitter: a lowercase letter next, a lone ellipsis dot, a list number after
   a sentence end (``effects. 4. Muscarinic``), or a word that never
   ends a sentence (``e.g.``, ``vs.``, ``Fig.``, ``Dr.``, ``No.``, ``approx.``, ``ca.``, ... as
   written) makes it no boundary; a word that may (``et al.``, ``i.v.``, ``U.S.``, ``etc.``,
   ``spp.``, dotted ``a.b.``, a capital initial) makes it ambiguous; anything else is a boundary.
   A false break is a split at a no-boundary or at no candidate; a missed break is no split at
   a boundary; ambiguous ones are counted apart. ``--sample N`` prints N decisions where a
   splitter and the label disagree or the label is ambiguous, for a check by hand. Checked by
   hand (``--sample 50 --sample-seed 1``, December 2026): the labels were right in 38 of the 39
   that are not ambiguous; lmforge decided 43 of the 50 right, pysbd 40, sentencex 28, Punkt 26.

    python benchmarks/libraries.py                # about a minute (pysbd alone takes ~45 s)
    python benchmarks/libraries.py --sample 50    # and 50 decisions to check by hand
    python benchmarks/libraries.py --smoke        # built-in stand-ins, seconds

``--smoke`` reads stand-in abstracts (``standins.py``'s, plus a few written here with the
abbreviations above) instead of ``../shared/data``, uses only :data:`PAGE` for the markup, and
asserts that each side is what it names; its figures are not meaningful.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import random
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported
import standins  # noqa: E402  (the stand-in data of --smoke)

# -- 1. ClassF1 ---------------------------------------------------------------------------------


def confusion_f1(pred: torch.Tensor, gold: torch.Tensor, n: int, ignore: int | None) -> tuple[float, float]:
    """Micro/macro F1 as ClassF1 counted them before: its own confusion matrix."""
    c = torch.bincount(gold * n + pred, minlength=n * n).view(n, n).double()
    tp = c.diag()
    fp, fn = c.sum(0) - tp, c.sum(1) - tp
    keep = torch.ones(n, dtype=torch.bool)
    if ignore is not None:
        keep[ignore] = False
    micro = 2 * tp[keep].sum() / (2 * tp[keep].sum() + fp[keep].sum() + fn[keep].sum()).clamp(min=1)
    per_class = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
    seen = keep & ((tp + fp + fn) > 0)
    return float(micro), float(per_class[seen].mean()) if seen.any() else 0.0


def class_f1(trials: int, batches: int, smoke: bool) -> dict:
    """Agreement of ClassF1 with scikit-learn and the old counting; time of each per batch."""
    from sklearn.metrics import f1_score
    from torchmetrics.classification import MulticlassStatScores

    from lmforge.evaluation.finetune import ClassF1

    assert issubclass(ClassF1, MulticlassStatScores) and f1_score.__module__.startswith("sklearn.")
    g = torch.Generator().manual_seed(0)
    diff_sklearn = diff_confusion = 0.0
    for t in range(trials):
        n = 2 + t % 8
        ignore = None if t % 3 == 0 else t % n
        probs = torch.rand(n, generator=g) ** 3  # skewed: some classes never seen
        gold = torch.multinomial(probs, 200, replacement=True, generator=g)
        pred = torch.where(torch.rand(200, generator=g) < 0.6, gold,
                           torch.multinomial(probs, 200, replacement=True, generator=g))
        metric = ClassF1(n, ignore)
        for part in range(0, 200, 50):
            metric.update(pred[part:part + 50], gold[part:part + 50])
        out = metric.compute()
        keep = [k for k in range(n) if k != ignore]
        seen = [k for k in keep if k in set(gold.tolist()) | set(pred.tolist())]
        ref = (f1_score(gold, pred, labels=keep, average="micro", zero_division=0),
               f1_score(gold, pred, labels=seen, average="macro", zero_division=0) if seen else 0.0)
        mine = (out["f1_micro"].item(), out["f1_macro"].item())
        diff_sklearn = max(diff_sklearn, *(abs(a - b) for a, b in zip(mine, ref)))
        diff_confusion = max(diff_confusion, *(abs(a - b) for a, b in zip(mine, confusion_f1(pred, gold, n, ignore))))
    data = [(torch.randint(7, (64,), generator=g), torch.randint(7, (64,), generator=g)) for _ in range(batches)]
    times = {}
    for name, run in (("before", lambda: _time_confusion(data)), ("torchmetrics", lambda: _time_metric(ClassF1, data))):
        run()  # warm-up
        start = time.perf_counter()
        run()
        times[name] = (time.perf_counter() - start) / batches * 1e6
    result = {"trials": trials, "max_abs_diff_sklearn": diff_sklearn, "max_abs_diff_before": diff_confusion,
              "us_per_batch": times, "speed_ratio_before_over_torchmetrics": times["before"] / times["torchmetrics"]}
    print(f"\n1. ClassF1 on {trials} random label sets (2-9 classes, one left out in 2 of 3): largest difference "
          f"{diff_sklearn:.1e} from sklearn f1_score(labels=), {diff_confusion:.1e} from the confusion matrix before")
    print(f"   {batches} batches of 64, 7 classes: {times['before']:.0f} us/batch before, "
          f"{times['torchmetrics']:.0f} us/batch on MulticlassStatScores (before/now = "
          f"{result['speed_ratio_before_over_torchmetrics']:.2f})")
    if smoke:
        assert diff_sklearn < 1e-6 and diff_confusion < 1e-6
    return result


def _time_confusion(data: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    confusion = torch.zeros(7, 7, dtype=torch.long)
    for pred, gold in data:
        confusion += torch.bincount(gold * 7 + pred, minlength=49).view(7, 7)
    confusion_f1(data[0][0], data[0][1], 7, 0)  # the compute, once


def _time_metric(cls: type, data: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    metric = cls(7, 0)
    for pred, gold in data:
        metric.update(pred, gold)
    metric.compute()


# -- 2. Wikipedia markup ------------------------------------------------------------------------

# a page in the layout of a real article, written for this benchmark (no real article's text)
PAGE = """{{Short description|River in the Northern Highlands}}
{{Use dmy dates|date=March 2024}}
{{Infobox river
| name = Lorne
| length = {{convert|58|km|mi|abbr=on}}
| mouth = [[Loch Lorne]]
}}
'''River Lorne''' ({{lang-gd|Abhainn Lùirn}}; {{IPA-gd|ˈavɪɲ ˈl̪ˠuːrʲɲ|}}) is a river in the [[Scottish Highlands|Highlands]] of [[Scotland]].<ref name="os">{{cite web |url=https://example.org/os |title=Survey}}</ref> It flows east for about 58&nbsp;km<ref group="note">Along the main channel.</ref> and is known for its [[salmon]].{{sfn|Grant|1998|p=12}}
[[File:Lorne falls.jpg|thumb|upright=1.2|The falls near [[Inverlorne]] in winter ({{circa|1900}})]]
<!-- please do not add unsourced claims
     to this paragraph -->
{{main|Geography of the Lorne}}
== Course ==
The river rises on the slopes of [[Ben Vorlich (Loch Earn)|Ben Vorlich]] and flows through ''Glen Lorne'' before it reaches [[Loch Lorne]].<ref>{{harvnb|Grant|1998|pp=14–15}}</ref>
Its main tributaries are:
* the [[Allt Beag]] (''small stream'');
* the '''Water of Aird''', which joins at [[Aird Bridge]].
<gallery>
File:Lorne source.jpg|The source
</gallery>

=== Flow ===
{| class="wikitable sortable"
|+ Mean flow
! Station !! Flow (m<sup>3</sup>/s)
|-
| Aird || {{val|12.4}}
|}
The mean flow at Aird is about 12 cubic metres per second,<ref name="sepa" /> highest in [[winter]] and lowest in late summer. The flow is given by <math>Q = vA</math> where ''v'' is the mean velocity.

== History ==
{{See also|Clan Lorne}}
In 1745 the bridge at Aird was held by [[Jacobite rising of 1745|Jacobite]] troops (see [http://example.org/history the county history]).<ref>{{cite book |last=Grant |title=Rivers of the North |year=1998}}</ref> A traveller described the falls as "a scene of wild grandeur".<ref>Traveller, A. (1803). ''Recollections''.</ref>
<blockquote>The water fell in a white sheet.</blockquote>

== See also ==
* [[List of rivers of Scotland]]
* {{Portal|Scotland}}

== References ==
=== Notes ===
{{notelist}}
=== Citations ===
{{reflist|30em}}

== External links ==
* {{Commons category|River Lorne}}
* [https://example.org/lorne Lorne fishery board]

{{Rivers of Scotland}}
{{Authority control}}
{{DEFAULTSORT:Lorne, River}}
[[Category:Rivers of Highland (council area)|Lorne]]
[[Category:Salmon rivers]]
"""

# the prose a reader of the rendered page reads (templates that render prose, {{convert}} and
# {{lang-gd}}, are left out: every cleaner here drops all templates)
PAGE_TEXT = """River Lorne is a river in the Highlands of Scotland. It flows east for about 58 km and is known for its salmon.

Course
The river rises on the slopes of Ben Vorlich and flows through Glen Lorne before it reaches Loch Lorne.
Its main tributaries are:
the Allt Beag (small stream);
the Water of Aird, which joins at Aird Bridge.

Flow
The mean flow at Aird is about 12 cubic metres per second, highest in winter and lowest in late summer. The flow is given by where v is the mean velocity.

History
In 1745 the bridge at Aird was held by Jacobite troops (see the county history). A traveller described the falls as "a scene of wild grandeur".
The water fell in a white sheet."""

RESIDUE = {  # leftover markup, each counted beyond what the expected text holds
    "{{": r"\{\{", "}}": r"\}\}", "[[": r"\[\[", "]]": r"\]\]", "''": r"''", "<ref": r"<ref",
    "<tag>": r"</?[a-zA-Z][^<>]*>", "|": r"\|", "File:/Image:": r"(?i)\b(?:file|image):", "Category:": r"(?i)\bcategory:",
    "== heading": r"(?m)^=+.*=+[ \t]*$", "( )/(; ,": r"\([ ,;]*\)|\([ ,;]+",
    "space before ,;. / ;,": r" [,;.](?:\s|$)|[,;] ?[,;]", "thumb": r"(?i)\bthumb\b",
    "&entity;": r"&[a-z]+;|&#\d+;", "__MAGIC__": r"__[A-Z]+__", "no-break space": "\u00a0",
}
_MEDIA = re.compile(r"\s*(?:file|image|media)\s*:", re.IGNORECASE)
_HIDDEN = re.compile(r"\s*(?:file|image|category)\s*:", re.IGNORECASE)
_MAGIC = re.compile(r"__[A-Z]+__")
_DROPPED_TAGS = {"ref", "gallery", "math", "timeline", "imagemap", "score", "table"}


def mwparser_builder_rules(markup: str) -> str:
    """mwparserfromhell as Hugging Face's Wikipedia builder applies it (rules restated here): per
    section, file links and ``ref``/``table`` tags removed, then ``strip_code``; categories kept as
    their names, magic words dropped."""
    import mwparserfromhell

    sections = []
    for section in mwparserfromhell.parse(markup).get_sections(flat=True, include_lead=True, include_headings=True):
        for node in [*section.ifilter_wikilinks(recursive=True), *section.ifilter_tags(recursive=True)]:
            title = str(getattr(node, "title", ""))
            dropped = _MEDIA.match(title) or str(getattr(node, "tag", "")).lower() in {"ref", "table"}
            if dropped and section.contains(node):  # (not when a removed node held it)
                section.remove(node)
        sections.append(_MAGIC.sub("", section.strip_code().strip()))
    return re.sub(r"(?im)^\s*category\s*:", "", "\n\n".join(sections))


def mwparser_lmforge_rules(markup: str) -> str:
    """mwparserfromhell with lmforge's rules around it: templates, comments, file/image/category
    links and non-prose tags removed by the parser, then lmforge's tables, appendices, headings,
    list markers and punctuation mending."""
    import mwparserfromhell

    from lmforge.data import wikitext as w

    code = mwparserfromhell.parse(markup.replace("\r\n", "\n"))
    for node in code.filter(recursive=True):
        kind = type(node).__name__
        if (kind in ("Template", "Comment") or (kind == "Wikilink" and _HIDDEN.match(str(node.title)))
                or (kind == "Tag" and str(node.tag).lower() in _DROPPED_TAGS)) and code.contains(node):
            code.remove(node)
    text = w._drop_appendices(w._remove_tables(str(code)))
    text = mwparserfromhell.parse(text).strip_code(normalize=True, collapse=False)
    for pattern, repl in ((w._MAGIC_WORD, ""), (w._HEADING, r"\2"), (w._LIST_MARKER, ""), (w._RULE, "")):
        text = pattern.sub(repl, text)
    lines = [w._tidy_punctuation(w._SPACES.sub(" ", line).strip()).strip() for line in text.split("\n")]
    return w._BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def test_pages() -> list[tuple[str, str]]:
    """(markup, expected text) of every Wikipedia case of tests/data/test_readers.py."""
    spec = importlib.util.spec_from_file_location("lmforge_test_readers", ROOT / "tests" / "data" / "test_readers.py")
    t = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(t)
    pages = [(t.ARTICLE, t.ARTICLE_TEXT), (t.ARISTOTLE, t.ARISTOTLE_TEXT), (t.ZETA, t.ZETA_TEXT)]
    for name in dir(t):
        for mark in getattr(getattr(t, name), "pytestmark", []) if name.startswith("test_wiki") else []:
            if mark.name == "parametrize":
                pages += [(v, v) if mark.args[0] == "text" else tuple(v) for v in mark.args[1]]
    return pages


def _words(text: str) -> collections.Counter:
    return collections.Counter(re.findall(r"\w+", text))


def wiki(smoke: bool) -> dict:
    """Residue, lost and added words, and speed of each markup cleaner."""
    import mwparserfromhell

    from lmforge.data.wikitext import wikitext_to_text

    cleaners: dict[str, Callable[[str], str]] = {
        "lmforge": wikitext_to_text, "mwparserfromhell (HF builder's rules)": mwparser_builder_rules,
        "mwparserfromhell + lmforge rules": mwparser_lmforge_rules}
    assert wikitext_to_text.__module__ == "lmforge.data.wikitext"
    assert isinstance(mwparserfromhell.parse(PAGE), mwparserfromhell.wikicode.Wikicode)
    sets = {"page": [(PAGE, PAGE_TEXT)]} if smoke else {"tests": test_pages(), "page": [(PAGE, PAGE_TEXT)]}
    result: dict = {}
    print("\n2. Wikipedia markup: leftover markup / words lost / words added / exact / us per page")
    for set_name, pages in sets.items():
        print(f"   on {len(pages)} {'page written here' if set_name == 'page' else 'pages of the reader tests'}:")
        for name, clean in cleaners.items():
            residue: collections.Counter = collections.Counter()
            lost = added = exact = 0
            for markup, expected in pages:
                out = clean(markup)
                residue.update({k: max(0, len(re.findall(p, out)) - len(re.findall(p, expected)))
                                for k, p in RESIDUE.items()})
                lost += sum((_words(expected) - _words(out)).values())
                added += sum((_words(out) - _words(expected)).values())
                exact += out == expected
            start, n = time.perf_counter(), 0
            while time.perf_counter() - start < (0.05 if smoke else 0.5):
                n += len([clean(markup) for markup, _ in pages])
            us = (time.perf_counter() - start) / n * 1e6
            result.setdefault(set_name, {})[name] = {"residue": sum(residue.values()), "by_pattern": dict(+residue),
                                                      "words_lost": lost, "words_added": added, "exact": exact,
                                                      "pages": len(pages), "us_per_page": us}
            print(f"   {name:38s} {sum(residue.values()):3d} {dict(+residue)!s:40s} {lost:3d} {added:3d} "
                  f"{exact:2d}/{len(pages)} {us:7.0f}")
    if smoke:  # the builder's rules keep what lmforge drops (categories, appendices): a different side
        assert result["page"]["mwparserfromhell (HF builder's rules)"]["words_added"] > 0
    return result


# -- 3. Sentence splitting ----------------------------------------------------------------------

_CANDIDATE = re.compile(r"""[.!?]['")\]]*(?=\s|[(\["'][A-Z])""")
NEVER_FINAL = frozenset(  # as written; also with the first letter capitalised
    "e.g. i.e. vs. cf. viz. fig. figs. eq. approx. ca. resp. Dr. Mr. Mrs. Ms. Prof. St. No. Nos.".split())
MAYBE_FINAL = frozenset(
    "al. etc. i.v. i.p. i.m. s.c. p.o. i.c.v. U.S. Inc. Ltd. Co. Corp. Jr. Sr. spp. sp. a.m. p.m.".split())
SMOKE_ABSTRACTS = [  # with the abbreviations the labels know, for --smoke
    "Smith et al. reported 5 cases vs. 6 controls (Fig. 2). Dose was 5 mg/kg i.v. The E. coli strain grew.",
    "Levels fell by 24 h. Dr. Lee saw approx. 40 patients in the U.S. Army. Waves lasted 200 ms. It is rare.",
]


def label(paragraph: str, end: int) -> str:
    """The label of the candidate ending at ``end``, by the rules of the module docstring."""
    prev = paragraph[:end].rsplit(None, 1)[-1].lstrip("([\"'").rstrip(")]\"'")
    as_written = {prev, prev[:1].lower() + prev[1:]}  # "Fig." is "fig."; "MS." is not "Ms."
    if paragraph[end:].lstrip()[:1].islower():
        return "no: lowercase next"
    if not prev.strip("."):
        return "no: ellipsis"
    words = paragraph[:end].split()
    if re.fullmatch(r"\d{1,2}\.", words[-1]) and (len(words) == 1 or words[-2][-1] in ".!?"):
        return "no: list number"
    if as_written & NEVER_FINAL:
        return "no: abbreviation"
    if as_written & MAYBE_FINAL or re.fullmatch(r"(?:[A-Za-z]\.){2,}|[A-Z]\.", prev):
        return "ambiguous"
    return "boundary"


def abstracts(path: Path, limit: int | None) -> list[str]:
    """Each title and each abstract of the OHSUMED file, one paragraph each (line breaks joined)."""
    paragraphs = []
    with open(path, encoding="utf-8") as f:
        for line in list(f)[:limit]:
            title, _, body = json.loads(line)["text"].strip().partition("\n")
            paragraphs += [" ".join(part.split()) for part in (title, body) if part.strip()]
    return paragraphs


def _ends(paragraph: str, sentences: list[str]) -> set[int]:
    """Where each sentence but the last ends in the paragraph."""
    ends, pos = set(), 0
    for sentence in sentences[:-1]:
        sentence = sentence.strip()
        if sentence:
            pos = paragraph.index(sentence, pos) + len(sentence)
            ends.add(pos)
    return ends


def splitters(paragraphs: list[str]) -> dict[str, Callable[[str], set[int]]]:
    """Each splitter as paragraph -> sentence end offsets; Punkt learns its model from ``paragraphs``."""
    import pysbd
    import sentencex
    from nltk.tokenize.punkt import PunktSentenceTokenizer, PunktTrainer

    from lmforge.data.sentences import split_sentences

    trainer = PunktTrainer()
    trainer.train("\n\n".join(paragraphs), finalize=True)
    punkt = PunktSentenceTokenizer(trainer.get_params())
    segmenter = pysbd.Segmenter(language="en", clean=False)
    assert split_sentences.__module__ == "lmforge.data.sentences" and isinstance(segmenter, pysbd.Segmenter)
    assert type(punkt).__module__ == "nltk.tokenize.punkt" and sentencex.segment.__module__.startswith("sentencex")
    return {
        "lmforge": lambda p: _ends(p, split_sentences(p)),
        "punkt (trained here)": lambda p: {end for _, end in punkt.span_tokenize(p)} - {len(p)},
        "pysbd": lambda p: _ends(p, segmenter.segment(p)),
        "sentencex": lambda p: _ends(p, list(sentencex.segment("en", p))),
    }


def sentences(path: Path, limit: int | None, sample: tuple[int, int], smoke: bool) -> dict:
    """False and missed breaks of each splitter against the candidate labels."""
    paragraphs = abstracts(path, limit)
    labels = [{m.end(): label(p, m.end()) for m in _CANDIDATE.finditer(p) if p[m.end():].strip()} for p in paragraphs]
    counts = collections.Counter(v.split(":")[0] for lab in labels for v in lab.values())
    print(f"\n3. Sentence splitting on {len(paragraphs)} titles and abstracts of {path.name}: {sum(counts.values())} "
          f"candidates, {counts['boundary']} boundaries, {counts['no']} not, {counts['ambiguous']} ambiguous")
    start = time.perf_counter()
    split = splitters(paragraphs)
    train_s = time.perf_counter() - start
    result: dict = {"paragraphs": len(paragraphs), "candidates": dict(counts), "punkt_train_s": train_s,
                    "splitters": {}}
    decisions: dict[str, list[set[int]]] = {}
    for name, run in split.items():
        start = time.perf_counter()
        decisions[name] = [run(p) for p in paragraphs]
        seconds = time.perf_counter() - start
        false, missed, ambiguous = collections.Counter(), 0, collections.Counter()
        for lab, ends in zip(labels, decisions[name]):
            false.update(lab.get(end, "no: at no candidate") for end in ends
                         if not lab.get(end, "no").startswith(("boundary", "ambiguous")))
            missed += sum(1 for end, v in lab.items() if v == "boundary" and end not in ends)
            ambiguous.update("split" if end in ends else "kept" for end, v in lab.items() if v == "ambiguous")
        result["splitters"][name] = {"false_breaks": sum(false.values()), "by_kind": dict(false), "missed_breaks": missed,
                                     "ambiguous": dict(ambiguous), "seconds": seconds}
        print(f"   {name:22s} false breaks {sum(false.values()):4d} {dict(false)!s:78s} missed {missed:4d}  "
              f"ambiguous split/kept {ambiguous['split']}/{ambiguous['kept']}  {seconds:.1f} s")
    if smoke:
        assert all(any(ends) for ends in decisions.values()), "a splitter that never splits"
    if sample[0]:
        _print_sample(paragraphs, labels, decisions, *sample)
    return result


def _print_sample(paragraphs: list[str], labels: list[dict], decisions: dict[str, list[set[int]]], n: int,
                  seed: int) -> None:
    """``n`` decisions (drawn with ``seed``) where a splitter and the label disagree or the label is ambiguous."""
    cases = []
    for i, lab in enumerate(labels):
        for end, v in lab.items():
            says = {name: end in d[i] for name, d in decisions.items()}
            if v == "ambiguous" or any(s != v.startswith("b") for s in says.values()):
                cases.append((i, end, v, says))
    print(f"\n   {n} of {len(cases)} decisions where a splitter and the label disagree or it is ambiguous "
          "(S = splits, . = does not; in the order " + ", ".join(decisions) + "):")
    for i, end, v, says in random.Random(seed).sample(cases, min(n, len(cases))):
        p = paragraphs[i]
        marks = "".join("S" if s else "." for s in says.values())
        print(f"   {marks} {v:18s} ...{p[max(0, end - 45):end]!r} | {p[end:end + 30]!r}")


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help=f"the data folder (default {DATA}; smoke: stand-ins)")
    p.add_argument("--abstracts", type=int, default=None, help="read only the first N abstracts")
    p.add_argument("--sample", type=int, default=0, help="print N splitting decisions to check by hand")
    p.add_argument("--sample-seed", type=int, default=0, help="which N decisions --sample draws")
    p.add_argument("--parts", default="f1,wiki,sentences", help="which of the three to run")
    p.add_argument("--smoke", action="store_true", help="built-in stand-ins: checks that the benchmark runs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    torch.set_num_threads(1)
    if a.smoke:
        print("SMOKE RUN: stand-in abstracts and one built-in page -- checks that each side runs and is what it "
              "names; the figures are not meaningful")
        data = Path(a.data) if a.data else standins.temporary_folder("lmforge-libraries-")
        path = data / "biomed" / "ohsumed_train.jsonl"
        if not a.data:
            standins.write_ohsumed(path, abstracts=10)
            with open(path, "a", encoding="utf-8") as f:
                f.writelines(json.dumps({"id": f"s{i}", "label": "C01", "text": f"Title {i}.\n {t}"}) + "\n"
                             for i, t in enumerate(SMOKE_ABSTRACTS))
    else:
        path = Path(a.data or DATA) / "biomed" / "ohsumed_train.jsonl"
    parts = {
        "class_f1": lambda: class_f1(trials=20 if a.smoke else 300, batches=50 if a.smoke else 2000, smoke=a.smoke),
        "wiki": lambda: wiki(a.smoke),
        "sentences": lambda: sentences(path, a.abstracts, (a.sample, a.sample_seed), a.smoke),
    }
    chosen = {"f1": "class_f1", "wiki": "wiki", "sentences": "sentences"}
    summary = {"smoke": a.smoke, **{chosen[k]: parts[chosen[k]]() for k in a.parts.split(",")}}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
