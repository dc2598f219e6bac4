"""Contrastive sentence embeddings (SimCSE, Sentence-BERT): sentences or pairs as examples.

Unsupervised SimCSE (Gao et al. 2021) needs no pairs: the task encodes each batch twice and
dropout makes the two views differ; the other sentences of the batch are the negatives.
Supervised training takes (anchor, positive[, hard negative]) pairs. This objective only
turns documents into sentences, and sentences or pairs into padded batches.
"""

from __future__ import annotations

import numpy as np
import torch

from lmforge.tokenizer import Tokenizer


def pad_sentences(sentences: list[np.ndarray], cls_id: int, sep_id: int, pad_id: int) -> dict[str, torch.Tensor]:
    """``[CLS] s [SEP]`` per sentence, right-padded to the longest, with an attention mask."""
    lengths = torch.tensor([len(s) + 2 for s in sentences])
    ids = torch.full((len(sentences), int(lengths.max())), pad_id)
    for row, s in enumerate(sentences):
        ids[row, : len(s) + 2] = torch.tensor([cls_id, *np.asarray(s).tolist(), sep_id])
    attention_mask = (torch.arange(ids.size(1))[None, :] < lengths[:, None]).long()  # (B, T)
    return {"input_ids": ids, "attention_mask": attention_mask}


class SentenceViews:
    """Each sentence of the corpus is an example; batches are padded ``[CLS] s [SEP]``.

    Args:
        min_tokens: Leave out sentences shorter than this many tokens (headings, numbers).
    """

    sentences = True

    def __init__(self, min_tokens: int = 4):
        self.min_tokens = min_tokens
        self.bound = False

    def bind(self, tokenizer: Tokenizer) -> None:
        ids = tokenizer.require(["cls", "sep", "pad"], "a sentence encoder", "use a BERT or RoBERTa tokenizer.")
        self.cls_id, self.sep_id, self.pad_id = ids["cls"], ids["sep"], ids["pad"]
        self.bound = True

    def block_length(self, seq_len: int) -> int:
        return seq_len - 2

    def build_examples(self, documents: list[list[list[int]]], seq_len: int, seed: int) -> list[np.ndarray]:
        """Every sentence of at least ``min_tokens`` tokens, cut to fit ``seq_len`` with its markers."""
        return [
            np.asarray(sentence[: seq_len - 2], dtype=np.int64)
            for doc in documents
            for sentence in doc
            if len(sentence) >= self.min_tokens
        ]

    def __call__(self, examples: list) -> dict[str, torch.Tensor]:
        """A batch of sentences; for pairs ``(anchor, positive, negative | None)`` also
        ``positive_ids``/``positive_mask`` (and ``negative_*`` when every pair has one)."""
        if not self.bound:
            raise RuntimeError("SentenceViews.bind(tokenizer) must be called before collating.")
        if not isinstance(examples[0], tuple):
            return pad_sentences(examples, self.cls_id, self.sep_id, self.pad_id)
        batch = pad_sentences([a for a, _, _ in examples], self.cls_id, self.sep_id, self.pad_id)
        for name, column in (("positive", 1), ("negative", 2)):
            sentences = [example[column] for example in examples]
            if all(s is not None for s in sentences):
                padded = pad_sentences(sentences, self.cls_id, self.sep_id, self.pad_id)
                batch[f"{name}_ids"], batch[f"{name}_mask"] = padded["input_ids"], padded["attention_mask"]
        return batch
