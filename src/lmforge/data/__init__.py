"""Corpora (LightningDataModules), tokenizers and packing; never imports tasks."""

from lmforge.data.corpora import BookCorpus, PubMedCorpus, WikipediaCorpus
from lmforge.data.pairs import SentencePairs
from lmforge.data.text import BundledCorpus, CorpusDataModule, TextCorpus
from lmforge.data.tokenizer import Tokenizer, TokenizerSpec, train_tokenizer

__all__ = [
    "BookCorpus", "BundledCorpus", "CorpusDataModule", "PubMedCorpus", "SentencePairs", "TextCorpus", "Tokenizer",
    "TokenizerSpec", "WikipediaCorpus", "train_tokenizer",
]
