"""BERT: a bidirectional Transformer encoder pretrained by masked language modelling
(Devlin et al. 2019); with ``position_offset=2``, ``type_vocab_size=1`` and no NSP head it is
RoBERTa's network (Liu et al. 2019).

Post-LayerNorm blocks (``pre_norm``: pre-LayerNorm ones and a final norm), learned position and
segment embeddings, attention through SDPA with a padding mask, an MLM head whose output matrix is
the token embedding (or its own, ``tie_embeddings=False``) and that can run on the masked positions
only, a pooler and a next-sentence-prediction head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.models.layers import PostNormBlock, PreNormBlock, document_mask, init_weights


@dataclass
class BertConfig:
    """Shape of a BERT (or RoBERTa) encoder.

    Args:
        vocab_size: Number of token ids (linked from the tokenizer by the CLI).
        max_seq_len: Longest input, in tokens (linked from the data).
        n_layer: Number of Transformer blocks.
        n_head: Number of attention heads.
        d_model: Width of the residual stream.
        d_ff: Hidden width of the MLP; ``None`` means ``4 * d_model``.
        dropout: Dropout on embeddings, attention and residual branches.
        type_vocab_size: Number of segment ids (BERT 2, RoBERTa 1).
        position_offset: Index of the first position embedding (RoBERTa 2: its table reserves
            the padding index and one more).
        norm_eps: LayerNorm epsilon (BERT 1e-12, RoBERTa 1e-5).
        pre_norm: Pre-LayerNorm blocks (``x + attn(ln(x))``) and a final LayerNorm after the last
            block, instead of BERT's post-LayerNorm: stable at larger learning rates with less warmup
            (Xiong et al. 2020; cramming, Geiping & Goldstein 2022, section 4.2). ``transformers``'
            BERT has no such network: ``export`` refuses it.
        bias: Whether the linear layers of attention and MLP have bias terms; cramming (section 4.2)
            drops them for speed at no cost in loss per step (LayerNorms keep theirs, as there).
            ``export`` refuses ``false``.
        nsp_head: Whether the network has the pooler and next-sentence-prediction head.
        embedding_size: Width of the token, position and segment embeddings when smaller than
            ``d_model`` (ELECTRA's factorised embeddings): a linear layer projects them to
            ``d_model``, and the MLM head maps back to this width for the tied output matrix.
            ``None``: ``d_model`` (BERT, RoBERTa).
        mlm_head: Whether the network has the MLM head (ELECTRA's discriminator has none).
        tie_embeddings: Whether the MLM head's output matrix is the token embedding (BERT's, RoBERTa's,
            ELECTRA's generator's). ``false`` gives the head a matrix of its own, so the masked-LM
            loss no longer pushes every input embedding toward the frequent tokens' output
            direction (the anisotropy that Gao et al. 2019, "Representation Degeneration Problem in
            Training Natural Language Generation Models", trace to the tied softmax); with sparse
            prediction it costs no extra FLOPs, only ``vocab_size * embedding_width`` parameters.
            ``transformers`` reads it as ``tie_word_embeddings: false``.
    """

    vocab_size: int = 30522
    max_seq_len: int = 512
    n_layer: int = 12
    n_head: int = 12
    d_model: int = 768
    d_ff: int | None = None
    dropout: float = 0.1
    type_vocab_size: int = 2
    position_offset: int = 0
    norm_eps: float = 1e-12
    pre_norm: bool = False
    bias: bool = True
    nsp_head: bool = True
    embedding_size: int | None = None
    mlm_head: bool = True
    tie_embeddings: bool = True

    @property
    def embedding_width(self) -> int:
        """Width of the embeddings (HF ELECTRA's ``embedding_size``)."""
        return self.embedding_size or self.d_model

    @property
    def mlp_width(self) -> int:
        """Hidden width of the MLP (HF: ``intermediate_size``, GPT-2's ``n_inner``)."""
        return self.d_ff or 4 * self.d_model


class MLMHead(nn.Module):
    """``Linear -> GELU -> LayerNorm``, then the vocabulary projection plus a bias: the token
    embedding, which the caller passes, or (``tie_embeddings=False``) the head's own ``decoder``.
    With factorised embeddings the linear layer maps ``d_model`` down to their width.

    Args:
        config: The network's shape.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.embedding_width)
        self.ln = nn.LayerNorm(config.embedding_width, eps=config.norm_eps)
        if not config.tie_embeddings:
            self.decoder = nn.Linear(config.embedding_width, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.ln(F.gelu(self.dense(hidden)))
        out = self.decoder.weight if hasattr(self, "decoder") else embedding
        return F.linear(h, out, self.bias)  # (..., V)


class Bert(nn.Module):
    """The BERT encoder with its pretraining heads.

    Args:
        config: The network's shape.
    """

    family = "bert"
    config_class = BertConfig
    heads = ("mlm_head", "pooler", "nsp")  # pretraining heads: a source without them starts them fresh
    poolings = ("cls", "mean")  # sentence vectors that suit a bidirectional encoder, the default first
    state_layers = None  # token_states gives one layer

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.state_width, self.max_positions = config.d_model, config.max_seq_len  # token_states' width, longest input
        c = config
        e = c.embedding_width
        self.wte = nn.Embedding(c.vocab_size, e)
        self.wpe = nn.Embedding(c.max_seq_len + c.position_offset, e)
        self.wse = nn.Embedding(c.type_vocab_size, e)  # segment (token type) embeddings
        self.ln_emb = nn.LayerNorm(e, eps=c.norm_eps)
        if e != c.d_model:  # factorised embeddings (ELECTRA): projected to the model width
            self.proj_emb = nn.Linear(e, c.d_model)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(self._block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.d_model, eps=c.norm_eps) if c.pre_norm else nn.Identity()  # pre-norm's last norm
        if c.mlm_head:
            self.mlm_head = MLMHead(c)
        if c.nsp_head:
            self.pooler = nn.Linear(c.d_model, c.d_model)
            self.nsp = nn.Linear(c.d_model, 2)
        self.apply(init_weights)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states ``(B, T, C)``.

        Args:
            input_ids: Token ids ``(B, T)``.
            attention_mask: ``(B, T)``, 1 for real tokens, 0 for padding.
            token_type_ids: Segment ids ``(B, T)``; ``None`` reads every token as segment 0.
            position_ids: Rows packed with documents: ``(B, T)``, each token's position in its
                document, 0 where one starts; a token attends to its own document only.
        """
        B, T = input_ids.shape
        if T > self.config.max_seq_len:
            raise ValueError(f"Sequence of {T} tokens is longer than max_seq_len={self.config.max_seq_len}.")
        offset, mask = self.config.position_offset, None
        if position_ids is None:
            pos = torch.arange(offset, T + offset, device=input_ids.device)  # (T,)
        else:
            pos, mask = position_ids + offset, document_mask(position_ids, causal=False)  # (B, T), (B, 1, T, T)
        x = self.wte(input_ids) + self.wpe(pos)
        x = x + (self.wse(token_type_ids) if token_type_ids is not None else self.wse.weight[0])
        x = self.drop(self.ln_emb(x))  # (B, T, E)
        if hasattr(self, "proj_emb"):
            x = self.proj_emb(x)  # (B, T, C)
        if attention_mask is not None:
            padding = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): who may be attended to
            mask = padding if mask is None else mask & padding
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x)

    @staticmethod
    def _block(c: BertConfig) -> nn.Module:
        """One Transformer block: BERT's post-LayerNorm one, or a pre-LayerNorm one (exact GELU as BERT's)."""
        if c.pre_norm:
            return PreNormBlock(c.d_model, c.n_head, c.mlp_width, c.dropout, c.bias, causal=False, eps=c.norm_eps,
                                approximate="none", norm_bias=True)
        return PostNormBlock(c.d_model, c.n_head, c.mlp_width, c.dropout, c.norm_eps, c.bias)

    def token_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Token states ``(B, T, C)`` for a downstream head; a network with one segment
        embedding (RoBERTa) reads every token as segment 0."""
        types = token_type_ids if self.config.type_vocab_size > 1 else None
        return self.encode(input_ids, attention_mask, types)

    def grow_vocab(self, embeddings: torch.Tensor) -> None:
        """Replace the token embedding (also the MLM output matrix when tied) by ``embeddings``,
        which has more rows: new tokens. Their output biases start at the mean of the old ones; an
        untied output matrix grows too, its new rows the new embeddings."""
        old = self.wte.weight.shape[0]
        self.wte = nn.Embedding.from_pretrained(embeddings.detach().clone(), freeze=False)
        if self.config.mlm_head:
            bias = self.mlm_head.bias.detach()
            grown = torch.cat([bias, bias.mean().expand(embeddings.shape[0] - old)])
            self.mlm_head.bias = nn.Parameter(grown)
            if not self.config.tie_embeddings:
                rows = torch.cat([self.mlm_head.decoder.weight.detach(), embeddings[old:].detach()])
                self.mlm_head.decoder = nn.Linear(rows.shape[1], rows.shape[0], bias=False)
                with torch.no_grad():
                    self.mlm_head.decoder.weight.copy_(rows)
        self.config.vocab_size = embeddings.shape[0]

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of the given hidden states (all positions, or only the masked ones)."""
        if not self.config.mlm_head:
            raise ValueError("This network has no MLM head (mlm_head=False).")
        return self.mlm_head(hidden, self.wte.weight)

    def nsp_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Is-next / not-next logits ``(B, 2)`` from the pooled first token."""
        if not self.config.nsp_head:
            raise ValueError("This network has no NSP head (nsp_head=False).")
        return self.nsp(torch.tanh(self.pooler(hidden[:, 0])))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """MLM logits ``(B, T, V)`` of every position (the dense path; tasks use the sparse one);
        the arguments are :meth:`encode`'s."""
        return self.mlm_logits(self.encode(input_ids, attention_mask, token_type_ids, position_ids))

    def num_params(self) -> int:
        """Number of parameters, a tied embedding counted once."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token, counted as for GPT (6N + attention), position embeddings
        excluded, and the token embedding too when it is not also the output matrix (a lookup)."""
        c = self.config
        lookups = self.wpe.weight.numel() + (0 if c.tie_embeddings else self.wte.weight.numel())
        return 6 * (self.num_params() - lookups) + 12 * c.n_layer * c.d_model * seq_len
