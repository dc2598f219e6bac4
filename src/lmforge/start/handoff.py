"""The hand-offs between a task and its data module, explicit and in one place.

The task owns the objective (how token blocks become examples) and, when it starts from
weights, the tokenizer they were trained with; the data module owns the corpus and, on a
fresh run, trains the tokenizer. :func:`connect` gives each side what it needs of the other,
so neither looks anything up through the trainer. The command line calls it after
instantiating both; in Python, call it before ``trainer.fit``.
"""

from __future__ import annotations

from typing import Any

from lmforge.errors import UserError
from lmforge.start.source import load_tokenizer, open_start
from lmforge.tokenizer import Tokenizer


def run_tokenizer(ckpt_path: str | None = None, init_from: str | None = None,
                  tokenizer_path: str | None = None) -> Tokenizer | None:
    """The tokenizer a run uses unless its data module trains one: the data's explicit
    ``tokenizer.path`` (a ``tokenizer.json``, a checkpoint, a model folder or ``hf:<id>``), else
    the resumed checkpoint's, else the ``init_from`` weights'; ``None`` for a fresh run.

    Args:
        ckpt_path: The checkpoint the run resumes, if any.
        init_from: The weights the run starts from, if any.
        tokenizer_path: The data's ``tokenizer.path``, if set.
    """
    if tokenizer_path:
        return load_tokenizer(tokenizer_path)
    source = ckpt_path or init_from
    return open_start(source).tokenizer if source else None


def connect(task: Any, data: Any, tokenizer: Tokenizer | None = None) -> Tokenizer | None:
    """Hand over between ``task`` and ``data``: one tokenizer to both, the task's objective to
    the data (bound to the tokenizer now, so a tokenizer without the special tokens the
    objective needs is refused before anything is written), and the data's shape (sequence
    length, labels) to the task. Returns the run's tokenizer.

    Args:
        task: An lmforge task (``lmforge.tasks``, ``lmforge.evaluation.FineTuneTask``).
        data: Its data module; ``None`` (predict from a checkpoint) hands nothing over.
        tokenizer: The run's tokenizer if already known (:func:`run_tokenizer`); else the data's
            explicit ``tokenizer.path``, the task's weights' tokenizer, or the data's trained one.
    """
    if data is None:
        return task.tokenizer
    spec_path = getattr(getattr(data, "tokenizer_spec", None), "path", None)
    if tokenizer is None and spec_path:
        tokenizer = load_tokenizer(spec_path)
    if tokenizer is None and task.tokenizer is None and task.start_source is not None:
        raise UserError(f"init_from '{task.start_source}' carries no tokenizer (no tokenizer.json or vocab.txt): give "
                        "the tokenizer its weights were trained with as `data.tokenizer.path`.")
    # (a fresh run: the data module trains one on its corpus)
    tokenizer = tokenizer or task.tokenizer or data.tokenizer
    # tokens the data marks its texts with (entity markers) are the run's special tokens; the
    # task's embeddings grow to match, as for domain words
    tokenizer = tokenizer.with_special_tokens(getattr(data, "added_tokens", ()))
    data.tokenizer = tokenizer
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
