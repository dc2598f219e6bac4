"""The training steps' random stream: carried from step to step, saved and restored exactly."""

from __future__ import annotations

import random

import numpy as np
import torch

from lmforge.tasks.rng import TrainingRNG


def draws() -> tuple:
    return torch.rand(3).tolist(), float(np.random.rand()), random.random()


def test_each_step_continues_where_the_last_ended_whatever_ran_between() -> None:
    rng = TrainingRNG()
    rng.batch_start()
    draws()
    rng.batch_end()
    torch_draw, _, python_draw = draws()  # what the next step would draw right away
    draws()  # validation and DataLoader creation draw in between ...
    rng.batch_start()  # ... and the step does not see it (numpy's state is only checkpointed)
    after = draws()
    assert (after[0], after[2]) == (torch_draw, python_draw)


def test_a_checkpointed_state_resumes_the_same_stream_in_another_process_state() -> None:
    rng = TrainingRNG()
    rng.batch_start()
    draws()
    rng.batch_end()
    state = rng.state()
    expected = draws()
    resumed = TrainingRNG()
    resumed.load(state)
    torch.manual_seed(99), np.random.seed(99), random.seed(99)  # a fresh process seeds differently
    draws()
    resumed.batch_start()
    assert draws() == expected
    resumed.batch_end()
    assert "numpy" in resumed.state() and torch.equal(resumed.state()["torch"], torch.get_rng_state())
