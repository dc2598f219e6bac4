"""Decoder pretraining (GPT, Llama): next-token prediction, perplexity and bits per byte, and text generation."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lmforge.batching import IGNORE
from lmforge.errors import UserError
from lmforge.models.gpt import GPT, GPTConfig
from lmforge.models.llama import Llama, LlamaConfig
from lmforge.objectives import CausalLM
from lmforge.tasks.base import OptimizerConfig
from lmforge.tasks.pretraining import GENERATION_ARGS, PretrainingTask


class CausalLMTask(PretrainingTask):
    """Pretrain a GPT on next-token prediction; ``predict`` generates text from prompts.

    The task class declares its network (``network``; its config class comes with it), so
    :class:`LlamaCausalLMTask` is this task with a Llama, and a config's ``class_path`` or a
    checkpoint's task names exactly one network and config class.

    Args:
        config: The network's shape (``vocab_size`` and ``max_seq_len`` come from the data).
        optimizer: Optimizer and learning-rate schedule.
        init_from: Start from pretrained weights (weights only: a fresh optimizer, schedule and
            data position): an lmforge ``.ckpt``, a Hugging Face model folder, or ``hf:<model id>``
            (GPT-2 or an lmforge GPT; a Llama for :class:`LlamaCausalLMTask`). The network's shape
            and the tokenizer come with the weights.
        prompts: Prompts to continue in ``predict`` (``--model.prompts "Once upon"``).
        prompt_file: A text file of prompts for ``predict``, one per line.
        max_new_tokens: Tokens to generate per prompt.
        temperature: Sampling temperature; 0 decodes greedily.
        top_k: Sample among the k most likely tokens only; ``None`` for all.
        generation_seed: Seed of the sampler, for reproducible generations.
        compile: Compile the network with ``torch.compile`` when training starts (each transformer block
            once); checkpoints keep the plain parameter names.
        document_mask: Document-aware packing: a token attends only to the earlier tokens of its
            own document in a packed block, positions restart at 0 at each document, and the
            end-of-document token's target (the next document's first token) takes no loss;
            validation is masked alike. Weights and shapes are unchanged (export as usual).
    """

    network = GPT
    prompt_example = "Once upon a time"
    log_bpb = True

    def __init__(
        self,
        config: GPTConfig = GPTConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(),
        init_from: str | None = None,
        prompts: str | list[str] | None = None,
        prompt_file: str | None = None,
        max_new_tokens: int = 64,
        temperature: float = 0.8,
        top_k: int | None = 50,
        generation_seed: int = 0,
        compile: bool = False,
        document_mask: bool = False,
    ):
        super().__init__(optimizer, compile)
        self._store_hparams(ignore=GENERATION_ARGS)
        self._set_prompts(prompts, prompt_file)
        self._set_generation(max_new_tokens, temperature, top_k, generation_seed)
        self.build_network(config, init_from)
        self.objective = CausalLM(document_mask=document_mask)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.net(input_ids)

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(batch["input_ids"], position_ids=batch.get("position_ids")).flatten(0, 1)  # (B * T, V)
        return F.cross_entropy(logits, batch["targets"].flatten(), ignore_index=IGNORE), logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # the head fused with the loss: no logits kept
        loss = self.net.loss(batch["input_ids"], batch["targets"], batch.get("position_ids"))
        self.log_train(loss)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        loss, logits = self._loss(batch)
        targets = batch["targets"].flatten()
        correct = (logits.argmax(-1) == targets).sum()  # an ignored target (-100) is never right
        if "position_ids" in batch:  # document-aware: the targets across a boundary are no prediction
            targets = targets[targets != IGNORE]
        self.record_eval(loss, targets.numel(), correct, target_ids=targets)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self.validation_step(batch, batch_idx)

    # -- generation -----------------------------------------------------------------------
    def generate(self, prompt: str) -> str:
        """Continue ``prompt`` with the task's generation settings; returns prompt + continuation."""
        if self.tokenizer is None:
            raise UserError("This model has no tokenizer: load it from an lmforge checkpoint (`--ckpt_path`).")
        ids = self.tokenizer.encode(prompt) or [self.tokenizer.eos_id]
        generator = torch.Generator(device=self.device).manual_seed(self.generation_seed)
        out = self.net.generate(
            torch.tensor([ids], device=self.device),
            self.max_new_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            eos_id=self.tokenizer.eos_id,
            generator=generator,
        )
        return prompt + self.tokenizer.decode(out[0, len(ids) :].tolist())

    def sample_text(self, prompt: str) -> str | None:
        with self.evaluating():
            return self.generate(prompt)

    def predict_step(self, prompt: str, batch_idx: int) -> str:
        return self.generate(prompt)


class LlamaCausalLMTask(CausalLMTask):
    """Pretrain a Llama (grouped-query attention, RoPE, SwiGLU; also Mistral, Qwen2 and SmolLM2
    shapes) on next-token prediction: :class:`CausalLMTask` with the :class:`~lmforge.models.Llama`
    network. The network is chosen by the task class (``class_path``), as every other family's,
    so a config and a checkpoint's hyper-parameters always name one config class.

    Args:
        config: The network's shape (``vocab_size`` and ``max_seq_len`` come from the data).
        kwargs: Every other argument of :class:`CausalLMTask` (``init_from`` also takes a Hugging
            Face Llama, Mistral or Qwen2 folder or ``hf:<model id>``).
    """

    network = Llama

    def __init__(self, config: LlamaConfig = LlamaConfig(), **kwargs: Any):
        super().__init__(config, **kwargs)
