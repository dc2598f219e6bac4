"""Corpora (LightningDataModules), tokenizers and packing; never imports tasks."""

from lmforge.data.pairs import SentencePairs
from lmforge.data.text import BundledCorpus, CorpusDataModule, TextCorpus
from lmforge.data.tokenizer import Tokenizer, TokenizerSpec, train_tokenizer

__all__ = ["BundledCorpus", "CorpusDataModule", "SentencePairs", "TextCorpus", "Tokenizer", "TokenizerSpec", "train_tokenizer"]
