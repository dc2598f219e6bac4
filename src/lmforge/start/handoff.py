"""Where one run starts, resolved once, and the hand-overs between its task and data module.

A command resolves its run's :class:`RunStart` once (the checkpoint it resumes, the weights it
starts from, the tokenizer it was given), then hands each piece down: the opened weights to the
task, the run's tokenizer to the data module (:meth:`RunStart.hand_tokenizer`) and the same
tokenizer to the task with the objective to the data (:func:`connect`). In Python, without a
command, call :func:`connect` before ``trainer.fit``: it decides the tokenizer the same way.
"""

from __future__ import annotations

from typing import Any

from lmforge.errors import UserError
from lmforge.start.starting_point import Start, identity, load_tokenizer, open_start
from lmforge.tokenizer import Tokenizer


class RunStart:
    """The sources of one run, each opened once, and the tokenizer they decide.

    Args:
        ckpt_path: The checkpoint the run resumes (``--ckpt_path``; ``predict`` reads it too).
        init_from: The weights a new run starts from (``--model.init_from``).
        tokenizer_path: The data's explicit ``tokenizer.path``: a ``tokenizer.json``, a checkpoint,
            a model folder or ``hf:<id>``.
    """

    def __init__(self, ckpt_path: str | None = None, init_from: str | None = None,
                 tokenizer_path: str | None = None):
        self._opened: dict[tuple, Start] = {}
        self.resolve(ckpt_path, init_from, tokenizer_path)

    def resolve(self, ckpt_path: str | None, init_from: str | None, tokenizer_path: str | None) -> None:
        """Settle the run's start (see the class's arguments); a source this run opened before (a
        command reads the checkpoint's task before it parses) is not read again."""
        self.resume = self.open(ckpt_path) if ckpt_path else None
        self.weights = self.open(init_from) if init_from else None
        self.tokenizer = self._decide_tokenizer(tokenizer_path)

    def open(self, source: str) -> Start:
        """``source`` opened once for this run (the same :class:`Start` when asked again)."""
        key = identity(source)
        if key not in self._opened:
            self._opened[key] = open_start(source)
        return self._opened[key]

    def _decide_tokenizer(self, path: str | None) -> Tokenizer | None:
        """The explicit tokenizer at ``path``, else the resumed checkpoint's, else the weights';
        ``None``: the data module trains one on its corpus."""
        if path:
            return load_tokenizer(path, self.open(path) if path.endswith(".ckpt") else None)
        start = self.resume or self.weights
        return start.tokenizer if start is not None else None

    def hand_tokenizer(self, data: Any) -> Tokenizer:
        """Give ``data`` the run's tokenizer, once: the one decided here (with the tokens the data
        marks its texts with), or, on a fresh run, the one the data module trains."""
        if self.tokenizer is None and self.resume is None and self.weights is not None:
            raise no_tokenizer(self.weights.source)
        # the tokens the data marks its texts with (entity markers) are the run's special tokens;
        # the task's embeddings grow to match, as for domain words
        self.tokenizer = (self.tokenizer or data.tokenizer).with_special_tokens(getattr(data, "added_tokens", ()))
        data.tokenizer = self.tokenizer
        return self.tokenizer


def no_tokenizer(source: str) -> UserError:
    """The refusal of weights that came without their tokenizer."""
    return UserError(f"init_from '{source}' carries no tokenizer (no tokenizer.json or vocab.txt): give the "
                     "tokenizer its weights were trained with as `data.tokenizer.path`.")


def connect(task: Any, data: Any, tokenizer: Tokenizer | None = None) -> Tokenizer | None:
    """Hand over between ``task`` and ``data``: the run's tokenizer to the task, the task's
    objective to the data (bound to the tokenizer now, so a tokenizer without the special tokens
    the objective needs is refused before anything is written), and the data's shape (sequence
    length, labels) to the task. Returns the run's tokenizer.

    Args:
        task: An lmforge task (``lmforge.tasks``, ``lmforge.evaluation.FineTuneTask``).
        data: Its data module; ``None`` (predict from a checkpoint) hands nothing over.
        tokenizer: The run's tokenizer, already handed to ``data`` (:meth:`RunStart.hand_tokenizer`);
            ``None`` in Python use: decided here as a command decides it (the data's explicit
            ``tokenizer.path``, else the task's weights' tokenizer, else the data's trained one).
    """
    if data is None:
        return task.tokenizer
    spec_path = getattr(getattr(data, "tokenizer_spec", None), "path", None)
    if tokenizer is None:
        run = RunStart(tokenizer_path=spec_path)
        run.tokenizer = run.tokenizer or task.tokenizer  # the weights' (or a loaded checkpoint's) own
        if run.tokenizer is None and task.start_source is not None:
            raise no_tokenizer(task.start_source)
        tokenizer = run.hand_tokenizer(data)
    task.use_tokenizer(tokenizer)
    objective = getattr(task, "objective", None)
    if objective is not None and hasattr(data, "objective"):
        try:
            objective.bind(tokenizer)
        except UserError as err:
            if not spec_path:
                raise
            raise UserError(f"data.tokenizer.path '{spec_path}': {err}") from err
        data.objective = objective
    if getattr(data, "seq_len", None) is not None:
        task.check_positions(data.seq_len)
    if hasattr(task, "use_labels") and hasattr(data, "raw"):
        data.raw()  # reading the labelled examples settles their task type and classes
        task.use_labels(data.task_type, data.labels)
    return tokenizer
