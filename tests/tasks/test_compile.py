"""``--model.compile true``: the network's blocks run compiled, while checkpoints, resume,
``predict`` and ``export`` see the plain parameter names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch._dynamo

from conftest import fit_tiny_gpt
from lmforge.cli import main
from lmforge.models import GPT, GPTConfig
from lmforge.tasks import base


@pytest.fixture(autouse=True)
def fast_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    # the wiring is under test, not inductor's kernels (tens of seconds to build on a small CPU)
    monkeypatch.setattr(base, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()


def test_compiling_keeps_the_module_tree_and_the_outputs() -> None:
    torch.manual_seed(0)
    net = GPT(GPTConfig(vocab_size=64, max_seq_len=16, n_layer=2, n_head=2, d_model=32))
    names, x = list(net.state_dict()), torch.randint(0, 64, (2, 16))
    eager = net(x)
    base.compile_network(net)
    assert list(net.state_dict()) == names
    torch.testing.assert_close(net(x), eager)
    assert all(block._compiled_call_impl is not None for block in net.blocks)


def test_compiled_fit_resumes_bit_for_bit_and_predicts_from_its_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    whole = fit_tiny_gpt(tmp_path / "whole", 6, "--model.compile", "true")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0, "nothing was compiled"
    assert whole["hyper_parameters"]["compile"] is True
    assert not any("_orig_mod" in key for key in whole["state_dict"])
    shape = GPTConfig(vocab_size=1024, max_seq_len=64, n_layer=2, n_head=2, d_model=64)  # tiny.yaml's
    assert set(whole["state_dict"]) == {f"net.{k}" for k in GPT(shape).state_dict()}
    fit_tiny_gpt(tmp_path / "split", 3, "--model.compile", "true")
    split = fit_tiny_gpt(tmp_path / "split", 6, "--model.compile", "true", "--ckpt_path", "last")
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, split["state_dict"][key]), key
    ckpt = tmp_path / "whole" / "logs" / "gpt-tiny" / "version_0" / "checkpoints" / "last.ckpt"
    main(["predict", "--ckpt_path", str(ckpt), "--model.prompts=The value", "--model.max_new_tokens=4",
          "--model.temperature=0", "--trainer.enable_progress_bar=false"])
    assert "The value" in capsys.readouterr().out
    main(["export", "--ckpt_path", str(ckpt), "--to", str(tmp_path / "exported")])
    assert (tmp_path / "exported" / "config.json").is_file()
