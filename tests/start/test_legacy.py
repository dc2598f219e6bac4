"""What users already have keeps working after names changed (lmforge/renames.py): the
checkpoints and saved config.yaml files under tests/assets/legacy, written before the renames
(``layer_norm_eps``, T5's ``tie_word_embeddings``, the tokenizer spec's ``family``), still predict,
export and resume (and start new runs: tests/start/test_run_start.py starts one from the GPT)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from lmforge.cli import main
from lmforge.renames import RENAMED_KEYS, load_yaml, new_hparams
from lmforge.start import open_start

transformers = pytest.importorskip("transformers")

LEGACY = Path(__file__).resolve().parents[1] / "assets" / "legacy"


def test_the_assets_still_hold_the_old_names() -> None:
    """Else the tests below would prove nothing."""
    for name in ("gpt", "t5", "finetune"):
        stored = torch.load(LEGACY / name / "last.ckpt", map_location="cpu", weights_only=True)
        assert "layer_norm_eps" in stored["lmforge"]["model_config"]
        assert "family:" in (LEGACY / name / "config.yaml").read_text()
    assert "tie_word_embeddings: true" in (LEGACY / "t5" / "config.yaml").read_text()


def test_stored_configs_read_under_the_new_names() -> None:
    start = open_start(str(LEGACY / "finetune" / "last.ckpt"))
    assert start.config.norm_eps == 1e-12
    assert start.hparams["config"]["norm_eps"] == 1e-12 and "layer_norm_eps" not in start.hparams["config"]
    assert new_hparams({"config": {"tie_word_embeddings": False}, "lr": 1}) == {"config": {"tie_embeddings": False},
                                                                                "lr": 1}
    saved = load_yaml((LEGACY / "t5" / "config.yaml").read_text())
    config = saved["model"]["init_args"]["config"]
    assert config["norm_eps"] == 1e-6 and config["tie_embeddings"] is True
    assert saved["data"]["init_args"]["tokenizer"]["specials"] == "t5"
    user = load_yaml("model:\n  config:\n    layer_norm_eps: 1.0e-5\n")  # no Lightning header: the user's own
    assert user == {"model": {"config": {"layer_norm_eps": 1e-5}}}
    assert set(RENAMED_KEYS) == {"layer_norm_eps", "tie_word_embeddings", "family"}


def test_predict_from_a_legacy_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    main(["predict", "--ckpt_path", str(LEGACY / "gpt" / "last.ckpt"), "--model.prompts", "The",
          "--model.max_new_tokens", "3", "--trainer.enable_progress_bar", "false"])
    assert capsys.readouterr().out.lstrip().startswith("The")


@pytest.mark.parametrize(("name", "auto"), [("gpt", "AutoModelForCausalLM"), ("t5", "AutoModelForSeq2SeqLM")])
def test_export_of_a_legacy_checkpoint_loads_in_transformers(name: str, auto: str, tmp_path: Path) -> None:
    main(["export", "--ckpt_path", str(LEGACY / name / "last.ckpt"), "--to", str(tmp_path / "hf")])
    hf = getattr(transformers, auto).from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    start = open_start(str(LEGACY / name / "last.ckpt"))
    net = start.network(start.config)
    net.load_state_dict(start.state_dict())
    net.eval()
    ids = torch.randint(0, start.config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = net(ids, ids[:, :5]) if name == "t5" else net(ids)
        theirs = hf(input_ids=ids, decoder_input_ids=ids[:, :5]) if name == "t5" else hf(input_ids=ids)
    torch.testing.assert_close(ours, theirs.logits, rtol=1e-4, atol=1e-4)


def test_fit_resumes_a_legacy_run_from_its_saved_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    shutil.copytree(LEGACY / "gpt", run)
    monkeypatch.chdir(run)
    main(["fit", "-c", "config.yaml", "--ckpt_path", "last.ckpt", "--trainer.max_steps", "3",
          "--trainer.enable_progress_bar", "false", "--sample.enabled", "false"])
    written = sorted(run.glob("logs/*/version_*/checkpoints/last.ckpt"), key=os.path.getmtime)
    resumed = torch.load(written[-1], map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 3
    assert "norm_eps" in resumed["lmforge"]["model_config"]
    saved = next(written[-1].parent.parent.glob("config.yaml")).read_text()
    assert "norm_eps:" in saved and "specials: gpt" in saved and "family:" not in saved


def test_the_legacy_fine_tuned_run_resumes_exports_and_starts_a_new_one(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Its saved config.yaml names ``lmforge.data.LabeledText``, now ``lmforge.evaluation.LabeledText``."""
    run = tmp_path / "run"
    shutil.copytree(LEGACY / "finetune", run)
    monkeypatch.chdir(run)
    toy = str(LEGACY.parents[2] / "configs" / "finetune" / "toy-sentiment.tsv")
    assert "class_path: lmforge.data.LabeledText" in (run / "config.yaml").read_text()
    quiet = ["--trainer.enable_progress_bar", "false", "--data.source.paths", toy]
    main(["fit", "-c", "config.yaml", "--ckpt_path", "last.ckpt", "--trainer.max_steps", "3", *quiet])
    (resumed,) = run.glob("logs/*/version_*/checkpoints/last.ckpt")
    assert torch.load(resumed, map_location="cpu", weights_only=True)["global_step"] == 3
    assert "class_path: lmforge.evaluation.LabeledText" in next(resumed.parents[1].glob("config.yaml")).read_text()
    main(["export", "--ckpt_path", "last.ckpt", "--to", "hf"])  # the fine-tuned encoder, as a BERT folder
    assert transformers.AutoModel.from_pretrained(run / "hf").config.model_type == "bert"
    main(["fit", "-c", "config.yaml", "--model.init_from", "last.ckpt", "--trainer.max_steps", "2",
          "--trainer.logger.init_args.name", "again", *quiet])
    (again,) = run.glob("logs/again/version_0/checkpoints/last.ckpt")
    assert torch.load(again, map_location="cpu", weights_only=True)["global_step"] == 2
