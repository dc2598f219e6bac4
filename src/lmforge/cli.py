"""The ``lmforge`` command: ``fit|validate|test|predict`` (LightningCLI) and tool subcommands.

Model and data are chosen by ``class_path`` in YAML or on the command line; ``-c`` files
compose left to right. Values known only once the data module exists (vocabulary size,
sequence length) are linked into the model at instantiation.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from jsonargparse import lazy_instance

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks import ProgressBar as LightningProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
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
from lmforge.errors import UserError
from lmforge.evaluation.sts import STSEvaluation
from lmforge.messages import find_user_error, one_line_warnings, quiet_lightning, unknown_key_hint
from lmforge.renames import parser_kwargs
from lmforge.start import connect, open_start, run_tokenizer
from lmforge.start.source import import_class
from lmforge.tasks import Task
from lmforge.tokenizer import Tokenizer

TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": lazy_instance(TensorBoardLogger, save_dir="logs", name="lmforge", default_hp_metric=False),
}

# data attribute -> model argument, filled when both are instantiated
LINKS = {"vocab_size": "model.init_args.config.vocab_size", "seq_len": "model.init_args.config.max_seq_len"}
# where the linked value comes from, for messages
LINK_SOURCES = {"vocab_size": "the tokenizer's size", "seq_len": "data.seq_len"}


class LmforgeParser(LightningArgumentParser):
    """Lightning's parser whose error for an unknown option ends with one line naming the key
    and the nearest valid one."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        parser = getattr(ex, "subcommand_parser", None) or self
        hint = unknown_key_hint(message, [a.dest for a in parser._actions if a.dest not in ("help", "config")])
        super().error(f"{message}\n{hint}" if hint else message, ex)


# callbacks that only act while training: prediction runs without them
TRAINING_ONLY = (ModelCheckpoint, ThroughputMonitor, TextSampleCallback, NonFiniteGuard, Preemption, STSEvaluation)


class LmforgeCLI(LightningCLI):
    """LightningCLI in subclass mode with lmforge's links, callbacks and defaults.

    After parsing it decides where the run starts (:func:`lmforge.start.run_tokenizer`: the
    resumed checkpoint, the ``init_from`` weights, an explicit tokenizer, or none); after
    instantiating it hands the pieces over (:func:`lmforge.start.connect`).
    """

    def __init__(self, args: list[str] | None = None, **kwargs: Any):
        self.run_tokenizer: Tokenizer | None = None
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
        for attribute, target in LINKS.items():
            parser.link_arguments("data", target, compute_fn=self._linked(attribute, target), apply_on="instantiate")

    def _linked(self, attribute: str, target: str) -> Callable[[Any], Any]:
        """Read ``attribute`` off the data module, once it holds the run's tokenizer (handed over
        here: the first moment the data module exists); with no data module (predict from a
        checkpoint) keep the value already in the config, e.g. from the checkpoint."""

        def compute(data: Any) -> Any:
            if data is not None:
                if self.run_tokenizer is not None:
                    data.tokenizer = self.run_tokenizer
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
        model_class = _checkpoint_model_class(argv)
        if model_class is not None:
            # `predict --ckpt_path X --model.prompts ...` must know the task class while parsing;
            # the checkpoint names it, so the user does not have to
            argv.insert(1, f"--model={model_class}")
        self.config = parser.parse_args(argv)
        subcommand = self.config.get("subcommand")
        cfg = self.config[subcommand] if subcommand else self.config
        ckpt = cfg.get("ckpt_path") if subcommand else None
        if ckpt == "last":
            ckpt = cfg.ckpt_path = str(self._newest_checkpoint(cfg))
        if ckpt and not Path(ckpt).is_file():
            raise UserError(f"Checkpoint '{ckpt}' does not exist: give the path of a .ckpt file, or `last`.")
        if ckpt and subcommand == "fit":
            self._continue_in_run_folder(cfg, Path(ckpt))
        init_from = ((cfg.get("model") or {}).get("init_args") or {}).get("init_from")
        data = cfg.get("data")
        spec = data.get("init_args", {}).get("tokenizer") if data is not None else None
        self.run_tokenizer = run_tokenizer(ckpt, init_from, spec.get("path") if spec is not None else None)

    def _parse_ckpt_path(self) -> None:
        """The resumed checkpoint's hyper-parameters update the config (Lightning's rule), read
        from the checkpoint opened once for the whole run (:func:`lmforge.start.open_start`)."""
        subcommand = self.config.get("subcommand")
        ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt:
            return
        start = open_start(ckpt)
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
        self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        connect(self.model, self.datamodule, self.run_tokenizer)

    @staticmethod
    def _runs_root(cfg: Any) -> tuple[Path, Any] | None:
        """The folder of the experiment's version folders, and the logger's init args."""
        logger = cfg.trainer.get("logger")
        init = logger.get("init_args") if hasattr(logger, "get") else None
        if init is None:
            return None
        return Path(init.get("save_dir") or "logs") / (init.get("name") or ""), init

    @classmethod
    def _newest_checkpoint(cls, cfg: Any) -> Path:
        """The newest complete checkpoint of the experiment, ``last.ckpt`` first. A file cut
        short (not a whole zip archive: a kill during a write by another tool, a full disk) is
        moved aside as ``<name>.torn``, so the resumed run writes the usual names again."""
        found = cls._runs_root(cfg)
        if found is None:
            raise UserError("`--ckpt_path last` needs a TensorBoard logger to find the runs: give the checkpoint's path.")
        root, _ = found
        candidates = [c for c in root.glob("version_*/checkpoints/*.ckpt") if re.fullmatch(r"version_\d+", c.parent.parent.name)]
        candidates.sort(key=lambda c: (c.stat().st_mtime_ns, c.name == "last.ckpt"), reverse=True)
        torn = [c for c in candidates if not zipfile.is_zipfile(c)]
        complete = [c for c in candidates if c not in torn]
        if not complete:
            if torn:
                raise UserError(f"`--ckpt_path last` found only damaged checkpoints under '{root}' "
                                f"({', '.join(str(c) for c in torn)}): their writes were cut short, so nothing can "
                                "be resumed from them; start a new run, or give another checkpoint's path.")
            raise UserError(f"`--ckpt_path last` found no checkpoint under '{root}/version_*/checkpoints': "
                            "start a run first.")
        newest = complete[0]
        for ckpt in torn:
            if ckpt.parent == newest.parent and os.environ.get("LOCAL_RANK", "0") == "0":
                aside = _free_name(ckpt.with_name(ckpt.name + ".torn"))
                try:
                    ckpt.rename(aside)
                except FileNotFoundError:
                    continue  # another node's first process moved it (a shared file system)
                rank_zero_info(f"'{ckpt}' is incomplete (its write was cut short): moved aside to '{aside}'.")
        return newest

    @classmethod
    def _continue_in_run_folder(cls, cfg: Any, ckpt: Path) -> None:
        """A checkpoint of this experiment's run ``version_N`` resumes in that folder, so its
        TensorBoard curves and checkpoints continue (not a new version beside it)."""
        found = cls._runs_root(cfg)
        if found is None or ckpt.parent.name != "checkpoints":
            return
        root, init = found
        run = ckpt.parent.parent
        match = re.fullmatch(r"version_(\d+)", run.name)
        if match and run.parent.resolve() == root.resolve() and init.get("version") is None:
            init.version = int(match.group(1))

    def _run_subcommand(self, subcommand: str) -> None:
        """Run it; a run refused before training started takes back what it wrote into its
        run folder (the logger's event file, an empty version folder)."""
        logger = self.trainer.logger
        folder = Path(logger.log_dir) if subcommand == "fit" and getattr(logger, "log_dir", None) else None
        before = _Snapshot(folder)
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

    def after_fit(self) -> None:
        saved = self.trainer.checkpoint_callback
        if saved is None or not saved.last_model_path:
            return
        best = (f"best ({saved.monitor}): {saved.best_model_path}" if saved.best_model_path else
                f"no best checkpoint ({saved.monitor} was never computed: no validation ran)")
        rank_zero_info(f"Last checkpoint: {saved.last_model_path}; {best}")

    def after_predict(self) -> None:
        for output in self.trainer.predict_loop.predictions or []:
            for text in output if isinstance(output, list) else [output]:
                if isinstance(text, str) and text:
                    print(text, end="\n\n", flush=True)


class _Snapshot:
    """The paths under a run folder before a run, to remove what a refused run added (only that:
    its new files, and the folders it created, such as ``logs/`` itself, once empty)."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.paths = set(folder.rglob("*")) if folder is not None and folder.exists() else set()
        # the folder and those of its parents the run will create
        self.new_folders = [] if folder is None else [d for d in (folder, *folder.parents) if not d.exists()]

    def undo(self) -> None:
        if self.folder is None or not self.folder.exists():
            return
        for path in sorted(self.folder.rglob("*"), reverse=True):  # a folder's files before the folder
            if path in self.paths:
                continue
            if path.is_file() or path.is_symlink():
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        for folder in self.new_folders:  # innermost first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


class PrepareCLI(LmforgeCLI):
    """The parse, start and hand-offs of ``fit``, without a trainer: what ``lmforge prepare`` needs."""

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        return None  # preparing runs on any machine: no accelerator, logger or callbacks


def prepare_command(argv: list[str]) -> None:
    """``lmforge prepare -c config.yaml [...]``: tokenize a corpus into token shards now.

    It takes the same configs and options as ``lmforge fit`` and resolves the run's tokenizer
    the same way (``init_from`` weights, an explicit ``data.tokenizer.path``, or one trained on
    the corpus), so the ``fit`` that follows finds the shards ready. See
    :meth:`lmforge.data.CorpusDataModule.prepare`.
    """
    if argv and argv[0] in ("-h", "--help"):
        print(prepare_command.__doc__)
        return
    cli = PrepareCLI(args=argv, run=False)
    data, task = cli.datamodule, cli.model
    name = getattr(data, "name", type(data).__name__)
    if not getattr(data, "uses_shards", False) or getattr(task.objective, "sentences", False):
        raise UserError(f"{type(task).__name__} on {name} builds its examples from sentences in memory when training "
                        "starts: there is nothing to prepare.")
    if data.streaming:
        raise UserError(f"{name} is configured with `streaming: true`, which tokenizes during training and keeps no "
                        "shards: set `--data.streaming false` to prepare it.")
    prepared = data.prepare()
    print(f"Prepared {name} in {prepared.folder}: {prepared.num_tokens('train'):,} train and "
          f"{prepared.num_tokens('val'):,} val tokens ({prepared.meta['dtype']}).")


def fit_metrics(args: list[str]) -> dict[str, float]:
    """Run ``lmforge fit`` with ``args``; the metrics it logged last (what ``lmforge evaluate`` tabulates)."""
    cli = LmforgeCLI(args=["fit", *args])
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items()}


def _free_name(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2`` ... : the first that does not exist."""
    n, free = 0, path
    while free.exists():
        n += 1
        free = path.with_name(f"{path.name}.{n}")
    return free


def _checkpoint_model_class(argv: list[str]) -> str | None:
    """The task class stored in the checkpoint given by ``--ckpt_path``, unless ``--model`` is given."""
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
    if not ckpt or not Path(ckpt).is_file():
        return None
    return open_start(ckpt).task


@one_line_warnings()
def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lmforge`` console script."""
    argv = sys.argv[1:] if args is None else args
    quiet_lightning()
    try:
        if argv and argv[0] == "tokenizer":
            from lmforge.tokenizer_commands import tokenizer_command

            tokenizer_command(argv[1:])
        elif argv and argv[0] == "evaluate":
            from lmforge.evaluation.suite import evaluate_command

            evaluate_command(argv[1:], fit=fit_metrics)
        elif argv and argv[0] == "export":
            from lmforge.start.export import export_command

            export_command(argv[1:])
        elif argv and argv[0] == "new":
            from lmforge.scaffold import new_command

            new_command(argv[1:])
        elif argv and argv[0] == "prepare":
            prepare_command(argv[1:])
        else:
            LmforgeCLI(args=args)
    except Exception as err:
        user_error = find_user_error(err)
        if user_error is None:
            raise
        print(f"lmforge: error: {user_error}", file=sys.stderr)
        sys.exit(2)
