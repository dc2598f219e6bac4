"""``lmforge plan`` against numbers computed here by hand, its refusals, and the tokens-per-parameter
line at the start of ``fit``."""

from __future__ import annotations

import logging
import math
import re

import pytest
import torch

from conftest import CONFIGS, refused
from lmforge.cli import main
from lmforge.models import GPT, GPTConfig

UNITS = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
# Hoffmann et al. 2022, approach 3 (eq. 10), typed again here rather than read from lmforge.scaling
E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28


def chinchilla_loss(n: float, d: float) -> float:
    return E + A / n**ALPHA + B / d**BETA


def closed_form(c: float) -> tuple[float, float]:
    """The optimum of the fit at ``c`` FLOPs: N = G (C/6)^(b/(a+b)), D = (C/6)^(a/(a+b)) / G."""
    g = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
    return g * (c / 6) ** (BETA / (ALPHA + BETA)), (c / 6) ** (ALPHA / (ALPHA + BETA)) / g


def brute_force(c: float) -> tuple[float, float]:
    """The optimum searched on a grid of log N, each N trained on the rest of the budget."""
    log_n = torch.linspace(math.log(1e6), math.log(1e13), 200_001, dtype=torch.float64)
    n = log_n.exp()
    d = c / (6 * n)
    best = int(torch.argmin(E + A / n**ALPHA + B / d**BETA))
    return float(n[best]), float(d[best])


def plan(capsys: pytest.CaptureFixture, *args: str) -> str:
    capsys.readouterr()
    main(["plan", "--configs", str(CONFIGS), *args])
    return capsys.readouterr().out


def count(text: str, pattern: str) -> float:
    """The number, with its K/M/B/T unit, where ``#`` stands in ``pattern`` (a regular expression) in ``text``."""
    number = r"(\d[\d,]*(?:\.\d+)?(?:e[+-]?\d+)?)(?: ([KMBT])\b)?"
    found = re.search(pattern.replace("#", number), text)
    assert found is not None, (pattern, text)
    value, unit = found.groups()
    return float(value.replace(",", "")) * UNITS[unit or ""]


@pytest.mark.parametrize("flops", [1e19, 5.76e23])  # 5.76e23: Chinchilla's own budget (70 B x 1.4 T x 6)
def test_the_optimum_is_the_closed_form_and_the_brute_force_minimum(flops: float,
                                                                    capsys: pytest.CaptureFixture) -> None:
    n_opt, d_opt = closed_form(flops)
    n_grid, d_grid = brute_force(flops)
    assert n_grid == pytest.approx(n_opt, rel=1e-3) and d_grid == pytest.approx(d_opt, rel=1e-3)
    assert 6 * n_opt * d_opt == pytest.approx(flops)
    out = plan(capsys, "--flops", f"{flops:g}", "--fit", "chinchilla")
    line = next(l for l in out.splitlines() if l.startswith("Compute-optimal"))
    assert count(line, r"N = # parameters") == pytest.approx(n_opt, rel=5e-3)
    assert count(line, r"D = # tokens") == pytest.approx(d_opt, rel=5e-3)
    assert count(line, r"predicted loss #") == pytest.approx(chinchilla_loss(n_opt, d_opt), abs=1e-3)
    rule = next(l for l in out.splitlines() if l.startswith("20 tokens/parameter"))
    assert count(rule, r"N = # parameters") == pytest.approx(math.sqrt(flops / 120), rel=5e-3)
    assert "Hoffmann et al. 2022" in out and "embeddings included" in out and "order of magnitude" in out


def test_the_default_fit_is_besiroglus_replication(capsys: pytest.CaptureFixture) -> None:
    out = plan(capsys, "--flops", "5.76e23")
    assert "Besiroglu et al. 2024 (Chinchilla replicated), the default" in out
    e, a, b, alpha, beta = 1.8172, 482.01, 2085.43, 0.3478, 0.3658
    g = (alpha * a / (beta * b)) ** (1 / (alpha + beta))
    n_opt = g * (5.76e23 / 6) ** (beta / (alpha + beta))
    assert count(out, r"Compute-optimal: +N = #") == pytest.approx(n_opt, rel=5e-3)


def test_steps_wall_clock_and_share_of_the_original_run(capsys: pytest.CaptureFixture) -> None:
    flops = 1e21
    out = plan(capsys, "--flops", f"{flops:g}", "--fit", "chinchilla", "--batch_size", "4", "--seq_len", "512",
               "--devices", "4", "--accumulate_grad_batches", "2", "--gpu", "h100", "--mfu", "0.5",
               "--original_tokens", "1e12")
    _, d_opt = closed_form(flops)
    assert count(out, r"Steps: # of") == math.ceil(d_opt / (4 * 512 * 4 * 2))
    hours = flops / (989e12 * 0.5 * 4) / 3600  # H100 SXM: 989 TFLOP/s dense bf16
    assert count(out, r"Wall-clock: # hours") == pytest.approx(hours, rel=5e-3)
    assert count(out, r"tokens, #% of the original") == pytest.approx(100 * d_opt / 1e12, rel=5e-3)


def test_gpu_hours_make_the_budget_and_the_wall_clock(capsys: pytest.CaptureFixture) -> None:
    out = plan(capsys, "--gpu_hours", "1000", "--gpu", "a100", "--devices", "8")
    assert count(out, r"Budget: # FLOPs") == pytest.approx(1000 * 3600 * 312e12 * 0.4, rel=5e-3)
    assert count(out, r"Wall-clock: # hours") == pytest.approx(1000 / 8)


def test_a_given_size_its_tokens_and_the_nearest_preset(capsys: pytest.CaptureFixture) -> None:
    out = plan(capsys, "--params", "124e6", "--flops", "1e19")
    assert count(out, r"This model: .*?D = # tokens") == \
        pytest.approx(1e19 / (6 * 124e6), rel=5e-3)
    assert "Nearest preset: configs/gpt/small.yaml (124 M parameters" in out
    preset = plan(capsys, "--preset", "llama/smollm2-135m")  # alone: the budget at which it is optimal
    assert count(preset, r"Compute-optimal: +N = #") == pytest.approx(134_515_008, rel=5e-3)


@pytest.mark.parametrize("args, key", [
    (["--flops", "0"], "--flops"),
    (["--flops=-1e20"], "--flops"),
    (["--flops", "1e20", "--batch_size", "0"], "--batch_size"),
    (["--params", "1e8", "--original_tokens", "-5"], "--original_tokens"),
    (["--flops", "1e20", "--gpu", "h100", "--mfu", "1.5"], "--mfu"),
    (["--flops", "1e9", "--params", "1e8"], "less than one step"),
    (["--gpu_hours", "10", "--gpu", "h1000"], "--gpu 'h1000': did you mean 'h100'"),
    (["--gpu_hours", "10"], "--gpu_hours"),
    (["--flops", "1e20", "--fit", "kaplan"], "--fit 'kaplan'"),
    (["--preset", "gpt/smal"], "did you mean 'gpt/small'"),
    (["--flops", "1e20", "--gpu", "h100", "--peak_flops", "1e15"], "--peak_flops"),
    (["--flops", "1e20", "--gpu_hours", "10", "--gpu", "h100"], "--gpu_hours"),
    (["--flops", "1e20", "--configs", "no/such/folder"], "--configs"),
    ([], "Nothing to plan"),
])
def test_bad_input_is_refused_in_one_line_before_anything_is_printed(args: list[str], key: str,
                                                                     capsys: pytest.CaptureFixture) -> None:
    line = refused(capsys, "plan", "--configs", str(CONFIGS), *args)
    assert line.startswith("lmforge: error: ") and key in line
    assert capsys.readouterr().out == ""


def test_fit_starts_with_its_tokens_per_parameter(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(logging.getLogger("lightning.pytorch"), "propagate", True)  # to caplog
    monkeypatch.chdir(tmp_path)
    common = ["-c", str(CONFIGS / "gpt" / "tiny.yaml"), "--data.max_documents=40", "--trainer.limit_val_batches=1",
              "--trainer.num_sanity_val_steps=0", "--sample.enabled=false", "--trainer.enable_progress_bar=false",
              "--trainer.enable_model_summary=false", "--checkpoint.save_last=false", "--checkpoint.save_top_k=0"]
    with caplog.at_level(logging.INFO):
        main(["fit", *common, "--trainer.max_steps=2", "--trainer.accumulate_grad_batches=2"])
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Tokens per parameter"))
    with torch.device("meta"):
        params = GPT(GPTConfig(n_layer=2, n_head=2, d_model=64, vocab_size=1024, max_seq_len=64)).num_params()
    tokens = 2 * 8 * 64 * 2  # max_steps x batch_size x seq_len x accumulate_grad_batches, one device
    assert count(line, r"Tokens per parameter: # ") == pytest.approx(tokens / params, rel=5e-3)
    from lmforge.scaling import FITS

    law, flops = FITS["besiroglu"], 6 * params * tokens
    optimal = law.optimal_tokens(flops) / law.optimal_params(flops)
    assert count(line, r"compute-optimal at this run's \S+ FLOPs: #") == pytest.approx(optimal, rel=5e-3)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        main(["fit", *common, "--trainer.max_steps=-1", "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
              "--trainer.val_check_interval=1"])
    assert any(r.getMessage().startswith("Tokens per parameter: unknown") for r in caplog.records)
