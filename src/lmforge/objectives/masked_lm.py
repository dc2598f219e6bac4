"""Masked language modelling (BERT, RoBERTa): dynamic masking drawn per batch, and BERT's
next sentence prediction (NSP).

Of the non-special tokens, ``mask_prob`` are selected; a selected token becomes the mask
token with probability 0.8, a random token with 0.1, and stays itself with 0.1 (Devlin et
al. 2019). The loss is taken on the selected tokens only (``labels`` is -100 elsewhere).
With ``whole_word`` a word is selected with all of its pieces (a piece continues a word
when it is a WordPiece ``##`` piece, or a byte-level/Metaspace piece without the
word-start marker).

With ``nsp`` an example is a pair of segments ``[CLS] A [SEP] B [SEP]`` (segment ids 0 then
1) cut from a document's sentences and filled up to the sequence length: half the time B is
the text that follows A, half the time a segment of another document (Devlin et al. 2019,
appendix A). Pairs are drawn once from the seed; masks are drawn afresh for every batch.

With ``document_mask`` the documents packed in a block are kept apart: each ends at its
end-of-document token (the tokenizer's ``eos``: ``[SEP]`` for BERT, ``</s>`` for RoBERTa, which
the data appends to every document), which belongs to it; the block's own ``[CLS]`` joins its
first document and its closing ``[SEP]`` its last. The batch's ``position_ids`` restart at 0 at
each document, and the network attends within a document only (bidirectionally).
"""

from __future__ import annotations

import numpy as np
import torch

from lmforge.batching import IGNORE, BatchRNG, document_positions
from lmforge.tokenizer import Tokenizer

WORD_START_MARKERS = ("Ġ", "▁")  # byte-level BPE, Metaspace (SentencePiece-style)


class MaskedLM:
    """Dynamic masking of packed blocks, each wrapped as ``[CLS] block [SEP]``, or of NSP
    sentence pairs.

    Args:
        mask_prob: Fraction of (non-special) tokens selected for prediction.
        mask_token_prob: Of the selected, the fraction replaced by the mask token.
        random_token_prob: Of the selected, the fraction replaced by a random token.
        whole_word: Select whole words rather than single pieces.
        nsp: Make next-sentence-prediction pairs from sentences instead of packed blocks.
        seed: Seed of the masks, drawn per batch from (seed, the batch's key): see ``BatchRNG``.
        document_mask: Keep the documents of a packed block apart (``position_ids`` per document,
            attention within a document); packed blocks only, not ``nsp`` pairs.
    """

    user = "masked LM"  # who needs the special tokens, in the refusal of a tokenizer without them

    def __init__(
        self,
        mask_prob: float = 0.15,
        mask_token_prob: float = 0.8,
        random_token_prob: float = 0.1,
        whole_word: bool = False,
        nsp: bool = False,
        seed: int = 0,
        document_mask: bool = False,
    ):
        replacement = (mask_token_prob, random_token_prob)
        if not 0 < mask_prob < 1 or min(replacement) < 0 or sum(replacement) > 1:
            raise ValueError(
                f"mask_prob must be in (0, 1) and mask_token_prob + random_token_prob <= 1, got {mask_prob}, "
                f"{mask_token_prob}, {random_token_prob}."
            )
        self.mask_prob = mask_prob
        self.mask_token_prob = mask_token_prob
        self.random_token_prob = random_token_prob
        if nsp and document_mask:
            raise ValueError("document_mask keeps the documents of packed blocks apart; nsp builds sentence pairs.")
        self.whole_word = whole_word
        self.nsp = nsp
        self.document_mask = document_mask
        self.seed = seed
        self.rng = BatchRNG(seed)
        self.bound = False

    def bind(self, tokenizer: Tokenizer) -> None:
        """Learn the special tokens and word boundaries of the tokenizer the data uses."""
        ids = tokenizer.require(["mask", "cls", "sep", "pad"], self.user,
                                "use a BERT or RoBERTa tokenizer (train it with `specials: bert` or `specials: roberta`).")
        self.mask_id, self.cls_id, self.sep_id, self.pad_id = ids["mask"], ids["cls"], ids["sep"], ids["pad"]
        self.eos_id = tokenizer.eos_id if self.document_mask else None  # what the data ends every document with
        self.vocab_size = tokenizer.vocab_size
        vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
        special = [i for i, token in tokenizer.backend.get_added_tokens_decoder().items() if token.special]
        self.special = torch.zeros(self.vocab_size, dtype=torch.bool)
        self.special[special] = True
        self.continuation = torch.zeros(self.vocab_size, dtype=torch.bool)
        wordpiece = any(token.startswith("##") for token in vocab)
        for token, token_id in vocab.items():
            if wordpiece:
                self.continuation[token_id] = token.startswith("##")
            else:
                self.continuation[token_id] = not token.startswith(WORD_START_MARKERS) and token[:1].isalnum()
        self.continuation &= ~self.special
        self.bound = True

    @property
    def sentences(self) -> bool:
        """NSP needs each document as its sentences; plain MLM takes packed blocks."""
        return self.nsp

    def block_length(self, seq_len: int) -> int:
        return seq_len - 2  # room for [CLS] and [SEP]

    def build_examples(self, documents: list[list[list[int]]], seq_len: int, seed: int) -> list[tuple]:
        """NSP pairs ``(A, B, is_random)`` from documents given as lists of tokenized sentences.

        Sentences are gathered until they fill ``seq_len - 3`` tokens; the chunk is cut at a
        random sentence boundary into A and B, and half the time B is replaced by a segment
        of another document (the sentences it displaced start the next chunk).
        """
        rng = np.random.default_rng(seed)
        target = seq_len - 3  # [CLS] A [SEP] B [SEP]
        docs = [[s for s in doc if s] for doc in documents]
        docs = [doc for doc in docs if doc]
        examples: list[tuple] = []
        for d, doc in enumerate(docs):
            chunk: list[list[int]] = []
            length, i = 0, 0
            while i < len(doc):
                chunk.append(doc[i])
                length += len(doc[i])
                if i == len(doc) - 1 or length >= target:
                    if len(chunk) >= 2 or (len(chunk) == 1 and len(docs) > 1):
                        a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
                        a = [t for s in chunk[:a_end] for t in s]
                        if a_end == len(chunk) or rng.random() < 0.5:
                            b = self._random_segment(docs, d, target - len(a), rng)
                            is_random = 1
                            i -= len(chunk) - a_end  # the displaced sentences are used next
                        else:
                            b = [t for s in chunk[a_end:] for t in s]
                            is_random = 0
                        a, b = _truncate_pair(a, b, target)
                        examples.append((np.array(a, dtype=np.int64), np.array(b, dtype=np.int64), is_random))
                    chunk, length = [], 0
                i += 1
        return examples

    @staticmethod
    def _random_segment(docs: list[list[list[int]]], d: int, length: int, rng: np.random.Generator) -> list[int]:
        """Consecutive sentences of another document (the same one only if it is alone)."""
        other = d
        if len(docs) > 1:
            while other == d:
                other = int(rng.integers(len(docs)))
        doc = docs[other]
        start = int(rng.integers(len(doc)))
        tokens: list[int] = []
        for sentence in doc[start:]:
            tokens.extend(sentence)
            if len(tokens) >= length:
                break
        return tokens[: max(length, 1)]

    def select(self, ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Which positions of ``ids`` (B, T) to predict: about ``mask_prob`` of the non-special ones."""
        maskable = ~self.special[ids]
        if not self.whole_word:
            return (torch.rand(ids.shape, generator=generator) < self.mask_prob) & maskable
        # a new word starts at every piece that does not continue one; each word is selected
        # by the draw at its first piece
        starts = ~self.continuation[ids] | ~maskable
        starts[:, 0] = True
        positions = torch.arange(ids.size(1)).expand_as(ids)
        word_start = torch.where(starts, positions, 0).cummax(dim=1).values  # (B, T): where each word begins
        chosen = torch.rand(ids.shape, generator=generator) < self.mask_prob
        return chosen.gather(1, word_start) & maskable

    def __call__(self, examples: list) -> dict[str, torch.Tensor]:
        if not self.bound:
            raise RuntimeError("MaskedLM.bind(tokenizer) must be called before masking.")
        return self._collate_pairs(examples) if self.nsp else self._collate_blocks(examples)

    def _collate_blocks(self, blocks: list[np.ndarray]) -> dict[str, torch.Tensor]:
        body = torch.from_numpy(np.stack(blocks).astype(np.int64))  # (B, T - 2)
        B = body.size(0)
        ids = torch.cat(
            [torch.full((B, 1), self.cls_id), body, torch.full((B, 1), self.sep_id)], dim=1
        )  # (B, T)
        # packed blocks have no padding: no attention mask, so SDPA can take its fastest kernel
        batch = self.mask(ids)
        if self.document_mask:  # from the ids before masking: a random replacement may be an eos
            ends = ids == self.eos_id
            ends[:, -2] = False  # the block's closing [SEP] joins its last document
            batch["position_ids"] = document_positions(ends)
        return batch

    def _collate_pairs(self, pairs: list[tuple]) -> dict[str, torch.Tensor]:
        """``[CLS] A [SEP] B [SEP]`` padded to the longest pair, with segment ids and NSP labels."""
        lengths = torch.tensor([len(a) + len(b) + 3 for a, b, _ in pairs])
        ids = torch.full((len(pairs), int(lengths.max())), self.pad_id)
        segments = torch.zeros_like(ids)
        for row, (a, b, _) in enumerate(pairs):
            seq = [self.cls_id, *a.tolist(), self.sep_id, *b.tolist(), self.sep_id]
            ids[row, : len(seq)] = torch.tensor(seq)
            segments[row, len(a) + 2 : len(seq)] = 1
        attention_mask = (torch.arange(ids.size(1))[None, :] < lengths[:, None]).long()  # (B, T)
        batch = self.mask(ids, attention_mask)
        batch["token_type_ids"] = segments
        batch["next_sentence_label"] = torch.tensor([is_random for _, _, is_random in pairs])
        return batch

    def mask(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Mask a batch of token ids (B, T) whose padding, if any, is 0 in ``attention_mask``."""
        g = self.rng()
        selected = self.select(ids, g)
        if attention_mask is not None:
            selected &= attention_mask.bool()
        labels = torch.where(selected, ids, IGNORE)
        r = torch.rand(ids.shape, generator=g)
        to_mask = selected & (r < self.mask_token_prob)
        to_random = selected & (r >= self.mask_token_prob) & (r < self.mask_token_prob + self.random_token_prob)
        random_ids = torch.randint(self.vocab_size, ids.shape, generator=g)
        inputs = torch.where(to_mask, self.mask_id, torch.where(to_random, random_ids, ids))
        batch = {"input_ids": inputs, "labels": labels}
        if attention_mask is not None:
            batch["attention_mask"] = attention_mask
        return batch


def _truncate_pair(a: list[int], b: list[int], target: int) -> tuple[list[int], list[int]]:
    """Trim the longer segment until the pair fits ``target`` tokens: A from its start and B
    from its end, so a true next segment still follows A directly."""
    a_start, b_end = 0, len(b)
    while (len(a) - a_start) + b_end > target:
        if len(a) - a_start > b_end:
            a_start += 1
        else:
            b_end -= 1
    return a[a_start:], b[:b_end]
