"""GPT: a decoder-only Transformer trained on next-token prediction (Radford et al. 2019).

Pre-LayerNorm blocks, learned position embeddings, causal SDPA attention, and an output
projection tied to the token embedding, as in GPT-2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lmforge.models.layers import DecoderLM, KVCache, PreNormBlock, init_weights


@dataclass
class GPTConfig:
    """Shape of a GPT network.

    Args:
        vocab_size: Number of token ids (linked from the tokenizer by the CLI).
        max_seq_len: Number of position embeddings, the longest context (linked from the data).
        n_layer: Number of Transformer blocks.
        n_head: Number of attention heads.
        d_model: Width of the residual stream.
        d_ff: Hidden width of the MLP; ``None`` means ``4 * d_model``.
        dropout: Dropout on embeddings, attention and residual branches.
        bias: Whether linear and LayerNorm layers have bias terms (GPT-2: yes).
        norm_eps: LayerNorm epsilon.
    """

    vocab_size: int = 50257
    max_seq_len: int = 1024
    n_layer: int = 12
    n_head: int = 12
    d_model: int = 768
    d_ff: int | None = None
    dropout: float = 0.0
    bias: bool = True
    norm_eps: float = 1e-5

    @property
    def mlp_width(self) -> int:
        """Hidden width of the MLP (HF: ``intermediate_size``, GPT-2's ``n_inner``)."""
        return self.d_ff or 4 * self.d_model


class GPT(DecoderLM, nn.Module):
    """The GPT network: token ids ``(B, T)`` to next-token logits ``(B, T, vocab_size)``.

    Args:
        config: The network's shape.
    """

    family = "gpt"
    config_class = GPTConfig
    heads: tuple[str, ...] = ()  # the output projection is the token embedding
    poolings = ("last", "mean")  # causal: only the last real token has read the whole text
    state_layers = None

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.state_width, self.max_positions = config.d_model, config.max_seq_len  # token_states' width, longest input
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.wpe = nn.Embedding(config.max_seq_len, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            PreNormBlock(
                config.d_model,
                config.n_head,
                config.mlp_width,
                config.dropout,
                config.bias,
                causal=True,
                eps=config.norm_eps,
            )
            for _ in range(config.n_layer)
        )
        self.ln_f = nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied input/output embeddings
        self.apply(init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer) so the residual stream's
        # variance does not grow with depth
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def hidden_states(self, input_ids: torch.Tensor, cache: KVCache | None = None,
                      attention_mask: torch.Tensor | None = None,
                      position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The final-LayerNorm states ``(B, T, C)`` that the output projection reads; position
        ``t`` has seen tokens ``0..t`` only (padding on the right leaves real positions unchanged).

        Args:
            input_ids: Token ids ``(B, T)``; with a ``cache``, the positions after the cached ones.
            cache: Keys/values of earlier positions (:meth:`new_cache`), extended in place.
            attention_mask: With a ``cache``: ``(B, T)``, 1 on real tokens of right-padded rows.
            position_ids: Rows packed with documents (no cache): ``(B, T)``, each token's position
                in its document, 0 where one starts; a token sees its own document only.
        """
        ragged = self.ragged_span(input_ids, cache, attention_mask, position_ids)
        if ragged is None:
            start, T = self.span(input_ids, cache)
            pos, mask = torch.arange(start, start + T, device=input_ids.device), None  # (T,)
        else:
            pos, mask = ragged  # (B, T), (B, 1, T, S + T)
        x = self.drop(self.wte(input_ids) + self.wpe(pos))  # (B, T, C)
        for layer, block in enumerate(self.blocks):
            x = block(x, mask, cache=cache, layer=layer)
        return self.ln_f(x)

    def grow_vocab(self, embeddings: torch.Tensor) -> None:
        """Replace the (tied) token embedding by ``embeddings``, which has more rows: new tokens."""
        self.wte = nn.Embedding.from_pretrained(embeddings.detach().clone(), freeze=False)
        self.lm_head = nn.Linear(self.config.d_model, embeddings.shape[0], bias=False)
        self.lm_head.weight = self.wte.weight
        self.config.vocab_size = embeddings.shape[0]

    def num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters, the tied embedding counted once.

        Args:
            non_embedding: Leave out the position embeddings (as nanoGPT counts for MFU).
        """
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding else n
