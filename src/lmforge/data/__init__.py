"""Corpora (LightningDataModules), tokenizers, packing and text augmentation; never imports tasks or evaluation."""

from lmforge.data.augment import (
    Augmentation, BackTranslation, HFTranslator, SentencePermutation, SpanMasking, WordDeletion, WordSwap,
    apply_augmentations,
)
from lmforge.data.corpora import BookCorpus, BundledCorpus, FineWebCorpus, PubMedCorpus, TextCorpus, WikipediaCorpus
from lmforge.data.corpus import CorpusDataModule
from lmforge.data.mixture import CorpusMixture
from lmforge.data.pairs import SentencePairs
from lmforge.data.source import DataSource
from lmforge.data.tokenizer import TokenizerSpec, train_tokenizer
from lmforge.tokenizer import Tokenizer

__all__ = [
    "Augmentation", "BackTranslation", "BookCorpus", "BundledCorpus", "CorpusDataModule", "CorpusMixture", "DataSource", "FineWebCorpus",
    "HFTranslator", "PubMedCorpus", "SentencePairs", "SentencePermutation", "SpanMasking", "TextCorpus", "Tokenizer",
    "TokenizerSpec", "WikipediaCorpus", "WordDeletion", "WordSwap", "apply_augmentations", "train_tokenizer",
]
