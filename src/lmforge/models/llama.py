"""Llama: the modern decoder-only Transformer (Touvron et al. 2023), also the shape of Mistral,
Qwen2 and SmolLM2.

Pre-RMSNorm blocks, grouped-query attention with rotary position embeddings (RoPE, applied in
Hugging Face's ``rotate_half`` convention so weights map one to one), a SwiGLU MLP without
biases, and an output head tied to the token embedding or not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.models.layers import DecoderLM, KVCache, RMSNorm, init_weights


class RotaryEmbedding(nn.Module):
    """Rotary position embedding tables (Su et al. 2021) as Hugging Face builds them: frequency
    ``base ** (-2i / dim)`` for pair ``i``, each repeated for both halves of a head (``rotate_half``).

    Args:
        dim: Width of one attention head.
        max_len: Longest sequence the tables cover.
        base: The base period theta.
        llama3_scaling: Llama 3.1's frequency scaling (``factor``, ``low_freq_factor``,
            ``high_freq_factor``, ``original_max_position_embeddings``); ``None`` for plain RoPE.
    """

    def __init__(self, dim: int, max_len: int, base: float = 10000.0, llama3_scaling: dict[str, float] | None = None):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))  # (D/2,)
        if llama3_scaling:
            inv_freq = llama3_frequencies(inv_freq, **llama3_scaling)
        angles = torch.outer(torch.arange(max_len).float(), inv_freq)  # (T, D/2)
        angles = torch.cat([angles, angles], dim=-1)  # (T, D)
        # not saved in checkpoints: recomputed from the config, as HF does
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, seq_len: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The tables of positions ``start .. start + seq_len - 1`` (after ``start`` cached ones)."""
        return self.cos[start : start + seq_len], self.sin[start : start + seq_len]


def llama3_frequencies(inv_freq: torch.Tensor, factor: float, low_freq_factor: float, high_freq_factor: float,
                       original_max_position_embeddings: float) -> torch.Tensor:
    """Llama 3.1's RoPE frequencies: wavelengths longer than ``original / low_freq_factor`` slowed
    by ``factor``, shorter than ``original / high_freq_factor`` kept, those between interpolated."""
    wavelen = 2 * math.pi / inv_freq
    low_wavelen = original_max_position_embeddings / low_freq_factor
    high_wavelen = original_max_position_embeddings / high_freq_factor
    smooth = (original_max_position_embeddings / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    slowed = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    between = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(between, (1 - smooth) * slowed / factor + smooth * slowed, slowed)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``(x1, x2) -> (-x2, x1)`` on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys ``(B, H, T, D)`` by their positions' angles (``cos``/``sin``: ``(T, D)``)."""
    return (x * cos.to(x.dtype)) + (rotate_half(x) * sin.to(x.dtype))


@dataclass
class LlamaConfig:
    """Shape of a Llama network.

    Args:
        vocab_size: Number of token ids (linked from the tokenizer by the CLI).
        max_seq_len: Longest context (linked from the data); RoPE tables are built this long.
        n_layer: Number of Transformer blocks.
        n_head: Number of query heads.
        n_kv_head: Number of key/value heads (grouped-query attention); must divide ``n_head``.
        d_model: Width of the residual stream.
        d_ff: Hidden width of the SwiGLU MLP.
        rope_base: RoPE's base period theta (Llama 2: 10000, Llama 3: 500000).
        rope_scaling: Llama 3.1/3.2's ``llama3`` RoPE frequency scaling, as its config.json
            spells it: ``factor``, ``low_freq_factor``, ``high_freq_factor``,
            ``original_max_position_embeddings``; ``None`` for plain RoPE.
        norm_eps: RMSNorm epsilon.
        sliding_window: Each position attends to itself and the ``sliding_window - 1`` before it
            only (Mistral 7B v0.1); ``None`` for full causal attention.
        qk_norm: RMSNorm on each head's queries and keys before RoPE (Qwen3, OLMo 2).
        qkv_bias: Bias terms on the query/key/value projections (Qwen2); no other layer has them.
        tie_embeddings: Whether the output head is the token embedding.
        dropout: Dropout on attention probabilities and residual branches.
    """

    vocab_size: int = 32000
    max_seq_len: int = 2048
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int = 4
    d_model: int = 768
    d_ff: int = 2048
    rope_base: float = 10000.0
    rope_scaling: dict[str, float] | None = None
    norm_eps: float = 1e-5
    sliding_window: int | None = None
    qk_norm: bool = False
    qkv_bias: bool = False
    tie_embeddings: bool = True
    dropout: float = 0.0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


def sdpa_groups_heads(q: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """Whether ``scaled_dot_product_attention`` should group the key/value heads of queries ``q``
    itself (``enable_gqa``): its CPU kernels always can; on CUDA only its flash kernel (half
    precision, no mask) can, and elsewhere GQA would send it to the slow math kernel.

    Args:
        q: The queries ``(B, H, T, D)``, on the device and in the dtype attention runs in.
        mask: The boolean attention mask, or ``None`` (causal or no mask).
    """
    return q.device.type == "cpu" or (mask is None and q.dtype in (torch.float16, torch.bfloat16))


class GroupedQueryAttention(nn.Module):
    """Causal self-attention where ``n_head / n_kv_head`` query heads share each key/value head.

    Args:
        config: The network's shape.
    """

    def __init__(self, config: LlamaConfig):
        super().__init__()
        if config.d_model % config.n_head or config.n_head % config.n_kv_head:
            raise ValueError(f"n_head={config.n_head} must divide d_model={config.d_model} and be a multiple of "
                             f"n_kv_head={config.n_kv_head}.")
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        kv_width = config.n_kv_head * config.head_dim
        self.q = nn.Linear(config.d_model, config.d_model, bias=config.qkv_bias)
        self.k = nn.Linear(config.d_model, kv_width, bias=config.qkv_bias)
        self.v = nn.Linear(config.d_model, kv_width, bias=config.qkv_bias)
        self.o = nn.Linear(config.d_model, config.d_model, bias=False)
        self.q_norm = RMSNorm(config.head_dim, config.norm_eps) if config.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(config.head_dim, config.norm_eps) if config.qk_norm else nn.Identity()
        self.dropout = config.dropout
        self.window = config.sliding_window

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend over ``x`` ``(B, T, C)`` rotated by ``cos``/``sin`` (its positions' tables); with
        a ``cache``, ``x`` holds the new positions and also attends to the cached ones of
        ``layer`` (keys already rotated, ``n_kv_head`` heads), which it extends. A ``mask``
        ``(B, 1, T, S + T)`` (rows of different lengths: :meth:`KVCache.ragged`) replaces the causal one."""
        B, T, C = x.shape
        q = self.q_norm(self.q(x).view(B, T, self.n_head, self.head_dim)).transpose(1, 2)  # (B, H, T, D)
        k = self.k_norm(self.k(x).view(B, T, self.n_kv_head, self.head_dim)).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        past = 0
        if cache is not None:
            past = cache.cached(layer)
            k, v = cache.extend(layer, k, v)  # (B, Hkv, past + T, D)
        if mask is None and ((self.window is not None and past + T > self.window) or (past and T > 1)):
            # causal after the cached positions, and (a band) no further back than the window
            back = torch.arange(past, past + T, device=x.device)[:, None] - torch.arange(past + T, device=x.device)
            mask = (back >= 0) & (back < self.window) if self.window is not None else back >= 0
        # each kv head serves n_head / n_kv_head consecutive query heads (HF's repeat_kv): SDPA groups
        # them itself where its kernel can, else they are copied that many times
        grouped = sdpa_groups_heads(q, mask)
        if not grouped:
            groups = self.n_head // self.n_kv_head
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # (B, H, past + T, D)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=mask is None and not past, enable_gqa=grouped)
        return self.o(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class SwiGLU(nn.Module):
    """Gated MLP ``down(silu(gate(x)) * up(x))`` (Shazeer 2020), no biases.

    Args:
        d_model: Width of the residual stream.
        d_ff: Hidden width.
    """

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=False)
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class LlamaBlock(nn.Module):
    """Pre-RMSNorm block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``.

    Args:
        config: The network's shape.
    """

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.ln_1 = RMSNorm(config.d_model, config.norm_eps)
        self.attn = GroupedQueryAttention(config)
        self.ln_2 = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = SwiGLU(config.d_model, config.d_ff)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_1(x), cos, sin, cache, layer, mask))
        return x + self.drop(self.mlp(self.ln_2(x)))


class Llama(DecoderLM, nn.Module):
    """The Llama network: token ids ``(B, T)`` to next-token logits ``(B, T, vocab_size)``.

    Args:
        config: The network's shape.
    """

    family = "llama"
    config_class = LlamaConfig
    heads: tuple[str, ...] = ()  # the output head is part of the language model, never fresh
    poolings = ("last", "mean")
    state_layers = None

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.state_width, self.max_positions = config.d_model, config.max_seq_len
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.rotary = RotaryEmbedding(config.head_dim, config.max_seq_len, config.rope_base, config.rope_scaling)
        self.blocks = nn.ModuleList(LlamaBlock(config) for _ in range(config.n_layer))
        self.ln_f = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(init_weights)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        # as GPT-2: residual projections scaled by 1/sqrt(2 * n_layer), the stream's variance flat in depth
        for name, p in self.named_parameters():
            if name.endswith(("attn.o.weight", "mlp.down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def hidden_states(self, input_ids: torch.Tensor, cache: KVCache | None = None,
                      attention_mask: torch.Tensor | None = None,
                      position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The final-RMSNorm states ``(B, T, C)`` that the output head reads (causal).

        Args:
            input_ids: Token ids ``(B, T)``; with a ``cache``, the positions after the cached ones.
            cache: Keys/values of earlier positions (:meth:`new_cache`), extended in place.
            attention_mask: With a ``cache``: ``(B, T)``, 1 on real tokens of right-padded rows.
            position_ids: Rows packed with documents (no cache): ``(B, T)``, each token's position
                in its document, 0 where one starts (RoPE restarts there); a token sees its own
                document only.
        """
        ragged = self.ragged_span(input_ids, cache, attention_mask, position_ids)
        if ragged is None:
            start, T = self.span(input_ids, cache)
            cos, sin = self.rotary(T, start)  # (T, D) each: the angles of positions start .. start + T - 1
            mask = None
        else:
            positions, mask = ragged
            cos, sin = self.rotary.cos[positions][:, None], self.rotary.sin[positions][:, None]  # (B, 1, T, D)
        x = self.drop(self.wte(input_ids))  # (B, T, C)
        for layer, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, layer, mask)
        return self.ln_f(x)

    def grow_vocab(self, embeddings: torch.Tensor) -> None:
        """Replace the token embedding by ``embeddings``, which has more rows: new tokens (an
        untied head grows too, its new rows the new embeddings)."""
        old_head = self.lm_head.weight.detach()
        self.wte = nn.Embedding.from_pretrained(embeddings.detach().clone(), freeze=False)
        self.lm_head = nn.Linear(self.config.d_model, embeddings.shape[0], bias=False)
        if self.config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        else:
            with torch.no_grad():
                self.lm_head.weight.copy_(torch.cat([old_head, embeddings[old_head.shape[0]:]], 0))
        self.config.vocab_size = embeddings.shape[0]

    def num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters, a tied embedding counted once.

        Args:
            non_embedding: Leave out the token embedding (kept when it is the output head too).
        """
        n = sum(p.numel() for p in self.parameters())
        return n - self.wte.weight.numel() if non_embedding and not self.config.tie_embeddings else n
