"""Weights in and out: lmforge checkpoints, Hugging Face model folders and hub ids.

:func:`load_weights` is the one entry point every ``init_from`` uses: it returns the
family, the model config, the state dict of our network and the tokenizer that came with
the weights, whatever the source.
"""

from lmforge.convert.weights import FAMILIES, LoadedWeights, load_weights

__all__ = ["FAMILIES", "LoadedWeights", "load_weights"]
