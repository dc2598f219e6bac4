"""Zero/few-shot task files: how a decoder is scored on a dataset without training, as
lm-evaluation-harness's ``ConfigurableTask`` does (``configs/eval/tasks/`` ships sciq, arc_easy,
piqa, hellaswag, lambada, pubmedqa and medmcqa)::

    kind: multiple_choice          # multiple_choice | loglikelihood | generate | perplexity
    data: {path: allenai/sciq, split: test, shot_split: train}
    preprocess: sciq               # a named preprocessing (prompt_data.PREPROCESSINGS), or null
    prompt: "{support}\\nQuestion: {question}\\nAnswer:"
    choices: ["{distractor1}", "{distractor2}", "{distractor3}", "{correct_answer}"]
    gold: 3

Templates are ``str.format_map`` over an example's fields (``{a[b]}`` indexes). The context of an
item is ``description``, then ``shots`` solved examples (``prompt + target_delimiter + answer``,
each followed by ``fewshot_delimiter``) drawn from ``shot_split`` with ``seed``, never the item
itself, then its ``prompt``; a continuation is ``target_delimiter + choice``. ``loglikelihood`` is
lm-eval's output type of that name (LAMBADA): one ``continuation`` template, scored by whether
greedy decoding produces it. Everything a user can get wrong is refused here, before any model
is loaded.
"""

from __future__ import annotations

import dataclasses
import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lmforge.errors import UserError, did_you_mean
from lmforge.evaluation.prompt_data import (
    PREPROCESSINGS, Example, TaskData, load_splits, preprocessed, read_data, split_of,
)

KINDS = ("multiple_choice", "loglikelihood", "generate", "perplexity")
NORMALIZERS = ("strip", "lower", "punctuation", "articles")
_PROMPTED = ("prompt", "target_delimiter", "fewshot_delimiter", "description", "shots", "seed")
KEYS = {  # the keys each kind takes, beside kind, data and preprocess
    "multiple_choice": (*_PROMPTED, "choices", "gold"),
    "loglikelihood": (*_PROMPTED, "continuation"),
    "generate": (*_PROMPTED, "answers", "until", "max_tokens", "normalize"),
    "perplexity": ("text", "overlap"),
}
REQUIRED = {"multiple_choice": ("prompt", "choices", "gold"), "loglikelihood": ("prompt", "continuation"),
            "generate": ("prompt", "answers"), "perplexity": ()}
_STRINGS = ("prompt", "continuation", "target_delimiter", "fewshot_delimiter", "description", "answers", "text")
_NUMBERS = ("shots", "seed", "max_tokens", "overlap")
_FORMATTER = string.Formatter()


@dataclass(frozen=True)
class PromptTask:
    """A zero/few-shot task file, read and checked (see the module docstring for the keys).

    Args:
        path: The task file.
        kind: ``multiple_choice``, ``loglikelihood``, ``generate`` or ``perplexity``.
        data: Where its examples come from.
        preprocess: A named preprocessing of every example, or ``None``.
        prompt: The template of an item's question.
        choices: Templates of the choices, or the field holding the list of them.
        gold: The index of the right choice, or the field holding it (an index or the choice's text).
        continuation: ``loglikelihood``: the template of the text scored after the prompt.
        target_delimiter: Between the prompt and a choice or a shot's answer.
        fewshot_delimiter: After each shot.
        description: The template of the text before the shots.
        shots: Solved examples before each item.
        seed: Seeds the draw of the shots.
        answers: ``generate``: the field holding the right answer or a list of them.
        until: ``generate``: stop strings.
        max_tokens: ``generate``: the longest answer in tokens.
        normalize: ``generate``: applied to prediction and answers before exact match (strip,
            lower, punctuation, articles).
        text: ``perplexity``: the field holding the text.
        overlap: ``perplexity``: tokens of earlier context each later window re-reads.
    """

    path: str
    kind: str
    data: TaskData
    preprocess: str | None = None
    prompt: str = ""
    choices: tuple[str, ...] | str = ()
    gold: int | str | None = None
    continuation: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    description: str = ""
    shots: int = 0
    seed: int = 1234
    answers: str = ""
    until: tuple[str, ...] = ("\n",)
    max_tokens: int = 32
    normalize: tuple[str, ...] = ("strip",)
    text: str = "text"
    overlap: int = 0

    @property
    def name(self) -> str:
        """The task file's stem."""
        return Path(self.path).stem

    @property
    def where(self) -> str:
        """The start of every refusal about this file."""
        return f"Task file '{self.path}'"

    def overridden(self, shots: int | None = None, limit: int | None = None) -> PromptTask:
        """This task with another number of shots or items (``None`` keeps the file's; a
        perplexity task has no shots).

        Args:
            shots: Solved examples per item.
            limit: Items scored.
        """
        if shots is not None and (shots < 0 or isinstance(shots, bool)):
            raise UserError(f"{self.where}: shots (--shots or the suite's) must be at least 0, got {shots}.")
        if limit is not None and (limit < 1 or isinstance(limit, bool)):
            raise UserError(f"{self.where}: limit (--limit or the suite's) must be at least 1 item, got {limit}.")
        data = dataclasses.replace(self.data, limit=limit) if limit is not None else self.data
        keep_shots = shots is None or self.kind == "perplexity"
        return dataclasses.replace(self, data=data, shots=self.shots if keep_shots else shots)

    def prompt_of(self, example: Example, which: str) -> str:
        """The ``prompt`` template filled from ``example``.

        Args:
            example: One (preprocessed) example.
            which: ``item 3`` or ``example 7 of split 'train'``, for the message.
        """
        return _get(self, example, which, lambda: self.prompt.format_map(example), "prompt")


@dataclass(frozen=True)
class Item:
    """One scored item, rendered.

    Args:
        context: Description, shots and prompt (empty for perplexity).
        choices: The choices (``loglikelihood``: the one continuation), without the delimiter.
        gold: The index of the right choice.
        delimiter: The target delimiter each continuation starts with.
        answers: ``generate``: the right answers.
        text: ``perplexity``: the text.
    """

    context: str
    choices: tuple[str, ...] = ()
    gold: int = 0
    delimiter: str = ""
    answers: tuple[str, ...] = ()
    text: str = ""

    @property
    def continuations(self) -> tuple[str, ...]:
        """What the scorer reads after the context: delimiter + choice."""
        return tuple(self.delimiter + c for c in self.choices)


def read_task(path: str | Path) -> PromptTask:
    """The task file ``path``, every key and template checked (the data is read by :func:`load_items`).

    Args:
        path: A task YAML (see ``configs/eval/tasks/``).
    """
    where = f"Task file '{path}'"
    if not Path(path).is_file():
        raise UserError(f"{where} does not exist: give a task YAML (see configs/eval/tasks/).")
    try:
        spec = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"{where} is not valid YAML ({str(err).splitlines()[0]}): fix its syntax.") from err
    if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
        kind = spec.get("kind") if isinstance(spec, dict) else None
        hint = did_you_mean(str(kind), KINDS) if kind is not None else f"it is one of {', '.join(KINDS)}."
        raise UserError(f"{where} has `kind` {kind!r}: {hint}")
    kind = spec["kind"]
    _check_keys(spec, kind, where)
    values = {key: _typed(key, spec[key], where) for key in KEYS[kind] if key in spec}
    preprocess = spec.get("preprocess")
    if preprocess is not None and preprocess not in PREPROCESSINGS:
        hint = did_you_mean(str(preprocess), tuple(PREPROCESSINGS))
        raise UserError(f"{where} has `preprocess` {preprocess!r}: {hint}")
    task = PromptTask(str(path), kind, read_data(spec.get("data"), where), preprocess, **values)
    for key in ("prompt", "continuation", "description", *([] if isinstance(task.choices, str) else ["choices"])):
        for template in [getattr(task, key)] if isinstance(getattr(task, key), str) else getattr(task, key):
            _check_template(template, key, where)
    return task


def _check_keys(spec: dict, kind: str, where: str) -> None:
    known = ("kind", "data", "preprocess", *KEYS[kind])
    for key in spec:
        if key in known:
            continue
        owners = [k for k in KINDS if key in KEYS[k]]
        if owners:
            raise UserError(f"{where} has key '{key}', which kind {kind} does not use (kind {' or '.join(owners)} "
                            "does): remove it.")
        raise UserError(f"{where} has unknown key '{key}': {did_you_mean(str(key), known)}")
    missing = [key for key in REQUIRED[kind] if spec.get(key) is None]
    if missing:
        raise UserError(f"{where} lacks {', '.join(f'`{k}`' for k in missing)}, which kind {kind} needs: add it.")


def _typed(key: str, value: Any, where: str) -> Any:
    """``value`` of ``key`` checked and as :class:`PromptTask` holds it."""
    bad = f"{where}: `{key}` must be"
    if key in _STRINGS and not isinstance(value, str):
        raise UserError(f"{bad} a string, got {value!r} (quote it).")
    if key in _NUMBERS and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise UserError(f"{bad} a whole number of at least 0, got {value!r}.")
    if key == "gold" and (isinstance(value, bool) or not isinstance(value, (int, str))):
        raise UserError(f"{bad} a choice's index or the field holding the answer, got {value!r}.")
    if key in ("choices", "until", "normalize") and not isinstance(value, str):
        empty = key == "choices" and not value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or empty:
            raise UserError(f"{bad} a list of strings (quote yes/no, which YAML reads as booleans), got {value!r}.")
        value = tuple(value)
    if key in ("until", "normalize") and isinstance(value, str):
        value = (value,)
    unknown = [n for n in value if n not in NORMALIZERS] if key == "normalize" else []
    if unknown:
        raise UserError(f"{where} has `normalize` {unknown[0]!r}: {did_you_mean(unknown[0], NORMALIZERS)}")
    return value


def _check_template(template: str, key: str, where: str) -> None:
    try:
        list(_FORMATTER.parse(template))
    except ValueError as err:
        raise UserError(f"{where}: `{key}` {template!r} is not a template ({err}): write a literal brace as "
                        "{{ or }}.") from err


def field(example: Example, path: str) -> Any:
    """The value at ``path`` (``answers[text]``, ``{answers[text]}``, ``label``) of ``example``.

    Args:
        example: One row of the data.
        path: A field name, indexed as in a template.
    """
    path = path[1:-1] if path.startswith("{") and path.endswith("}") else path
    return _FORMATTER.get_field(path, (), example)[0]


def load_items(task: PromptTask) -> list[Item]:
    """The task's items, rendered: the data loaded, preprocessed, shots drawn, every item checked.

    Args:
        task: A task read by :func:`read_task`.
    """
    data, where = task.data, task.where
    splits = load_splits(data, Path(task.path).parent, where, whole_files=task.kind == "perplexity")
    scored = split_of(splits, data.split, data, where, "data.split")
    count = len(scored) if data.limit is None else min(data.limit, len(scored))
    examples = [preprocessed(task.preprocess, scored[i], i, data.split, where) for i in range(count)]
    draws: list[list[int]] = [[] for _ in examples]
    pool: Any = None
    if task.shots:
        pool = split_of(splits, data.shot_split, data, where, "data.shot_split")
        draws = shot_draws(count, len(pool), task.shots, task.seed, data.shot_split == data.split, where)
    shots: dict[int, tuple[str, Example]] = {}  # each shot example preprocessed once
    for j in sorted({j for drawn in draws for j in drawn}):
        name = f"example {j} of split '{data.shot_split}'"
        shots[j] = (name, preprocessed(task.preprocess, pool[j], j, data.shot_split, where))
    return [render(task, example, [shots[j] for j in draws[i]], f"item {i}") for i, example in enumerate(examples)]


def shot_draws(items: int, pool: int, shots: int, seed: int, same_split: bool, where: str) -> list[list[int]]:
    """The indices of each item's shots in the shot split: one ``random.Random(seed)`` drawn from in
    item order, as lm-eval's sampler; from the item's own split ``shots + 1`` are drawn and the
    item itself dropped.

    Args:
        items: Items scored (the first of the split).
        pool: Examples in the shot split.
        shots: Shots per item.
        seed: The seed.
        same_split: The shots come from the split scored.
        where: ``Task file 'x.yaml'``.
    """
    available = pool - 1 if same_split else pool
    if shots > available:
        raise UserError(f"{where}: `shots` {shots} is more than the {available} examples of the shot split"
                        f"{' (less the item scored)' if same_split else ''}: lower shots or choose a larger "
                        "data.shot_split.")
    rng = random.Random(seed)
    if not same_split:
        return [rng.sample(range(pool), shots) for _ in range(items)]
    return [[j for j in rng.sample(range(pool), shots + 1) if j != i][:shots] for i in range(items)]


def render(task: PromptTask, example: Example, shots: list[tuple[str, Example]], which: str) -> Item:
    """One item: its context (description, shots, prompt) and what is scored after it.

    Args:
        task: The task.
        example: The item's (preprocessed) example.
        shots: The solved examples shown before it, each with its name for messages.
        which: ``item 3``, for the message.
    """
    if task.kind == "perplexity":
        text = _get(task, example, which, lambda: field(example, task.text), "text")
        if not isinstance(text, str):
            raise UserError(f"{task.where}: `text` field '{task.text}' of {which} is {text!r}, not a text.")
        return Item("", text=text)
    solved = [task.prompt_of(s, shot) + task.target_delimiter + _answer(task, s, shot) for shot, s in shots]
    description = _get(task, example, which, lambda: task.description.format_map(example), "description")
    context = description + "".join(s + task.fewshot_delimiter for s in solved) + task.prompt_of(example, which)
    if task.kind == "generate":
        return Item(context, answers=_answers(task, example, which))
    choices = _choices(task, example, which)
    return Item(context, choices, _gold(task, example, choices, which), task.target_delimiter)


def _get(task: PromptTask, example: Example, which: str, get: Any, key: str) -> Any:
    """``get()``, a missing field refused with the task file, the key and the fields there are."""
    try:
        return get()
    except (KeyError, IndexError, TypeError, AttributeError) as err:
        missing = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise UserError(f"{task.where}: `{key}` uses field {missing!r}, which {which} lacks: its fields are "
                        f"{', '.join(map(str, example))}; fix `{key}`"
                        f"{' or `preprocess`' if task.preprocess else ''}.") from err


def _choices(task: PromptTask, example: Example, which: str) -> tuple[str, ...]:
    if task.kind == "loglikelihood":
        return (_get(task, example, which, lambda: task.continuation.format_map(example), "continuation"),)
    if isinstance(task.choices, str):
        value = _get(task, example, which, lambda: field(example, task.choices), "choices")
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(c, str) for c in value):
            raise UserError(f"{task.where}: `choices` field '{task.choices}' of {which} is {value!r}, not a list "
                            "of texts: name the field that holds them.")
        return tuple(value)
    return tuple(_get(task, example, which, lambda: c.format_map(example), "choices") for c in task.choices)


def _gold(task: PromptTask, example: Example, choices: tuple[str, ...], which: str) -> int:
    """The index of the right choice: ``gold`` itself, or its field's index or text (a text of
    digits that is no choice is an index, as lm-eval reads ``"2"``)."""
    if task.kind == "loglikelihood":
        return 0
    value = task.gold if isinstance(task.gold, int) else _get(task, example, which, lambda: field(example, task.gold),
                                                              "gold")
    if isinstance(value, str) and value not in choices and value.strip().isdigit():
        value = int(value)
    if isinstance(value, str) and value in choices:
        return choices.index(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
        return value
    raise UserError(f"{task.where}: the gold answer {value!r} of {which} is not among its {len(choices)} "
                    f"choices ({', '.join(map(repr, choices))}): fix `gold` or `choices`.")


def _answers(task: PromptTask, example: Example, which: str) -> tuple[str, ...]:
    value = _get(task, example, which, lambda: field(example, task.answers), "answers")
    answers = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, (list, tuple)) else ()
    if not answers or not all(isinstance(a, str) for a in answers):
        raise UserError(f"{task.where}: `answers` field '{task.answers}' of {which} is {value!r}, not an answer "
                        "text or a list of them: name the field that holds them.")
    return answers


def _answer(task: PromptTask, shot: Example, which: str) -> str:
    """A shot's solution: its right choice, its continuation, or its first answer."""
    if task.kind == "generate":
        return _answers(task, shot, which)[0]
    choices = _choices(task, shot, which)
    return choices[_gold(task, shot, choices, which)]
