"""What every task shares, pretraining or downstream: a network of :mod:`lmforge.models`, the
run's tokenizer (handed over, never looked up), starting from weights (``init_from``),
checkpoints that describe themselves, the training steps' random stream, and the optimizer
settings."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lmforge.distributed import gather_objects
from lmforge.errors import UserError
from lmforge.renames import new_keys
from lmforge.start import Start, open_start
from lmforge.tasks.optim import MuonAdamW, OptimizerConfig, build_optimizer
from lmforge.tasks.rng import TrainingRNG
from lmforge.tokenizer import Tokenizer


# torch.compile's backend: inductor generates fused kernels (a C++ compiler on CPU); tests that
# check the wiring only may set a faster one ("aot_eager")
COMPILE_BACKEND = "inductor"


def compile_network(net: nn.Module) -> None:
    """Compile ``net`` in place with :meth:`torch.nn.Module.compile`, so the module tree and the
    parameter names (checkpoints, export, ``init_from``) stay as they are: each module of the
    network's ``blocks`` lists (identical blocks share one compiled graph), or the whole network
    when it has none (ELMo)."""
    blocks = [block for name, module in net.named_modules() if name.rsplit(".", 1)[-1] == "blocks"
              for block in module.children()]
    for module in blocks or [net]:
        module.compile(backend=COMPILE_BACKEND)


def class_path(cls: type) -> str:
    """``module.Name`` of a class, as checkpoints record tasks and networks."""
    return f"{cls.__module__}.{cls.__qualname__}"


class Task(L.LightningModule):
    """Base of every lmforge task. A subclass declares its ``network`` (a class of
    :mod:`lmforge.models`, which names its family and config class) and gets ``self.net`` from
    :meth:`build_network`, which also loads the weights it starts from.

    The tokenizer is handed over (:meth:`use_tokenizer`, by :func:`lmforge.start.connect`), never
    looked up through the trainer.

    Args:
        optimizer: Optimizer and learning-rate schedule.
        compile: Compile the network with ``torch.compile`` when training starts.
    """

    network: ClassVar[type[nn.Module] | None] = None  # None: the network comes from the weights (fine-tuning)
    net: nn.Module

    def __init__(self, optimizer: OptimizerConfig = OptimizerConfig(), compile: bool = False):
        super().__init__()
        self.compile_network = compile  # not self.compile: that is nn.Module's method
        self.optim = OptimizerConfig(**optimizer) if isinstance(optimizer, dict) else optimizer
        self.tokenizer: Tokenizer | None = None
        self._start_tokenizer: Tokenizer | None = None  # the tokenizer that came with them
        self.start_source: str | None = None  # where the weights came from, for messages
        self._train_rng = TrainingRNG()

    @property
    def family(self) -> str:
        """The network's family (``gpt``, ``bert``, ``t5``, ``elmo``)."""
        return type(self.net).family

    # -- starting from pretrained weights (init_from) ---------------------------------------
    def trained_heads(self) -> set[str]:
        """The heads of the network (``network.heads``) that this task's loss trains."""
        return set(type(self.net).heads)

    def build_network(self, config: Any, init_from: str | Start | None = None,
                      network: type[nn.Module] | None = None, weights: bool = True, **shape: Any) -> nn.Module:
        """Build ``self.net`` and put the start's weights into it: the one way every task gets its network.

        Without ``init_from`` the network is ``network`` (default: the task's declared
        ``network``) of shape ``config``. With it, the network and its shape are the weights'
        (``dropout`` and the ``shape`` overrides still from ``config``; with ``config=None`` the
        weights' dropout too), the tokenizer is theirs, and the run's hyper-parameters record that
        shape and no ``init_from`` (:meth:`_record_start`), so its own checkpoints never depend on
        the source. Heads the source lacks start fresh (one log line names them).

        Args:
            config: The network's config, or its dict (a checkpoint's hyper-parameters).
            init_from: The weights: a source to open (``.ckpt``, model folder, ``hf:<id>``), or the
                :class:`~lmforge.start.Start` the command already opened for this run.
            network: The network class when the task declares none (fine-tuning any family).
            weights: False keeps the source's architecture but not its learned weights (only its
                non-learned buffers, e.g. ELMo's spelling table): the random-initialisation baseline.
            shape: Config fields set on the weights' shape (``nsp_head=True``).
        """
        network = network or self.network
        if isinstance(config, dict):  # from a checkpoint's hyper-parameters, perhaps with older names
            config = network.config_class(**new_keys(config))
        start = None
        if init_from:
            start = init_from if isinstance(init_from, Start) else open_start(init_from)
            if self.network is not None:
                start.require(self.network, type(self).__name__)
            else:  # downstream: the network's encoder (ELECTRA's discriminator)
                start = start.encoder()
            network = start.network
            if config is not None:
                shape = {"dropout": config.dropout, **shape}
            config = dataclasses.replace(start.config, **shape)
            self._record_start(start, config)
            self.tokenizer = self._start_tokenizer = start.tokenizer
            self.start_source = start.source
        self.net = network(config)
        if start is not None and weights:
            start.load_into(self.net, self.trained_heads(), type(self).__name__)
        elif start is not None:
            start.load_buffers(self.net)
        return self.net

    def _record_start(self, start: Start, config: Any) -> None:
        """Record the network's shape in the hyper-parameters in place of ``init_from``."""
        self.hparams["init_from"] = None
        self._record_config(config)

    def _record_config(self, config: Any) -> None:
        """Record the network's shape in the hyper-parameters, so checkpoints rebuild it."""
        self.hparams["config"] = dataclasses.asdict(config)

    # -- what the data side hands over (lmforge.start.connect) -------------------------------
    def use_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Take the run's tokenizer: the weights' own, or theirs extended with domain words (the
        network's embeddings grow to match); anything else is refused with one sentence."""
        start = self._start_tokenizer
        if start is not None and start.fingerprint != tokenizer.fingerprint:
            self._extend_vocabulary(start, tokenizer)
        rows = getattr(self.model_config, "vocab_size", None)
        if rows is not None and tokenizer.vocab_size > rows:
            raise UserError(
                f"The data's tokenizer has {tokenizer.vocab_size} tokens but the network's embeddings only "
                f"{rows} rows: use the tokenizer the weights were trained with."
            )
        self.tokenizer = tokenizer

    def check_positions(self, seq_len: int) -> None:
        """Refuse inputs longer than the network's positions (``data.seq_len``)."""
        limit = getattr(self.net, "max_positions", None)
        if limit is not None and seq_len > limit:
            raise UserError(f"data.seq_len={seq_len} is longer than the {type(self.net).family} network's {limit} "
                            "positions: lower it.")

    def _extend_vocabulary(self, start: Tokenizer, tokenizer: Tokenizer) -> None:
        """The data's tokenizer is not the weights': accept it only if it is theirs extended with
        domain words (``lmforge tokenizer coverage --add``), and give each new token an
        embedding row, the mean of the rows of the pieces the old tokenizer cut it into."""
        from lmforge.data.vocab import extension_pieces, init_new_embeddings

        pieces = extension_pieces(start, tokenizer)
        if pieces is None:
            raise UserError(
                f"The data's tokenizer ({tokenizer.fingerprint}) is not the one of the init_from weights "
                f"({start.fingerprint}) nor an extension of it: drop `data.tokenizer.path` so the weights' own "
                "tokenizer is used, or extend it with `lmforge tokenizer coverage --add`."
            )
        if not hasattr(self.net, "grow_vocab"):
            raise UserError(f"Extending the vocabulary of a {type(self.net).__name__} is not supported (GPT, Llama "
                            "and BERT are): use the weights' own tokenizer.")
        self.net.grow_vocab(init_new_embeddings(self.net.wte.weight, pieces))
        self._record_config(self.net.config)
        rank_zero_info(f"init_from: {len(pieces)} new tokens, their embeddings the mean of their old pieces'.")
        self._start_tokenizer = tokenizer

    # -- configuration ------------------------------------------------------------------------
    def _store_hparams(self, ignore: list[str] | None = None) -> None:
        """Save the init arguments as plain data so any checkpoint loads with weights_only."""
        self.save_hyperparameters(ignore=ignore, frame=inspect.currentframe().f_back)
        for key, value in list(self.hparams.items()):
            if dataclasses.is_dataclass(value):
                self.hparams[key] = dataclasses.asdict(value)

    @property
    def model_config(self) -> Any:
        return self.net.config

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode (no dropout) for the block, then back to the mode the task was in."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    def on_fit_start(self) -> None:
        if self.compile_network:
            compile_network(self.net)

    # -- the training steps' random stream (see lmforge.tasks.rng) ------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._train_rng.batch_start()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._train_rng.batch_end()

    # -- checkpoints ----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lmforge"] = {
            "tokenizer": self.tokenizer.to_str() if self.tokenizer is not None else None,
            "network": class_path(type(self.net)),
            "model_config": dataclasses.asdict(self.model_config),
            "task": class_path(type(self)),
            "rng": gather_objects(self._train_rng.state()),  # one per rank: every rank saves, rank 0 writes
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get("lmforge", {})
        config = new_keys(stored.get("model_config"))
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
        if self.tokenizer is None:  # loaded without a run (load_from_checkpoint): the checkpoint's own
            self.tokenizer = ckpt_tokenizer
        elif self.tokenizer.fingerprint != ckpt_tokenizer.fingerprint:
            raise UserError(
                f"The data's tokenizer ({self.tokenizer.fingerprint}) is not the checkpoint's "
                f"({ckpt_tokenizer.fingerprint}): drop `data.tokenizer.path` to use the checkpoint's."
            )

    # -- optimization ---------------------------------------------------------------------
    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        if gradient_clip_val and isinstance(self.trainer.strategy, FSDPStrategy) and gradient_clip_algorithm != "value":
            # Lightning's FSDP precision refuses norm clipping; FSDP computes the norm over all shards itself
            self.trainer.model.clip_grad_norm_(gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def build_optimizer(self, net: nn.Module | None, extra_groups: list[dict[str, Any]] = ()) -> torch.optim.Optimizer:
        """The optimizer of ``optimizer.name`` over ``net`` (``None``: frozen) and ``extra_groups``."""
        if self.optim.name == "muon" and isinstance(self.trainer.strategy, FSDPStrategy):
            raise UserError("optimizer.name=muon orthogonalizes whole matrices, which FSDP shards: train with the "
                            "ddp strategy, or use optimizer.name=adamw.")
        return build_optimizer(net, self.optim, extra_groups)

    def prediction_texts(self, outputs: list[Any]) -> list[str]:
        """What ``lmforge predict`` prints of the outputs of every ``predict_step``: the texts they
        returned (a task that answers over a whole file, as question answering, joins them itself).

        Args:
            outputs: The ``predict_step`` outputs, batch by batch.
        """
        return [t for o in outputs for t in (o if isinstance(o, list) else [o]) if isinstance(t, str) and t]

    def log_train(self, loss: torch.Tensor) -> None:
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        schedule = self.lr_schedulers()
        self.log("lr", schedule.get_last_lr()[0], on_step=True, on_epoch=False)
        if isinstance(schedule.optimizer, MuonAdamW):
            self.log("lr_muon", schedule.optimizer.muon.param_groups[0]["lr"], on_step=True, on_epoch=False)
