"""BERT and RoBERTa pretraining: masked language modelling with sparse prediction, optional
next sentence prediction, and fill-mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmforge.errors import UserError
from lmforge.models.bert import Bert, BertConfig
from lmforge.objectives import MaskedLM
from lmforge.objectives.masked_lm import IGNORE
from lmforge.tasks.base import OptimizerConfig
from lmforge.tasks.pretraining import PretrainingTask


class MaskedLMTask(PretrainingTask):
    """Pretrain a BERT-style encoder on masked language modelling (BERT, RoBERTa).

    The vocabulary projection runs on the masked positions only ("sparse prediction", as in
    MosaicBERT and cramming): about 15% of the work of projecting every position.
    ``predict`` fills the mask tokens of given texts with their top-k candidates.

    Args:
        config: The encoder's shape (``vocab_size`` and ``max_seq_len`` come from the data).
        optimizer: Optimizer and learning-rate schedule.
        init_from: Start from pretrained weights (weights only: a fresh optimizer, schedule and
            data position): an lmforge ``.ckpt``, a Hugging Face model folder, or ``hf:<model id>``
            (BERT, RoBERTa, BioBERT, MiniLM, ... or an lmforge BERT). The network's shape and the tokenizer come with the weights.
        mask_prob: Fraction of tokens selected for prediction.
        whole_word: Mask whole words instead of single pieces.
        nsp: Also train next sentence prediction on sentence pairs (BERT); off for RoBERTa.
        masking_seed: Seed of the dynamic masks.
        prompts: Texts with mask tokens (``[MASK]`` or ``<mask>``) to fill in ``predict``.
        prompt_file: A text file of such texts for ``predict``, one per line.
        top_k: Candidates to show for each mask.
        compile: Compile the network with ``torch.compile`` when training starts (each transformer block
            once); checkpoints keep the plain parameter names.
        document_mask: Document-aware packing: a token attends only to the tokens of its own
            document in a packed block (each ending at its ``[SEP]``/``</s>``), and positions
            restart at 0 at each document; validation is masked alike. Weights and shapes are
            unchanged (export as usual). Packed blocks only: not with ``nsp``.
    """

    network = Bert
    accuracy_name = "mlm_acc"
    eval_loss_name = "mlm_loss"  # val/ppl is the MLM's; val/loss adds NSP's loss when it is on
    prompt_example = "Paris is the [MASK] of France."

    def __init__(
        self,
        config: BertConfig = BertConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(lr=1e-3, betas=(0.9, 0.98), weight_decay=0.01),
        init_from: str | None = None,
        mask_prob: float = 0.15,
        whole_word: bool = False,
        nsp: bool = False,
        masking_seed: int = 0,
        prompts: str | list[str] | None = None,
        prompt_file: str | None = None,
        top_k: int = 5,
        compile: bool = False,
        document_mask: bool = False,
    ):
        super().__init__(optimizer, compile)
        self._store_hparams(ignore=["prompts", "prompt_file", "top_k"])
        nsp_head = config.get("nsp_head") if isinstance(config, dict) else config.nsp_head
        if nsp and not init_from and not nsp_head:
            raise UserError("`nsp: true` needs the network's NSP head: set `config.nsp_head: true` (BERT).")
        if nsp and document_mask:
            raise UserError("`document_mask: true` keeps the documents of packed blocks apart, and `nsp: true` trains "
                            "on sentence pairs instead of packed blocks: turn one of them off.")
        self.objective = MaskedLM(mask_prob=mask_prob, whole_word=whole_word, nsp=nsp, seed=masking_seed,
                                  document_mask=document_mask)
        self.build_network(config, init_from, **({"nsp_head": True} if nsp else {}))
        self._set_prompts(prompts, prompt_file)
        self.top_k = top_k

    def trained_heads(self) -> set[str]:
        return {"mlm_head", "pooler", "nsp"} if self.objective.nsp else {"mlm_head"}

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token of the work the step does (:func:`run_flops_per_token`)."""
        return run_flops_per_token(self.net, self.model_config.max_seq_len, self.objective.mask_prob)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(input_ids, attention_mask)

    def _mlm(self, batch: dict[str, torch.Tensor], hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Loss, correct predictions and number of predicted tokens, projecting masked positions only."""
        selected = batch["labels"] != IGNORE  # (B, T)
        logits = self.net.mlm_logits(hidden[selected])  # (N, V): N masked tokens, not B * T
        targets = batch["labels"][selected]
        if targets.numel() == 0:  # no token drawn in this batch: nothing to learn, keep the graph
            return logits.sum() * 0.0, targets.new_zeros(()), 0
        return F.cross_entropy(logits, targets), (logits.argmax(-1) == targets).sum(), targets.numel()

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        hidden = self.net.encode(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"),
                                 batch.get("position_ids"))
        mlm_loss, correct, n = self._mlm(batch, hidden)
        loss = mlm_loss
        if "next_sentence_label" in batch:
            nsp_logits = self.net.nsp_logits(hidden)  # (B, 2)
            labels = batch["next_sentence_label"]
            loss = loss + F.cross_entropy(nsp_logits, labels)
            nsp_acc = (nsp_logits.argmax(-1) == labels).float().mean()
            self.log(f"{stage}/nsp_acc", nsp_acc, on_step=stage == "train", on_epoch=stage != "train",
                     batch_size=labels.numel(), sync_dist=stage != "train")
        if stage == "train":
            self.log_train(loss)
            self.log("train/mlm_loss", mlm_loss, on_step=True, on_epoch=False)
            self.log("train/mlm_acc", correct.float() / max(n, 1), on_step=True, on_epoch=False)
        else:
            self.record_eval(mlm_loss, n, correct)  # val/mlm_loss, val/ppl, val/mlm_acc
            if getattr(self, "_eval_set", None) is None:  # (a mixture's named sets: val/loss comes from record_eval)
                self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=batch["input_ids"].size(0), sync_dist=True)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step(batch, "test")

    # -- fill-mask ------------------------------------------------------------------------
    def fill_mask(self, text: str) -> str:
        """The text followed by the ``top_k`` candidates (with probabilities) of each mask token."""
        if self.tokenizer is None:
            raise UserError("This model has no tokenizer: load it from an lmforge checkpoint (`--ckpt_path`).")
        mask_id, cls_id, sep_id = (self.tokenizer.role_id(r) for r in ("mask", "cls", "sep"))
        ids = [cls_id, *self.tokenizer.encode(text)[: self.net.config.max_seq_len - 2], sep_id]
        positions = [i for i, t in enumerate(ids) if t == mask_id]
        mask_token = self.tokenizer.backend.id_to_token(mask_id)
        if not positions:
            raise UserError(f"'{text}' has no {mask_token} token to fill.")
        with torch.no_grad():
            logits = self.net(torch.tensor([ids], device=self.device))[0, positions]  # (M, V)
        probs = logits.softmax(-1).topk(self.top_k)
        lines = [text]
        for n, (p, i) in enumerate(zip(probs.values.tolist(), probs.indices.tolist()), start=1):
            candidates = ", ".join(f"{self._token_text(t)} ({q:.2f})" for t, q in zip(i, p))
            lines.append(f"  {mask_token} {n}: {candidates}")
        return "\n".join(lines)

    def _token_text(self, token_id: int) -> str:
        """The candidate as text; its vocabulary entry when it is not text on its own (a piece
        of a multi-byte character decodes to U+FFFD, which would make candidates look alike)."""
        text = self.tokenizer.decode([token_id]).strip()
        if not text or "\ufffd" in text:
            return self.tokenizer.backend.id_to_token(token_id)
        return text

    def predict_step(self, text: str, batch_idx: int) -> str:
        return self.fill_mask(text)


def run_flops_per_token(net: Bert, seq_len: int, fraction: float) -> float:
    """Training FLOPs per token of a masked-LM step: the network's count (6N + attention) less
    what sparse prediction never runs -- the MLM head and the vocabulary projection on the
    ``1 - fraction`` unmasked positions -- and less the pooler and NSP head, which a masked-LM
    step does not run (with NSP they run once per sequence: negligible).

    Args:
        net: The BERT network.
        seq_len: Tokens per sequence.
        fraction: The fraction of positions predicted.
    """
    head = sum(p.numel() for p in net.mlm_head.parameters())  # an untied output matrix is among them
    if net.config.tie_embeddings:
        head += net.wte.weight.numel()
    flops = net.flops_per_token(seq_len) - 6 * (1 - fraction) * head
    if net.config.nsp_head:
        flops -= 6 * sum(p.numel() for m in (net.pooler, net.nsp) for p in m.parameters())
    return flops

