"""T5: an encoder-decoder Transformer pretrained by span corruption (Raffel et al. 2020).

Pre-norm blocks with RMSNorm and no bias terms anywhere; no position embeddings but a
learned relative position bias added to the attention logits (bidirectional buckets in the
encoder, causal ones in the decoder), computed once per stack and shared by all its layers;
q·k is not scaled by ``1/sqrt(d_kv)`` (the initialisation of ``q`` accounts for it). One
token embedding is shared by encoder and decoder; the output projection is either that
embedding applied to the decoder output times ``d_model**-0.5`` (T5 v1.0) or a separate
matrix (T5 v1.1, with a gated-GELU feed-forward).

``generate`` decodes with a key/value cache (:class:`T5Cache`): the decoder's self-attention
keys/values grow by one position per step, the cross-attention ones are computed once from
the encoder output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.models.layers import KVCache, RMSNorm, pick_next


@dataclass
class T5Config:
    """Shape of a T5 network.

    Args:
        vocab_size: Number of token ids (linked from the tokenizer by the CLI).
        max_seq_len: Encoder input length the model is trained at (linked from the data);
            only used to count FLOPs: relative positions set no hard limit on the length.
        d_model: Width of the residual stream.
        d_kv: Width of one attention head (``n_head * d_kv`` need not equal ``d_model``).
        d_ff: Hidden width of the feed-forward layers.
        n_layer: Number of encoder blocks.
        n_decoder_layer: Number of decoder blocks; ``None`` means ``n_layer``.
        n_head: Number of attention heads.
        relative_attention_num_buckets: Number of relative-position buckets (each a learned
            bias per head); half of them exact offsets, half log-spaced.
        relative_attention_max_distance: Offsets this far apart or further share the last bucket.
        dropout: Dropout on embeddings, attention probabilities, the feed-forward hidden layer,
            residual branches and each stack's output.
        norm_eps: RMSNorm epsilon.
        feed_forward: ``"relu"``: ``relu(x W_i) W_o`` (T5 v1.0); ``"gated-gelu"``:
            ``(gelu(x W_fc) * x W_up) W_o`` (T5 v1.1).
        tie_embeddings: Output logits are the shared token embedding applied to the decoder
            output times ``d_model**-0.5`` (T5 v1.0); ``False``: a separate, unscaled output
            matrix (T5 v1.1).
    """

    vocab_size: int = 32128
    max_seq_len: int = 512
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    n_layer: int = 6
    n_decoder_layer: int | None = None
    n_head: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout: float = 0.1
    norm_eps: float = 1e-6
    feed_forward: Literal["relu", "gated-gelu"] = "relu"
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.feed_forward not in ("relu", "gated-gelu"):
            raise ValueError(
                f"T5Config.feed_forward={self.feed_forward!r}: use 'relu' (T5 v1.0) or 'gated-gelu' (v1.1)."
            )

    @property
    def decoder_layers(self) -> int:
        return self.n_layer if self.n_decoder_layer is None else self.n_decoder_layer


def relative_position_bucket(
    relative_position: torch.Tensor, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128
) -> torch.Tensor:
    """T5's bucket (``0 .. num_buckets-1``) of each ``key_position - query_position``.

    Bidirectional: half the buckets for keys before the query, half for keys after it.
    Causal: keys after the query all fall in bucket 0 (the causal mask hides them anyway).
    Within a half, the first half of the buckets are the exact distances ``0 .. max_exact-1``,
    the rest log-spaced up to ``max_distance``; further distances share the last bucket.
    """
    if bidirectional:
        num_buckets //= 2
        offset = (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        offset = torch.zeros_like(relative_position)
        distance = (-relative_position).clamp(min=0)  # how far back the key is
    max_exact = num_buckets // 2
    # the clamp only keeps log() finite where the exact bucket is taken anyway
    far = distance.clamp(min=max_exact).float()
    log_bucket = max_exact + (
        torch.log(far / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    log_bucket = log_bucket.clamp(max=num_buckets - 1)
    return offset + torch.where(distance < max_exact, distance, log_bucket)


class RelativePositionBias(nn.Module):
    """A learned bias per (head, relative-position bucket), added to the attention logits.

    T5 keeps it in the first layer's attention and hands it on to the other layers of the
    stack; here the stack owns it, which is the same computation.

    Args:
        n_head: Number of attention heads.
        num_buckets: Number of buckets.
        max_distance: Distance from which on all offsets share the last bucket.
        bidirectional: Encoder (keys on both sides) or decoder (causal) buckets.
    """

    def __init__(self, n_head: int, num_buckets: int, max_distance: int, bidirectional: bool):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.buckets = nn.Embedding(num_buckets, n_head)

    def forward(self, q_len: int, k_len: int, q_offset: int = 0) -> torch.Tensor:
        """Bias ``(1, n_head, q_len, k_len)`` of queries at ``q_offset ..`` and keys at ``0 ..``."""
        device = self.buckets.weight.device
        q_pos = torch.arange(q_offset, q_offset + q_len, device=device)[:, None]
        k_pos = torch.arange(k_len, device=device)[None, :]
        bucket = relative_position_bucket(k_pos - q_pos, self.bidirectional, self.num_buckets, self.max_distance)
        return self.buckets(bucket).permute(2, 0, 1).unsqueeze(0)  # (q, k, H) -> (1, H, q, k)


class T5Attention(nn.Module):
    """Multi-head attention without biases or ``1/sqrt(d_kv)`` scaling, through SDPA.

    Keys and values are projected by :meth:`keys_values` apart from the query, so that a cache
    can store and extend them (and cross-attention can project the encoder output once).

    Args:
        d_model: Width of the residual stream.
        n_head: Number of heads.
        d_kv: Width of one head.
        dropout: Dropout on the attention probabilities.
    """

    def __init__(self, d_model: int, n_head: int, d_kv: int, dropout: float = 0.0):
        super().__init__()
        self.n_head, self.d_kv, self.dropout = n_head, d_kv, dropout
        inner = n_head * d_kv
        self.q = nn.Linear(d_model, inner, bias=False)
        self.k = nn.Linear(d_model, inner, bias=False)
        self.v = nn.Linear(d_model, inner, bias=False)
        self.o = nn.Linear(inner, d_model, bias=False)
        # Mesh TensorFlow's init: the q std carries the 1/sqrt(d_kv) that the logits do not get
        nn.init.normal_(self.q.weight, std=(d_model * d_kv) ** -0.5)
        nn.init.normal_(self.k.weight, std=d_model**-0.5)
        nn.init.normal_(self.v.weight, std=d_model**-0.5)
        nn.init.normal_(self.o.weight, std=inner**-0.5)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_head, self.d_kv).transpose(1, 2)  # (B, T, H*d) -> (B, H, T, d)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``(B, n_head, S, d_kv)`` of the attended-to states ``x`` (B, S, C)."""
        return self._heads(self.k(x)), self._heads(self.v(x))

    def forward(
        self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attend from ``x`` (B, T, C) to ``k``/``v``; ``mask`` is a float bias added to the logits
        or a boolean "may attend", broadcastable to ``(B, n_head, T, S)``."""
        B, T, _ = x.shape
        y = F.scaled_dot_product_attention(
            self._heads(self.q(x)),
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            scale=1.0,
        )
        return self.o(y.transpose(1, 2).reshape(B, T, self.n_head * self.d_kv))  # (B, T, C)


class T5FeedForward(nn.Module):
    """``relu(x W_fc) W_proj`` (T5 v1.0) or ``(gelu(x W_fc) * x W_up) W_proj`` (v1.1), dropout
    on the hidden layer, no biases.

    Args:
        d_model: Width of the residual stream.
        d_ff: Hidden width.
        dropout: Dropout on the hidden layer.
        gated: Gated GELU (with the ``up`` matrix) instead of ReLU.
    """

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, gated: bool = False):
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff, bias=False)
        self.up = nn.Linear(d_model, d_ff, bias=False) if gated else None
        self.proj = nn.Linear(d_ff, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)
        for layer in (self.fc, self.up):
            if layer is not None:
                nn.init.normal_(layer.weight, std=d_model**-0.5)
        nn.init.normal_(self.proj.weight, std=d_ff**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up is None:
            h = F.relu(self.fc(x))
        else:
            h = F.gelu(self.fc(x), approximate="tanh") * self.up(x)  # (B, T, d_ff)
        return self.proj(self.dropout(h))


class T5Cache(KVCache):
    """Decoder keys and values kept between calls of :meth:`T5.decode` while generating: the
    self-attention ones of :class:`~lmforge.models.layers.KVCache`, and the cross-attention
    ones, projected from the encoder output on the first call and reused (so one cache
    belongs to one encoder output).

    Args:
        n_layer: Number of decoder blocks.
    """

    def __init__(self, n_layer: int):
        super().__init__(n_layer)
        self.cross_attn: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer


class T5Block(nn.Module):
    """Pre-norm block: self-attention, cross-attention (decoder only), feed-forward, each
    ``x + dropout(sublayer(rmsnorm(x)))``.

    Args:
        config: The network's shape.
        cross_attention: Whether the block attends to the encoder output (decoder blocks).
    """

    def __init__(self, config: T5Config, cross_attention: bool = False):
        super().__init__()
        c = config
        self.cross_attention = cross_attention
        self.ln_1 = RMSNorm(c.d_model, c.norm_eps)
        self.attn = T5Attention(c.d_model, c.n_head, c.d_kv, c.dropout)
        if cross_attention:
            self.ln_cross = RMSNorm(c.d_model, c.norm_eps)
            self.cross_attn = T5Attention(c.d_model, c.n_head, c.d_kv, c.dropout)
        self.ln_2 = RMSNorm(c.d_model, c.norm_eps)
        self.mlp = T5FeedForward(c.d_model, c.d_ff, c.dropout, gated=c.feed_forward == "gated-gelu")
        self.drop = nn.Dropout(c.dropout)

    def forward(
        self,
        x: torch.Tensor,
        bias: torch.Tensor,
        encoder_hidden: torch.Tensor | None = None,
        encoder_mask: torch.Tensor | None = None,
        cache: T5Cache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        h = self.ln_1(x)
        k, v = self.attn.keys_values(h)
        if cache is not None:
            k, v = cache.extend(layer, k, v)
        x = x + self.drop(self.attn(h, k, v, bias))
        if self.cross_attention:
            kv = cache.cross_attn[layer] if cache is not None else None
            if kv is None:
                kv = self.cross_attn.keys_values(encoder_hidden)
                if cache is not None:
                    cache.cross_attn[layer] = kv
            x = x + self.drop(self.cross_attn(self.ln_cross(x), *kv, encoder_mask))
        return x + self.drop(self.mlp(self.ln_2(x)))


class T5Stack(nn.Module):
    """The encoder (bidirectional) or the decoder (causal, cross-attending) stack of blocks,
    with its relative position bias and final RMSNorm; token embeddings come in already looked up.

    Args:
        config: The network's shape.
        n_layer: Number of blocks.
        decoder: Causal self-attention and cross-attention to the encoder output.
    """

    def __init__(self, config: T5Config, n_layer: int, decoder: bool):
        super().__init__()
        c = config
        self.decoder = decoder
        self.position_bias = RelativePositionBias(
            c.n_head, c.relative_attention_num_buckets, c.relative_attention_max_distance, bidirectional=not decoder
        )
        self.blocks = nn.ModuleList(T5Block(c, cross_attention=decoder) for _ in range(n_layer))
        self.ln_f = RMSNorm(c.d_model, c.norm_eps)
        self.drop = nn.Dropout(c.dropout)
        nn.init.normal_(self.position_bias.buckets.weight, std=c.d_model**-0.5)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        encoder_hidden: torch.Tensor | None = None,
        encoder_mask: torch.Tensor | None = None,
        cache: T5Cache | None = None,
    ) -> torch.Tensor:
        """Hidden states ``(B, T, C)`` of embedded tokens ``x`` (B, T, C).

        Args:
            x: Token embeddings of the new positions (all of them without a cache).
            mask: ``(B, T)`` 1 for real tokens, 0 for padding that no position attends to.
            encoder_hidden: Encoder output ``(B, S, C)`` (decoder only).
            encoder_mask: ``(B, S)`` padding mask of the encoder input (decoder only).
            cache: Keys/values of earlier positions (decoder only); extended in place.
        """
        T = x.size(1)
        past = len(cache) if cache is not None else 0
        bias = self.position_bias(T, past + T, q_offset=past)  # (1, H, T, past + T)
        # one additive mask, shared by all blocks: position bias, then -inf-like where hidden
        lowest = torch.finfo(bias.dtype).min
        if self.decoder:
            q_pos = torch.arange(past, past + T, device=x.device)[:, None]
            k_pos = torch.arange(past + T, device=x.device)[None, :]
            bias = bias.masked_fill(k_pos > q_pos, lowest)
        if mask is not None:
            bias = bias.masked_fill(~mask.bool()[:, None, None, :], lowest)  # (B, H, T, T)
        cross_mask = None
        if encoder_mask is not None:
            cross_mask = encoder_mask.bool()[:, None, None, :]  # (B, 1, 1, S): who may be attended to
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, bias, encoder_hidden, cross_mask, cache, i)
        return self.drop(self.ln_f(x))


class T5(nn.Module):
    """The T5 network: encoder input ids ``(B, S)`` and decoder input ids ``(B, T)`` to logits
    ``(B, T, vocab_size)``.

    Args:
        config: The network's shape.
    """

    family = "t5"
    config_class = T5Config
    heads = ("lm_head",)  # the untied output matrix (v1.1)
    poolings = ("mean",)  # downstream, the encoder's states
    state_layers = None
    max_positions = None  # relative positions: no length limit

    def __init__(self, config: T5Config):
        super().__init__()
        self.config = c = config
        self.shared = nn.Embedding(c.vocab_size, c.d_model)  # encoder and decoder input embedding
        self.encoder = T5Stack(c, c.n_layer, decoder=False)
        self.decoder = T5Stack(c, c.decoder_layers, decoder=True)
        self.lm_head = None if c.tie_embeddings else nn.Linear(c.d_model, c.vocab_size, bias=False)
        # Mesh TensorFlow / HF T5 init: unit-variance embeddings (and untied output matrix);
        # the d_model**-0.5 output scaling of the tied case keeps the logits O(1)
        nn.init.normal_(self.shared.weight, std=1.0)
        if self.lm_head is not None:
            nn.init.normal_(self.lm_head.weight, std=1.0)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder output ``(B, S, C)``; ``attention_mask`` (B, S) is 1 for real tokens, 0 for padding."""
        return self.encoder(self.shared(input_ids), mask=attention_mask)

    def token_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The encoder's token states ``(B, S, C)`` for a downstream head."""
        return self.encode(input_ids, attention_mask)

    @property
    def state_width(self) -> int:
        return self.config.d_model

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits ``(..., V)`` of decoder output states."""
        if self.lm_head is None:
            return F.linear(hidden * self.config.d_model**-0.5, self.shared.weight)
        return self.lm_head(hidden)

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        encoder_hidden: torch.Tensor,
        encoder_mask: torch.Tensor | None = None,
        cache: T5Cache | None = None,
    ) -> torch.Tensor:
        """Logits ``(B, T, V)`` of the decoder input ``(B, T)`` attending to ``encoder_hidden`` (B, S, C).

        Args:
            decoder_input_ids: The decoder input (the target shifted right behind a start token);
                with a cache, only the positions after the cached ones.
            encoder_hidden: Output of :meth:`encode`.
            encoder_mask: ``(B, S)`` 1 for real encoder tokens, 0 for padding.
            cache: A :class:`T5Cache`, empty on the first call; extended with the new positions.
        """
        if cache is not None and len(cache.self_attn) != len(self.decoder.blocks):
            raise ValueError(
                f"The cache has {len(cache.self_attn)} layers but the decoder {len(self.decoder.blocks)}: "
                f"create it as T5Cache(config.decoder_layers)."
            )
        hidden = self.decoder(
            self.shared(decoder_input_ids), encoder_hidden=encoder_hidden, encoder_mask=encoder_mask, cache=cache
        )
        return self.lm_logits(hidden)

    def forward(
        self,
        input_ids: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``(B, T, V)`` (teacher forcing); ``attention_mask`` is the encoder input's padding mask."""
        return self.decode(decoder_input_ids, self.encode(input_ids, attention_mask), attention_mask)

    def num_params(self) -> int:
        """Number of parameters (the shared embedding once; it is the output matrix when tied)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int, target_len: int | None = None) -> float:
        """Training FLOPs (forward + backward) per encoder input token, counted as for GPT.

        Per example of ``S = seq_len`` input and ``T = target_len`` decoder tokens: 6 FLOPs per
        parameter per token it is applied to (encoder, and the decoder's cross-attention
        keys/values: S tokens; the rest of the decoder and the output matrix: T tokens; the
        embedding lookup: none), plus 12 per head dimension, layer and attended position for
        the attention logits and weighted values (encoder S², decoder self-attention T²,
        cross-attention T·S); the total is divided by S.

        Args:
            seq_len: Encoder input length.
            target_len: Decoder length; ``None`` means ``seq_len``. Span corruption's targets
                are much shorter (114 for 512 inputs), pass them for an honest MFU.
        """
        c = self.config
        S, T = seq_len, seq_len if target_len is None else target_len
        inner = c.n_head * c.d_kv

        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())

        n_enc, n_dec = count(self.encoder), count(self.decoder)
        n_cross_kv = sum(count(b.cross_attn.k) + count(b.cross_attn.v) for b in self.decoder.blocks)
        n_out = c.vocab_size * c.d_model
        matmuls = 6 * (S * (n_enc + n_cross_kv) + T * (n_dec - n_cross_kv + n_out))
        attention = 12 * inner * (c.n_layer * S * S + c.decoder_layers * (T * T + T * S))
        return (matmuls + attention) / S

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        decoder_start_id: int,
        eos_id: int | None = None,
        attention_mask: torch.Tensor | None = None,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        pad_id: int | None = None,
    ) -> torch.Tensor:
        """Decode ``(B, <= max_new_tokens)`` ids (without the start token) for the encoder input
        ``input_ids`` (B, S), one position per step through a :class:`T5Cache`.

        Args:
            input_ids: Encoder input.
            max_new_tokens: Most tokens to produce per row.
            decoder_start_id: The decoder's first input (T5: the padding id).
            eos_id: A row is finished once it produces this; generation stops when all are.
            attention_mask: ``(B, S)`` 1 for real encoder tokens, 0 for padding.
            temperature: Softmax temperature; 0 picks the most likely token.
            top_k: Sample only among the k most likely tokens.
            generator: Random generator for reproducible samples.
            pad_id: What finished rows are filled with after their eos; ``None`` means ``eos_id``.
        """
        B = input_ids.size(0)
        encoder_hidden = self.encode(input_ids, attention_mask)
        cache = T5Cache(len(self.decoder.blocks))
        step_ids = torch.full((B, 1), decoder_start_id, dtype=torch.long, device=input_ids.device)
        finished = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
        fill = eos_id if pad_id is None else pad_id
        out = []
        for _ in range(max_new_tokens):
            logits = self.decode(step_ids, encoder_hidden, attention_mask, cache)[:, -1]  # (B, V)
            next_id = pick_next(logits, temperature, top_k, generator)  # (B,)
            if eos_id is not None:
                next_id = next_id.masked_fill(finished, fill)
                finished |= next_id == eos_id
            out.append(next_id)
            if eos_id is not None and bool(finished.all()):
                break
            step_ids = next_id[:, None]
        if not out:
            return input_ids.new_zeros(B, 0)
        return torch.stack(out, dim=1)
