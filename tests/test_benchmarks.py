"""Every benchmark script's ``--smoke`` run, end to end, so a change that breaks a benchmark fails here.

Each script's ``main`` runs with ``--smoke`` (what ``python benchmarks/<script>.py --smoke`` runs),
in this process to spare each one the seconds of importing torch and Lightning again, at tiny
shapes on the stand-ins of ``benchmarks/standins.py``: no network, no GPU, no data outside the repository.
(``prepare.py`` and ``real_weights.py`` still start their own subprocesses, as they measure
them.) The speeds and scores they print mean nothing at that size and are not checked; that the
run finishes, prints its report, and keeps the invariants a real run shows whatever the model
(same losses, same embeddings, no padding in the shards) is.
``benchmarks/gpu.py``'s smoke run (``--dry_run``) is tested in ``test_gpu_benchmark.py``.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch

from conftest import ROOT

pytestmark = pytest.mark.slow  # each one trains and evaluates tiny models for seconds

Smoke = Callable[..., tuple[str, dict[str, Any]]]


@pytest.fixture
def smoke(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Smoke:
    """``smoke(script, *args)``: run ``benchmarks/<script>``'s main with ``args --smoke``; its
    stdout and the JSON object of its last line. The environment variables and torch's thread
    count the script sets are put back afterwards."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src"))  # the subprocesses the scripts start
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(ROOT)

    def run(script: str, *args: str) -> tuple[str, dict[str, Any]]:
        name = f"lmforge_benchmark_{script.removesuffix('.py')}"
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / script)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)  # (its dataclasses look their module up)
        environ, threads = dict(os.environ), torch.get_num_threads()
        try:
            spec.loader.exec_module(module)
            module.main([*args, "--smoke"])
        except SystemExit as exit_info:  # a script that ends with its verdict's exit status
            assert exit_info.code in (0, None), f"{script} --smoke exited with {exit_info.code}"
        finally:
            os.environ.clear()
            os.environ.update(environ)
            torch.set_num_threads(threads)
        out = capsys.readouterr().out
        assert "SMOKE RUN" in out  # says its figures are not meaningful
        lines = out.strip().splitlines()
        return out, json.loads(lines[-1]) if lines[-1].startswith("{") else {}

    return run


def test_throughput(smoke: Smoke) -> None:
    out, summary = smoke("throughput.py")
    assert summary["smoke"] is True and summary["families"] == ["gpt", "bert", "t5", "elmo", "llama"]
    for name in summary["families"]:
        family = summary[name]
        assert len(family["tokens_per_sec"]) == 3  # (a), (b) and (c) all ran
        assert all(run["median"] > 0 for run in family["tokens_per_sec"].values())
        assert all(target["met"] is None for target in family["targets"].values())  # not judged
        # (b) is the same model, batches and updates as (a) in a hand-written loop
        assert family["loss_max_abs_diff_a_b"] < 1e-4, name
    for title in ("GPT causal LM", "BERT masked LM", "T5 span corruption", "ELMo bidirectional LM", "Llama causal LM"):
        assert title in out
    # each side trains what it names: lmforge's Llama in (a) and (b), transformers' in (c), all with AdamW
    assert summary["llama"]["trained"] == {
        "a_lmforge_fit": {"network": "Llama", "optimizer": "AdamW"},
        "b_pytorch_loop": {"network": "Llama", "optimizer": "AdamW"},
        "c_hf_llama_sdpa": {"network": "LlamaForCausalLM", "optimizer": "AdamW"},
    }
    assert summary["gpt"]["trained"]["c_hf_gpt2_sdpa"] == {"network": "GPT2LMHeadModel", "optimizer": "AdamW"}


def test_prepare(smoke: Smoke) -> None:
    out, _ = smoke("prepare.py")
    for line in ("1. speed: lmforge prepare", "2. peak memory", "3. data wait, tiny GPT"):
        assert line in out
    assert out.count("not judged (smoke)") == 3


def test_real_weights(smoke: Smoke) -> None:
    _, summary = smoke("real_weights.py")
    embeddings, cpt = summary["embeddings"], summary["continued_pretraining"]
    assert embeddings["sentences"] == 80
    assert embeddings["cosine_min"] > 0.999  # lmforge predict embeds as sentence-transformers does
    assert cpt["shard_tokens"] == cpt["expected_tokens"] and cpt["pad_ids_in_shards"] == 0
    assert cpt["as_saved_pad_ids"] > 0  # the folder's saved padding, which lmforge does not apply
    assert cpt["fit_prepared_again"] is False and cpt["train_loss_last"] is not None


def test_simcse_sts(smoke: Smoke) -> None:
    out, summary = smoke("simcse_sts.py")
    assert summary["passed"] is None  # not judged
    assert set(summary["sts_spearman_x100"]) == {"random_init_mean", "mlm_mean", "mlm_cls", "simcse_mean"}
    assert summary["mlm"]["steps"] == 4 and summary["simcse"]["steps"] == 2
    assert "| encoder" in out


def test_dapt_ohsumed(smoke: Smoke) -> None:
    _, summary = smoke("dapt_ohsumed.py")
    assert set(summary["ohsumed"]) == {"random init", "general", "general+domain"}
    assert set(summary["sst2"]) == {"random init", "general"}
    assert "val/acc mean" in summary["sst2"]["general"]


def test_downstream_parity(smoke: Smoke) -> None:
    out, summary = smoke("downstream.py", "parity")
    tasks = ("jnlpba", "sciie-ner", "sciie-rel", "citation", "ohsumed")
    for task in tasks:
        assert f"| {task} |" in out
        assert len(summary["results"][task]["lmforge"]) == len(summary["results"][task]["reference"]) == 1
        assert summary["results"][task]["reference"][0]["order"] == "lmforge"  # the same batches on both sides


def test_downstream_helps(smoke: Smoke) -> None:
    # an entity task and the relation task (entity_start pooling): the starts, and continued pretraining
    out, summary = smoke("downstream.py", "helps", "--tasks", "jnlpba,sciie-rel")
    assert "| task | metric | MiniLM | random init | MiniLM + MLM on OHSUMED |" in out
    for task in ("jnlpba", "sciie-rel"):
        assert len(summary["results"][task]["MiniLM + MLM on OHSUMED"]) == 1
    assert summary["results"]["mlm_checkpoint"].endswith("last.ckpt")


def test_downstream_qa(smoke: Smoke) -> None:
    # SQuAD 2.0-layout stand-in: lmforge's QuestionAnsweringTask against transformers' own QA model
    out, summary = smoke("downstream.py", "qa", "--same-batches")
    (ours,), (ref,) = summary["results"]["lmforge"], summary["results"]["reference"]
    assert ours["task"] == "QuestionAnsweringTask" and ours["network"] == "Bert"
    assert ref["network"] == "BertForQuestionAnswering"
    assert ours["windows"] == ref["windows"] and ours["steps"] == ref["steps"]  # the same windows, batch by batch
    assert ref["order"] == "lmforge"
    assert {"exact", "f1", "HasAns_f1", "NoAns_f1"} <= set(ours["test"]) & set(ref["test"])
    assert "| f1 |" in out and "training tokens/s" in out


def test_downstream_glue(smoke: Smoke) -> None:
    # SST-2 and STS-B in GLUE's layout (STS-B converted from the STS Benchmark's), lmforge's suite task
    # against transformers' own classifier, on the same batches
    out, summary = smoke("downstream.py", "glue")
    results = summary["results"]
    for row in ("| sst2 | acc |", "| stsb | pearson |", "| stsb | spearman |"):
        assert row in out
    assert results["sst2"]["train"] == results["stsb"]["train"] == 24  # drawn from 40 stand-in examples
    assert results["stsb"]["dev"] == 24  # every STS line read, those with 2 extra fields too
    for task, (problem, task_type) in {"sst2": ("single_label_classification", "classification"),
                                       "stsb": ("regression", "regression")}.items():
        (ours,), (ref,) = results[task]["lmforge"], results[task]["reference"]
        assert ours["settings"]["network"] == "Bert" and ours["settings"]["pooling"] == "cls"
        assert ours["settings"]["task_type"] == task_type
        assert ref["encoder_class"] == "BertModel" and ref["problem_type"] == problem  # transformers' own BERT
        assert ref["order"] == "lmforge" and ref["steps"] == ours["steps"] == 3  # 24 examples, batch 8
        assert abs(ours["train_tokens"] - ref["train_tokens"]) <= 1  # the same real tokens trained on both sides
        assert set(ref["metrics"]) <= set(ours["metrics"])


def test_downstream_curve(smoke: Smoke) -> None:
    # `lmforge evaluate`'s learning curve on the suite's sst2 task: every size from both starts
    out, summary = smoke("downstream.py", "curve")
    runs = summary["results"]["runs"]
    assert sorted((r["start"], r["train_size"]) for r in runs) == sorted(
        (start, size) for start in ("MiniLM", "random init") for size in ("8", "16", "all"))
    assert all(0.0 <= float(r["val/acc"]) <= 1.0 for r in runs)
    assert summary["results"]["curve_png"].endswith("curve.png")
    assert "| sst2 | all | val/acc |" in out


def test_time_to_loss(smoke: Smoke) -> None:
    # GPT-2, and the Llama block with AdamW and with Muon, each from its own config (compile: tests/tasks/test_compile.py)
    out, summary = smoke("time_to_loss.py", "--recipes", "a,b,c")
    assert set(summary["recipes"]) == {"a", "b", "c"} and summary["seeds"] == 1
    for recipe in summary["recipes"].values():
        assert recipe["tokens"][0] > 0 and recipe["final_loss"][0] < 7.0  # trained: below a uniform guess over 2048
    assert "to (a) final" in out and "(c) Llama block, Muon" in out  # the verdict's table
    trained = summary["trained"]  # each built the network and optimizer it names (the script also stops otherwise)
    gpt, llama = "lmforge.models.gpt.GPT", "lmforge.models.llama.Llama"
    assert trained["a"] == {"task": "lmforge.tasks.CausalLMTask", "network": gpt, "optimizer": "adamw", "compile": False}
    assert trained["b"] == {"task": "lmforge.tasks.LlamaCausalLMTask", "network": llama, "optimizer": "adamw",
                            "compile": False}
    assert trained["c"] == {"task": "lmforge.tasks.LlamaCausalLMTask", "network": llama, "optimizer": "muon",
                            "compile": False}


def test_libraries(smoke: Smoke) -> None:
    # ClassF1 against scikit-learn, wikitext against mwparserfromhell, the splitter against Punkt,
    # pysbd and sentencex: each side asserted to be the library it names inside the script
    out, summary = smoke("libraries.py", "--sample", "3")
    assert summary["class_f1"]["max_abs_diff_sklearn"] < 1e-6 and summary["class_f1"]["max_abs_diff_before"] < 1e-6
    page = summary["wiki"]["page"]
    assert page["lmforge"]["residue"] == 0 and page["lmforge"]["words_lost"] == 0
    assert page["mwparserfromhell (HF builder's rules)"]["words_added"] > 0  # it keeps categories and appendices
    splitters = summary["sentences"]["splitters"]
    assert set(splitters) == {"lmforge", "punkt (trained here)", "pysbd", "sentencex"}
    assert splitters["lmforge"]["false_breaks"] == 0  # the stand-ins' et al., vs., Fig., i.v., Dr., approx., U.S.
    assert "3 of " in out and "decisions where a splitter and the label disagree" in out


def test_zero_shot(smoke: Smoke) -> None:
    # lmforge alone (--reference none): lm-eval, the reference of the real run, is no test dependency.
    # Its scorer at batch 1 is the reference, and `lmforge evaluate` renders its own task files
    out, summary = smoke("zero_shot.py", "--reference", "none")
    assert summary["reference"] == "none" and set(summary["results"]) == {"trained", "llama"}
    for model, tasks in summary["results"].items():
        assert set(tasks) == {"sentiment", "completion", "squad"}
        for name, result in tasks.items():
            assert result["requests"] == result["lmforge_requests"] > 0, (model, name)
            assert result["evaluate"]["requests_differ"] == 0, (model, name)  # the task file renders the prompts
        for name in ("sentiment", "completion"):  # padding in a batch of 32 changes no log-likelihood
            assert tasks[name]["max_abs_diff"] < 1e-4 and tasks[name]["choices_differ"] == 0, (model, name)
        assert tasks["completion"]["requests"] == 4 * tasks["completion"]["evaluate"]["items"]  # 4 endings each
        assert tasks["squad"]["generations_differ"] == 0, model
    assert "| trained | completion |" in out and "| llama | squad |" in out


def test_replay(smoke: Smoke) -> None:
    out, summary = smoke("replay.py")
    runs = summary["results"]["runs"]
    assert set(runs) == {"0", "0.25"} and all(len(seeds) == 2 for seeds in runs.values())
    for run in runs["0"]:  # each run trains what it names
        assert "books" not in run["tokens"]
    for run in runs["0.25"]:
        assert run["tokens"]["books"] > 0
    starts = {run[tag][0][1] for seeds in runs.values() for run in seeds for tag in ("abstracts",)}
    assert len(starts) == 1  # every curve from the same pretrained weights, on the same held-out abstracts
    assert runs["0"][0]["abstracts"][1:] != runs["0"][1]["abstracts"][1:]  # the seeds differ
    assert "| continued, replay 25% |" in out and " ± " in out


def test_scaling(smoke: Smoke) -> None:
    # the script asserts each run's parameters and steps (6 N D on its budget); the fit and the prediction run
    out, summary = smoke("scaling.py")
    assert len(summary["runs"]) == 6 and {r["budget"] for r in summary["runs"]} == {6e9, 1.5e10}
    assert set(summary["fit"]) == {"E", "A", "B", "alpha", "beta"} and summary["held_out"]["predicted"] > 0
    assert "Chinchilla" in out and "Besiroglu" in out and "held-out run" in out


def test_electra(smoke: Smoke) -> None:
    # every arm, each on the same FLOPs
    out, summary = smoke("electra.py", "--arms", "bert", "recipe", "electra")
    arms, budget = summary["arms"], summary["budget_flops"]
    assert set(arms) == {"bert", "recipe", "electra"}
    for arm in arms.values():
        assert arm["steps"] % 4 == 0 and abs(arm["flops"] - budget) / budget < 0.3  # whole quarters, near the budget
    assert arms["bert"]["flops"] == budget  # the first arm sets it: its reference steps
    bert, recipe = arms["bert"]["trained"], arms["recipe"]["trained"]
    assert bert["task"] == recipe["task"] == "lmforge.tasks.MaskedLMTask"
    assert (bert["pre_norm"], bert["bias"], bert["nsp_head"]) == (False, True, False)
    assert (recipe["pre_norm"], recipe["bias"], recipe["dropout"]) == (True, False, 0.0)
    assert recipe["tie_embeddings"] is False  # the recipe's own MLM output matrix
    assert bert["tie_embeddings"] is True
    assert recipe["schedule"] == "linear" and recipe["warmup_steps"] == round(0.75 * arms["recipe"]["steps"])
    assert recipe["lr"] == 1e-3 and recipe["min_lr_ratio"] == 0.0  # the one-cycle triangle
    electra = arms["electra"]["trained"]
    assert electra["task"] == "lmforge.tasks.ElectraTask" and electra["d_model"] == bert["d_model"]
    assert electra["generator_d_model"] == bert["d_model"] // 4 and electra["lr"] == 5e-4  # ELECTRA-Small's quarter
    assert arms["electra"]["flops_per_token"] > arms["bert"]["flops_per_token"]  # the generator's work counted
    for task in ("sst2", "jnlpba"):
        starts = summary["downstream"][task]["scores"]
        assert set(starts) == {"random init"} | {f"{a} {f}" for a in arms for f in ("0.25", "0.5", "1")}
    assert "Unigram reference" in out and "| all \"original\" | val RTD AUC | embedding cos |" in out  # what each arm learned
    for arm in arms:  # each arm's last row: the embeddings' mean cosine of its checkpoint, a number in [-1, 1]
        last = re.findall(rf"^\| {arm} \| {arms[arm]['steps']} \|.* (-?\d\.\d\d) \|$", out, re.M)
        assert len(last) == 1 and -1 <= float(last[0]) <= 1, (arm, last)
    assert "| start | pretraining FLOPs | seeds | sst2 | jnlpba | mean |" in out and "| recipe 1 |" in out
    # fine-tune the same checkpoints again with other settings, without pretraining again; an arm the
    # run lacks is pretrained into it on the same budget (the script asserts it read the same examples)
    run = summary["run"]
    books = os.path.join(os.path.dirname(run), "data")  # the first run's, touched as a later sitting's fresh copy:
    for path in glob.glob(os.path.join(books, "general", "gutenberg", "*")):  # the corpus fingerprint changes
        os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    again_out, again = smoke("electra.py", "--arms", "bert", "recipe-tied", "--reuse", run, "--tasks", "sst2",
                             "--curve-seeds", "0", "--finetune-mode", "probe", "--finetune-lr", "1e-3", "--data", books)
    # the added arm read the run's tokenizer, not one trained again (same vocabulary, other ids)
    assert len(glob.glob(os.path.join(run, "cache", "tokenizers", "*.json"))) == 1
    assert again["arms"]["bert"]["minutes"] is None and again["arms"]["bert"]["steps"] == arms["bert"]["steps"]
    assert again["budget_flops"] == budget and again["arms"]["recipe-tied"]["minutes"] is not None
    assert again["arms"]["recipe-tied"]["steps"] == arms["recipe"]["steps"]  # the recipe's shape, the same FLOPs
    assert again["arms"]["recipe-tied"]["trained"]["tie_embeddings"] is True
    assert set(again["downstream"]) == {"sst2"}
    assert set(again["downstream"]["sst2"]["scores"]) == {"random init", "bert 1", "recipe-tied 1"}
    assert os.path.isdir(os.path.join(run, "eval-sst2-probe-lr0.001"))
    assert os.path.isdir(os.path.join(run, "recipe-tied"))
    assert "bert: " not in again_out and "recipe-tied: " in again_out  # only the new arm pretrained


def test_electra_finetune_options(tmp_path) -> None:
    # the fine-tuning settings the SST-2 probes of RESULTS.md vary: the learning rate, frozen or
    # full, and which tasks; every start's recipe file carries them
    import tokenizers
    import yaml

    spec = importlib.util.spec_from_file_location("lmforge_benchmark_electra_options", ROOT / "benchmarks" / "electra.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        a = module.parse_args(["--tasks", "sst2", "--finetune-lr", "1e-4", "--finetune-mode", "probe"])
        recipes = module.finetune_recipes(tmp_path, tmp_path, module.SHAPE, a)
        (tmp_path / "default").mkdir()
        default = module.finetune_recipes(tmp_path / "default", tmp_path, module.SHAPE, module.parse_args([]))
        tied = module.arm_args("recipe-tied", a, module.SHAPE, [])  # the ablation of the recipe's untied head
        arms = module.parse_args([]).arms
        # a run that holds results of the same settings (a --reuse that added arms) gets fresh names
        tags = [module.eval_tag(tmp_path / "default", module.parse_args([]))]
        (tmp_path / "default" / "eval-jnlpba-curve-2").mkdir()
        tags.append(module.eval_tag(tmp_path / "default", module.parse_args([])))
        tags.append(module.eval_tag(tmp_path / "default", module.parse_args(["--tasks", "sst2"])))
        # --reuse reads the tokenizer its arms saved, and refuses arms saved with different ones
        run = tmp_path / "run"

        def save(arm: str, vocab: dict[str, int]) -> None:
            (run / arm / "version_0").mkdir(parents=True, exist_ok=True)
            (run / arm / "version_0" / "tokenizer.json").write_text(
                tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]")).to_str())

        for arm in ("bert", "recipe"):
            save(arm, {"[UNK]": 0, "a": 1, "b": 2})
        pinned = module.run_tokenizer(run)
        save("recipe", {"[UNK]": 0, "a": 2, "b": 1})  # the same tokens, two ids swapped
        with pytest.raises(SystemExit) as refused:
            module.run_tokenizer(run)
    finally:
        del sys.modules[spec.name]
    assert pinned == run / "bert" / "version_0" / "tokenizer.json"
    message = str(refused.value)
    assert "different tokenizers" in message and "bert " in message and "recipe " in message
    assert "--model.config.tie_embeddings=true" in tied and arms == ["bert", "recipe", "electra"]
    assert tags == ["-2", "-3", "-2"]  # sst2.yaml and jnlpba.yaml were written; then eval-jnlpba-curve-2 was taken
    assert set(recipes) == {"sst2"} and set(default) == {"sst2", "jnlpba"}
    model = yaml.safe_load(recipes["sst2"][0].read_text())["model"]["init_args"]
    assert model["optimizer"]["lr"] == 1e-4 and model["mode"] == "probe"
    for path, _ in default.values():
        model = yaml.safe_load(path.read_text())["model"]["init_args"]
        assert model["optimizer"]["lr"] == 5e-4 and model["mode"] == "full"
