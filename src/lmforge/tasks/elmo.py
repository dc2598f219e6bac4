"""ELMo pretraining: a forward and a backward LSTM language model over a shared token
representation; ``predict`` writes ELMo embeddings for downstream use."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tokenizers import decoders

from lmforge.tokenizer import Tokenizer, byte_level_alphabet
from lmforge.errors import UserError
from lmforge.models.elmo import Elmo, ElmoConfig, ScalarMix, char_ids
from lmforge.objectives import BidirectionalLM
from lmforge.objectives.masked_lm import WORD_START_MARKERS
from lmforge.tasks.arrays import check_array_file, save_arrays
from lmforge.tasks.base import OptimizerConfig
from lmforge.tasks.pretraining import PretrainingTask


def token_char_ids(tokenizer: Tokenizer, max_chars: int) -> torch.Tensor:
    """The spelling of every token id as character ids ``(vocab_size, max_chars)`` (see
    :func:`lmforge.models.elmo.char_ids`), word-boundary markers (``Ġ``, ``▁``, ``##``) turned
    into the start marker of a word or of a piece that continues one.

    Args:
        tokenizer: The tokenizer whose vocabulary to spell.
        max_chars: Characters per token, two markers included.
    """
    backend = tokenizer.backend
    vocab = backend.get_vocab(with_added_tokens=True)
    special = {token.content for token in backend.get_added_tokens_decoder().values() if token.special}
    wordpiece = any(token.startswith("##") for token in vocab)
    byte_level = byte_level_alphabet() if isinstance(backend.decoder, decoders.ByteLevel) else {}
    table = torch.zeros(tokenizer.vocab_size, max_chars, dtype=torch.long)
    for token, token_id in vocab.items():
        if token in special:
            table[token_id] = torch.tensor(char_ids(token, max_chars, special=True))
            continue
        if wordpiece:
            continues, spelling = token.startswith("##"), token.removeprefix("##").encode("utf-8")
        elif byte_level and all(c in byte_level for c in token):
            spelling = bytes(byte_level[c] for c in token)  # the real bytes, "Ġ" being a space
            continues = not spelling.startswith(b" ")
            spelling = spelling if continues else spelling[1:]
        else:
            continues = not token.startswith(WORD_START_MARKERS)
            spelling = (token if continues else token[1:]).encode("utf-8")
        table[token_id] = torch.tensor(char_ids(spelling, max_chars, continues_word=continues))
    return table


def sampled_softmax_loss(
    hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, num_sampled: int
) -> torch.Tensor:
    """Cross-entropy of each target against ``num_sampled`` negatives shared by the batch
    (Jean et al. 2015), instead of against the whole vocabulary.

    Negatives are drawn uniformly without replacement, so every class has the same chance of
    being drawn and the logQ correction of sampled softmax cancels out (the paper's code draws
    log-uniformly from a word list sorted by frequency; subword ids are not so sorted); a
    negative equal to a row's target is masked out of that row. With ``num_sampled >= vocab_size`` it is the
    full softmax; with fewer negatives it is never larger than it.

    Args:
        hidden: Softmax inputs ``(N, P)``.
        targets: Target ids ``(N,)``.
        weight: Softmax weights ``(V, P)``.
        bias: Softmax biases ``(V,)``.
        num_sampled: Negatives to draw.
    """
    V = weight.size(0)
    negatives = torch.randperm(V, device=weight.device)[:num_sampled]  # (K,)
    true_logits = (hidden * weight[targets]).sum(-1) + bias[targets]  # (N,)
    negative_logits = hidden @ weight[negatives].T + bias[negatives]  # (N, K)
    negative_logits = negative_logits.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([true_logits[:, None], negative_logits], dim=1)  # (N, 1 + K): the target is class 0
    return F.cross_entropy(logits, targets.new_zeros(targets.shape))


class ElmoTask(PretrainingTask):
    """Pretrain ELMo's biLM; ``predict`` writes ELMo embeddings of texts.

    The loss is the mean of the forward LM's next-token and the backward LM's previous-token
    cross-entropy. Validation always scores the full softmax: ``val/loss`` (the mean),
    ``val/loss_forward``, ``val/loss_backward``, their perplexities ``val/ppl_forward``,
    ``val/ppl_backward`` (and ``val/ppl`` of the mean), and ``val/acc`` over both directions.

    ``predict`` reads every text with an end-of-document token on either side (as a document
    sits in the training stream) and writes to ``embeddings_out`` (``.safetensors`` or ``.npz``),
    for N texts of at most T_max tokens, L layers and projection size P:

    - ``layers`` ``(N, L + 1, T_max, 2P)``: layer 0 is the token representation twice, layer j
      the forward and backward LMs' j-th layers side by side; zero after a text's end;
    - ``mix`` ``(N, T_max, 2P)``: ``mix_gamma * sum_j softmax(mix_weights)_j * layers[:, j]``;
    - ``input_ids`` ``(N, T_max)``: the token ids (padding id after the end), ``lengths`` ``(N,)``;
    - ``mix_weights`` ``(L + 1,)`` (normalised) and ``mix_gamma`` ``()`` as used.

    Args:
        config: The network's shape (``vocab_size`` and ``max_seq_len`` come from the data).
        optimizer: Optimizer and learning-rate schedule.
        init_from: Start from pretrained weights (weights only: a fresh optimizer, schedule and
            data position): an lmforge ``.ckpt``, a Hugging Face model folder, or ``hf:<model id>``
            (an lmforge ELMo). The network's shape and the tokenizer come with the weights.
        sampled_softmax: Train each direction's softmax on the target and this many negatives
            shared by the batch instead of the whole vocabulary (the paper: 8192 of 793k words);
            ``None`` for the full softmax.
        prompts: Texts to embed in ``predict`` (``--model.prompts "A sentence."``).
        prompt_file: A text file of texts to embed in ``predict``, one per line.
        embeddings_out: Where ``predict`` writes the embeddings (``.safetensors`` or ``.npz``).
        mix_weights: Unnormalised scalar-mix weights, one per layer (L + 1), e.g. learned by a
            downstream model; ``None`` averages the layers uniformly.
        mix_gamma: Scale of the scalar mix.
        compile: Compile the network with ``torch.compile`` when training starts (each transformer block
            once); checkpoints keep the plain parameter names.
    """

    network = Elmo
    prompt_example = "A sentence to embed."
    eval_parts = ("forward", "backward")

    def __init__(
        self,
        config: ElmoConfig = ElmoConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0, warmup_steps=100),
        init_from: str | None = None,
        sampled_softmax: int | None = None,
        prompts: str | list[str] | None = None,
        prompt_file: str | None = None,
        embeddings_out: str = "elmo_embeddings.safetensors",
        mix_weights: list[float] | None = None,
        mix_gamma: float = 1.0,
        compile: bool = False,
    ):
        super().__init__(optimizer, compile)
        # what predict writes is per call, not part of the model
        self._store_hparams(ignore=["prompts", "prompt_file", "embeddings_out", "mix_weights", "mix_gamma"])
        if sampled_softmax is not None and sampled_softmax < 1:
            raise UserError(
                f"sampled_softmax={sampled_softmax}: give a positive number of negatives, or null for the full softmax."
            )
        config = self.build_network(config, init_from).config
        self.objective = BidirectionalLM()
        self.sampled_softmax = sampled_softmax
        self._set_prompts(prompts, prompt_file)
        self.embeddings_out = str(check_array_file(embeddings_out, several=True))
        if mix_weights is not None and len(mix_weights) != config.n_layer + 1:
            raise UserError(
                f"mix_weights has {len(mix_weights)} values for {config.n_layer + 1} layers (token layer + "
                f"{config.n_layer} LSTM layers): give one per layer."
            )
        self.mix_weights = mix_weights
        self.mix_gamma = mix_gamma
        self._embeddings: list[tuple[torch.Tensor, torch.Tensor]] = []

    def use_tokenizer(self, tokenizer: Tokenizer) -> None:
        super().use_tokenizer(tokenizer)
        self.spell_vocabulary()  # (predict from a checkpoint gets its spellings with the weights)

    def spell_vocabulary(self) -> None:
        """Write the spelling of every token of ``tokenizer`` into the char CNN's table."""
        if self.net.config.token_repr != "char_cnn":
            return
        if self.tokenizer.vocab_size != self.net.config.vocab_size:
            raise UserError(
                f"The tokenizer has {self.tokenizer.vocab_size} tokens but the model {self.net.config.vocab_size}: "
                "leave `model.config.vocab_size` to the data."
            )
        self.net.token_chars.copy_(token_char_ids(self.tokenizer, self.net.config.max_chars))

    def flops_per_token(self, seq_len: int | None = None) -> float:
        return self.net.flops_per_token(self.sampled_softmax)  # an LSTM's cost per token does not grow with length

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(input_ids)

    # -- training and evaluation ----------------------------------------------------------
    def _direction_losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Training losses of the forward and backward LM (sampled softmax if configured)."""
        hidden = [h.flatten(0, 1) for h in self.net.softmax_inputs(batch["input_ids"])]  # (B * T, P) each
        targets = [batch["forward_targets"].flatten(), batch["backward_targets"].flatten()]
        if self.sampled_softmax is None:
            return tuple(F.cross_entropy(self.net.softmax(h), t) for h, t in zip(hidden, targets))
        w, b = self.net.softmax.weight, self.net.softmax.bias
        return tuple(sampled_softmax_loss(h, t, w, b, self.sampled_softmax) for h, t in zip(hidden, targets))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        forward, backward = self._direction_losses(batch)
        loss = (forward + backward) / 2
        self.log_train(loss)
        self.log_dict({"train/loss_forward": forward, "train/loss_backward": backward}, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self.net(batch["input_ids"])  # full softmax, always
        targets = (batch["forward_targets"].flatten(), batch["backward_targets"].flatten())
        losses = [F.cross_entropy(lg.flatten(0, 1), t) for lg, t in zip(logits, targets)]
        correct = sum((lg.flatten(0, 1).argmax(-1) == t).sum() for lg, t in zip(logits, targets))
        # both directions predict every position: 2 * B * T predictions
        self.record_eval((losses[0] + losses[1]) / 2, 2 * targets[0].numel(), correct, parts=losses)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self.validation_step(batch, batch_idx)

    # -- predict: ELMo embeddings to a file -----------------------------------------------
    @torch.no_grad()
    def embed(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The token ids ``(T,)`` of ``text`` and its layer representations ``(L + 1, T, 2P)``."""
        if self.tokenizer is None:
            raise UserError("This model has no tokenizer: load it from an lmforge checkpoint (`--ckpt_path`).")
        ids = self.tokenizer.encode(text)
        eos = self.tokenizer.eos_id
        framed = torch.tensor([[eos, *ids, eos]], device=self.device)  # a document between two boundaries
        layers = self.net.layer_embeddings(framed)[:, 0, 1:-1]  # (L + 1, T, 2P)
        return torch.tensor(ids, dtype=torch.long), layers.float().cpu()

    def predict_step(self, text: str, batch_idx: int) -> str:
        self._embeddings.append(self.embed(text))
        return ""

    def on_predict_end(self) -> None:
        n, longest = len(self._embeddings), max(ids.numel() for ids, _ in self._embeddings)
        num_layers, width = self._embeddings[0][1].shape[0], self._embeddings[0][1].shape[-1]
        pad = self.tokenizer.role_id("pad")
        input_ids = torch.full((n, longest), pad if pad is not None else 0, dtype=torch.long)
        layers = torch.zeros(n, num_layers, longest, width)
        for row, (ids, reps) in enumerate(self._embeddings):
            input_ids[row, : ids.numel()] = ids
            layers[row, :, : ids.numel()] = reps
        mix = ScalarMix(num_layers, trainable=False, weights=self.mix_weights, gamma=self.mix_gamma)
        arrays = {
            "layers": layers,
            "mix": mix(layers.transpose(0, 1)),  # (N, T_max, 2P); zero padding stays zero
            "input_ids": input_ids,
            "lengths": torch.tensor([ids.numel() for ids, _ in self._embeddings]),
            "mix_weights": mix.normalized_weights(),
            "mix_gamma": mix.gamma.clone(),
        }
        path = save_arrays(self.embeddings_out, arrays)
        print(f"Wrote ELMo embeddings of {n} texts ({num_layers} layers of dimension {width}) to {path}")
        self._embeddings = []
