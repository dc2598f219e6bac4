"""Compute-optimal sizing from a fitted scaling law ``L(N, D) = E + A / N^alpha + B / D^beta``.

``N`` counts all of a decoder's parameters, embeddings included (as Hoffmann et al. 2022 did),
``D`` its training tokens, and a run costs ``C = 6 N D`` FLOPs. Plain arithmetic: no torch, no
Lightning; ``lmforge plan`` and the line at the start of ``fit`` read it.
"""

from __future__ import annotations

from dataclasses import dataclass

FLOPS_PER_PARAM_TOKEN = 6  # forward 2 + backward 4 multiply-adds per weight and token (Kaplan et al. 2020)
TOKENS_PER_PARAM_RULE = 20  # the rule of thumb read off Chinchilla (70B parameters, 1.4T tokens)
DECODER_FAMILIES = ("gpt", "llama")  # next-token predictors: the setting the fits were made in


@dataclass(frozen=True)
class ScalingLaw:
    """A fit of ``L(N, D) = E + A / N^alpha + B / D^beta`` (loss in nats per token).

    Args:
        E: The irreducible loss.
        A: The coefficient of the parameter term.
        B: The coefficient of the data term.
        alpha: The exponent of the parameters.
        beta: The exponent of the tokens.
        source: Where the numbers come from.
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str = ""

    def loss(self, params: float, tokens: float) -> float:
        """The predicted loss of ``params`` parameters trained on ``tokens`` tokens.

        Args:
            params: Parameters N, embeddings included.
            tokens: Training tokens D.
        """
        return self.E + self.A / params**self.alpha + self.B / tokens**self.beta

    @property
    def G(self) -> float:
        """``(alpha A / (beta B))^(1 / (alpha + beta))``: the scale of the optimum."""
        return (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))

    def optimal_params(self, flops: float) -> float:
        """``N_opt = G (C/6)^(beta / (alpha + beta))``, the loss-minimising size at ``flops``.

        Args:
            flops: The compute budget C in FLOPs.
        """
        return self.G * (flops / FLOPS_PER_PARAM_TOKEN) ** (self.beta / (self.alpha + self.beta))

    def optimal_flops(self, params: float) -> float:
        """The budget C at which ``params`` is the compute-optimal size (:meth:`optimal_params` inverted).

        Args:
            params: Parameters N.
        """
        return FLOPS_PER_PARAM_TOKEN * (params / self.G) ** ((self.alpha + self.beta) / self.beta)

    def optimal_tokens(self, flops: float) -> float:
        """``D_opt = G^-1 (C/6)^(alpha / (alpha + beta))``, so that ``6 N_opt D_opt = C``.

        Args:
            flops: The compute budget C in FLOPs.
        """
        return (flops / FLOPS_PER_PARAM_TOKEN) ** (self.alpha / (self.alpha + self.beta)) / self.G


FITS: dict[str, ScalingLaw] = {
    # Besiroglu, Erdil, Barnett, You 2024, "Chinchilla Scaling: A replication attempt" (arXiv:2404.10102):
    # Hoffmann et al.'s approach 3 refitted on their data; consistent with their approaches 1 and 2
    "besiroglu": ScalingLaw(1.8172, 482.01, 2085.43, 0.3478, 0.3658,
                            "Besiroglu et al. 2024 (Chinchilla replicated)"),
    # Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", approach 3 (eq. 10)
    "chinchilla": ScalingLaw(1.69, 406.4, 410.7, 0.34, 0.28, "Hoffmann et al. 2022, Chinchilla's approach 3"),
}
DEFAULT_FIT = "besiroglu"


def training_flops(params: float, tokens: float) -> float:
    """``C = 6 N D``: the FLOPs of training ``params`` parameters on ``tokens`` tokens.

    Args:
        params: Parameters N.
        tokens: Training tokens D.
    """
    return FLOPS_PER_PARAM_TOKEN * params * tokens


def human(n: float) -> str:
    """``1.23 B``, ``45.6 M``, ``7.8 K``: a count in three significant figures.

    Args:
        n: The count.
    """
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.3g}"


def budget_line(params: int, tokens: int | None, decoder: bool = True, fit: str = DEFAULT_FIT) -> str:
    """One line for the start of a run: its tokens per parameter against the compute-optimal
    ratio ``D_opt / N_opt`` at the run's own compute ``6 N D`` (the ``fit``'s law).

    Args:
        params: The model's parameters.
        tokens: The run's training tokens; None when unknown (no ``trainer.max_steps``).
        decoder: Whether the model predicts the next token (the fit's setting); else the
            comparison is an order of magnitude only.
        fit: A key of :data:`FITS`.
    """
    if tokens is None:
        return (f"Tokens per parameter: unknown ({human(params)} parameters, but trainer.max_steps is not set), "
                "so no comparison with the compute-optimal ratio.")
    law, flops = FITS[fit], training_flops(params, tokens)
    optimal = law.optimal_tokens(flops) / law.optimal_params(flops)
    caveat = "" if decoder else "; a decoder's fit: an order of magnitude for this model"
    return (f"Tokens per parameter: {tokens / params:.3g} ({human(tokens)} tokens, {human(params)} parameters); "
            f"compute-optimal at this run's {flops:.3g} FLOPs: {optimal:.3g} ({law.source}{caveat}; "
            f"lmforge plan --flops {flops:.3g}).")
