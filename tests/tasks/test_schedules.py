"""The learning-rate schedules: warmup + cosine (pretraining), warmup + linear decay (fine-tuning)."""

from __future__ import annotations

import pytest

from lmforge.tasks.schedules import warmup_cosine, warmup_linear


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
