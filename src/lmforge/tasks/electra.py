"""ELECTRA pretraining (Clark et al. 2020): a small generator fills the masked tokens, and the
discriminator learns from every position which tokens it replaced."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.classification import BinaryAUROC
from torchmetrics.functional.classification import binary_auroc

from lmforge.errors import UserError
from lmforge.models.electra import Electra, ElectraConfig
from lmforge.objectives.masked_lm import IGNORE
from lmforge.objectives.replaced_tokens import ReplacedTokens, replace_tokens, sample_tokens
from lmforge.start import Start, open_start
from lmforge.start.hf_electra import GENERATOR_SHAPE
from lmforge.start.starting_point import with_generator
from lmforge.tasks.base import OptimizerConfig
from lmforge.tasks.pretraining import PretrainingTask


class ElectraTask(PretrainingTask):
    """Pretrain an ELECTRA discriminator with its generator (replaced-token detection).

    The generator is trained by masked LM on the masked positions (sparse prediction); its
    samples, drawn from its softmax with no gradient through the draw, replace those tokens, and
    the discriminator classifies every real token as original or replaced. The loss is the
    generator's MLM loss plus ``rtd_weight`` times the discriminator's (binary cross-entropy over
    all real positions). The draws of training steps come from the training steps' own random
    stream, which checkpoints carry (:mod:`lmforge.tasks.rng`): a resumed run draws the same
    samples. Downstream, the discriminator is the encoder (``init_from`` of a fine-tuning task).

    Args:
        config: The networks' shape (``vocab_size`` and ``max_seq_len`` come from the data).
        optimizer: Optimizer and learning-rate schedule (one for both networks, as in the paper).
        init_from: Start from ELECTRA weights (weights only): an lmforge checkpoint, or a Hugging
            Face discriminator folder (``ElectraForPreTraining``) or ``hf:<id>``, whose generator
            starts fresh in this config's ``generator_*`` shape unless ``generator_from`` gives it.
            The shape and the tokenizer come with the weights.
        generator_from: With a Hugging Face ``init_from``, the generator's folder
            (``ElectraForMaskedLM``, as ``export --generator`` writes to ``<folder>/generator``) or
            ``hf:<id>``; the discriminator's embeddings are kept (both networks share them).
        rtd_weight: Weight λ of the replaced-token-detection loss (the paper's 50); > 0.
        mask_prob: Fraction of tokens the generator fills.
        mask_token_prob: Of those, the fraction shown to the generator as the mask token (the
            others stay themselves; ELECTRA's code: 0.85).
        whole_word: Mask whole words instead of single pieces.
        masking_seed: Seed of the masks (and of the validation samples).
        compile: Compile both networks' blocks with ``torch.compile`` when training starts.
        document_mask: Keep the documents of packed blocks apart (attention and positions).
        prompts: Texts whose tokens ``predict`` marks as the discriminator reads them (``*``: replaced).
        prompt_file: A text file of such texts for ``predict``, one per line.
    """

    network = Electra
    accuracy_name = "acc_rtd"  # val/acc_rtd: the discriminator's accuracy over real tokens
    log_perplexity = False  # the loss mixes two objectives: no perplexity
    eval_parts = ("mlm", "rtd")  # val/loss_mlm, val/loss_rtd
    prompt_example = "the chef cooked the car."

    def __init__(
        self,
        config: ElectraConfig = ElectraConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(lr=5e-4, betas=(0.9, 0.999), weight_decay=0.01),
        init_from: str | None = None,
        generator_from: str | None = None,
        rtd_weight: float = 50.0,
        mask_prob: float = 0.15,
        mask_token_prob: float = 0.85,
        whole_word: bool = False,
        masking_seed: int = 0,
        compile: bool = False,
        document_mask: bool = False,
        prompts: str | list[str] | None = None,
        prompt_file: str | None = None,
    ):
        super().__init__(optimizer, compile)
        self._store_hparams(ignore=["prompts", "prompt_file"])
        if not rtd_weight > 0:  # also NaN
            raise UserError(f"model.rtd_weight={rtd_weight}: give the weight of the replaced-token-detection loss "
                            "(> 0; the paper's 50).")
        if not 0 < mask_prob < 1 or not 0 <= mask_token_prob <= 1:
            raise UserError(f"model.mask_prob={mask_prob}, model.mask_token_prob={mask_token_prob}: give a mask_prob "
                            "in (0, 1) and a mask_token_prob in [0, 1].")
        self.rtd_weight, self.masking_seed = rtd_weight, masking_seed
        self.objective = ReplacedTokens(mask_prob=mask_prob, mask_token_prob=mask_token_prob, whole_word=whole_word,
                                        seed=masking_seed, document_mask=document_mask)
        self._build(config, init_from, generator_from)
        self._set_prompts(prompts, prompt_file)
        self.val_auc = BinaryAUROC()

    def _build(self, config: ElectraConfig, init_from: str | Start | None, generator_from: str | None) -> None:
        """Build the networks from ``init_from``, its generator from ``generator_from`` when given,
        else (a Hugging Face discriminator) fresh in ``config``'s generator shape."""
        start = (open_start(init_from) if isinstance(init_from, str) else init_from) if init_from else None
        if start is None:
            if generator_from:
                raise UserError(f"model.generator_from '{generator_from}' needs the discriminator it was trained with: "
                                "give that as model.init_from.")
            self.build_network(config)
            return
        shape = {}
        if generator_from:
            start = with_generator(start.require(Electra, type(self).__name__), generator_from)
        elif start.hf_model_type is not None:  # a discriminator alone: the generator is this config's
            shape = {k: getattr(config, k) for k in GENERATOR_SHAPE if getattr(config, k) is not None}
        self.build_network(config, start, **shape)
        self.hparams["generator_from"] = None  # its checkpoints rebuild from the recorded shape

    def trained_heads(self) -> set[str]:
        return {"discriminator_head", "generator"}

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token of both networks, the generator's head on the masked positions only."""
        return self.net.flops_per_token(self.model_config.max_seq_len, self.objective.mask_prob)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(input_ids, attention_mask)

    def _sampler(self, stage: str, batch_idx: int) -> torch.Generator | None:
        """Training draws from the training steps' stream; evaluation from a generator of its
        own per batch, so validation never differs between runs."""
        if stage == "train":
            return None
        return torch.Generator(device=self.device).manual_seed(self.masking_seed * 1_000_003 + batch_idx)

    def _losses(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """The generator's MLM loss on the masked positions, the discriminator's loss on the
        corrupted input, and what the metrics need."""
        ids, labels = batch["input_ids"], batch["labels"]
        extra = (batch.get("attention_mask"), batch.get("token_type_ids"), batch.get("position_ids"))
        masked = labels != IGNORE  # (B, T)
        hidden = self.net.generator.encode(ids, *extra)  # (B, T, C_gen)
        logits = self.net.generator.mlm_logits(hidden[masked])  # (N, V): the N masked tokens only
        targets = labels[masked]
        mlm = F.cross_entropy(logits, targets) if targets.numel() else logits.sum() * 0.0
        corrupted, replaced = replace_tokens(ids, labels, sample_tokens(logits, generator))  # (B, T) each
        disc_logits = self.net.discriminate(corrupted, *extra)  # (B, T)
        real = extra[0].bool() if extra[0] is not None else torch.ones_like(masked)
        scores, truth = disc_logits[real], replaced[real]  # (R,): the real (not padding) tokens
        rtd = F.binary_cross_entropy_with_logits(scores, truth.float())
        return {"loss": mlm + self.rtd_weight * rtd, "mlm": mlm, "rtd": rtd, "scores": scores.detach(),
                "truth": truth, "masked": masked.sum(), "mlm_correct": (logits.argmax(-1) == targets).sum()}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self._losses(batch, self._sampler("train", batch_idx))
        scores, truth = out["scores"], out["truth"]
        self.log_train(out["loss"])
        metrics = {"train/loss_mlm": out["mlm"], "train/loss_rtd": out["rtd"],
                   "train/acc_mlm": out["mlm_correct"].float() / out["masked"].clamp(min=1),
                   "train/replaced": truth.sum().float() / out["masked"].clamp(min=1),
                   "train/acc_rtd": ((scores > 0).long() == truth).float().mean()}
        if 0 < truth.sum() < truth.numel():  # AUC needs both classes
            metrics["train/auc_rtd"] = binary_auroc(scores, truth)
        self.log_dict(metrics, on_step=True, on_epoch=False)
        return out["loss"]

    def _eval_step(self, batch: dict[str, torch.Tensor], batch_idx: int, stage: str) -> None:
        out = self._losses(batch, self._sampler(stage, batch_idx))
        scores, truth = out["scores"], out["truth"]
        correct = ((scores > 0).long() == truth).sum()
        self.record_eval(out["loss"], truth.numel(), correct, parts=(out["mlm"], out["rtd"]))
        self.val_auc.update(scores, truth)
        self.log(f"{stage}/auc_rtd", self.val_auc, on_step=False, on_epoch=True)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, batch_idx, "test")

    def predict_step(self, text: str, batch_idx: int) -> str:
        """The text, then its tokens, each one the discriminator reads as replaced marked ``*``
        with its probability."""
        if self.tokenizer is None:
            raise UserError("This model has no tokenizer: load it from an lmforge checkpoint (`--ckpt_path`).")
        cls_id, sep_id = (self.tokenizer.role_id(r) for r in ("cls", "sep"))
        ids = [cls_id, *self.tokenizer.encode(text)[: self.net.config.max_seq_len - 2], sep_id]
        with torch.no_grad():
            probs = torch.sigmoid(self.net(torch.tensor([ids], device=self.device)))[0, 1:-1].tolist()
        tokens = [self.tokenizer.backend.id_to_token(i) for i in ids[1:-1]]
        return text + "\n  " + " ".join(f"{t}*({p:.2f})" if p > 0.5 else t for t, p in zip(tokens, probs))
