"""The learning-rate schedules: warmup + cosine (pretraining), warmup + linear decay (fine-tuning),
warmup-stable-decay; the schedule a task's config names is the one that runs."""

from __future__ import annotations

import pytest

from lmforge.errors import UserError
from lmforge.tasks.optim import OptimizerConfig
from lmforge.tasks.schedules import schedule_factor, warmup_cosine, warmup_linear, warmup_stable_decay


def test_warmup_then_cosine_to_floor() -> None:
    f = warmup_cosine(warmup_steps=10, decay_steps=110, min_lr_ratio=0.1)
    warm = [f(s) for s in range(10)]
    assert warm == sorted(warm) and warm[0] == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    decay = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert f(60) == pytest.approx(0.55)  # halfway down the cosine
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)


def test_warmup_then_linear_to_floor() -> None:
    f = warmup_linear(warmup_steps=4, total_steps=104, min_lr_ratio=0.2)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    decay = [f(s) for s in range(4, 105)]
    assert all(a > b for a, b in zip(decay, decay[1:]))  # strictly down to the floor, no plateau
    assert f(54) == pytest.approx(0.6)  # halfway down the line
    assert f(104) == pytest.approx(0.2) and f(500) == pytest.approx(0.2)
    assert warmup_linear(0, 10)(10) == 0.0  # the default floor is zero


def test_warmup_stable_decay_holds_the_peak_then_cools_down_linearly() -> None:
    f = warmup_stable_decay(warmup_steps=10, decay_steps=200, cooldown_steps=40, min_lr_ratio=0.0)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert {f(s) for s in range(10, 161)} == {1.0}  # stable from the warmup's end to the cooldown's start
    assert f(180) == pytest.approx(0.5) and f(200) == 0.0 and f(300) == 0.0
    # the stable phase does not depend on where it ends: ending at 150 after 50 steps of cooldown
    resumed = warmup_stable_decay(10, 150, 50, 0.0)
    assert [resumed(s) for s in range(100)] == [f(s) for s in range(100)]
    assert resumed(100) == 1.0 and resumed(125) == pytest.approx(0.5) and resumed(150) == 0.0
    # cooldown_fraction is the cooldown's share of the steps when cooldown_steps is unset
    g = schedule_factor("wsd", 0, 100, 0.1, cooldown_fraction=0.2)
    assert g(79) == 1.0 and g(90) == pytest.approx(0.55) and g(100) == pytest.approx(0.1)
    assert schedule_factor("linear", 4, 104, 0.2)(54) == pytest.approx(0.6)
    assert schedule_factor("cosine", 10, 110, 0.1)(60) == pytest.approx(0.55)


def test_a_task_runs_the_schedule_its_config_names(tmp_path) -> None:
    import lightning as L
    import torch

    from lmforge.models import GPTConfig
    from lmforge.tasks import CausalLMTask

    task = CausalLMTask(config=GPTConfig(vocab_size=32, max_seq_len=8, n_layer=1, n_head=2, d_model=16),
                        optimizer=OptimizerConfig(warmup_steps=2, decay_steps=20, schedule="wsd", cooldown_steps=5,
                                                  min_lr_ratio=0.0, lr=1e-3))
    task.trainer = L.Trainer(accelerator="cpu", max_steps=20, logger=False, enable_checkpointing=False)
    schedule = task.configure_optimizers()["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(20):
        rates.append(schedule.get_last_lr()[0])
        schedule.optimizer.step()
        schedule.step()
    assert rates[2:15] == [pytest.approx(1e-3)] * 13 and rates[17] == pytest.approx(0.6e-3)  # 2 of the 5 cooldown steps done
    assert isinstance(schedule, torch.optim.lr_scheduler.LambdaLR)
    with pytest.raises(UserError, match="optimizer.schedule='step' is unknown: use cosine, linear or wsd"):
        OptimizerConfig(schedule="step")
    with pytest.raises(UserError, match="optimizer.cooldown_fraction=0 is out of range"):
        OptimizerConfig(cooldown_fraction=0)
