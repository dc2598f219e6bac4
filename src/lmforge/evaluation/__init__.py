"""Downstream evaluation: ``lmforge compare`` (fine-tuning from several starting points)."""

from lmforge.evaluation.compare import compare, write_results

__all__ = ["compare", "write_results"]
