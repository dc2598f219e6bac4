"""ELMo: a bidirectional LSTM language model whose layers are contextual token embeddings
(Peters et al. 2018, "Deep contextualized word representations").

A token is represented by a character CNN with highway layers over its spelling (as in the
paper) or by a plain embedding of its id. A forward LM of ``n_layer`` LSTMs reads the tokens
left to right, a backward LM of ``n_layer`` other LSTMs right to left; each LSTM projects its
cells down to ``projection_size`` (LSTMP) and, from the second layer on, adds its input back
(a residual connection). Both directions share the token representation and the softmax.

The character CNN reads the spelling of each vocabulary entry from the ``token_chars``
buffer ``(vocab_size, max_chars)``, filled by whoever knows the tokenizer (the task) with
:func:`char_ids`. Since a token's representation depends on its id alone, it is computed
once per distinct id of a batch, over no more characters than the batch's longest token needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import UserError

# Character ids: 0 pads, 1..256 are the bytes of the UTF-8 spelling, then markers. A token
# opens with the marker of its kind (a word, a piece continuing a word, a special token) so
# that "the" starting a word and "the" inside one stay different inputs.
PAD_CHAR = 0
WORD_START, PIECE_START, SPECIAL_START, TOKEN_END = 257, 258, 259, 260
CHAR_VOCAB_SIZE = 261

TokenRepr = Literal["char_cnn", "embedding"]


def char_ids(spelling: str | bytes, max_chars: int, continues_word: bool = False, special: bool = False) -> list[int]:
    """The ``max_chars`` character ids of one token: start marker, bytes, end marker, padding.

    A spelling longer than ``max_chars - 2`` bytes keeps its first bytes; the end marker stays.

    Args:
        spelling: The token's text without word-boundary markers (``the``, not ``▁the``).
        max_chars: Length of the result, markers included.
        continues_word: The token continues a word (a ``##`` WordPiece, a BPE piece with no
            word-start marker) rather than starting one.
        special: The token is a special token (``</s>``, ``<pad>``, ...), never a text.
    """
    data = spelling.encode("utf-8") if isinstance(spelling, str) else spelling
    start = SPECIAL_START if special else PIECE_START if continues_word else WORD_START
    ids = [start, *(b + 1 for b in data[: max_chars - 2]), TOKEN_END]
    return ids + [PAD_CHAR] * (max_chars - len(ids))


@dataclass
class ElmoConfig:
    """Shape of an ELMo network. The defaults are the paper's (Peters et al. 2018, section 3.4:
    2 layers of 4096 cells projected to 512, a 2048-filter character CNN and 2 highway layers).

    Args:
        vocab_size: Number of token ids, the size of the softmax (linked from the tokenizer by the CLI).
        max_seq_len: Tokens per training example (linked from the data). Not a limit: LSTMs have
            no positions and run on sequences of any length.
        token_repr: How a token enters the LSTMs: ``char_cnn`` (a CNN over its characters, with
            highway layers, as in ELMo) or ``embedding`` (a learned vector per token id).
        char_dim: Width of a character embedding (char CNN).
        max_chars: Characters per token, two markers included; longer tokens are cut (char CNN).
        filters: ``[width, count]`` of each convolution of the char CNN.
        n_highway: Highway layers after the char CNN.
        n_layer: LSTM layers per direction.
        hidden_size: Memory cells of each LSTM.
        projection_size: Width of each LSTM's output (its cells projected down), of the token
            representation and of the softmax input.
        cell_clip: Clip the memory cells to ``[-cell_clip, cell_clip]`` at every step (the
            paper's code: 3). Any clip runs the LSTMs step by step instead of the fused kernel.
        proj_clip: Clip the projected outputs likewise (the paper's code: 3).
        dropout: Dropout on the input of every LSTM layer and on the softmax input.
    """

    vocab_size: int = 8192
    max_seq_len: int = 256
    token_repr: TokenRepr = "char_cnn"
    char_dim: int = 16
    max_chars: int = 50
    filters: list[tuple[int, int]] = field(
        default_factory=lambda: [(1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512), (7, 1024)]
    )
    n_highway: int = 2
    n_layer: int = 2
    hidden_size: int = 4096
    projection_size: int = 512
    cell_clip: float | None = None
    proj_clip: float | None = None
    dropout: float = 0.1


class Highway(nn.Module):
    """``g * relu(W x) + (1 - g) * x`` with a gate ``g = sigmoid(W_g x)`` that starts mostly
    closed, so the layer first passes its input through (Srivastava et al. 2015).

    Args:
        width: Width of the input and output.
    """

    def __init__(self, width: int):
        super().__init__()
        self.transform = nn.Linear(width, width)
        self.gate = nn.Linear(width, width)
        nn.init.constant_(self.gate.bias, -2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.gate(x))
        return g * F.relu(self.transform(x)) + (1 - g) * x


class CharCNN(nn.Module):
    """Token vectors from character ids: embeddings, convolutions max-pooled over the
    characters, highway layers and a linear projection (Kim et al. 2016; ELMo).

    Args:
        config: The network's shape.
    """

    def __init__(self, config: ElmoConfig):
        super().__init__()
        self.embedding = nn.Embedding(CHAR_VOCAB_SIZE, config.char_dim, padding_idx=PAD_CHAR)
        self.convs = nn.ModuleList(nn.Conv1d(config.char_dim, count, width) for width, count in config.filters)
        width = sum(count for _, count in config.filters)
        self.highways = nn.ModuleList(Highway(width) for _ in range(config.n_highway))
        self.proj = nn.Linear(width, config.projection_size)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        x = self.embedding(chars).transpose(1, 2)  # (N, char_dim, max_chars)
        x = torch.cat([F.relu(conv(x).amax(dim=-1)) for conv in self.convs], dim=-1)  # (N, n_filters)
        for highway in self.highways:
            x = highway(x)
        return self.proj(x)  # (N, P)


class LSTMLayer(nn.LSTM):
    """One LSTM layer with a projection (LSTMP), batch first: ``(B, T, in)`` to ``(B, T, P)``.

    Without clipping it is ``nn.LSTM`` (cuDNN/oneDNN kernels). With ``cell_clip`` or
    ``proj_clip`` it runs step by step on the same parameters, clipping as the paper's code does.

    Args:
        input_size: Width of the input.
        hidden_size: Memory cells.
        proj_size: Width of the output (the cells' projection).
        cell_clip: Bound of the memory cells at every step; ``None`` for none.
        proj_clip: Bound of the projected output at every step; ``None`` for none.
    """

    def __init__(
        self, input_size: int, hidden_size: int, proj_size: int, cell_clip: float | None = None,
        proj_clip: float | None = None,
    ):
        super().__init__(input_size, hidden_size, batch_first=True, proj_size=proj_size)
        self.cell_clip = cell_clip
        self.proj_clip = proj_clip
        with torch.no_grad():  # forget gate bias 1 (gate order: input, forget, cell, output)
            self.bias_ih_l0[hidden_size : 2 * hidden_size].fill_(1.0)
            self.bias_hh_l0[hidden_size : 2 * hidden_size].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.cell_clip is None and self.proj_clip is None:
            return super().forward(x)[0]
        B, T, _ = x.shape
        gates_x = F.linear(x, self.weight_ih_l0, self.bias_ih_l0)  # (B, T, 4H): the inputs' part, all steps at once
        h = x.new_zeros(B, self.proj_size)
        c = x.new_zeros(B, self.hidden_size)
        outputs = []
        for t in range(T):
            gates = gates_x[:, t] + F.linear(h, self.weight_hh_l0, self.bias_hh_l0)  # (B, 4H)
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            if self.cell_clip is not None:
                c = c.clamp(-self.cell_clip, self.cell_clip)
            h = F.linear(torch.sigmoid(o) * torch.tanh(c), self.weight_hr_l0)  # (B, P)
            if self.proj_clip is not None:
                h = h.clamp(-self.proj_clip, self.proj_clip)
            outputs.append(h)
        return torch.stack(outputs, dim=1)  # (B, T, P)


class LSTMStack(nn.Module):
    """``n_layer`` LSTM layers reading left to right, residual from the second layer on.

    Args:
        config: The network's shape.
    """

    def __init__(self, config: ElmoConfig):
        super().__init__()
        P = config.projection_size
        self.layers = nn.ModuleList(
            LSTMLayer(P, config.hidden_size, P, config.cell_clip, config.proj_clip) for _ in range(config.n_layer)
        )
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every layer, each ``(B, T, P)``."""
        outputs = []
        for i, layer in enumerate(self.layers):
            y = layer(self.drop(x))
            x = y if i == 0 else y + x
            outputs.append(x)
        return outputs


class ScalarMix(nn.Module):
    """ELMo's task-specific combination of layers: ``gamma * sum_j softmax(s)_j * layer_j``.

    Args:
        num_layers: Number of layers mixed.
        trainable: Learn ``s`` and ``gamma`` (a downstream model trains them); otherwise they
            are fixed buffers.
        weights: Initial unnormalised weights ``s``, one per layer; ``None`` for equal ones
            (the uniform average).
        gamma: Initial scale of the mix.
    """

    def __init__(self, num_layers: int, trainable: bool = True, weights: list[float] | None = None, gamma: float = 1.0):
        super().__init__()
        if weights is not None and len(weights) != num_layers:
            raise UserError(
                f"The scalar mix has {num_layers} layers but {len(weights)} weights were given: give one per layer."
            )
        s = torch.tensor(weights if weights is not None else [0.0] * num_layers, dtype=torch.float32)
        g = torch.tensor(float(gamma))
        if trainable:
            self.weights, self.gamma = nn.Parameter(s), nn.Parameter(g)
        else:
            self.register_buffer("weights", s)
            self.register_buffer("gamma", g)

    def normalized_weights(self) -> torch.Tensor:
        return torch.softmax(self.weights, dim=0)

    def forward(self, layers: torch.Tensor) -> torch.Tensor:
        """Mix ``layers`` ``(num_layers, ..., C)`` into ``(..., C)``."""
        w = self.normalized_weights().to(layers.dtype).view(-1, *([1] * (layers.dim() - 1)))
        return self.gamma.to(layers.dtype) * (w * layers).sum(dim=0)


class Elmo(nn.Module):
    """The biLM: token ids ``(B, T)`` to next-token logits of the forward LM and previous-token
    logits of the backward LM, each ``(B, T, vocab_size)``.

    Position ``t`` of the forward LM has read tokens ``0..t`` and predicts token ``t + 1``;
    position ``t`` of the backward LM has read tokens ``t..T-1`` and predicts token ``t - 1``.

    Args:
        config: The network's shape.
    """

    family = "elmo"
    config_class = ElmoConfig
    heads = ("softmax",)  # the biLM's shared softmax
    poolings = ("mean",)
    max_positions = None  # LSTMs: no length limit

    def __init__(self, config: ElmoConfig):
        super().__init__()
        _check(config)
        self.config = config
        P = config.projection_size
        if config.token_repr == "char_cnn":
            self.char_cnn = CharCNN(config)
            # the spelling of every token id: filled from the tokenizer, saved with the weights
            self.register_buffer("token_chars", torch.zeros(config.vocab_size, config.max_chars, dtype=torch.long))
        else:
            self.embedding = nn.Embedding(config.vocab_size, P)
        self.forward_lm = LSTMStack(config)
        self.backward_lm = LSTMStack(config)
        self.drop = nn.Dropout(config.dropout)
        self.softmax = nn.Linear(P, config.vocab_size)  # shared by both directions

    def token_representation(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The context-free vector of every token, ``(B, T)`` to ``(B, T, P)``."""
        if self.config.token_repr == "embedding":
            return self.embedding(input_ids)
        # a token's vector depends on its id alone: run the CNN once per distinct id
        distinct, where = input_ids.unique(return_inverse=True)
        chars = self.token_chars[distinct]  # (U, max_chars)
        # every window wholly inside the padding gives the same value: keep one per filter,
        # cut the rest (most tokens are far shorter than max_chars), the result is unchanged
        longest = int((chars != PAD_CHAR).sum(-1).max())
        chars = chars[:, : longest + max(width for width, _ in self.config.filters)]
        return self.char_cnn(chars)[where]  # (B, T, P)

    def encode(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """The token representation ``(B, T, P)`` and the output of every layer of the forward
        and of the backward LM, each ``(B, T, P)``, aligned with the input positions."""
        x = self.token_representation(input_ids)
        forward = self.forward_lm(x)
        backward = [h.flip(1) for h in self.backward_lm(x.flip(1))]  # read right to left, realigned
        return x, forward, backward

    def softmax_inputs(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The top layer of the forward and of the backward LM after dropout, each ``(B, T, P)``:
        what the shared softmax scores."""
        _, forward, backward = self.encode(input_ids)
        return self.drop(forward[-1]), self.drop(backward[-1])

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        forward, backward = self.softmax_inputs(input_ids)
        return self.softmax(forward), self.softmax(backward)  # (B, T, V) each

    def layer_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        """ELMo's representations ``(n_layer + 1, B, T, 2P)``: layer 0 is the token representation
        twice (so every layer has the same width), layer ``j`` joins the forward and backward LMs'
        ``j``-th layers."""
        x, forward, backward = self.encode(input_ids)
        layers = [torch.cat([x, x], dim=-1)] + [torch.cat(pair, dim=-1) for pair in zip(forward, backward)]
        return torch.stack(layers)

    def padded_layer_embeddings(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """:meth:`layer_embeddings` of right-padded rows: the backward LM reads each row from its
        last real token leftwards, so no real position's state depends on the padding (the
        forward LM reaches the padding only after the real tokens). ``attention_mask`` (B, T)
        is 1 for real tokens; padded positions hold states of no meaning."""
        B, T = input_ids.shape
        lengths = attention_mask.long().sum(1, keepdim=True)  # (B, 1)
        pos = torch.arange(T, device=input_ids.device).expand(B, T)
        # reverse the real part of every row and leave the padding in place: its own inverse
        order = torch.where(pos < lengths, lengths - 1 - pos, pos)  # (B, T)
        x = self.token_representation(input_ids)  # (B, T, P)
        forward = self.forward_lm(x)

        def reverse(h: torch.Tensor) -> torch.Tensor:
            return h.gather(1, order.unsqueeze(-1).expand_as(h))

        backward = [reverse(h) for h in self.backward_lm(reverse(x))]
        layers = [torch.cat([x, x], dim=-1)] + [torch.cat(pair, dim=-1) for pair in zip(forward, backward)]
        return torch.stack(layers)  # (L + 1, B, T, 2P)

    def token_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Every layer's states ``(L + 1, B, T, 2P)`` for a downstream scalar mix (:meth:`padded_layer_embeddings`)."""
        return self.padded_layer_embeddings(input_ids, attention_mask)

    @property
    def state_layers(self) -> int:
        """Layers :meth:`token_states` gives: the token layer and every LSTM layer."""
        return self.config.n_layer + 1

    @property
    def state_width(self) -> int:
        return 2 * self.config.projection_size  # forward and backward LM side by side

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, softmax_size: int | None = None) -> float:
        """Training FLOPs per token (forward + backward, 6 per weight use) of both LMs' LSTMs and
        softmaxes. The char CNN, run once per distinct token of a batch, is left out.

        Args:
            softmax_size: Classes the softmax scores per token (sampled softmax); ``None`` for all.
        """
        c = self.config
        P, H = c.projection_size, c.hidden_size
        lstm = c.n_layer * (4 * H * (P + P) + H * P)  # input and recurrent gates, projection
        softmax = P * (softmax_size or c.vocab_size)
        return 6.0 * 2 * (lstm + softmax)  # two directions


def _check(config: ElmoConfig) -> None:
    """Refuse shapes the network cannot have, naming the key to change."""
    if config.projection_size >= config.hidden_size:
        raise UserError(
            f"projection_size={config.projection_size} must be smaller than hidden_size={config.hidden_size} "
            "(the LSTMs project their cells down): lower it."
        )
    if config.n_layer < 1:
        raise UserError(f"n_layer={config.n_layer}: an ELMo needs at least one LSTM layer per direction.")
    if config.token_repr == "char_cnn":
        if not config.filters:
            raise UserError("The char CNN has no filters: give `filters` as [[width, count], ...].")
        widest = max(width for width, _ in config.filters)
        if config.max_chars < max(widest, 3):
            raise UserError(
                f"max_chars={config.max_chars} is shorter than the widest filter ({widest}) or than two markers "
                "and a character: raise it."
            )
