"""Zero/few-shot task files: reading and refusals, the data layouts, lm-eval's preprocessings and
prompts (expected values written by hand from lm-eval's task definitions), few-shot draws, and
the metrics of each kind computed from a scorer fake."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import random
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS
from lmforge.errors import UserError
from lmforge.evaluation.prompt_data import TaskData
from lmforge.evaluation.prompt_tasks import load_items, read_task, shot_draws
from lmforge.evaluation.zero_shot import score_task

TASKS = CONFIGS / "eval" / "tasks"
QUESTIONS = [{"question": f"What is {n} plus one?", "answer": str(n + 1), "wrong": str(n + 2)} for n in range(12)]


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def task_file(folder: Path, **spec: object) -> Path:
    """A multiple-choice task over ``data.jsonl`` in ``folder`` (QUESTIONS), changed by ``spec``
    (a value of None removes the key)."""
    base = {"kind": "multiple_choice", "data": {"path": "data.jsonl", "split": "train", "shot_split": "train"},
            "prompt": "Q: {question}\nA:", "choices": ["{wrong}", "{answer}"], "gold": 1}
    base.update(spec)
    path = folder / "task.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in base.items() if v is not None}, sort_keys=False))
    if not (folder / "data.jsonl").exists():
        jsonl(folder / "data.jsonl", QUESTIONS)
    return path


class FakeScorer:
    """Not a model: a continuation's log-likelihood is looked up in ``scores`` (else minus its
    length over 10), greedy when it is in ``greedy``; ``generate`` answers from ``answers``
    (keyed by the context's last line), ``rolling_loglikelihood`` from ``rolling``. Records every call."""

    def __init__(self, scores: dict[str, float] | None = None, greedy: set[str] = frozenset(),
                 answers: dict[str, str] | None = None, rolling: dict[str, tuple[float, int]] | None = None) -> None:
        self.scores, self.greedy, self.answers, self.rolling = scores or {}, greedy, answers or {}, rolling or {}
        self.calls: list[tuple[str, object]] = []
        self.max_length = 64

    def loglikelihood(self, questions):
        self.calls.append(("loglikelihood", questions))
        return [[(self.scores.get(c, -len(c) / 10), c in self.greedy) for c in conts] for _, conts in questions]

    def generate(self, contexts, until, max_tokens):
        self.calls.append(("generate", (contexts, until, max_tokens)))
        return [self.answers[c.splitlines()[-1]] for c in contexts]

    def rolling_loglikelihood(self, texts, overlap=0):
        self.calls.append(("rolling", (texts, overlap)))
        return [self.rolling[t] for t in texts]


# --- few-shot ------------------------------------------------------------------------------------

def test_context_is_description_shots_and_prompt_and_continuations_carry_the_delimiter(tmp_path: Path) -> None:
    path = task_file(tmp_path, shots=2, description="Arithmetic{{}}.\n\n", fewshot_delimiter="\n##\n",
                     target_delimiter="  ")
    items = load_items(read_task(path))
    assert len(items) == 12
    context = items[5].context
    assert context.startswith("Arithmetic{}.\n\n") and context.endswith("Q: What is 5 plus one?\nA:")
    shots = context[len("Arithmetic{}.\n\n"):-len("Q: What is 5 plus one?\nA:")].split("\n##\n")
    assert len(shots) == 3 and shots[2] == ""  # each shot is followed by the delimiter
    for shot in shots[:2]:
        n = int(shot.split()[3])
        assert shot == f"Q: What is {n} plus one?\nA:  {n + 1}"  # prompt + target delimiter + gold choice
    assert items[5].continuations == ("  7", "  6") and items[5].choices == ("7", "6") and items[5].gold == 1


def _shot_numbers(context: str) -> list[int]:
    return [int(line.split()[3]) for line in context.splitlines() if line.startswith("Q:")][:-1]


def test_shots_are_drawn_per_item_deterministically_per_seed_and_never_the_item(tmp_path: Path) -> None:
    path = task_file(tmp_path, shots=3)
    first = [_shot_numbers(item.context) for item in load_items(read_task(path))]
    again = [_shot_numbers(item.context) for item in load_items(read_task(path))]
    assert first == again and all(len(s) == 3 == len(set(s)) for s in first)
    assert all(i not in shots for i, shots in enumerate(first))
    assert len({tuple(s) for s in first}) > 1  # drawn per item, not once for the task
    other = [_shot_numbers(item.context) for item in load_items(read_task(task_file(tmp_path, shots=3, seed=7)))]
    assert other != first
    # the whole rest of the split: every item's shots are exactly the others
    small = tmp_path / "small"
    small.mkdir()
    jsonl(small / "data.jsonl", QUESTIONS[:4])
    items = load_items(read_task(task_file(small, shots=3)))
    assert [sorted(_shot_numbers(item.context)) for item in items] == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]


def test_draws_from_another_split_may_hold_any_example_and_the_limit_keeps_the_first_items(tmp_path: Path) -> None:
    jsonl(tmp_path / "train.jsonl", QUESTIONS[:3])
    jsonl(tmp_path / "test.jsonl", QUESTIONS[3:])
    path = task_file(tmp_path, data={"data_files": {"train": "train.jsonl", "test": "test.jsonl"}, "split": "test",
                                     "limit": 4}, shots=3)
    items = load_items(read_task(path))
    assert [item.context.splitlines()[-2] for item in items] == [f"Q: What is {n} plus one?" for n in (3, 4, 5, 6)]
    assert all(sorted(_shot_numbers(item.context)) == [0, 1, 2] for item in items)
    # the limit scores fewer items, not other shots: the first items' shots stay
    full = load_items(read_task(task_file(tmp_path, data={"data_files": {"train": "train.jsonl",
                                                                        "test": "test.jsonl"}, "split": "test"},
                                          shots=2)))
    limited = load_items(read_task(path).overridden(shots=2, limit=2))
    assert [i.context for i in limited] == [i.context for i in full[:2]]


def test_shot_draws_follow_lm_evals_sampler_stream() -> None:
    """One Random(seed) in item order; from the item's own split k + 1 drawn and the item dropped."""
    rng = random.Random(1234)
    expected = []
    for i in range(5):
        drawn = rng.sample(range(6), 3)
        expected.append([j for j in drawn if j != i][:2])
    assert shot_draws(5, 6, 2, 1234, True, "t") == expected


# --- data layouts --------------------------------------------------------------------------------

def _write_layout(folder: Path, layout: str) -> dict:
    """QUESTIONS[:3] in ``layout``; the task's data section."""
    rows = QUESTIONS[:3]
    if layout == "jsonl":
        jsonl(folder / "q.jsonl", rows)
    elif layout == "json":
        (folder / "q.json").write_text(json.dumps(rows))
    elif layout == "csv":
        with open(folder / "q.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif layout == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), folder / "q.parquet")
    else:  # a folder of split files
        (folder / "q").mkdir()
        jsonl(folder / "q" / "train.jsonl", QUESTIONS[3:5])
        jsonl(folder / "q" / "test.jsonl", rows)
        return {"path": "q", "split": "test"}
    return {"path": f"q.{layout}", "split": "train"}


@pytest.mark.parametrize("layout", ["jsonl", "json", "csv", "parquet", "folder"])
def test_each_local_layout_loads(tmp_path: Path, layout: str) -> None:
    path = task_file(tmp_path, data=_write_layout(tmp_path, layout))
    items = load_items(read_task(path))
    assert [item.context for item in items] == [f"Q: What is {n} plus one?\nA:" for n in range(3)]
    assert [item.choices for item in items] == [(str(n + 2), str(n + 1)) for n in range(3)]


def test_a_txt_file_is_one_text_for_perplexity_and_one_example_per_line_otherwise(tmp_path: Path) -> None:
    (tmp_path / "book.txt").write_text("First line.\nSecond line.\n")
    perplexity = tmp_path / "ppl.yaml"
    perplexity.write_text(yaml.safe_dump({"kind": "perplexity", "data": {"path": "book.txt", "split": "train"}}))
    assert [item.text for item in load_items(read_task(perplexity))] == ["First line.\nSecond line.\n"]
    lines = task_file(tmp_path, kind="generate", data={"path": "book.txt", "split": "train"}, prompt="{text} ->",
                      choices=None, gold=None, answers="text")
    assert [(item.context, item.answers) for item in load_items(read_task(lines))] == [
        ("First line. ->", ("First line.",)), ("Second line. ->", ("Second line.",))]


# --- lm-eval's task definitions, on hand-written examples -----------------------------------------

SHIPPED = {  # task file -> (one example of the dataset, lm-eval's context, continuations, gold), by hand
    "hellaswag": ({"ind": 4, "activity_label": "Home and Garden", "ctx_a": "[header] How to clean a mirror [title] "
                   "Use a microfiber cloth.", "ctx_b": "WIPE in circles  gently.", "label": "2",
                   "endings": ["[step] Rinse the cloth  [substeps] often.", "Dry it.", "Then [title] polish it.",
                               "Stop."]},
                  "Home and Garden: How to clean a mirror. Use a microfiber cloth. Wipe in circles gently.",
                  ("  Rinse the cloth  often.", " Dry it.", " Then. polish it.", " Stop."), 2),
    "lambada": ({"text": "She opened the door.\n\"Who is it?\" asked  Tom"},
                "She opened the door.\n\"Who is it?\" asked ", (" Tom",), 0),
    "sciq": ({"support": "\n  Plants make sugar by photosynthesis. ", "question": "How do plants make sugar?",
              "distractor1": "respiration", "distractor2": "digestion", "distractor3": "osmosis",
              "correct_answer": "photosynthesis"},
             "Plants make sugar by photosynthesis. \nQuestion: How do plants make sugar?\nAnswer:",
             (" respiration", " digestion", " osmosis", " photosynthesis"), 3),
    "arc_easy": ({"id": "q1", "question": "Which is a mammal?", "answerKey": "C",
                  "choices": {"text": ["trout", "frog", "whale"], "label": ["A", "B", "C"]}},
                 "Question: Which is a mammal?\nAnswer:", (" trout", " frog", " whale"), 2),
    "piqa": ({"goal": "Open a jar", "sol1": "Twist the lid.", "sol2": "Push the lid.", "label": 0},
             "Question: Open a jar\nAnswer:", (" Twist the lid.", " Push the lid."), 0),
    "pubmedqa": ({"pubid": 7, "question": "Does coffee help?", "final_decision": "maybe", "long_answer": "Unclear.",
                  "context": {"contexts": ["Coffee was given.", "Results varied."], "labels": ["A", "B"],
                              "meshes": ["Coffee"]}},
                 "Abstract: Coffee was given.\nResults varied.\nQuestion: Does coffee help?\nAnswer:",
                 (" yes", " no", " maybe"), 2),
    "medmcqa": ({"id": "m1", "question": "Which vitamin?", "opa": "A1", "opb": "B12", "opc": "C", "opd": "D3",
                 "cop": 1},
                "Question: Which vitamin?\nChoices:\nA. A1\nB. B12\nC. C\nD. D3\nAnswer:", (" A", " B", " C", " D"), 1),
}


LOCAL = ("python-docs",)  # task files whose data ships beside them (the quick start's probe)


def test_every_shipped_task_file_has_a_rendering_test() -> None:
    assert sorted(p.stem for p in TASKS.glob("*.yaml")) == sorted([*SHIPPED, *LOCAL])


def test_the_quick_starts_probe_reads_its_own_file() -> None:
    rows = [json.loads(line) for line in (TASKS / "python-docs.jsonl").read_text().splitlines()]
    items = load_items(read_task(TASKS / "python-docs.yaml"))
    assert len(items) == len(rows) == 48
    assert [(i.context, i.continuations, i.gold) for i in items[:1]] == [
        (rows[0]["text"], tuple(" " + c for c in rows[0]["choices"]), rows[0]["gold"])]
    assert {i.gold for i in items} == {0, 1, 2, 3}  # the right answer is not always in one place


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_task_renders_as_lm_eval(name: str, tmp_path: Path) -> None:
    example, context, continuations, gold = SHIPPED[name]
    task = read_task(TASKS / f"{name}.yaml")
    assert task.data.path is not None and not Path(task.data.path).suffix  # a hub dataset
    local = dataclasses.replace(task, data=TaskData(str(jsonl(tmp_path / "d.jsonl", [example])), split="train"))
    [item] = load_items(local)
    assert (item.context, item.continuations, item.gold) == (context, continuations, gold)


# --- refusals ------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, said", [
    ({"prompt": "Q: {questoin}\nA:"}, "`prompt` uses field 'questoin', which item 0 lacks: its fields are question, "
                                      "answer, wrong; fix `prompt`."),
    ({"choices": ["{wrong}", "{right}"]}, "`choices` uses field 'right', which item 0 lacks"),
    ({"choices": "options"}, "`choices` uses field 'options', which item 0 lacks"),
    ({"gold": "key", "data": {"path": "bad.jsonl", "split": "train"}},
     "the gold answer 'nine' of item 1 is not among its 2 choices ('2', '9'): fix `gold` or `choices`."),
    ({"gold": 2}, "the gold answer 2 of item 0 is not among its 2 choices"),
    ({"data": {"path": "empty.jsonl", "split": "train"}}, "`data.path` file '{tmp}/empty.jsonl' is empty: give a file "
                                                          "with examples."),
    ({"data": {"path": "header.csv", "split": "train"}}, "`data.path` '{tmp}/header.csv' could not be read"),
    ({"data": {"path": "data.jsonl", "split": "test"}}, "`data.split` 'test' is not a split of data.jsonl: its "
                                                        "splits are train"),
    ({"shots": 12}, "`shots` 12 is more than the 11 examples of the shot split (less the item scored)"),
    ({"data": {"path": "absent.jsonl"}}, "`data.path` file '{tmp}/absent.jsonl' does not exist"),
])
def test_data_refusals_name_the_field_and_come_before_any_model(tmp_path: Path, change: dict, said: str) -> None:
    jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "1", "wrong": "2", "key": "1"},
                                   {"question": "q", "answer": "9", "wrong": "2", "key": "nine"}])
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "header.csv").write_text("question,answer,wrong\n")  # no rows
    task = read_task(task_file(tmp_path, **change))
    with pytest.raises(UserError) as refused:
        load_items(task)
    assert str(refused.value).startswith(f"Task file '{tmp_path / 'task.yaml'}'")
    assert said.format(tmp=tmp_path) in str(refused.value)


@pytest.mark.parametrize("change, said", [
    ({"kind": "multiple_choise"}, "has `kind` 'multiple_choise': did you mean 'multiple_choice'?"),
    ({"promt": "x"}, "has unknown key 'promt': did you mean 'prompt'?"),
    ({"until": ["\n"]}, "has key 'until', which kind multiple_choice does not use (kind generate does): remove it."),
    ({"data": {"path": "data.jsonl", "splt": "test"}}, "has unknown key 'data.splt': did you mean 'split'?"),
    ({"preprocess": "hellaswg"}, "has `preprocess` 'hellaswg': did you mean 'hellaswag'?"),
    ({"gold": None}, "lacks `gold`, which kind multiple_choice needs: add it."),
    ({"choices": [True, False]}, "`choices` must be a list of strings (quote yes/no, which YAML reads as booleans)"),
    ({"shots": -1}, "`shots` must be a whole number of at least 0, got -1."),
    ({"prompt": "Q: {question"}, "`prompt` 'Q: {question' is not a template"),
    ({"kind": "generate", "choices": None, "gold": None, "answers": "answer", "normalize": ["lowr"]},
     "has `normalize` 'lowr': did you mean 'lower'?"),
])
def test_reading_refuses_unknown_kinds_keys_and_values(tmp_path: Path, change: dict, said: str) -> None:
    with pytest.raises(UserError) as refused:
        read_task(task_file(tmp_path, **change))
    assert str(refused.value).startswith(f"Task file '{tmp_path / 'task.yaml'}'") and said in str(refused.value)


# --- metrics -------------------------------------------------------------------------------------

def test_multiple_choice_acc_and_acc_norm_per_character_of_the_choice(tmp_path: Path) -> None:
    jsonl(tmp_path / "data.jsonl", [{"question": "q0", "answer": "yyy", "wrong": "x"},
                                    {"question": "q1", "answer": "long", "wrong": "no"}])
    task = read_task(task_file(tmp_path))
    # item 0: raw log-likelihood picks "x" (-1.0 > -2.7); per character "yyy" (-0.9 > -1.0); with the
    # delimiter counted the lengths would be 2 and 4 and "x" would win again
    scorer = FakeScorer({" x": -1.0, " yyy": -2.7, " no": -3.0, " long": -2.0}, greedy={" long"})
    metrics, records = score_task(task, scorer)
    assert metrics == {"acc": 0.5, "acc_norm": 1.0}
    [(name, questions)] = scorer.calls
    assert name == "loglikelihood" and questions == [("Q: q0\nA:", (" x", " yyy")), ("Q: q1\nA:", (" no", " long"))]
    assert records[3] == {"item": 1, "choice": 1, "context": "Q: q1\nA:", "continuation": " long",
                          "loglikelihood": -2.0, "is_greedy": True, "gold": 1}
    assert [(r["item"], r["choice"]) for r in records] == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_loglikelihood_acc_is_the_greedy_rate_and_perplexity_of_the_continuations(tmp_path: Path) -> None:
    jsonl(tmp_path / "d.jsonl", [{"text": "the cat sat"}, {"text": "a dog ran"}])
    local = TaskData(str(tmp_path / "d.jsonl"), split="train")
    task = dataclasses.replace(read_task(TASKS / "lambada.yaml"), data=local)
    metrics, records = score_task(task, FakeScorer({" sat": -1.0, " ran": -3.0}, greedy={" sat"}))
    assert metrics == {"acc": 0.5, "perplexity": pytest.approx(math.exp(2.0))}
    assert [(r["context"], r["continuation"], r["gold"]) for r in records] == [("the cat", " sat", 0),
                                                                              ("a dog", " ran", 0)]


def test_generate_exact_match_after_normalisation(tmp_path: Path) -> None:
    jsonl(tmp_path / "data.jsonl", [{"q": "one", "answers": {"text": ["The Cat", "kitty"]}},
                                    {"q": "two", "answers": {"text": ["dog"]}},
                                    {"q": "three", "answers": {"text": ["red fox"]}}])
    task = read_task(task_file(tmp_path, kind="generate", prompt="{q}?", choices=None, gold=None,
                               answers="answers[text]", until=["\n", "."], max_tokens=5,
                               normalize=["strip", "lower", "punctuation", "articles"]))
    scorer = FakeScorer(answers={"one?": " a cat!", "two?": "dogs", "three?": "Red  fox"})
    metrics, records = score_task(task, scorer)
    assert metrics == {"exact_match": pytest.approx(2 / 3)}
    assert scorer.calls == [("generate", (["one?", "two?", "three?"], ["\n", "."], 5))]
    assert records[0] == {"item": 0, "context": "one?", "generated": " a cat!", "answers": ["The Cat", "kitty"],
                          "exact_match": 1}
    assert [r["exact_match"] for r in records] == [1, 0, 1]


def test_perplexity_counts_words_as_lm_eval_and_bytes_in_utf8(tmp_path: Path) -> None:
    texts = ["one two  three\n", "héllo"]  # lm-eval's re.split(r"\s+"): 4 words (a trailing empty one), then 1
    jsonl(tmp_path / "d.jsonl", [{"body": t} for t in texts])
    spec = {"kind": "perplexity", "data": {"path": "d.jsonl", "split": "train"}, "text": "body", "overlap": 8}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    scorer = FakeScorer(rolling={texts[0]: (-6.0, 3), texts[1]: (-2.0, 2)})
    metrics, records = score_task(read_task(tmp_path / "p.yaml"), scorer)
    assert scorer.calls == [("rolling", (texts, 8))]
    assert records == [{"item": 0, "loglikelihood": -6.0, "tokens": 3, "bytes": 15, "words": 4},
                       {"item": 1, "loglikelihood": -2.0, "tokens": 2, "bytes": 6, "words": 1}]
    assert metrics == pytest.approx({"word_perplexity": math.exp(8 / 5), "byte_perplexity": math.exp(8 / 21),
                                     "bits_per_byte": 8 / 21 / math.log(2), "token_perplexity": math.exp(8 / 5)})
