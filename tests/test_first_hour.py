"""What a new user meets in the first hour (issue 17): output that shows only what matters, and
one sentence, exit status 2 and nothing written for each mistake.

Runs go through ``lmforge.cli.main`` in-process, in a temporary folder, as the console script
does; pytest's captured output is not a terminal, so progress comes as plain lines.
"""

from __future__ import annotations

import logging
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import CONFIGS, refused
from lmforge.cli import main

TINY = str(CONFIGS / "gpt" / "tiny.yaml")
BERT = str(CONFIGS / "bert" / "tiny.yaml")
SMALL = ["--data.max_documents=60", "--trainer.limit_val_batches=2", "--sample.prompt=The"]
NOISE = ("💡", "Tip:", "LeafSpec", "Total FLOPs", "FLOPs ┃", "Epoch 0/-2", "exists and is not empty",
         "oneDNN", "dirpath has changed", "TPU available", "v_num")


def run(*args: str) -> list[str]:
    """``lmforge *args`` in-process; the warnings it raised (the output is read with capfd)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(list(args))
    return [str(w.message) for w in caught]


def files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: (size, modification time), to see that nothing changed."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def lightning_logs_reach_caplog(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning stops its loggers' records at ``lightning.pytorch`` when the root logger had no
    handler at its import (which depends on the tests run before): let them through to caplog."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("first-hour")


@pytest.fixture(scope="module")
def gpt_run(workdir: Path) -> Path:
    """A 4-step tiny GPT run validated at steps 2 and 4 (its output is checked below)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        main(["fit", "-c", TINY, "--trainer.max_steps=4", "--trainer.val_check_interval=2", "--trainer.log_every_n_steps=1",
              *SMALL])
    return workdir / "logs" / "gpt-tiny" / "version_0"


# -- output ------------------------------------------------------------------------------------
def test_a_run_prints_progress_lines_and_none_of_the_noise(workdir: Path, capfd: pytest.CaptureFixture,
                                                           caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    caught = run("fit", "-c", TINY, "--trainer.max_steps=4", "--trainer.val_check_interval=2",
                    "--trainer.logger.init_args.name=noise", *SMALL)
    out, err = capfd.readouterr()
    err += caplog.text  # Lightning's and lmforge's info lines go through logging
    caplog.clear()
    text = out + err + "\n".join(caught)
    for noise in NOISE:
        assert noise not in text, noise
    # not a terminal: plain lines, steps of max_steps, loss and tokens/s
    lines = [line for line in out.splitlines() if line.startswith("step ")]
    assert lines and lines[-1].startswith("step 4/4 | train/loss ") and "tok/s" in lines[-1], out
    # the line of a step comes after the validation due at it: the last one shows the final val/loss
    events = EventAccumulator(str(workdir / "logs" / "noise" / "version_0"), size_guidance={"scalars": 0})
    events.Reload()
    assert f"val/loss {events.Scalars('val/loss')[-1].value:.4g} |" in lines[-1], lines[-1]
    assert "Model: GPT, " in err and "FLOPs per token" in err
    assert re.search(r"best \(val/loss\): \S+best\.ckpt", err)

    # a resumed run: no warning about its own checkpoint folder
    caught = run("fit", "-c", TINY, "--trainer.max_steps=6", "--trainer.val_check_interval=2",
                    "--trainer.logger.init_args.name=noise", "--ckpt_path=last", *SMALL)
    out, err = capfd.readouterr()
    for noise in NOISE:
        assert noise not in out + err + caplog.text + "\n".join(caught), noise
    assert "step 6/6" in out


def test_a_run_that_never_validated_says_so(workdir: Path, caplog: pytest.LogCaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    run("fit", "-c", TINY, "--trainer.max_steps=2", "--trainer.logger.init_args.name=noval", *SMALL)
    err = caplog.text
    assert "no best checkpoint (val/loss was never computed: no validation ran)" in err
    assert not re.search(r"best \(val/loss\): *$", err, re.MULTILINE)


def test_validation_scalars_and_text_samples_share_one_step_axis(gpt_run: Path) -> None:
    """Lightning's convention, for every tag: a point after N optimizer steps sits at N - 1 (the
    index of the last step), the untrained model's validation at 0."""
    events = EventAccumulator(str(gpt_run), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    val = [e.step for e in events.Scalars("val/loss")]
    samples = [e.step for e in events.Tensors("samples/text_summary")]
    assert val == [0, 1, 3]  # the untrained model, then after 2 and 4 optimizer steps
    assert samples == [1, 3]  # generated right after those two validations
    assert [e.step for e in events.Scalars("train/loss")] == [0, 1, 2, 3]


def test_predict_writes_no_run_folder(gpt_run: Path, tmp_path: Path, capfd: pytest.CaptureFixture,
                                      caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    caught = run("predict", "--ckpt_path", str(gpt_run / "checkpoints" / "last.ckpt"), "--model.prompts=The",
                    "--model.max_new_tokens=3")
    out, err = capfd.readouterr()
    assert not (tmp_path / "logs").exists()
    for noise in NOISE:
        assert noise not in out + err + caplog.text + "\n".join(caught), noise
    assert out.strip().startswith("The")
    assert "Be aware that when using `ckpt_path`" not in "\n".join(caught)


def test_enable_checkpointing_false_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", TINY, "--trainer.max_steps=2", "--trainer.enable_checkpointing=false", *SMALL])
    run_folder = tmp_path / "logs" / "gpt-tiny" / "version_0"
    assert list(run_folder.glob("events.out.tfevents.*")) and not (run_folder / "checkpoints").exists()


# -- mistakes: one sentence, exit status 2, nothing written ------------------------------------
def test_a_bert_tokenizer_for_gpt_is_refused(gpt_run: Path, workdir: Path, capsys: pytest.CaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    main(["tokenizer", "train", "--out", "bert.json", "--kind", "wordpiece", "--specials", "bert",
          "--vocab_size", "300", "--max_documents", "20"])
    line = refused(capsys, "fit", "-c", TINY, "--data.tokenizer.path=bert.json", *SMALL)
    assert "data.tokenizer.path 'bert.json'" in line and "[MASK]" in line and "specials: gpt" in line
    assert not (tmp_path / "logs").exists()


def test_a_typed_value_is_never_overridden_by_a_link(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    line = refused(capsys, "fit", "-c", TINY, "--data.seq_len=128", "--model.config.max_seq_len=32", *SMALL)
    assert line == ("lmforge: error: model.config.max_seq_len is 32, but data.seq_len gives 128: this value is "
                    "linked from the data, so drop model.config.max_seq_len (or change data.seq_len).")
    assert not (tmp_path / "logs").exists()


def test_a_bert_checkpoint_given_to_a_gpt_command_is_named(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", BERT, "--trainer.max_steps=1", "--trainer.limit_val_batches=1", "--data.max_documents=40",
          "--model.nsp=false"])
    ckpt = tmp_path / "logs" / "bert-tiny" / "version_0" / "checkpoints" / "last.ckpt"
    before = files(tmp_path / "logs")
    line = refused(capsys, "fit", "-c", TINY, "--ckpt_path", str(ckpt))
    assert f"'{ckpt}' is a MaskedLMTask checkpoint (a bert network), but this command configures CausalLMTask" in line
    assert files(tmp_path / "logs") == before and not (tmp_path / "logs" / "gpt-tiny").exists()


@pytest.mark.parametrize("command", ["predict", "export", "fit"])
def test_a_truncated_checkpoint_is_named(command: str, gpt_run: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    torn = tmp_path / "torn.ckpt"
    torn.write_bytes((gpt_run / "checkpoints" / "last.ckpt").read_bytes()[:50_000])
    args = {"predict": ["predict", "--ckpt_path", str(torn)],
            "export": ["export", "--ckpt_path", str(torn), "--to", "out"],
            "fit": ["fit", "-c", TINY, "--ckpt_path", str(torn)]}[command]
    line = refused(capsys, *args)
    assert f"'{torn}' is not a complete checkpoint" in line and "cut short or damaged" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["torn.ckpt"]


def test_a_torn_last_ckpt_is_moved_aside_and_the_usual_names_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["fit", "-c", TINY, "--trainer.val_check_interval=2", *SMALL]
    main([*args, "--trainer.max_steps=4"])
    folder = tmp_path / "logs" / "gpt-tiny" / "version_0" / "checkpoints"
    good = (folder / "last.ckpt").read_bytes()
    (folder / "last.ckpt").write_bytes(good[: len(good) // 2])  # a write cut short by another tool
    caplog.clear()
    main([*args, "--trainer.max_steps=6", "--ckpt_path=last"])
    relative = "logs/gpt-tiny/version_0/checkpoints/last.ckpt"
    assert f"'{relative}' is incomplete (its write was cut short): moved aside to '{relative}.torn'" in caplog.text
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt", "last.ckpt.torn"]
    assert torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 6
    assert len((folder / "last.ckpt.torn").read_bytes()) == len(good) // 2  # kept, for whoever wants it


def test_only_damaged_checkpoints_are_called_damaged(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "logs" / "gpt-tiny" / "version_0" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "last.ckpt").write_bytes(bytes(4096))  # zero-filled: a crash before the data reached the disk
    before = files(tmp_path)
    line = refused(capsys, "fit", "-c", TINY, "--ckpt_path=last")
    assert "found only damaged checkpoints" in line and "logs/gpt-tiny/version_0/checkpoints/last.ckpt" in line
    assert "start a run first" not in line
    assert files(tmp_path) == before


def test_a_negative_max_steps_is_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    line = refused(capsys, "fit", "-c", TINY, "--trainer.max_steps=-5")
    assert line == ("lmforge: error: `max_steps` must be a non-negative integer or -1 (infinite steps). "
                    "You passed in -5.")
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("where", ["option", "config file"])
def test_an_unknown_key_is_named_with_the_nearest_valid_one(where: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    if where == "option":
        args = ["fit", "-c", TINY, "--model.config.n_heads=4"]
    else:
        typo = tmp_path / "typo.yaml"
        typo.write_text("model:\n  init_args:\n    config:\n      n_heads: 4\n", encoding="utf-8")
        args = ["fit", "-c", TINY, "-c", str(typo)]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == ("lmforge: unknown option 'model.config.n_heads' of lmforge.tasks.CausalLMTask: "
                    "did you mean 'model.config.n_head'?")


@pytest.mark.parametrize("option, nearest", [("--data.max_document=4", "data.max_documents"),
                                             ("--trainer.max_stepz=5", "trainer.max_steps"),
                                             ("--checkpoint.monitr=x", "checkpoint.monitor")])
def test_an_unknown_data_trainer_or_callback_key_names_the_nearest(option: str, nearest: str,
                                                                   capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "-c", TINY, option])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"lmforge: unknown option '{option[2:].split('=')[0]}'")
    assert last.endswith(f"did you mean '{nearest}'?"), last


def test_a_refused_resume_leaves_the_run_folder_as_it_was(gpt_run: Path, workdir: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "logs" / "gpt-tiny"
    shutil.copytree(gpt_run.parent, copy)
    monkeypatch.chdir(tmp_path)
    before = files(tmp_path / "logs")
    line = refused(capsys, "fit", "-c", TINY, "--trainer.max_steps=8", "--ckpt_path=last", "--data.seed=7", *SMALL)
    assert "other data (seed 1234, this run has 7)" in line
    assert files(tmp_path / "logs") == before  # no event file, no tokenizer.json rewritten, no config


def test_init_from_with_a_too_long_seq_len_leaves_no_folder(gpt_run: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    line = refused(capsys, "fit", "-c", TINY, f"--model.init_from={gpt_run / 'checkpoints' / 'last.ckpt'}",
                   "--data.seq_len=128", *SMALL)
    assert "128" in line
    assert not (tmp_path / "logs").exists()


def test_a_corpus_config_does_not_inherit_a_tiny_configs_document_limit(capsys: pytest.CaptureFixture) -> None:
    import yaml

    for corpus in sorted((CONFIGS / "data").glob("*.yaml")):
        with pytest.raises(SystemExit):
            main(["fit", "-c", TINY, "-c", str(corpus), "--print_config"])
        data = yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]
        # (a mixture has no limit of its own: each of its corpora has theirs)
        sources = [data] if "sources" not in data else [s["init_args"] for s in data["sources"].values()]
        assert all(source["max_documents"] != 120 for source in sources), corpus.name  # gpt/tiny.yaml's limit
        assert data["seq_len"] == 64, corpus.name  # the tiny shape does carry over


def test_a_batch_larger_than_the_training_split_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Training drops an incomplete last batch: with fewer examples than one batch there would be
    no step at all, and the run used to end with status 0 and no checkpoint."""
    monkeypatch.chdir(tmp_path)
    line = refused(capsys, "fit", "-c", TINY, "--data.batch_size=4096", *SMALL)
    assert re.fullmatch(r"lmforge: error: The train split of the bundled corpus has \d+ examples, fewer than one "
                        r"batch of 4096: lower `data.batch_size` or add text\.", line), line
    assert not (tmp_path / "logs").exists()


def test_the_terminal_progress_bar_counts_optimizer_steps_of_max_steps(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """In a terminal the rich bar shows ``Steps 3/3`` (not ``Epoch 0/-2`` over an epoch's batches)."""
    from lmforge.callbacks import ProgressBar
    from lmforge.commands.lightning import LmforgeCLI

    monkeypatch.chdir(tmp_path)
    cli = LmforgeCLI(args=["fit", "-c", TINY, "--trainer.max_steps=3", "--trainer.accumulate_grad_batches=2",
                           "--trainer.callbacks+=lmforge.callbacks.ProgressBar", *SMALL])
    bar = cli.trainer.progress_bar_callback
    assert isinstance(bar, ProgressBar)
    assert bar.total_train_batches == 3 and bar._get_train_description(0).strip() == "Steps"
    task = next(t for t in bar.progress.tasks if t.id == bar.train_progress_bar_id)
    assert (task.description.strip(), task.completed, task.total) == ("Steps", 3, 3)  # 6 batches, 3 steps


def test_a_run_measured_in_epochs_prints_its_step_total_and_time_left(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Without max_steps the plain lines count towards the optimizer steps of max_epochs."""
    from lmforge.commands.lightning import LmforgeCLI

    monkeypatch.chdir(tmp_path)
    cli = LmforgeCLI(args=["fit", "-c", str(CONFIGS / "finetune" / "tiny.yaml"), "--trainer.max_steps=-1",
                           "--trainer.max_epochs=2", "--trainer.accumulate_grad_batches=2",
                           "--trainer.val_check_interval=null", "--trainer.check_val_every_n_epoch=1",
                           "--trainer.log_every_n_steps=1", "--throughput.peak_flops=1e12"])
    steps = cli.trainer.global_step
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert len(lines) == steps > 2  # a line a step (log_every_n_steps 1), the last at the run's end
    for number, line in enumerate(lines, 1):
        assert line.startswith(f"step {number}/{steps} | ") and " elapsed, ~" in line and line.endswith(" left"), line


@pytest.mark.parametrize(("option", "message"), [
    ("--model.temperature=-0.5", "lmforge: error: model.temperature=-0.5: give a temperature >= 0 (0 decodes greedily)."),
    ("--model.max_new_tokens=0",
     "lmforge: error: model.max_new_tokens=0: give the number of tokens to generate (>= 1)."),
    ("--model.top_k=0", "lmforge: error: model.top_k=0: give the number of candidates to sample from (>= 1), or null "
                        "for all."),
])
def test_predict_refuses_settings_that_would_not_sample_what_was_asked(option: str, message: str, gpt_run: Path,
                                                                       workdir: Path, capsys: pytest.CaptureFixture,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    before = files(workdir)
    assert refused(capsys, "predict", "--ckpt_path", str(gpt_run / "checkpoints" / "last.ckpt"),
                   "--model.prompts", "The", option) == message
    assert files(workdir) == before
