"""T5 pretraining: span corruption (or BART's text infilling) on an encoder-decoder, and
filling the sentinels of a text."""

from __future__ import annotations

import re
from typing import Literal

import torch
import torch.nn.functional as F

from lmforge.errors import UserError
from lmforge.models.t5 import T5, T5Config
from lmforge.objectives import SpanCorruption, TextInfilling
from lmforge.objectives.span_corruption import SENTINEL, sentinel_ids
from lmforge.tasks.base import OptimizerConfig
from lmforge.tasks.pretraining import GENERATION_ARGS, PretrainingTask


class SpanCorruptionTask(PretrainingTask):
    """Pretrain a T5 encoder-decoder to restore corrupted text.

    With ``noise: t5`` (span corruption, Raffel et al. 2020) the decoder writes the dropped
    spans after their sentinels; with ``noise: bart`` (text infilling, Lewis et al. 2020) it
    writes the whole original text. ``predict`` fills the sentinels ``<extra_id_0>``, ... (or
    mask tokens, for ``bart``) of given texts by decoding with a KV cache.

    Args:
        config: The network's shape (``vocab_size`` and ``max_seq_len``, the encoder input
            length, come from the data).
        optimizer: Optimizer and learning-rate schedule.
        init_from: Start from pretrained weights (weights only: a fresh optimizer, schedule and
            data position): an lmforge ``.ckpt``, a Hugging Face model folder, or ``hf:<model id>``
            (T5 or an lmforge T5). The network's shape and the tokenizer come with the weights.
        noise: ``t5`` span corruption or ``bart`` text infilling.
        noise_density: Fraction of tokens corrupted; ``None``: 0.15 for ``t5``, 0.3 for ``bart``.
        mean_noise_span_length: Mean corrupted span length (T5: 3; BART: the Poisson λ).
        masking_seed: Seed of the corruption.
        prompts: Texts with sentinels to fill in ``predict``
            (``--model.prompts "The <extra_id_0> sat on the mat."``).
        prompt_file: A text file of such texts for ``predict``, one per line.
        max_new_tokens: Most tokens the decoder writes per text.
        temperature: Sampling temperature; 0 decodes greedily.
        top_k: Sample among the k most likely tokens only; ``None`` for all.
        generation_seed: Seed of the sampler, for reproducible outputs.
        compile: Compile the network with ``torch.compile`` when training starts (each transformer block
            once); checkpoints keep the plain parameter names.
    """

    accuracy_name = "acc"  # token accuracy of the decoder's predictions
    network = T5
    prompt_example = "The <extra_id_0> sat on the <extra_id_1>."

    def __init__(
        self,
        config: T5Config = T5Config(),
        optimizer: OptimizerConfig = OptimizerConfig(lr=1e-3, betas=(0.9, 0.98), weight_decay=0.01),
        init_from: str | None = None,
        noise: Literal["t5", "bart"] = "t5",
        noise_density: float | None = None,
        mean_noise_span_length: float = 3.0,
        masking_seed: int = 0,
        prompts: str | list[str] | None = None,
        prompt_file: str | None = None,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_k: int | None = 50,
        generation_seed: int = 0,
        compile: bool = False,
    ):
        super().__init__(optimizer, compile)
        self._store_hparams(ignore=GENERATION_ARGS)
        self.build_network(config, init_from)
        if noise == "t5":
            self.objective = SpanCorruption(noise_density or 0.15, mean_noise_span_length, seed=masking_seed)
        elif noise == "bart":
            self.objective = TextInfilling(noise_density or 0.3, mean_noise_span_length, seed=masking_seed)
        else:
            raise UserError(f"Unknown noise '{noise}': use t5 (span corruption) or bart (text infilling).")
        self.noise = noise
        self._set_prompts(prompts, prompt_file)
        self._set_generation(max_new_tokens, temperature, top_k, generation_seed)

    def forward(
        self, input_ids: torch.Tensor, decoder_input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.net(input_ids, decoder_input_ids, attention_mask)

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per encoder input token, the decoder at its real (target) length."""
        seq_len = self.model_config.max_seq_len
        target = self.objective.target_length(seq_len) if self.noise == "t5" else seq_len
        return self.net.flops_per_token(seq_len, target)

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.net(batch["input_ids"], batch["decoder_input_ids"], batch.get("attention_mask"))
        logits, labels = logits.flatten(0, 1), batch["labels"].flatten()  # (B * T, V), (B * T,)
        return F.cross_entropy(logits, labels), logits, labels

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, logits, labels = self._loss(batch)
        self.log_train(loss)
        self.log("train/acc", (logits.argmax(-1) == labels).float().mean(), on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        loss, logits, labels = self._loss(batch)  # targets are never padded: every label counts
        self.record_eval(loss, labels.numel(), (logits.argmax(-1) == labels).sum())

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self.validation_step(batch, batch_idx)

    # -- filling sentinels ------------------------------------------------------------------
    def fill(self, text: str) -> str:
        """``text`` with its sentinels replaced by the decoder's spans, each in ``[...]``
        (``bart``: the decoder's rewrite of the whole text)."""
        if self.tokenizer is None:
            raise UserError("This model has no tokenizer: load it from an lmforge checkpoint (`--ckpt_path`).")
        tok = self.tokenizer
        ids = self._encode(text)[: self.net.config.max_seq_len - 1] + [tok.eos_id]
        sentinels = {token_id: i for i, token_id in enumerate(sentinel_ids(tok))}  # id -> sentinel number
        if self.noise == "t5" and not any(t in sentinels for t in ids):
            raise UserError(f"'{text}' has no sentinel to fill: mark the gaps with <extra_id_0>, <extra_id_1>, ...")
        generator = torch.Generator(device=self.device).manual_seed(self.generation_seed)
        with torch.no_grad():
            out = self.net.generate(
                torch.tensor([ids], device=self.device),
                self.max_new_tokens,
                decoder_start_id=tok.role_id("pad"),
                eos_id=tok.eos_id,
                temperature=self.temperature,
                top_k=self.top_k,
                generator=generator,
            )[0].tolist()
        if self.noise == "bart":
            return tok.decode(out)
        spans: dict[int, list[int]] = {}  # sentinel number -> the tokens the decoder wrote after it
        current = None
        for t in out:
            if t == tok.eos_id:
                break
            if t in sentinels:
                current = sentinels[t]
                spans.setdefault(current, [])
            elif current is not None:
                spans[current].append(t)
        pieces: list[str] = []
        run: list[int] = []
        for t in ids[:-1]:
            if t in sentinels:
                pieces += [tok.decode(run), f"[{tok.decode(spans.get(sentinels[t], [])).strip()}]"]
                run = []
            else:
                run.append(t)
        pieces.append(tok.decode(run))
        return " ".join(p.strip() for p in pieces if p.strip())

    def _encode(self, text: str) -> list[int]:
        """Token ids of ``text``, its sentinels and mask tokens encoded as in training: the text
        around a gap is tokenized without the spaces that separate it from the gap."""
        tok = self.tokenizer
        gaps = [SENTINEL.replace("{}", r"\d+")] + [re.escape(t) for t in ("<mask>", "[MASK]") if tok.backend.token_to_id(t)]
        ids: list[int] = []
        for piece in re.split(f"({'|'.join(gaps)})", text):
            gap = tok.backend.token_to_id(piece)
            ids += [gap] if re.fullmatch("|".join(gaps), piece) and gap is not None else tok.encode(piece.strip())
        return ids

    def sample_text(self, prompt: str) -> str | None:
        if self.noise == "t5" and SENTINEL.format(0) not in prompt:
            prompt = f"{prompt} {SENTINEL.format(0)}"  # a plain prompt: fill what follows it
        with self.evaluating():
            return self.fill(prompt)

    def predict_step(self, text: str, batch_idx: int) -> str:
        return self.fill(text)
