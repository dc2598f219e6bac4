"""Objectives turn packed token blocks into training examples; pure, no models, no corpora.

Every objective is a callable collate function with the same small interface
(:class:`lmforge.batching.Objective`), which is how a DataModule serves any family without knowing it.
"""

from lmforge.objectives.bidirectional_lm import BidirectionalLM
from lmforge.objectives.causal_lm import CausalLM
from lmforge.objectives.masked_lm import MaskedLM
from lmforge.objectives.replaced_tokens import ReplacedTokens
from lmforge.objectives.span_corruption import SpanCorruption, TextInfilling

__all__ = ["BidirectionalLM", "CausalLM", "MaskedLM", "ReplacedTokens", "SpanCorruption", "TextInfilling"]
