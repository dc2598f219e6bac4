"""The `lmforge` command end to end, through the real LightningCLI, in a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import CONFIGS, ROOT
from lmforge.cli import main
from lmforge.data import Tokenizer
from lmforge.models import GPT, Bert, BertConfig, Electra, ElectraConfig, GPTConfig, Llama, LlamaConfig, T5, T5Config

TINY = str(CONFIGS / "gpt" / "tiny.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def run_cli(*args: str) -> None:
    main(list(args))


def all_configs() -> list[Path]:
    # configs/eval/ holds evaluation suites (named tasks, each a list of fit configs), not fit
    # configs: tests/evaluation/test_suite.py reads each one and checks its tasks
    return sorted(p for p in CONFIGS.rglob("*.yaml") if p.relative_to(CONFIGS).parts[0] != "eval")


@pytest.mark.parametrize("config", all_configs(), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_parses(config: Path, capsys: pytest.CaptureFixture) -> None:
    standalone = "model" in (yaml.safe_load(config.read_text()) or {})
    files = ["-c", str(config)] if standalone else ["-c", TINY, "-c", str(config)]
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", *files, "--print_config")
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith(("lmforge.tasks.", "lmforge.evaluation."))
    # a corpus, or a downstream task's data beside it in evaluation/
    assert printed["data"]["class_path"].startswith(("lmforge.data.", "lmforge.evaluation."))


PRESETS = {  # preset -> (network, parameters as in the paper's reference implementation)
    "gpt/small.yaml": (GPT, GPTConfig, 124_439_808),
    "gpt/medium.yaml": (GPT, GPTConfig, 354_823_168),
    "bert/base.yaml": (Bert, BertConfig, 110_106_428),
    "roberta/base.yaml": (Bert, BertConfig, 124_697_433),
    "t5/small.yaml": (T5, T5Config, 60_506_624),
    # the discriminator with its head, as Hugging Face counts google/electra-{small,base}-discriminator
    # (13,549,057 for Small, whose table has 512 positions; the preset's sequences of 128 need 384 x 128 fewer)
    "electra/small.yaml": (Electra, ElectraConfig, 13_499_905),
    "electra/base.yaml": (Electra, ElectraConfig, 109_483_009),
    "t5/base.yaml": (T5, T5Config, 222_903_552),
    # Hugging Face's counts of the published checkpoints (tied embeddings counted once)
    "llama/smollm2-135m.yaml": (Llama, LlamaConfig, 134_515_008),  # HuggingFaceTB/SmolLM2-135M: 134.5M
    "llama/llama-3.2-1b.yaml": (Llama, LlamaConfig, 1_235_814_400),  # meta-llama/Llama-3.2-1B: 1.24B
}


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_have_their_paper_sizes(preset: str, capsys: pytest.CaptureFixture) -> None:
    """The YAML presets, with vocabulary and context linked from their data, are the papers' sizes."""
    network, config_class, params = PRESETS[preset]
    with pytest.raises(SystemExit):
        run_cli("fit", "-c", str(CONFIGS / preset), "--print_config")
    config = yaml.safe_load(capsys.readouterr().out)
    data = config["data"]["init_args"]
    shape = {**config["model"]["init_args"]["config"], "vocab_size": data["tokenizer"]["vocab_size"],
             "max_seq_len": data["seq_len"]}
    with torch.device("meta"):
        net = network(config_class(**shape))
    assert (net.discriminator_params() if network is Electra else net.num_params()) == params


@pytest.mark.parametrize(
    "config", [CONFIGS / "quickstart.yaml", *sorted(CONFIGS.glob("*/tiny.yaml"))],
    ids=lambda p: str(p.relative_to(CONFIGS)),
)
def test_runnable_configs_fast_dev_run(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_cli("fit", "-c", str(config), "--trainer.fast_dev_run=true", "--data.init_args.max_documents=60", *QUIET)


@pytest.fixture
def short_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-step tiny GPT run; returns its run folder."""
    workdir = tmp_path_factory.mktemp("run")
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        run_cli(
            "fit", "-c", TINY, "--trainer.max_steps=10", "--trainer.val_check_interval=5",
            "--trainer.log_every_n_steps=1", "--throughput.window=2", *QUIET,
        )
    finally:
        os.chdir(cwd)
    return workdir / "logs" / "gpt-tiny" / "version_0"


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(run.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def test_run_folder_holds_scalars_samples_config_tokenizer_and_checkpoints(short_run: Path) -> None:
    found = scalars(short_run)
    for tag in ("train/loss", "val/loss", "val/ppl", "lr", "perf/tokens_per_sec", "perf/mfu"):
        assert tag in found and found[tag], f"{tag} missing from TensorBoard"
    assert [s for s, _ in found["val/loss"]] == [0, 4, 9]  # step 0: the untrained model
    assert all(v > 0 for _, v in found["perf/tokens_per_sec"])
    assert all(0 < v < 1 for _, v in found["perf/mfu"])
    acc = EventAccumulator(str(next(short_run.glob("events.out.tfevents.*"))))
    acc.Reload()
    assert any("samples" in tag for tag in acc.Tags()["tensors"]), "no generated text sample"
    config = yaml.safe_load((short_run / "config.yaml").read_text())
    assert config["data"]["init_args"]["tokenizer"]["vocab_size"] == 1024
    # the model's vocabulary size is linked from the data, never typed twice
    assert "vocab_size" not in config["model"]["init_args"]["config"]
    assert (short_run / "tokenizer.json").is_file()
    assert {p.name for p in (short_run / "checkpoints").iterdir()} == {"last.ckpt", "best.ckpt"}
    ckpt = torch.load(short_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    saved = Tokenizer.from_file(short_run / "tokenizer.json")
    assert Tokenizer.from_str(ckpt["lmforge"]["tokenizer"]).fingerprint == saved.fingerprint
    assert ckpt["lmforge"]["model_config"]["n_layer"] == 2
    assert ckpt["hyper_parameters"]["config"]["vocab_size"] == 1024


def test_resume_last_continues_in_place(short_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = short_run.parents[2]
    monkeypatch.chdir(workdir)
    config_before = (short_run / "config.yaml").read_text()
    run_cli("fit", "-c", TINY, "--trainer.max_steps=16", "--trainer.val_check_interval=5",
            "--trainer.log_every_n_steps=1", "--ckpt_path", "last", *QUIET)
    assert not (workdir / "logs" / "gpt-tiny" / "version_1").exists()  # same run folder
    ckpt = torch.load(short_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 16
    assert (short_run / "config.yaml").read_text() == config_before  # never overwritten
    assert (short_run / "config.resumed-1.yaml").is_file()
    steps = [s for s, _ in scalars(short_run)["train/loss"]]
    assert steps == list(range(16)), "TensorBoard steps must continue with no gap or repeat"


def test_predict_from_checkpoint_alone(short_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)  # nothing here but the checkpoint path: it must be enough
    ckpt = str(short_run / "checkpoints" / "last.ckpt")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Return the\n\nA list of\n", encoding="utf-8")
    run_cli("predict", "--ckpt_path", ckpt, "--model.prompts=The value", "--model.prompt_file", str(prompts),
            "--model.max_new_tokens=8", "--model.temperature=0", *QUIET)
    out = capsys.readouterr().out
    for prompt in ("The value", "Return the", "A list of"):
        assert prompt in out
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").rglob("config.yaml"))


def test_unknown_config_key_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  init_args:\n    config:\n      n_layers: 3\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "-c", TINY, "-c", str(typo))
    assert exit_info.value.code != 0
    assert "n_layers" in capsys.readouterr().err


def test_missing_corpus_path_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "-c", TINY, "--data=lmforge.data.TextCorpus", "--data.source.paths=nowhere/*.txt", *QUIET)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "No file matches 'nowhere/*.txt'" in err and "Traceback" not in err


def test_missing_checkpoint_is_one_clear_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli("predict", "-c", TINY, "--ckpt_path", "no/such.ckpt")
    assert exit_info.value.code == 2
    assert "Checkpoint 'no/such.ckpt' does not exist" in capsys.readouterr().err


def test_help_shows_docstrings(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        run_cli("fit", "--model.help", "lmforge.tasks.CausalLMTask")
    out = capsys.readouterr().out
    assert "Sampling temperature" in out and "--model.config.n_layer" in out


def test_tokenizer_train_command_never_overwrites(tiny_corpus: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "tok" / "tokenizer.json"
    run_cli("tokenizer", "train", "--out", str(out), "--source.paths", str(tiny_corpus), "--kind", "wordpiece",
            "--specials", "bert", "--vocab_size", "200")
    written = out.read_text()
    assert '"[MASK]"' in written and "WordPiece" in written
    with pytest.raises(SystemExit) as exit_info:
        run_cli("tokenizer", "train", "--out", str(out), "--source.paths", str(tiny_corpus), "--vocab_size", "300")
    assert exit_info.value.code == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == written


def test_tokenizer_train_warns_in_one_line_when_the_corpus_gives_fewer_tokens(tiny_corpus: Path, tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "tokenizer.json"
    with warnings.catch_warnings():  # shown as outside pytest: on stderr, through warnings.formatwarning
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(message, category, filename, lineno, line))
        run_cli("tokenizer", "train", "--out", str(out), "--source.paths", str(tiny_corpus), "--kind", "wordpiece",
                "--specials", "bert", "--vocab_size", "30522")
    obtained = Tokenizer.from_file(str(out)).vocab_size
    assert obtained < 30522
    printed = capsys.readouterr()
    assert [line for line in printed.err.splitlines() if "vocab_size" in line] == [
        f"lmforge: warning: The wordpiece tokenizer has {obtained} tokens, not the vocab_size=30522 asked for: the "
        "corpus is too small for that many (a merge must occur min_frequency=2 times or more); add text, lower "
        f"min_frequency, or ask for vocab_size={obtained}."
    ]
    assert f"Wrote {out}: wordpiece, {obtained} tokens" in printed.out  # a warning: the tokenizer is written


@pytest.mark.slow
def test_console_script_ddp_two_cpu_processes_streaming(tmp_path: Path) -> None:
    """Real DDP: two gloo processes on the CPU, launched by Lightning from the console script, on
    a streamed corpus (token shards under DDP: tests/test_ddp.py)."""
    streaming = True
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "lmforge", "fit", "-c", TINY, "--trainer.strategy=ddp", "--trainer.devices=2",
           "--trainer.max_steps=4", "--trainer.val_check_interval=2", f"--data.streaming={streaming}", *QUIET]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "logs" / "gpt-tiny" / "version_0"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4
    assert not (tmp_path / "logs" / "gpt-tiny" / "version_1").exists()  # one run, not one per rank
    data_state = ckpt["BundledCorpus"]
    # each rank's sub-stream position, gathered into the one checkpoint rank 0 writes
    assert sorted(data_state["stream"]) == [0, 1] and data_state["streams"] == 2
    assert data_state["stream"][0] != data_state["stream"][1]
    assert len(ckpt["lmforge"]["rng"]) == 2  # each rank's random state


def test_lmforge_help_lists_every_command_through_the_console_script() -> None:
    from lmforge.commands import COMMANDS

    script = Path(sys.executable).with_name("lmforge")  # what `pip install` put beside this Python
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    shown = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True, env=env).stdout
    listed = [line.split()[0] for line in shown.splitlines() if line.startswith("  ")]
    assert listed == list(COMMANDS) and len(listed) >= 9
    assert all(command.summary in shown for command in COMMANDS.values())
    lean = "import sys, lmforge.cli; sys.exit(len({'torch', 'lightning'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", lean], env=env).returncode == 0  # --help imports neither
    wrong = subprocess.run([str(script), "evalute"], capture_output=True, text=True, env=env)
    assert wrong.returncode == 2 and wrong.stderr.strip() == "lmforge: error: unknown command 'evalute': did you mean 'evaluate'?"
