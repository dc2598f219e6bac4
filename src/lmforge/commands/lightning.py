"""``lmforge fit|validate|test|predict``: LightningCLI in subclass mode, with lmforge's links,
callbacks and defaults.

Model and data are chosen by ``class_path`` in YAML or on the command line; ``-c`` files
compose left to right. The run's start (:class:`lmforge.start.RunStart`) is resolved once after
parsing and handed down as the classes are instantiated: the opened weights to the task, the
run's tokenizer to the data module; then the task gets the same tokenizer and the data the
task's objective (:func:`lmforge.start.connect`). Values known only once the data module exists
(vocabulary size, sequence length) are linked into the model.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jsonargparse import lazy_instance

from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks import ProgressBar as LightningProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, _InstantiatorFn
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from lightning.fabric.plugins import CheckpointIO

from lmforge.callbacks import (
    AtomicCheckpointIO,
    ModelSize,
    NonFiniteGuard,
    Preemption,
    ProgressBar,
    ProgressLog,
    RunCheckpoint,
    SafeSaveConfigCallback,
    TextSampleCallback,
    ThroughputMonitor,
)
from lmforge.commands.messages import LmforgeParser, find_user_error, quiet_lightning
from lmforge.commands.run_folder import Snapshot, continue_in_run_folder, newest_checkpoint
from lmforge.errors import UserError
from lmforge.evaluation.probes import ZeroShotProbe
from lmforge.evaluation.sts import STSEvaluation
from lmforge.renames import parser_kwargs
from lmforge.scaling import DECODER_FAMILIES, budget_line
from lmforge.start import RunStart, connect, import_class
from lmforge.tasks import OptimizerConfig, PretrainingTask, Task

TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": lazy_instance(TensorBoardLogger, save_dir="logs", name="lmforge", default_hp_metric=False),
}

# data attribute -> model argument, filled when both are instantiated
LINKS = {"vocab_size": "model.init_args.config.vocab_size", "seq_len": "model.init_args.config.max_seq_len"}
# where the linked value comes from, for messages
LINK_SOURCES = {"vocab_size": "the tokenizer's size", "seq_len": "data.seq_len"}


# callbacks that only act while training: prediction runs without them
TRAINING_ONLY = (ModelCheckpoint, ThroughputMonitor, TextSampleCallback, NonFiniteGuard, Preemption, STSEvaluation,
                 ZeroShotProbe)


class LmforgeCLI(LightningCLI):
    """LightningCLI in subclass mode with lmforge's links, callbacks and defaults.

    After parsing it resolves where the run starts (:class:`lmforge.start.RunStart`: the resumed
    checkpoint, the ``init_from`` weights, an explicit tokenizer, or none), opening each source
    once; instantiating hands the pieces down (see the module's docstring).

    Args:
        args: The command line, the subcommand first (``sys.argv[1:]`` when None).
        kwargs: More of :class:`~lightning.pytorch.cli.LightningCLI`'s arguments (``run=False`` ...).
    """

    def __init__(self, args: list[str] | None = None, **kwargs: Any):
        self.run = RunStart()  # this run's sources, each opened once; resolved once the config is final
        quiet_lightning()  # also when used from Python (benchmarks, notebooks), not only through main()
        super().__init__(
            model_class=Task,
            subclass_mode_model=True,
            datamodule_class=None,  # any LightningDataModule, and optional: predict needs none
            save_config_callback=SafeSaveConfigCallback,
            parser_class=LmforgeParser,
            parser_kwargs=parser_kwargs(self.subcommands()),  # a run's saved config.yaml is read with today's names
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=1234,
            args=args,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/loss",
                "checkpoint.mode": "min",
                "checkpoint.save_last": True,
                "checkpoint.save_top_k": 1,
                "checkpoint.filename": "best",
                "checkpoint.auto_insert_metric_name": False,
                # the folder is this run's alone (RunCheckpoint): best/last keep their names on resume
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(ThroughputMonitor, "throughput")
        parser.add_lightning_class_args(TextSampleCallback, "sample")
        parser.add_lightning_class_args(NonFiniteGuard, "nan_guard")
        parser.add_lightning_class_args(Preemption, "preemption")
        parser.add_lightning_class_args(STSEvaluation, "sts")
        parser.add_lightning_class_args(ZeroShotProbe, "zeroshot")
        for attribute, target in LINKS.items():
            parser.link_arguments("data", target, compute_fn=self._linked(attribute, target), apply_on="instantiate")

    def _linked(self, attribute: str, target: str) -> Callable[[Any], Any]:
        """Read ``attribute`` off the data module (which holds the run's tokenizer from the moment
        it exists, :meth:`_add_instantiators`); with no data module (predict from a checkpoint)
        keep the value already in the config, e.g. from the checkpoint."""

        def compute(data: Any) -> Any:
            if data is not None:
                value = getattr(data, attribute)
                self._check_not_overridden(attribute, target, value)
                return value
            return self._configured(target)

        return compute

    def _command_config(self) -> Any:
        """The parsed config of the subcommand (the whole config without one: ``prepare``)."""
        subcommand = self.config.get("subcommand")
        return self.config[subcommand] if subcommand else self.config

    def _configured(self, target: str) -> Any:
        """The value at ``target`` (dotted) in this subcommand's parsed config, or None."""
        node: Any = self._command_config()
        for key in target.split("."):
            node = node[key] if node is not None and key in node else None
        return node

    def _check_not_overridden(self, attribute: str, target: str, value: Any) -> None:
        """A value the user set for a linked model argument (not the network's default) that
        the data contradicts is refused, never overridden in silence."""
        if self._command_config().get("ckpt_path"):
            return  # the model's values come from the resumed checkpoint, which checks them itself
        configured = self._configured(target)
        model_class = self._configured("model.class_path")
        parameter = target.split(".")[2]  # model.init_args.<parameter>.<field>
        try:
            default = inspect.signature(import_class(model_class)).parameters[parameter].default
        except (UserError, KeyError, TypeError, ValueError):
            return
        field = target.rsplit(".", 1)[1]
        if configured is None or configured == value or configured == getattr(default, field, configured):
            return
        key = target.replace(".init_args", "")
        raise UserError(f"{key} is {configured}, but {LINK_SOURCES[attribute]} gives {value}: this value is linked "
                        f"from the data, so drop {key} (or change {LINK_SOURCES[attribute]}).")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = self._get(self.config_init, "trainer", default={})
        callbacks = trainer.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]  # one, or several
        added: list[Any] = []
        if trainer.get("enable_model_summary") is not False:
            added.append(ModelSize())  # one line instead of Lightning's table
        if not any(isinstance(c, LightningProgressBar) for c in callbacks):
            if trainer.get("enable_progress_bar") is not False and sys.stdout.isatty():
                added.append(ProgressBar())  # rich bar unless the user chose otherwise
            else:
                trainer["enable_progress_bar"] = False  # a file or a pipe gets plain lines, not a bar's last frame
                added.append(ProgressLog())
        trainer["callbacks"] = [*callbacks, *added]
        plugins = trainer.get("plugins")
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [] if plugins is None else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            trainer["plugins"] = [*plugins, AtomicCheckpointIO()]  # a killed save never tears last.ckpt
        return super().instantiate_trainer(**kwargs)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Trainer:
        if self.subcommand == "predict":
            # prediction writes no run folder: no logger, no checkpoints, no training callbacks
            config["logger"] = False
            config["enable_checkpointing"] = False
            drop: tuple[type, ...] = TRAINING_ONLY
        elif config.get("enable_checkpointing") is False:
            drop = (ModelCheckpoint,)  # honoured: lmforge's checkpoint callback is not added
        else:
            drop = ()
        config["callbacks"] = [c for c in config.get("callbacks") or [] if not isinstance(c, drop)]
        return super()._instantiate_trainer(config, [c for c in callbacks if not isinstance(c, drop)])

    # -- where the run starts ---------------------------------------------------------------
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        argv = list(sys.argv[1:] if args is None else args)
        self.given_model_keys = _given_model_keys(argv)
        ckpt = _given_checkpoint(argv)
        if ckpt is not None:
            # `predict --ckpt_path X --model.prompts ...` must know the task class while parsing;
            # the checkpoint names it, so the user does not have to
            argv.insert(1, f"--model={self.run.open(ckpt).task}")
        self.config = parser.parse_args(argv)
        subcommand = self.config.get("subcommand")
        cfg = self.config[subcommand] if subcommand else self.config
        check_optimizer(cfg)
        ckpt = cfg.get("ckpt_path") if subcommand else None
        if ckpt == "last":
            ckpt = cfg.ckpt_path = str(newest_checkpoint(cfg))
        if ckpt and not Path(ckpt).is_file():
            raise UserError(f"Checkpoint '{ckpt}' does not exist: give the path of a .ckpt file, or `last`.")
        if ckpt and subcommand == "fit" and not self._starts_stage(cfg, ckpt):
            continue_in_run_folder(cfg, Path(ckpt))  # a new stage writes a run folder of its own

    def _starts_stage(self, cfg: Any, ckpt: str) -> bool:
        """Whether the command line sets a higher ``optimizer.stage`` than the checkpoint's."""
        if not {"optimizer", "optimizer.stage"} & set(self.given_model_keys):
            return False
        stored = (self.run.open(ckpt).hparams.get("optimizer") or {}).get("stage", 0)
        return (self._configured("model.init_args.optimizer.stage") or 0) > stored

    def _parse_ckpt_path(self) -> None:
        """The resumed checkpoint's hyper-parameters update the config (Lightning's rule), read
        from the checkpoint this run opened once; the model's arguments given on the command line
        win over them (``--model.optimizer.decay_steps``), except the network's shape (``config``,
        the checkpoint's: a changed one is refused when the weights load) and ``init_from``."""
        subcommand = self.config.get("subcommand")
        ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt:
            return
        start = self.run.open(ckpt)
        hparams = dict(start.hparams)
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        configured = (self.config[subcommand].get("model") or {}).get("class_path")
        stored = hparams.get("_class_path") or start.task
        if configured and stored and import_class(configured) is not import_class(stored):
            raise UserError(
                f"'{ckpt}' is a {stored.rsplit('.', 1)[-1]} checkpoint (a {start.family} network), but this command "
                f"configures {configured.rsplit('.', 1)[-1]}: use the config it was trained with, or leave out -c and "
                "--model so the checkpoint's own task is used."
            )
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        given = {key: self._configured(f"model.init_args.{key}") for key in self.given_model_keys}
        self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        for key, value in given.items():
            self.config[subcommand][f"model.init_args.{key}"] = value

    def before_instantiate_classes(self) -> None:
        """Resolve the run's start, once: the config is final now (the resumed checkpoint's
        hyper-parameters merged in)."""
        cfg = self._command_config()
        ckpt = cfg.get("ckpt_path") if self.config.get("subcommand") else None
        init_from = ((cfg.get("model") or {}).get("init_args") or {}).get("init_from")
        data = cfg.get("data")
        spec = data.get("init_args", {}).get("tokenizer") if data is not None else None
        self.run.resolve(ckpt, init_from, spec.get("path") if spec is not None else None)

    def _add_instantiators(self) -> None:
        """Instantiating hands the run's start down: the data module gets the run's tokenizer the
        moment it exists (before the links read its vocabulary size), the task the opened weights."""
        self.parser.add_instantiator(_HandOver(self, "model"), Task, subclasses=True)
        self.parser.add_instantiator(_HandOver(self, "data"), LightningDataModule, subclasses=True)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        connect(self.model, self.datamodule, self.run.tokenizer if self.datamodule is not None else None)

    def _run_subcommand(self, subcommand: str) -> None:
        """Run it; a run refused before training started takes back what it wrote into its
        run folder (the logger's event file, an empty version folder)."""
        logger = self.trainer.logger
        folder = Path(logger.log_dir) if subcommand == "fit" and getattr(logger, "log_dir", None) else None
        before = Snapshot(folder)
        try:
            super()._run_subcommand(subcommand)
        except Exception as err:
            started = any(getattr(c, "started", False) for c in self.trainer.callbacks)
            if find_user_error(err) is not None and not started and self.trainer.is_global_zero:
                before.undo()
            raise

    # -- messages -------------------------------------------------------------------------
    def before_fit(self) -> None:
        logger = self.trainer.logger
        if logger is not None and getattr(logger, "log_dir", None):
            rank_zero_info(
                f"Run folder: {logger.log_dir}\nWatch it: tensorboard --logdir {Path(logger.log_dir).parent}"
            )
        if isinstance(self.model, PretrainingTask) and hasattr(self.datamodule, "seq_len"):  # tokens/parameter
            run, data, params = self.trainer, self.datamodule, sum(p.numel() for p in self.model.parameters())
            tokens = run.max_steps * data.batch_size * data.seq_len * run.world_size * run.accumulate_grad_batches
            rank_zero_info(budget_line(params, tokens if run.max_steps > 0 else None,
                                       self.model.family in DECODER_FAMILIES))

    def after_fit(self) -> None:
        saved = self.trainer.checkpoint_callback
        if saved is None or not saved.last_model_path:
            return
        best = (f"best ({saved.monitor}): {saved.best_model_path}" if saved.best_model_path else
                f"no best checkpoint ({saved.monitor} was never computed: no validation ran)")
        rank_zero_info(f"Last checkpoint: {saved.last_model_path}; {best}")

    def after_predict(self) -> None:
        for text in self.model.prediction_texts(self.trainer.predict_loop.predictions or []):
            print(text, end="\n\n", flush=True)


def fit_metrics(args: list[str]) -> dict[str, float]:
    """Run ``lmforge fit`` with ``args``; the metrics it logged last (what ``lmforge evaluate``
    tabulates), the run's totals from :class:`ThroughputMonitor` among them (``perf/train_seconds`` ...)."""
    cli = LmforgeCLI(args=["fit", *args])
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items()}


def check_optimizer(cfg: Any) -> None:
    """Refuse an out-of-range ``model.optimizer`` right after parsing, before a checkpoint is looked
    for, a tokenizer trained or a run folder made (the model, which checks it too, comes after the data).

    Args:
        cfg: The parsed config of one subcommand (``fit``, ``validate``, ...).
    """
    optimizer = ((cfg.get("model") or {}).get("init_args") or {}).get("optimizer")
    values = optimizer.as_dict() if hasattr(optimizer, "as_dict") else None
    if values is not None and set(values) <= {f.name for f in dataclasses.fields(OptimizerConfig)}:
        OptimizerConfig(**values)


class _HandOver(_InstantiatorFn):
    """Lightning's instantiator (it records the hyper-parameters), then the hand-over of
    :meth:`LmforgeCLI._add_instantiators`."""

    def __call__(self, class_type: type, *args: Any, applied_instantiation_links: dict, **kwargs: Any) -> Any:
        run: RunStart = self.cli.run
        if self.key == "model" and run.weights is not None and kwargs.get("init_from"):
            kwargs["init_from"] = run.weights  # the source this run opened, not opened again
        made = super().__call__(class_type, *args, applied_instantiation_links=applied_instantiation_links, **kwargs)
        top = self.cli._configured("data.class_path")  # the run's data module, not a corpus inside a mixture
        if self.key == "data" and (top is None or class_type is import_class(top)):
            run.hand_tokenizer(made)
        return made


def _given_model_keys(argv: list[str]) -> list[str]:
    """The model's arguments set on the command line (``--model.optimizer.lr=1e-3`` gives
    ``optimizer.lr``), which win over a resumed checkpoint's; not the network's shape
    (``config``) nor ``init_from`` (nor ELECTRA's ``generator_from``), which stay the checkpoint's."""
    keys: list[str] = []
    for arg in argv:
        key = arg.split("=", 1)[0].removeprefix("--model.").removeprefix("init_args.")
        if arg.startswith("--model.") and key.split(".")[0] not in ("config", "init_from", "generator_from",
                                                                    "class_path") \
                and key not in keys:
            keys.append(key)
    return keys


def _given_checkpoint(argv: list[str]) -> str | None:
    """The checkpoint file given by ``--ckpt_path`` to a Lightning subcommand without ``--model``."""
    if not argv or argv[0] not in ("fit", "validate", "test", "predict"):
        return None
    if any(a == "--model" or a.startswith("--model=") for a in argv):
        return None
    ckpt = None
    for i, arg in enumerate(argv):
        if arg == "--ckpt_path" and i + 1 < len(argv):
            ckpt = argv[i + 1]
        elif arg.startswith("--ckpt_path="):
            ckpt = arg.split("=", 1)[1]
    return ckpt if ckpt and Path(ckpt).is_file() else None


def fit(argv: list[str]) -> None:
    """``lmforge fit``: train (pretrain, continue from weights, fine-tune), or resume a run."""
    LmforgeCLI(args=["fit", *argv])


def validate(argv: list[str]) -> None:
    """``lmforge validate``: the validation metrics of a checkpoint."""
    LmforgeCLI(args=["validate", *argv])


def test(argv: list[str]) -> None:
    """``lmforge test``: the test metrics of a checkpoint."""
    LmforgeCLI(args=["test", *argv])


def predict(argv: list[str]) -> None:
    """``lmforge predict``: text generated (or embeddings written) from a checkpoint."""
    LmforgeCLI(args=["predict", *argv])
