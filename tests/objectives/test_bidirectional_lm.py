"""The biLM objective: inputs with their next tokens (forward LM) and previous tokens (backward LM)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lmforge.data import DataSource, TextCorpus, TokenizerSpec
from lmforge.objectives import BidirectionalLM


def test_a_block_gives_inputs_and_both_neighbours() -> None:
    objective = BidirectionalLM()
    assert not objective.sentences
    assert objective.block_length(5) == 7
    blocks = [np.arange(10, 17, dtype=np.uint16), np.arange(20, 27, dtype=np.uint16)]
    batch = objective(blocks)
    assert batch["input_ids"].dtype == torch.int64
    assert batch["input_ids"].tolist() == [[11, 12, 13, 14, 15], [21, 22, 23, 24, 25]]
    assert batch["forward_targets"].tolist() == [[12, 13, 14, 15, 16], [22, 23, 24, 25, 26]]
    assert batch["backward_targets"].tolist() == [[10, 11, 12, 13, 14], [20, 21, 22, 23, 24]]


def test_corpus_batches_are_consecutive_corpus_tokens(tiny_corpus: Path) -> None:
    dm = TextCorpus(source=DataSource(paths=str(tiny_corpus)),
                    tokenizer=TokenizerSpec(kind="bpe", specials="elmo", vocab_size=200),
                    seq_len=12, batch_size=4)
    dm.objective = BidirectionalLM()
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["input_ids"].shape == batch["forward_targets"].shape == batch["backward_targets"].shape == (4, 12)
    # position t's forward target is input t + 1; input t is position t + 1's backward target
    assert torch.equal(batch["forward_targets"][:, :-1], batch["input_ids"][:, 1:])
    assert torch.equal(batch["backward_targets"][:, 1:], batch["input_ids"][:, :-1])
    # the first validation block is the start of the validation token stream, all 14 tokens used
    first = dm.val_set[0]
    assert len(first) == 14
    assert batch["backward_targets"][0, 0] == int(first[0]) and batch["forward_targets"][0, -1] == int(first[-1])
