{%- set family = cookiecutter._families[cookiecutter.family] -%}
{%- set layers = {
    "GPT": "`self.net.blocks[i]`",
    "Llama": "`self.net.blocks[i]`",
    "Bert": "`self.net.blocks[i]`",
    "Electra": "`self.net.discriminator.blocks[i]` or `.generator.blocks[i]`",
    "T5": "`self.net.encoder.blocks[i]` or `.decoder.blocks[i]`",
    "Elmo": "`self.net.char_cnn`, `self.net.forward_lm.layers[i]`",
}[family.net] -%}
"""The model of {{ cookiecutter.project_name }}: lmforge's {{ family.task }} with your changes.

``configs/pretrain.yaml`` selects it (``model.class_path: {{ cookiecutter.project_slug }}.model.Task``).
Its checkpoints name this class, so ``lmforge predict|validate --ckpt_path ...`` rebuild it.
"""

from __future__ import annotations

from typing import Any

import torch

from lmforge.tasks import {{ family.task }}


class Task({{ family.task }}):
    """{{ family.title }}: lmforge's task, ready for your changes.

    Every option of ``lmforge.tasks.{{ family.task }}`` (``config``, ``optimizer``,
    ``init_from``, ...) passes through ``**kwargs`` and stays an option of the config and
    the command line. Add your own options as arguments, documented here: they become
    ``--model.init_args.<name>`` and are saved in every checkpoint.

    Args:
        log_grad_norm: Log the gradients' total L2 norm before each optimizer step as
            ``train/grad_norm`` (an example option: keep, change or remove it).
        **kwargs: Options of ``lmforge.tasks.{{ family.task }}``.
    """

    def __init__(self, log_grad_norm: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log_grad_norm = log_grad_norm
        # The network is `self.net`, an `lmforge.models.{{ family.net }}` built from `config`. Change the
        # architecture here: replace or wrap its layers, {{ layers }},
        # or build a subclass of `lmforge.models.{{ family.net }}` instead. Weights of another
        # architecture no longer load with `init_from`; `lmforge export` writes lmforge's layout.

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        # Change the training loss here, e.g. add an auxiliary term:
        #   loss = loss + 0.01 * my_regulariser(self.net)
        #   self.log("train/my_regulariser", ...)
        # `batch` is what the objective made of the corpus: {{ "input_ids and targets" if cookiecutter.family in ["gpt", "llama"] else "see lmforge.objectives" }}.
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.log_grad_norm:
            norms = [p.grad.detach().norm() for p in self.parameters() if p.grad is not None]
            if norms:
                self.log("train/grad_norm", torch.linalg.vector_norm(torch.stack(norms)))
