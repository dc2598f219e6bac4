"""Corpora (LightningDataModules), tokenizers and packing; never imports tasks."""

from lmforge.data.text import BundledCorpus, TextCorpus
from lmforge.data.tokenizer import Tokenizer, TokenizerSpec, train_tokenizer

__all__ = ["BundledCorpus", "TextCorpus", "Tokenizer", "TokenizerSpec", "train_tokenizer"]
