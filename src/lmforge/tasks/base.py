"""What every pretraining task shares: optimizer and schedule, metrics, checkpoints that
carry their tokenizer and model config."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info

from lmforge.convert import LoadedWeights, load_weights
from lmforge.distributed import gather_objects
from lmforge.tokenizer import Tokenizer
from lmforge.errors import UserError
from lmforge.models import GPT, Bert
from lmforge.batching import Objective
from lmforge.tasks.optim import build_optimizer, warmup_cosine
from lmforge.tasks.rng import TrainingRNG


# Per-call settings of text generation: kept out of a checkpoint's hyper-parameters, so that
# predict's command line always wins over what the training run had.
GENERATION_ARGS = ["prompts", "prompt_file", "max_new_tokens", "temperature", "top_k", "generation_seed"]

ARRAY_SUFFIXES = (".npy", ".npz", ".safetensors")
FRESH_HEADS = ("mlm_head.", "pooler.", "nsp.")  # may be missing from init_from weights: initialised fresh


def check_array_file(path: str | Path, several: bool) -> Path:
    """``path`` as a Path if its suffix can hold the arrays (``.npy`` holds one only)."""
    path = Path(path)
    allowed = [".npz", ".safetensors"] if several else list(ARRAY_SUFFIXES)
    if path.suffix not in allowed:
        raise UserError(f"Cannot write arrays to '{path}': name a {' or '.join(allowed)} file.")
    return path


def save_arrays(path: str | Path, arrays: dict[str, torch.Tensor]) -> Path:
    """Write named tensors to ``.safetensors`` or ``.npz`` (each under its name), or a single
    one to ``.npy``; returns the path written.

    Args:
        path: The file to write; its folder is created.
        arrays: The tensors, by name.
    """
    path = check_array_file(path, several=len(arrays) > 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({name: value.contiguous() for name, value in arrays.items()}, str(path))
    elif path.suffix == ".npz":
        np.savez(path, **{name: value.numpy() for name, value in arrays.items()})
    else:
        np.save(path, next(iter(arrays.values())).numpy())
    return path


@dataclasses.dataclass
class OptimizerConfig:
    """AdamW with linear warmup then cosine decay to a floor.

    Args:
        lr: Peak learning rate.
        weight_decay: Decoupled weight decay of matrices (never norms, biases, embeddings).
        betas: AdamW betas.
        eps: AdamW epsilon.
        warmup_steps: Steps of linear warmup.
        decay_steps: Step where the cosine reaches its floor; ``None`` means the end of training.
        min_lr_ratio: The floor, as a fraction of ``lr``.
    """

    lr: float = 6e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_steps: int = 100
    decay_steps: int | None = None
    min_lr_ratio: float = 0.1


class PretrainingTask(L.LightningModule):
    """Base of every family's task. Subclasses set ``self.net`` and ``self.objective``.

    Args:
        optimizer: Optimizer and learning-rate schedule.
    """

    objective: Objective
    prompts: tuple[str, ...] | list[str] = ()
    prompt_file: str | None = None
    prompt_example = "..."  # shown in the message when predict is given no prompts
    accuracy_name = "acc"  # logged as val/<accuracy_name>: the fraction of predictions right
    log_perplexity = True  # val/ppl = exp(val/<eval_loss_name>), for language-modelling losses
    eval_loss_name = "loss"  # what record_eval's loss is logged as
    eval_parts: tuple[str, ...] = ()  # parts of that loss (record_eval's ``parts``): val/loss_<name>, val/ppl_<name>

    def __init__(self, optimizer: OptimizerConfig = OptimizerConfig()):
        super().__init__()
        self.optim = OptimizerConfig(**optimizer) if isinstance(optimizer, dict) else optimizer
        self.tokenizer: Tokenizer | None = None
        self._start: LoadedWeights | None = None  # the init_from weights, until the network has them
        self._train_rng = TrainingRNG()

    # -- starting from pretrained weights (init_from) ---------------------------------------
    def _start_from(self, init_from: str | None, config: Any, family: str, **shape: Any) -> Any:
        """The config to build the network with: ``config`` itself, or with ``init_from`` the
        shape of those weights (``dropout`` and the ``shape`` overrides still from here).

        The run's hyper-parameters then record that shape and no ``init_from``, so its own
        checkpoints never depend on the source. Call :meth:`_load_start` once ``self.net`` exists.
        """
        if not init_from:
            return config
        self._start = load_weights(init_from).require(family, type(self).__name__)
        overrides = {"dropout": config.dropout, **shape}
        config = dataclasses.replace(self._start.config, **overrides)
        self.hparams["config"], self.hparams["init_from"] = dataclasses.asdict(config), None
        if self._start.tokenizer is not None:
            self.tokenizer = self._start.tokenizer
        return config

    def _load_start(self) -> None:
        """Put the ``init_from`` weights into ``self.net``. Heads the source lacks (an encoder
        without its MLM head, a next-sentence head BERT never had) start freshly initialised."""
        start = self._start
        if start is None:
            return
        missing, unexpected = self.net.load_state_dict(start.state_dict, strict=False)
        wrong = [k for k in missing if not k.startswith(FRESH_HEADS)] + list(unexpected)
        if wrong:
            raise UserError(f"init_from '{start.source}' does not fit this {type(self.net).__name__}: "
                            f"{', '.join(wrong[:3])} ... differ. Start from weights of the same architecture.")
        if missing:
            heads = sorted({k.split(".")[0] for k in missing})
            rank_zero_info(f"init_from '{start.source}': {', '.join(heads)} not in the weights, initialised fresh.")
        self._start_tokenizer = start.tokenizer
        self._start = None

    def _store_hparams(self, ignore: list[str] | None = None) -> None:
        """Save the init arguments as plain data so any checkpoint loads with weights_only."""
        self.save_hyperparameters(ignore=ignore, frame=inspect.currentframe().f_back)
        for key, value in list(self.hparams.items()):
            if dataclasses.is_dataclass(value):
                self.hparams[key] = dataclasses.asdict(value)

    # -- pieces subclasses provide --------------------------------------------------------
    @property
    def model_config(self) -> Any:
        return self.net.config

    def flops_per_token(self) -> float:
        """Training FLOPs per token, for MFU."""
        return self.net.flops_per_token(self.model_config.max_seq_len)

    def sample_text(self, prompt: str) -> str | None:
        """A text generated from ``prompt`` for the TensorBoard text tab; None if the task cannot."""
        return None

    def _set_prompts(self, prompts: str | list[str] | None, prompt_file: str | None) -> None:
        """Keep ``predict``'s inputs: a prompt or a list of them, and a file of more."""
        self.prompts = [prompts] if isinstance(prompts, str) else list(prompts or [])
        self.prompt_file = prompt_file

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode (no dropout) for the block, then back to the mode the task was in."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    def predict_dataloader(self) -> DataLoader:
        """The prompts of ``predict``: ``prompts`` plus the lines of ``prompt_file``."""
        prompts = list(self.prompts)
        if self.prompt_file:
            path = Path(self.prompt_file)
            if not path.is_file():
                raise UserError(f"Prompt file '{path}' does not exist: give a text file with one prompt per line.")
            prompts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not prompts:
            raise UserError(
                f'No prompts: pass `--model.prompts "{self.prompt_example}"` or `--model.prompt_file prompts.txt`.'
            )
        return DataLoader(prompts, batch_size=1, collate_fn=lambda batch: batch[0])

    # -- setup and checkpoints ------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "tokenizer"):
            self.tokenizer = datamodule.tokenizer
            start = getattr(self, "_start_tokenizer", None)
            if start is not None and start.fingerprint != self.tokenizer.fingerprint:
                self._extend_vocabulary(start)
            rows = getattr(self.model_config, "vocab_size", None)
            if rows is not None and self.tokenizer.vocab_size > rows:
                raise UserError(
                    f"The data's tokenizer has {self.tokenizer.vocab_size} tokens but the network's embeddings only "
                    f"{rows} rows: use the tokenizer the weights were trained with."
                )
            limit = getattr(self.model_config, "max_seq_len", None)
            seq_len = getattr(datamodule, "seq_len", None)
            if limit is not None and seq_len is not None and seq_len > limit and isinstance(self.net, (GPT, Bert)):
                raise UserError(f"data.seq_len={seq_len} is longer than the network's {limit} positions: lower it.")

    # -- the training steps' random stream (see lmforge.tasks.rng) ------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._train_rng.batch_start()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._train_rng.batch_end()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lmforge"] = {
            "tokenizer": self.tokenizer.to_str() if self.tokenizer is not None else None,
            "model_config": dataclasses.asdict(self.model_config),
            "task": type(self).__qualname__,
            "rng": gather_objects(self._train_rng.state()),  # one per rank: every rank saves, rank 0 writes
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get("lmforge", {})
        config = stored.get("model_config")
        if config is not None and self._trainer is not None:  # resuming a run: the same network
            now = dataclasses.asdict(self.model_config)
            changed = [f"{k}={config[k]} (this run: {now[k]})" for k in config if k in now and now[k] != config[k]
                       and k != "dropout"]
            if changed:
                raise UserError(
                    f"The checkpoint's network has {', '.join(changed)}: resume with the settings it was trained with "
                    "(max_seq_len follows data.seq_len), or start a new run from its weights with `--model.init_from`."
                )
        states = stored.get("rng")
        if states and self._trainer is not None:
            rank, world = self.trainer.global_rank, self.trainer.world_size
            if len(states) == world:
                self._train_rng.load(states[rank])
            else:
                rank_zero_info(f"The checkpoint was written by {len(states)} processes, this run has {world}: the "
                               "random streams (dropout) start afresh.")
        if stored.get("tokenizer") is None:
            return
        ckpt_tokenizer = Tokenizer.from_str(stored["tokenizer"])
        if self.tokenizer is not None and self.tokenizer.fingerprint != ckpt_tokenizer.fingerprint:
            raise UserError(
                f"The data's tokenizer ({self.tokenizer.fingerprint}) is not the checkpoint's "
                f"({ckpt_tokenizer.fingerprint}): drop `data.tokenizer.path` to use the checkpoint's."
            )
        self.tokenizer = ckpt_tokenizer

    def _extend_vocabulary(self, start: Tokenizer) -> None:
        """The data's tokenizer is not the weights': accept it only if it is theirs extended with
        domain words (``lmforge tokenizer coverage --add``), and give each new token an
        embedding row, the mean of the rows of the pieces the old tokenizer cut it into."""
        from lmforge.data.vocab import extension_pieces, init_new_embeddings

        pieces = extension_pieces(start, self.tokenizer)
        if pieces is None:
            raise UserError(
                f"The data's tokenizer ({self.tokenizer.fingerprint}) is not the one of the init_from weights "
                f"({start.fingerprint}) nor an extension of it: drop `data.tokenizer.path` so the weights' own "
                "tokenizer is used, or extend it with `lmforge tokenizer coverage --add`."
            )
        if not hasattr(self.net, "grow_vocab"):
            raise UserError(f"Extending the vocabulary of a {type(self.net).__name__} is not supported (GPT and BERT "
                            "are): use the weights' own tokenizer.")
        if self.net.wte.weight.shape[0] == start.vocab_size:  # not grown yet (setup runs once per stage)
            self.net.grow_vocab(init_new_embeddings(self.net.wte.weight, pieces))
            self.hparams["config"] = dataclasses.asdict(self.net.config)
            rank_zero_info(f"init_from: {len(pieces)} new tokens, their embeddings the mean of their old pieces'.")
        self._start_tokenizer = self.tokenizer

    # -- optimization ---------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        o = self.optim
        optimizer = build_optimizer(self.net, o.lr, o.weight_decay, tuple(o.betas), o.eps)
        decay_steps = o.decay_steps or int(self.trainer.estimated_stepping_batches)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(o.warmup_steps, decay_steps, o.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        if gradient_clip_val and isinstance(self.trainer.strategy, FSDPStrategy) and gradient_clip_algorithm != "value":
            # Lightning's FSDP precision refuses norm clipping; FSDP computes the norm over all shards itself
            self.trainer.model.clip_grad_norm_(gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # -- metrics helpers ------------------------------------------------------------------
    def log_train(self, loss: torch.Tensor) -> None:
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("lr", self.lr_schedulers().get_last_lr()[0], on_step=True, on_epoch=False)

    def on_validation_epoch_start(self) -> None:
        # (sum of losses, predicted tokens, correct predictions, sum of each part's loss), summed over the epoch
        self._eval_totals = torch.zeros(3 + len(self.eval_parts), dtype=torch.float64, device=self.device)

    on_test_epoch_start = on_validation_epoch_start

    def record_eval(
        self, mean_loss: torch.Tensor, num_tokens: int, num_correct: torch.Tensor, parts: Sequence[torch.Tensor] = ()
    ) -> None:
        """Accumulate a batch's mean loss (weighted by its predicted tokens) and its correct
        predictions into the epoch's loss, perplexity and accuracy; ``parts`` are the batch's
        mean losses of ``eval_parts``, weighted alike."""
        self._eval_totals += torch.stack(
            [mean_loss.detach().double() * num_tokens, self._eval_totals.new_tensor(num_tokens), num_correct.double()]
            + [part.detach().double() * num_tokens for part in parts]
        )

    def _log_eval(self, prefix: str) -> None:
        totals = self.trainer.strategy.reduce(self._eval_totals, reduce_op="sum")  # over all ranks
        if totals[1] == 0:
            return
        loss = (totals[0] / totals[1]).float()
        loss_name = f"{prefix}/{self.eval_loss_name}"
        metrics = {loss_name: loss, f"{prefix}/{self.accuracy_name}": (totals[2] / totals[1]).float()}
        if self.log_perplexity:
            metrics[f"{prefix}/ppl"] = torch.exp(loss)
        for name, total in zip(self.eval_parts, totals[3:]):
            part = (total / totals[1]).float()
            metrics[f"{prefix}/loss_{name}"] = part
            if self.log_perplexity:
                metrics[f"{prefix}/ppl_{name}"] = torch.exp(part)
        if self.trainer.sanity_checking:
            # Lightning drops what is logged in the sanity check; keep it as the step-0 point
            # of the validation curve, the untrained model's loss (not again on resume)
            for logger in self.loggers if self.global_step == 0 else []:
                logger.log_metrics({k: v.item() for k, v in metrics.items()}, step=0)
            return
        self.log(loss_name, metrics.pop(loss_name), prog_bar=prefix == "val")
        self.log_dict(metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")
