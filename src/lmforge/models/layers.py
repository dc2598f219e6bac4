"""Transformer building blocks shared by every family."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.models.loss import linear_cross_entropy


def init_weights(module: nn.Module) -> None:
    """GPT-2/BERT initialisation: normal(0, 0.02) weights, zero biases (use with ``Module.apply``)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class KVCache:
    """Keys and values of the positions already seen, per self-attention layer, kept between
    calls while generating: pass an empty cache with the whole prompt, then only the new
    positions; each layer's keys/values grow by those positions.

    Args:
        n_layer: Number of self-attention layers.
    """

    def __init__(self, n_layer: int):
        # per layer: (keys, values), each (B, n_head, positions, head_dim)
        self.self_attn: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer
        # rows of different lengths (right-padded, :meth:`ragged`): each cached key's position
        # and whether it is a real token, (B, S) each; None while every row is all real
        self.key_pos: torch.Tensor | None = None
        self.key_real: torch.Tensor | None = None

    def __len__(self) -> int:
        """Number of positions already cached (by the last layer: all layers, between calls)."""
        return self.cached(len(self.self_attn) - 1)

    def cached(self, layer: int) -> int:
        """Number of positions cached for ``layer``."""
        kv = self.self_attn[layer]
        return 0 if kv is None else kv[0].size(2)

    def ragged(self, attention_mask: torch.Tensor, window: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Admit new positions whose rows are right-padded to one length (``attention_mask``
        ``(B, T)``, 1 on real tokens), after cached rows that may be padded too: returns each new
        token's position ``(B, T)`` (its row's real tokens before it) and the boolean attention
        mask ``(B, 1, T, S + T)``: a query sees the real keys at or before it (and, with a
        ``window``, no further back than ``window - 1`` positions); a padding query sees itself.
        Call once per forward, before the layers extend the cache.

        Args:
            attention_mask: ``(B, T)``, 1 on the real tokens of the new positions.
            window: Sliding-window attention width, ``None`` for full causal attention.
        """
        B, T = attention_mask.shape
        device, new_real = attention_mask.device, attention_mask.bool()
        if self.key_pos is None:  # until now every row was real: positions 0 .. past - 1
            past = len(self)
            self.key_pos = torch.arange(past, device=device).expand(B, past)
            self.key_real = torch.ones(B, past, dtype=torch.bool, device=device)
        past = self.key_pos.size(1)
        seen = self.key_real.sum(1, keepdim=True)  # (B, 1) real tokens cached per row
        positions = (seen + new_real.long().cumsum(1) - 1).clamp(min=0)  # (B, T)
        self.key_pos = torch.cat([self.key_pos, positions], 1)  # (B, S + T)
        self.key_real = torch.cat([self.key_real, new_real], 1)
        query = past + torch.arange(T, device=device)  # (T,) each new position's index among the keys
        keys = torch.arange(past + T, device=device)  # (S + T,)
        mask = (keys <= query[:, None]) & self.key_real[:, None, :]  # (B, T, S + T)
        if window is not None:
            mask &= (positions[:, :, None] - self.key_pos[:, None, :]) < window
        mask |= keys == query[:, None]  # a padding query attends to itself: no row of the softmax is empty
        return positions, mask[:, None]  # (B, T), (B, 1, T, S + T)

    def select(self, rows: torch.Tensor) -> KVCache:
        """A cache of the given rows (indices into the batch, repeats allowed): one context's
        keys and values shared by each of its continuations."""
        picked = type(self)(len(self.self_attn))
        picked.self_attn = [None if kv is None else (kv[0][rows], kv[1][rows]) for kv in self.self_attn]
        if self.key_pos is not None:
            picked.key_pos, picked.key_real = self.key_pos[rows], self.key_real[rows]
        return picked

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new positions' keys/values of ``layer``; return all of them."""
        past = self.self_attn[layer]
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        self.self_attn[layer] = (k, v)
        return k, v


def document_mask(position_ids: torch.Tensor, causal: bool, window: int | None = None) -> torch.Tensor:
    """The boolean attention mask ``(B, 1, T, T)`` of rows packed with several documents: a token
    attends to the tokens of its own document only (block-diagonal attention).

    Args:
        position_ids: ``(B, T)``, each token's position in its document: a document starts
            where it is 0 (the convention of ``transformers``' packing collators).
        causal: Attend only to tokens at or before the query.
        window: With ``causal``, no further back than ``window - 1`` tokens (sliding window).
    """
    doc = (position_ids == 0).cumsum(1)  # (B, T): which document of its row each token is in
    mask = doc[:, :, None] == doc[:, None, :]  # (B, T, T)
    if causal:
        steps = torch.arange(doc.size(1), device=doc.device)
        back = steps[:, None] - steps  # (T, T): how far each key lies before each query
        mask &= (back >= 0) & (back < (window or doc.size(1)))
    return mask[:, None]


def causal_mask_after(past: int, new: int, device: torch.device) -> torch.Tensor | None:
    """The boolean mask ``(new, past + new)`` letting each of ``new`` positions that follow
    ``past`` cached ones attend to the cache and to itself and earlier new ones; None when one
    position is new (it may attend to everything)."""
    if new == 1:
        return None
    return torch.ones(new, past + new, dtype=torch.bool, device=device).tril(diagonal=past)


class SelfAttention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``.

    Args:
        d_model: Width of the residual stream.
        n_head: Number of attention heads; must divide ``d_model``.
        dropout: Dropout on attention probabilities and on the output projection.
        bias: Whether the projections have bias terms.
        causal: Whether a position may only attend to itself and earlier positions.
    """

    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0, bias: bool = True, causal: bool = False):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model={d_model} is not divisible by n_head={n_head}.")
        self.n_head = n_head
        self.causal = causal
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)  # one matmul for q, k and v
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        """Attend over ``x`` ``(B, T, C)``; with a ``cache`` (causal only), ``x`` holds the new
        positions and also attends to the cached ones of ``layer``, which it extends."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        # (B, T, C) -> (B, n_head, T, head_dim)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        is_causal = self.causal and attn_mask is None
        if cache is not None:
            past = cache.cached(layer)
            k, v = cache.extend(layer, k, v)
            if past and attn_mask is None:
                attn_mask, is_causal = causal_mask_after(past, T, x.device), False
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            # is_causal lets SDPA pick its fused causal kernels instead of materialising a mask
            is_causal=is_causal,
        )
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.proj(y))


class FeedForward(nn.Module):
    """Position-wise MLP: ``Linear -> GELU -> Linear -> Dropout``.

    Args:
        d_model: Width of the residual stream.
        d_ff: Hidden width.
        dropout: Dropout on the output.
        bias: Whether the linear layers have bias terms.
        approximate: GELU approximation, ``"tanh"`` (GPT-2) or ``"none"`` (BERT).
    """

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, bias: bool = True, approximate: str = "tanh"):
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff, bias=bias)
        self.proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate=self.approximate)))


class PreNormBlock(nn.Module):
    """Pre-LayerNorm Transformer block (GPT-2): ``x + attn(ln(x))`` then ``x + mlp(ln(x))``.

    Args:
        d_model: Width of the residual stream.
        n_head: Number of attention heads.
        d_ff: Hidden width of the MLP.
        dropout: Dropout probability.
        bias: Whether linear and norm layers have bias terms.
        causal: Whether attention is causal.
        eps: LayerNorm epsilon.
        approximate: The MLP's GELU approximation (:class:`FeedForward`).
        norm_bias: Whether the norm layers have bias terms; ``None``: as ``bias``.
    """

    def __init__(
        self,
        d_model: int,
        n_head: int,
        d_ff: int,
        dropout: float = 0.0,
        bias: bool = True,
        causal: bool = False,
        eps: float = 1e-5,
        approximate: str = "tanh",
        norm_bias: bool | None = None,
    ):
        super().__init__()
        norm_bias = bias if norm_bias is None else norm_bias
        self.ln_1 = nn.LayerNorm(d_model, eps=eps, bias=norm_bias)
        self.attn = SelfAttention(d_model, n_head, dropout, bias, causal)
        self.ln_2 = nn.LayerNorm(d_model, eps=eps, bias=norm_bias)
        self.mlp = FeedForward(d_model, d_ff, dropout, bias, approximate)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask, cache, layer)
        return x + self.mlp(self.ln_2(x))


class PostNormBlock(nn.Module):
    """Post-LayerNorm Transformer block (BERT): ``ln(x + attn(x))`` then ``ln(x + mlp(x))``.

    Args:
        d_model: Width of the residual stream.
        n_head: Number of attention heads.
        d_ff: Hidden width of the MLP.
        dropout: Dropout probability.
        eps: LayerNorm epsilon.
        bias: Whether the linear layers have bias terms (the norms always do).
    """

    def __init__(self, d_model: int, n_head: int, d_ff: int, dropout: float = 0.0, eps: float = 1e-12,
                 bias: bool = True):
        super().__init__()
        self.attn = SelfAttention(d_model, n_head, dropout, bias=bias, causal=False)
        self.ln_1 = nn.LayerNorm(d_model, eps=eps)
        self.mlp = FeedForward(d_model, d_ff, dropout, bias=bias, approximate="none")
        self.ln_2 = nn.LayerNorm(d_model, eps=eps)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.ln_1(x + self.attn(x, attn_mask))
        return self.ln_2(x + self.mlp(x))


class RMSNorm(nn.Module):
    """Root-mean-square LayerNorm (Zhang & Sennrich 2019), T5's "LayerNorm": ``x / rms(x) * weight``,
    no mean subtraction, no bias.

    Args:
        d_model: Width of the normalised (last) dimension.
        eps: Added to the mean square before the square root.
    """

    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the mean square in fp32: in half precision the sum of squares loses too many digits
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


class DecoderLM:
    """What every decoder-only language model does once it has ``hidden_states`` (ids to final
    states, taking a :class:`KVCache`), ``blocks``, an ``lm_head``, ``num_params`` and a
    ``config`` with ``n_layer``, ``d_model`` and ``max_seq_len``: next-token logits, token
    states for a downstream head, training FLOPs, and sampling text with a key/value cache."""

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None,
                attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits ``(B, T, V)``; with a ``cache`` and an ``attention_mask`` ``(B, T)``
        (1 on real tokens), rows of different lengths right-padded in one batch (:meth:`KVCache.ragged`);
        with ``position_ids`` ``(B, T)``, rows packed with documents (:func:`document_mask`)."""
        return self.lm_head(self.hidden_states(input_ids, cache, attention_mask, position_ids))  # (B, T, V)

    def loss(self, input_ids: torch.Tensor, targets: torch.Tensor,
             position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The mean next-token cross-entropy of ``targets`` ``(B, T)`` (``-100``: no loss), the
        output projection fused with the loss a chunk at a time (:mod:`lmforge.models.loss`):
        what training calls, faster than ``cross_entropy(self(input_ids), targets)`` and without
        the ``(B, T, V)`` logits. ``position_ids``: as in :meth:`forward`."""
        hidden = self.hidden_states(input_ids, position_ids=position_ids)
        return linear_cross_entropy(hidden.flatten(0, 1), self.lm_head, targets.flatten())

    def new_cache(self) -> KVCache:
        """An empty key/value cache for :meth:`forward` (one per sequence being generated)."""
        return KVCache(len(self.blocks))

    def span(self, input_ids: torch.Tensor, cache: KVCache | None) -> tuple[int, int]:
        """``(start, T)``: the positions of ``input_ids`` ``(B, T)`` after the cached ones, checked
        against ``max_seq_len``."""
        start, T = (len(cache) if cache is not None else 0), input_ids.size(1)
        if start + T > self.config.max_seq_len:
            raise ValueError(f"Sequence of {start + T} tokens is longer than max_seq_len={self.config.max_seq_len}.")
        return start, T

    def ragged_span(self, input_ids: torch.Tensor, cache: KVCache | None, attention_mask: torch.Tensor | None,
                    position_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(positions (B, T), attention mask (B, 1, T, S + T))`` when rows have different
        lengths (an ``attention_mask`` with a cache, or a cache that already has one) or hold
        several documents (``position_ids``, no cache: :func:`document_mask`), else ``None``:
        every row starts after the cached positions and a causal mask is enough."""
        window = getattr(self.config, "sliding_window", None)
        if position_ids is not None:
            if cache is not None:
                raise ValueError("position_ids (rows packed with documents) are for training, not with a cache.")
            self.span(input_ids, None)
            return position_ids, document_mask(position_ids, causal=True, window=window)
        if cache is None or (attention_mask is None and cache.key_pos is None):
            return None
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        positions, mask = cache.ragged(attention_mask, window)
        if int(positions.max()) >= self.config.max_seq_len:
            raise ValueError(f"Sequence of {int(positions.max()) + 1} tokens is longer than "
                             f"max_seq_len={self.config.max_seq_len}.")
        return positions, mask

    def token_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Token states ``(B, T, C)`` for a downstream head (causal: right padding changes no real position)."""
        return self.hidden_states(input_ids)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward), counted as nanoGPT's ``estimate_mfu``.

        Args:
            seq_len: Context length the model is trained at.
        """
        c = self.config
        return 6 * self.num_params(non_embedding=True) + 12 * c.n_layer * c.d_model * seq_len

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        eos_id: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Continue ``input_ids`` ``(1, T)`` by sampling; ``temperature=0`` is greedy. With a
        key/value cache the prompt is run once and each new token alone (the same tokens as
        recomputing the whole prefix for every token, which ``use_cache=False`` does).

        Args:
            input_ids: The prompt, shape ``(1, T)``.
            max_new_tokens: How many tokens to add at most.
            temperature: Softmax temperature; 0 picks the most likely token.
            top_k: Sample only among the k most likely tokens.
            eos_id: Stop once this token is produced.
            generator: Random generator for reproducible samples.
            use_cache: Keep the keys/values of earlier positions instead of recomputing them.
        """
        cache = self.new_cache() if use_cache else None
        for _ in range(max_new_tokens):
            if cache is not None and input_ids.size(1) <= self.config.max_seq_len:
                # the prompt once, then only the newest token: the cache holds the others
                logits = self(input_ids[:, len(cache):], cache)[:, -1, :]  # (1, V)
            else:
                # a window sliding past max_seq_len moves every position: recompute it whole
                logits = self(input_ids[:, -self.config.max_seq_len :])[:, -1, :]
            next_id = pick_next(logits, temperature, top_k, generator)[:, None]  # (1, 1)
            input_ids = torch.cat([input_ids, next_id], dim=1)
            if eos_id is not None and next_id.item() == eos_id:
                break
        return input_ids


def pool(states: torch.Tensor, attention_mask: torch.Tensor, how: str,
         positions: torch.Tensor | None = None) -> torch.Tensor:
    """One vector per row of token states ``(B, T, C)``: the first token's (``cls``), the last
    real token's (``last``, wherever the padding is), the mean of the real ones (``mean``), all
    ``(B, C)``; or the states at ``positions`` ``(B, K)`` side by side, ``(B, K * C)``
    (``entity_start``: the two opening entity markers, Baldini Soares et al. 2019).

    Args:
        states: Token states.
        attention_mask: ``(B, T)``, 1 on real tokens.
        how: ``cls``, ``last``, ``mean`` or ``entity_start``.
        positions: The token positions ``entity_start`` takes.
    """
    rows = torch.arange(states.size(0), device=states.device)
    if how == "cls":
        return states[:, 0]
    if how == "entity_start":
        return states[rows[:, None], positions].flatten(1)  # (B, K, C) -> (B, K * C)
    if how == "last":
        steps = torch.arange(states.size(1), device=states.device)
        last = (attention_mask.long() * steps).argmax(1)  # (B,): the rightmost real token
        return states[rows, last]
    mask = attention_mask.unsqueeze(-1).to(states.dtype)  # (B, T, 1)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1)


def pick_next(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> torch.Tensor:
    """One token id per row of ``logits`` (B, V): argmax at temperature 0, else a sample among
    the ``top_k`` most likely (all when ``None``)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)
