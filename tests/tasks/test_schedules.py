"""The learning-rate schedules: warmup + cosine (pretraining), warmup + linear decay (fine-tuning),
warmup-stable-decay; the schedule a task's config names is the one that runs; a resumed schedule
takes the run's settings and counts from its training stage (tests/tasks/test_rewarm.py: through
real runs)."""

from __future__ import annotations

import pytest
import torch

from lmforge.errors import UserError
from lmforge.models import GPTConfig
from lmforge.tasks import CausalLMTask
from lmforge.tasks.optim import OptimizerConfig
from lmforge.tasks.schedules import (StagedSchedule, schedule_factor, warmup_cosine, warmup_linear,
                                     warmup_stable_decay)


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


def _adamw(lr: float, weight_decay: float) -> torch.optim.AdamW:
    torch.manual_seed(0)
    return torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.randn(3))], "weight_decay": weight_decay}], lr=lr)


def _stepped(schedule: StagedSchedule, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(schedule.get_last_lr()[0])
        for group in schedule.optimizer.param_groups:
            for p in group["params"]:
                p.grad = torch.ones_like(p)  # so that AdamW keeps moments
        schedule.optimizer.step()
        schedule.step()
    return rates


def test_a_staged_schedule_resumes_with_this_runs_settings_and_counts_from_its_stage() -> None:
    config = OptimizerConfig(warmup_steps=2, schedule="wsd", cooldown_steps=4, min_lr_ratio=0.0)
    whole = StagedSchedule(_adamw(1e-3, 0.1), lambda start: config.stage_factor("cosine", 10, start))
    rates = _stepped(whole, 10)
    assert rates[:7] == pytest.approx([5e-4] + [1e-3] * 6) and rates[8] == pytest.approx(0.5e-3)
    half = StagedSchedule(_adamw(1e-3, 0.1), lambda start: config.stage_factor("cosine", 10, start))
    _stepped(half, 4)
    saved = half.state_dict()
    assert saved["start"] == 0 and "_settings" not in saved
    # the same settings resume the very rates; other ones (peak, weight decay) take over at the resumed step
    same = StagedSchedule(_adamw(1e-3, 0.1), lambda start: config.stage_factor("cosine", 10, start))
    same.load_state_dict(saved)
    assert _stepped(same, 6) == rates[4:]
    other = StagedSchedule(_adamw(2e-3, 0.0), lambda start: config.stage_factor("cosine", 10, start))
    other.optimizer.load_state_dict(half.optimizer.state_dict())  # Lightning restores the optimizer first
    other.load_state_dict(saved)
    assert other.optimizer.param_groups[0]["weight_decay"] == 0.0 and other.base_lrs == [2e-3]
    assert other.get_last_lr() == [2e-3] and other.optimizer.param_groups[0]["lr"] == 2e-3
    # a new stage from step 4: its warmup, then its own WSD to step 10 (the cooldown: 4 of its 6 steps)
    staged = StagedSchedule(_adamw(1e-3, 0.1), lambda start: config.stage_factor("cosine", 10, start))
    staged.optimizer.load_state_dict(half.optimizer.state_dict())
    assert staged.optimizer.state
    staged.load_state_dict({**saved, "start": 4, "reset_state": True})
    assert not staged.optimizer.state and staged.state_dict()["start"] == 4  # the moments start again
    assert "reset_state" not in staged.state_dict()
    assert _stepped(staged, 6) == pytest.approx([5e-4, 1e-3, 1e-3, 0.75e-3, 0.5e-3, 0.25e-3])


@pytest.mark.parametrize("start, end, says", [
    (6, 8, "optimizer.warmup_steps=5: stage 1 would warm up from the checkpoint's step 6 to 11, past the end of "
           "training (step 8): give fewer warmup steps or a later end."),
    (6, 6, "Stage 1 starts at the checkpoint's step 6 but decays to its floor at the end of training (step 6): give "
           "a later one (trainer.max_steps counts on from 6)."),
])
def test_a_stage_without_room_for_its_warmup_is_refused(start: int, end: int, says: str) -> None:
    with pytest.raises(UserError) as refused:
        OptimizerConfig(warmup_steps=5, stage=1).stage_factor("cosine", end, start)
    assert str(refused.value) == says
    with pytest.raises(UserError, match=r"optimizer.stage=-1 is out of range: give a stage number >= 0."):
        OptimizerConfig(stage=-1)


def _loading(stage: int, reset: bool, stored: int) -> tuple[CausalLMTask, dict]:
    import lightning as L
    from lightning.pytorch.trainer.states import TrainerFn

    task = CausalLMTask(config=GPTConfig(vocab_size=32, max_seq_len=8, n_layer=1, n_head=2, d_model=16),
                        optimizer=OptimizerConfig(stage=stage, reset_state=reset))
    task.trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    task.trainer.state.fn = TrainerFn.FITTING
    checkpoint = {"global_step": 40, "lmforge": {"stage": stored}, "lr_schedulers": [{"last_epoch": 40}],
                  "SomeCorpus": {"identity": {"corpus": "SomeCorpus"}, "batches": 3}}
    return task, checkpoint


def test_a_higher_stage_marks_the_checkpoint_it_resumes_and_a_lower_one_is_refused() -> None:
    task, checkpoint = _loading(stage=1, reset=True, stored=0)
    task.on_load_checkpoint(checkpoint)
    assert checkpoint["lr_schedulers"][0] == {"last_epoch": 40, "start": 40, "reset_state": True}
    assert checkpoint["SomeCorpus"]["afresh"] is True  # the data starts from its beginning
    task, checkpoint = _loading(stage=1, reset=True, stored=1)  # this stage's own checkpoint: resumed as it is
    task.on_load_checkpoint(checkpoint)
    assert checkpoint["lr_schedulers"][0] == {"last_epoch": 40}
    assert "afresh" not in checkpoint["SomeCorpus"]
    task, checkpoint = _loading(stage=0, reset=False, stored=1)
    with pytest.raises(UserError, match=r"^optimizer.stage=0 is lower than the checkpoint's stage 1: give 1 to "
                                        r"resume it, or 2 to start a new stage from it.$"):
        task.on_load_checkpoint(checkpoint)
