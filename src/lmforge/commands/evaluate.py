"""``lmforge evaluate``: evaluate a suite of downstream tasks from several starting points
(fine-tuned, N seeds each, or scored zero/few-shot) and tabulate what pretraining bought
(:func:`lmforge.evaluation.evaluate`)."""

from __future__ import annotations

from jsonargparse import ArgumentParser

from lmforge.commands.lightning import fit_metrics
from lmforge.evaluation.suite import evaluate as evaluate_suite


def evaluate(argv: list[str]) -> None:
    """``lmforge evaluate --suite configs/eval/x.yaml --starts '[a.ckpt, b.ckpt]' ...``; every fine-tune
    run goes through ``lmforge fit``, every scoring task through the scorer of
    :mod:`lmforge.evaluation.likelihood`."""
    parser = ArgumentParser(prog="lmforge evaluate", description=evaluate_suite.__doc__.splitlines()[0])
    parser.add_function_arguments(evaluate_suite, as_positional=False, skip={"fit", "scorer"})
    evaluate_suite(**parser.parse_args(argv).as_dict(), fit=fit_metrics)
