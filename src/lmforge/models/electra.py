"""ELECTRA: a discriminator encoder trained to tell which tokens a small masked-LM generator
replaced (Clark et al. 2020, replaced-token detection).

Both are BERT encoders (:class:`~lmforge.models.bert.Bert`) with factorised embeddings; the
generator is narrower (a quarter of the discriminator's width for ELECTRA-Small, a third for
Base) and has the MLM head, the discriminator has ``discriminator_head`` (``Linear -> GELU ->
Linear`` to one logit per token, as HF's ``ElectraDiscriminatorPredictions``). As in the paper's
code, the two share one embedding layer: the token, position and segment embeddings and their
LayerNorm are the same parameters in both; each projects them to its own width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import UserError
from lmforge.models.bert import Bert, BertConfig
from lmforge.models.layers import init_weights

SHARED = ("wte", "wpe", "wse", "ln_emb")  # the embedding layer both networks read


@dataclass
class ElectraConfig:
    """Shape of an ELECTRA discriminator and its generator (defaults: ELECTRA-Small).

    Args:
        vocab_size: Number of token ids (linked from the tokenizer by the CLI).
        max_seq_len: Longest input, in tokens (linked from the data).
        n_layer: Discriminator's Transformer blocks.
        n_head: Discriminator's attention heads.
        d_model: Discriminator's width (HF ``hidden_size``).
        d_ff: Discriminator's MLP width; ``None`` means ``4 * d_model``.
        embedding_size: Width of the shared embeddings (projected to each network's width when
            it differs); ``None``: ``d_model``.
        generator_d_model: Generator's width; ``None``: a quarter of ``d_model`` (the paper's
            Small; Base takes a third). No wider than the discriminator.
        generator_n_head: Generator's attention heads; ``None``: one per 64 of its width (at least one).
        generator_d_ff: Generator's MLP width; ``None``: 4 times its width.
        generator_n_layer: Generator's blocks; ``None``: ``n_layer``, as in the paper.
        dropout: Dropout on embeddings, attention and residual branches.
        type_vocab_size: Number of segment ids.
        norm_eps: LayerNorm epsilon.
        pre_norm: Pre-LayerNorm blocks and a final LayerNorm in both networks (see
            :class:`~lmforge.models.bert.BertConfig`; cramming's choice); ``export`` refuses it.
        bias: Whether both networks' attention and MLP linear layers have biases; ``export`` refuses ``false``.
    """

    vocab_size: int = 30522
    max_seq_len: int = 512
    n_layer: int = 12
    n_head: int = 4
    d_model: int = 256
    d_ff: int | None = None
    embedding_size: int | None = 128
    generator_d_model: int | None = None
    generator_n_head: int | None = None
    generator_d_ff: int | None = None
    generator_n_layer: int | None = None
    dropout: float = 0.1
    type_vocab_size: int = 2
    norm_eps: float = 1e-12
    pre_norm: bool = False
    bias: bool = True

    def __post_init__(self) -> None:
        if self.generator_d_model is not None and self.generator_d_model > self.d_model:
            raise UserError(f"config.generator_d_model={self.generator_d_model} is wider than the discriminator's "
                            f"d_model={self.d_model}: ELECTRA's generator is the smaller network (the paper takes "
                            "a quarter to a third of the width); lower it.")

    def discriminator(self) -> BertConfig:
        """The discriminator's shape: an encoder without MLM or NSP head."""
        return BertConfig(vocab_size=self.vocab_size, max_seq_len=self.max_seq_len, n_layer=self.n_layer,
                          n_head=self.n_head, d_model=self.d_model, d_ff=self.d_ff, dropout=self.dropout,
                          type_vocab_size=self.type_vocab_size, norm_eps=self.norm_eps, nsp_head=False,
                          embedding_size=self.embedding_size or self.d_model, mlm_head=False,
                          pre_norm=self.pre_norm, bias=self.bias)

    def generator(self) -> BertConfig:
        """The generator's shape: a narrower masked-LM encoder on the same embeddings."""
        width = self.generator_d_model or max(1, self.d_model // 4)
        return BertConfig(vocab_size=self.vocab_size, max_seq_len=self.max_seq_len,
                          n_layer=self.generator_n_layer or self.n_layer,
                          n_head=self.generator_n_head or max(1, width // 64), d_model=width,
                          d_ff=self.generator_d_ff or 4 * width, dropout=self.dropout,
                          type_vocab_size=self.type_vocab_size, norm_eps=self.norm_eps, nsp_head=False,
                          embedding_size=self.embedding_size or self.d_model, pre_norm=self.pre_norm, bias=self.bias)


class DiscriminatorHead(nn.Module):
    """``Linear -> GELU -> Linear``: one logit per token, "replaced" when positive.

    Args:
        config: The discriminator's shape (its width ``d_model``).
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.out = nn.Linear(config.d_model, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.dense(hidden))).squeeze(-1)  # (..., C) -> (...)


class Electra(nn.Module):
    """The ELECTRA generator and discriminator, sharing their embeddings.

    Downstream (fine-tuning, ``lmforge evaluate``) the discriminator is the encoder:
    :meth:`encoder` gives it as a BERT network with its weights.

    Args:
        config: The networks' shape.
    """

    family = "electra"
    config_class = ElectraConfig
    # what a source may lack and start fresh (named in one log line): a discriminator alone has no generator
    heads = ("discriminator_head", "generator")
    poolings = ("cls", "mean")
    state_layers = None

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.config = config
        self.discriminator = Bert(config.discriminator())
        self.generator = Bert(config.generator())
        for name in SHARED:  # one module, so one parameter each: the paper's tied embeddings
            setattr(self.generator, name, getattr(self.discriminator, name))
        self.discriminator_head = DiscriminatorHead(self.discriminator.config)
        self.discriminator_head.apply(init_weights)
        self.state_width, self.max_positions = config.d_model, config.max_seq_len

    def discriminate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Replaced-token logits ``(B, T)``; the arguments are :meth:`Bert.encode`'s."""
        hidden = self.discriminator.encode(input_ids, attention_mask, token_type_ids, position_ids)  # (B, T, C)
        return self.discriminator_head(hidden)

    def token_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The discriminator's token states ``(B, T, C)``."""
        return self.discriminator.token_states(input_ids, attention_mask, token_type_ids)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Replaced-token logits ``(B, T)`` of the discriminator."""
        return self.discriminate(input_ids, attention_mask)

    @classmethod
    def encoder(cls, config: ElectraConfig,
                state: dict[str, torch.Tensor]) -> tuple[type[Bert], BertConfig, dict[str, torch.Tensor]]:
        """The discriminator as a BERT encoder: its network class, shape and weights, taken from
        ``state`` (this network's); what downstream tasks fine-tune.

        Args:
            config: This network's config.
            state: This network's state dict.
        """
        prefix = "discriminator."
        return Bert, config.discriminator(), {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

    def num_params(self) -> int:
        """Parameters of both networks, the shared embeddings counted once."""
        return sum(p.numel() for p in self.parameters())

    def discriminator_params(self) -> int:
        """Parameters of the discriminator with its head, as Hugging Face counts ``ElectraForPreTraining``."""
        return self.discriminator.num_params() + sum(p.numel() for p in self.discriminator_head.parameters())

    def flops_per_token(self, seq_len: int, predicted: float = 1.0) -> float:
        """Training FLOPs per token (6N + attention for each network), the embedding lookups
        excluded and the generator's MLM head counted on the ``predicted`` fraction of positions
        it runs on (sparse prediction).

        Args:
            seq_len: Tokens per sequence.
            predicted: Fraction of positions the generator predicts (the masked ones).
        """
        d, g = self.discriminator, self.generator
        lookups = d.wte.weight.numel() + d.wse.weight.numel()  # gathers, not matmuls (wpe: Bert leaves it out)
        head = sum(p.numel() for p in self.discriminator_head.parameters())
        disc = d.flops_per_token(seq_len) - 6 * lookups + 6 * head
        gen_head = sum(p.numel() for p in g.mlm_head.parameters()) + g.wte.weight.numel()
        return disc + g.flops_per_token(seq_len) - 6 * (1 - predicted) * gen_head - 6 * g.wse.weight.numel()
