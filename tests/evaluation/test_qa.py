"""QuestionAnsweringTask on SquadData: answers decoded as a hand decoding of the same scores gives
them, the SQuAD 2.0 threshold chosen on validation and kept for test and predict, v1.1 always
answering, BioASQ's measures, the hub's SQuAD layout, the command line and its refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from tokenizers import processors

from lmforge.cli import main
from lmforge.data import DataSource, TokenizerSpec, train_tokenizer
from lmforge.errors import UserError
from lmforge.evaluation import QuestionAnsweringTask, SquadData
from lmforge.evaluation.squad_data import best_span, ranked_answers, read_squad
from lmforge.evaluation.squad_metric import best_thresholds, bioasq_scores, squad_scores
from lmforge.models import BertConfig
from lmforge.start import connect
from lmforge.tasks import MaskedLMTask

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PLACES = ["Paris", "London", "Rome", "Berlin"]
THINGS = ["tower", "bridge", "castle", "museum"]


def paragraph(i: int, filler: int, impossible: bool = True) -> dict:
    """A context with a place and a year, ``filler`` words before them (long ones cross windows)."""
    thing, place, year = THINGS[i % 4], PLACES[(i // 2) % 4], str(1800 + 7 * i)
    context = " ".join(f"word{(i + k) % 9}" for k in range(filler)) + f" The {thing} is in {place}. It opened in {year}."
    qas = [{"id": f"p{i}-where", "question": f"Where is the {thing}?",
            "answers": [{"text": place, "answer_start": context.index(f" {place}.") + 1}]},
           {"id": f"p{i}-when", "question": f"When did the {thing} open?",
            "answers": [{"text": year, "answer_start": context.index(year)},
                        {"text": f"in {year}", "answer_start": context.index(f"in {year}")}]}]
    if impossible:
        qas.append({"id": f"p{i}-who", "question": f"Who painted the {thing}?", "answers": [], "is_impossible": True,
                    "plausible_answers": [{"text": place, "answer_start": context.index(f" {place}.") + 1}]})
    return {"context": context, "qas": qas}


def squad_file(path: Path, paragraphs: list[dict], version: str = "v2.0") -> str:
    path.write_text(json.dumps({"version": version, "data": [{"title": path.stem, "paragraphs": paragraphs}]}),
                    encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("squad")
    return {
        "train": squad_file(folder / "train.json", [paragraph(i, 4 + 3 * i) for i in range(8)]),
        "dev": squad_file(folder / "dev.json", [paragraph(i, 30 if i == 9 else 3) for i in range(8, 11)]),
        "v1": squad_file(folder / "v1.json", [paragraph(i, 3 + 20 * (i == 12), impossible=False) for i in range(11, 14)],
                         "1.1"),
    }


@pytest.fixture(scope="module")
def bert_ckpt(tmp_path_factory: pytest.TempPathFactory, files: dict[str, str]) -> str:
    texts = [q.context + " " + q.question for f in files.values() for q in read_squad(f)]
    tok = train_tokenizer(texts * 2, TokenizerSpec(kind="wordpiece", specials="bert", vocab_size=160, min_frequency=1))
    torch.manual_seed(0)
    task = MaskedLMTask(config=BertConfig(vocab_size=tok.vocab_size, max_seq_len=40, n_layer=1, n_head=2, d_model=32))
    task.tokenizer = tok
    ckpt = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    task.on_save_checkpoint(ckpt)
    path = tmp_path_factory.mktemp("bert") / "bert.ckpt"
    torch.save(ckpt, path)
    return str(path)


def trainer() -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, max_steps=4, num_sanity_val_steps=0)


def qa(bert_ckpt: str, train: str, validation: str, **kwargs) -> tuple[QuestionAnsweringTask, SquadData]:
    torch.manual_seed(0)
    task = QuestionAnsweringTask(init_from=bert_ckpt, **kwargs)
    data = SquadData(source=DataSource(paths=train), validation=validation, seq_len=40, stride=8, batch_size=4)
    connect(task, data)
    return task, data


def hand_answers(task: QuestionAnsweringTask, data: SquadData, split: str) -> tuple[dict, dict, dict]:
    """Predictions, no-answer scores and gold answers decoded window by window with ``best_span``."""
    data.setup("validate")
    task.eval()
    batch = data.collate(data.datasets[split])
    with torch.no_grad():
        start, end = task(batch)
    questions = data.questions(split)
    predictions, no_answer = {}, {}
    for index, q in enumerate(questions):
        rows = [i for i, w in enumerate(data.windows[split]) if w.question == index]
        pieces = [data.windows[split][i] for i in rows]
        text, score, null = best_span([start[i, :len(p.input_ids)].tolist() for i, p in zip(rows, pieces)],
                                      [end[i, :len(p.input_ids)].tolist() for i, p in zip(rows, pieces)], pieces,
                                      q.context)
        predictions[q.id], no_answer[q.id] = text, null - score
    return predictions, no_answer, {q.id: list(q.answers) for q in questions}


def test_validation_scores_are_those_of_a_hand_decoding_and_test_keeps_the_chosen_threshold(
        bert_ckpt: str, files: dict[str, str]) -> None:
    task, data = qa(bert_ckpt, files["train"], files["dev"])
    trainer().fit(task, datamodule=data)
    assert len(data.windows["val"]) > len(data.questions("val"))  # the long context crosses windows
    got = trainer().validate(task, datamodule=data, verbose=False)[0]
    predictions, no_answer, gold = hand_answers(task, data, "val")
    threshold = best_thresholds(predictions, gold, no_answer)["best_f1_thresh"]
    expected = squad_scores(predictions, gold, no_answer, threshold)
    assert got["val/threshold"] == pytest.approx(threshold, abs=1e-4)
    for key in ("exact", "f1", "HasAns_f1", "NoAns_exact"):
        name = "val/" + key.lower().replace("hasans", "has_ans").replace("noans", "no_ans")
        assert got[name] == pytest.approx(expected[key], abs=1e-3), name
    # test scores the same file at the threshold kept from validation, not a new one
    data.test = files["dev"]
    data._raw, data.datasets = None, {}
    task.chosen_threshold.fill_(threshold + 0.5)
    tested = trainer().test(task, datamodule=data, verbose=False)[0]
    assert tested["test/threshold"] == pytest.approx(threshold + 0.5, abs=1e-4)
    assert tested["test/f1"] == pytest.approx(squad_scores(predictions, gold, no_answer, threshold + 0.5)["f1"], abs=1e-3)


def test_squad_v1_data_is_always_answered(bert_ckpt: str, files: dict[str, str]) -> None:
    task, data = qa(bert_ckpt, files["v1"], files["v1"])
    got = trainer().validate(task, datamodule=data, verbose=False)[0]
    predictions, no_answer, gold = hand_answers(task, data, "val")
    assert all(predictions.values()) and "val/threshold" not in got and math.isinf(float(task.chosen_threshold))
    assert got["val/f1"] == pytest.approx(squad_scores(predictions, gold)["f1"], abs=1e-3)


def test_bioasq_ranks_the_snippets_of_a_question_together_and_scores_as_bioasq_does() -> None:
    scores = bioasq_scores({"q1": ["BRCA1", "TP53"], "q2": ["x", "y", "Insulin"], "q3": ["a"], "q4": []},
                           {"q1": ["brca1 "], "q2": ["insulin", "INS"], "q3": ["b"], "q4": ["c"], "q5": []})
    # q1 right first (1), q2 third (1/3), q3 and q4 wrong; q5 has no gold answer and is not scored
    assert scores == pytest.approx({"strict_acc": 25.0, "lenient_acc": 50.0, "mrr": 100 * (1 + 1 / 3) / 4})
    from lmforge.evaluation.squad_data import Question
    questions = [Question("5a1_000", "What?", "TP53 and BRCA1", ("BRCA1",), (9,)),
                 Question("5a1_001", "What?", "brca1 binds", ("brca1",), (0,))]
    spans = ranked_answers(questions, torch.tensor([0, 1]), torch.tensor([[3.0, 1.0], [2.0, -math.inf]]),
                           torch.tensor([[9, 0], [0, 0]]), torch.tensor([[14, 4], [5, 0]]), torch.tensor([0.5, -1.0]),
                           merge_snippets=True)
    ranked, null, gold = spans["5a1"]
    assert [t for t, _ in ranked] == ["BRCA1", "TP53"] and null == -1.0 and gold == ["BRCA1", "brca1"]


def test_the_hubs_squad_layout_reads_as_the_json_file(tmp_path: Path, files: dict[str, str], bert_ckpt: str) -> None:
    import datasets

    questions = read_squad(files["dev"])
    rows = [{"id": q.id, "title": q.title, "context": q.context, "question": q.question,
             "answers": {"text": list(q.answers), "answer_start": list(q.starts)}} for q in questions]
    (tmp_path / "squad_v2").mkdir()
    for split in ("train", "validation"):  # as rajpurkar/squad_v2 stores them
        datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "squad_v2" / f"{split}-00000-of-00001.parquet"))
    data = SquadData(source=DataSource(hf_dataset=str(tmp_path)), validation="validation", seq_len=40, stride=8)
    assert data.questions("val") == questions
    rows[1]["answers"]["answer_start"] = [0]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "squad_v2" / "validation-00000-of-00001.parquet"))
    with pytest.raises(UserError, match=f"validation' question '{rows[1]['id']}': answer .* does not point at it"):
        SquadData(source=DataSource(hf_dataset=str(tmp_path)), validation="validation").raw()


def test_a_question_id_in_two_files_and_a_tokenizer_without_a_pair_template_are_refused(
        tmp_path: Path, files: dict[str, str]) -> None:
    data = SquadData(source=DataSource(paths=[files["train"], files["train"]]), validation=files["dev"])
    with pytest.raises(UserError, match="Question id 'p0-where' is in more than one of .*train.json"):
        data.raw()
    tok = train_tokenizer(["the tower is in paris"] * 4, TokenizerSpec(kind="byte_level_bpe", specials="gpt",
                                                                       vocab_size=270))
    data = SquadData(source=DataSource(paths=files["train"]), validation=files["dev"], seq_len=40, stride=8)
    data.tokenizer = tok  # a GPT tokenizer
    with pytest.raises(UserError, match="tokenizer's pair template .* this tokenizer has none"):
        data.setup("fit")


def test_windows_follow_the_tokenizers_own_pair_template(files: dict[str, str]) -> None:
    texts = [q.context + " " + q.question for q in read_squad(files["dev"])]
    tok = train_tokenizer(texts, TokenizerSpec(kind="byte_level_bpe", specials="roberta", vocab_size=300))
    backend = tok.backend  # the template transformers' RoBERTa tokenizer.json carries
    backend.post_processor = processors.RobertaProcessing(("</s>", backend.token_to_id("</s>")),
                                                          ("<s>", backend.token_to_id("<s>")))
    data = SquadData(source=DataSource(paths=files["dev"]), validation=files["dev"], seq_len=40, stride=8)
    data.tokenizer = tok
    data.setup("fit")
    ids = {name: tok.backend.token_to_id(name) for name in ("<s>", "</s>")}
    for window in data.windows["val"]:
        question = len(tok.encode(data.questions("val")[window.question].question))
        # <s> question </s></s> context </s>, token types all 0 (RoBERTa has one type)
        assert window.input_ids[0] == ids["<s>"] and window.input_ids[-1] == ids["</s>"]
        assert window.input_ids[question + 1:question + 3] == (ids["</s>"], ids["</s>"])
        assert window.offsets[question + 3] is not None and set(window.token_type_ids) == {0}


def test_fit_then_predict_writes_the_official_prediction_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture, files: dict[str, str],
                                                              bert_ckpt: str) -> None:
    monkeypatch.chdir(tmp_path)
    config = ["-c", str(CONFIGS / "finetune" / "qa.yaml"), f"--data.source.paths={files['train']}",
              f"--data.validation={files['dev']}", "--data.seq_len=40", "--data.stride=8", "--data.batch_size=8",
              "--trainer.enable_progress_bar=false"]
    main(["fit", *config, f"--model.init_from={bert_ckpt}", "--model.max_answer_tokens=5", "--trainer.max_steps=3",
          "--trainer.val_check_interval=3", "--trainer.enable_model_summary=false"])
    ckpt = next(tmp_path.glob("logs/qa/version_0/checkpoints/last.ckpt"))
    saved = torch.load(ckpt, weights_only=True)
    assert saved["hyper_parameters"]["max_answer_tokens"] == 5
    # a SQuAD fine-tune's head carries over to the next fine-tune (BioBERT's SQuAD, then BioASQ)
    assert torch.equal(QuestionAnsweringTask(init_from=str(ckpt)).head.weight, saved["state_dict"]["head.weight"])
    assert not torch.equal(QuestionAnsweringTask(init_from=str(ckpt), random_init=True).head.weight,
                           saved["state_dict"]["head.weight"])
    capsys.readouterr()
    main(["predict", *config, "--ckpt_path", str(ckpt), f"--data.predict={files['dev']}"])
    answers = json.loads(capsys.readouterr().out)
    questions = {q.id: q for q in read_squad(files["dev"])}
    assert set(answers) == set(questions)
    assert all(a in questions[q].context for q, a in answers.items())


def test_a_wrong_answer_start_exits_2_naming_the_file_and_id_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, bert_ckpt: str) -> None:
    monkeypatch.chdir(tmp_path)
    bad = paragraph(0, 3)
    bad["qas"][0]["answers"][0]["answer_start"] += 2
    squad_file(tmp_path / "train.json", [bad])
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(CONFIGS / "finetune" / "qa.yaml"), "--data.source.paths=train.json",
              "--data.validation=train.json", "--data.seq_len=40", "--data.stride=8", f"--model.init_from={bert_ckpt}"])
    assert exit_info.value.code == 2
    assert "'train.json' question 'p0-where': answer 'Paris' has answer_start" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.json"]
