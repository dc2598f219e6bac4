"""The sentence splitter's documented rule, case by case."""

from __future__ import annotations

import pytest

from lmforge.data.sentences import split_sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two! Three? four.", ["One.", "Two!", "Three? four."]),  # lowercase next: no split
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        ("See e.g. Smith. Dr. Jones agreed.", ["See e.g. Smith.", "Dr. Jones agreed."]),
        ("Written by J. R. R. Tolkien. It sold well.", ["Written by J. R. R. Tolkien.", "It sold well."]),
        ("Version 3.11 is out. 2 bugs remain.", ["Version 3.11 is out.", "2 bugs remain."]),
        ("First line\nsame sentence.\n\nNew paragraph", ["First line same sentence.", "New paragraph"]),
        ("(Quoted.) (Next.)", ["(Quoted.)", "(Next.)"]),
        # biomedical abstracts: citations, figures, comparisons, units and acronyms
        ("As Smith et al. Reported, see Fig. 2 and approx. 5 cases vs. 6 in the U.S. Army.",
         ["As Smith et al. Reported, see Fig. 2 and approx. 5 cases vs. 6 in the U.S. Army."]),
        ("Levels fell by 24 h. Waves lasted 200 ms. It is common in MS. Ms. Lee agreed.",
         ["Levels fell by 24 h.", "Waves lasted 200 ms.", "It is common in MS.", "Ms. Lee agreed."]),
        ("Dose was 5 mg/kg i.v. The E. coli strain grew. Each No. 1 suture held.",
         ["Dose was 5 mg/kg i.v.", "The E. coli strain grew.", "Each No. 1 suture held."]),
        ("The 5' . . . TAGAA . . . 3' site. Next one.", ["The 5' . . . TAGAA . . . 3' site.", "Next one."]),
        ("Low in group A. Add vitamin D. Load was 50 W. Seen by J. Smith in 1957. In 1957 J. Leigh wrote.",
         ["Low in group A.", "Add vitamin D.", "Load was 50 W.", "Seen by J. Smith in 1957.", "In 1957 J. Leigh wrote."]),
        ("1. Dose matters. 2. Time matters. It rose to 4. Then fell.",
         ["1. Dose matters.", "2. Time matters.", "It rose to 4.", "Then fell."]),
        ("", []),
        ("   \n\n  ", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_nothing_is_lost() -> None:
    text = "Alpha beta. Gamma delta! Epsilon?\n\nZeta eta. Theta."
    assert " ".join(split_sentences(text)).split() == text.split()
