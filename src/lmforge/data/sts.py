"""Sentence-similarity evaluation files in the STS Benchmark layout."""

from __future__ import annotations

from pathlib import Path

from lmforge.errors import UserError


def read_sts(path: str | Path) -> tuple[list[str], list[str], list[float]]:
    """(sentences 1, sentences 2, gold scores) of an STS-Benchmark-layout file.

    Each line is tab-separated: genre, file, year, id, score, sentence 1, sentence 2 (extra
    fields after the seventh are ignored, and there is no quoting), as in ``sts-dev.csv``.

    Args:
        path: The file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"STS file '{path}' does not exist: give a file in STS-Benchmark layout.")
    first, second, scores = [], [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            score = float(fields[4])
            first.append(fields[5])
            second.append(fields[6])
        except (IndexError, ValueError) as err:
            raise UserError(
                f"{path}, line {number}: expected 7 tab-separated fields with the score fifth (STS-Benchmark layout)."
            ) from err
        scores.append(score)
    if len(scores) < 2:
        raise UserError(f"STS file '{path}' has fewer than two scored pairs.")
    return first, second, scores
