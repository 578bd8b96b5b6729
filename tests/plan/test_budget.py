"""Schedule sizing: the arithmetic of fitting training and validation into a budget."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segcli.plan.budget import (
    SAFETY,
    VALIDATION_SHARE,
    Measurement,
    schedule_for_iterations,
    size_schedule,
    validation_count,
)


def test_a_2400_step_budget_gives_30_epochs_of_80() -> None:
    # 2,400 steps → 30 epochs × 80, validation every 4 epochs (the 10-minute CPU plan of Task04)
    assert schedule_for_iterations(2400) == (30, 80, 4)
    assert validation_count(30, 4) == 8


def test_nnunet_epoch_length_is_the_cap() -> None:
    assert schedule_for_iterations(250_000) == (1000, 250, 125)


def test_hand_computed_schedule() -> None:
    # 600 s × 0.9 = 540 s; fixed 10 + 0.05·200 = 20 s; validation 8 × 40 × 0.1 = 32 s (< 15 %);
    # training 488 s / 0.2 s = 2,440 steps → 30 × 81; validations at 4, 8, ..., 28, 30 = 8
    m = Measurement(step_seconds=0.2, val_case_seconds=0.1, load_case_seconds=0.05,
                    startup_seconds=10.0)  # fmt: skip
    s = size_schedule(m, 600.0, train_cases=160, val_cases=40)
    assert (s.epochs, s.iterations_per_epoch, s.val_every) == (30, 81, 4)
    assert s.val_max_cases is None
    assert s.fixed_seconds == pytest.approx(20.0)
    assert s.validation_seconds == pytest.approx(32.0)
    assert s.predicted_seconds <= 600 * SAFETY


def test_expensive_validation_is_capped() -> None:
    m = Measurement(0.2, 5.0, 0.0, 0.0)  # 5 s per validation case
    s = size_schedule(m, 600.0, train_cases=100, val_cases=100)
    assert s.val_max_cases is not None and s.val_max_cases < 100
    assert s.validation_seconds <= VALIDATION_SHARE * 600 * SAFETY + 1e-9


def test_slow_epoch_bookkeeping_does_not_starve_the_schedule() -> None:
    # a fast step (1 ms) with 0.5 s of checkpoints and curves per epoch: solving for the steps
    # with a guessed epoch count oscillated (more steps → more epochs → no time left) down to
    # 1 step; the longest schedule that fits has thousands
    m = Measurement(0.001, 0.05, 0.01, 5.0, epoch_seconds=0.5)
    s = size_schedule(m, 180.0, train_cases=5, val_cases=1)
    assert s.iterations > 50_000
    assert s.predicted_seconds <= 180.0 * SAFETY
    # and it is the longest: one more epoch's worth of steps no longer fits
    more = size_schedule(Measurement(0.001, 0.05, 0.01, 5.0, 0.5), 180.0 * 1.05, 5, 1)
    assert more.iterations > s.iterations


@settings(max_examples=60, deadline=None)
@given(
    st.floats(0.01, 5.0),
    st.floats(0.0, 3.0),
    st.floats(0.0, 0.5),
    st.floats(60.0, 7200.0),
    st.integers(2, 300),
    st.floats(0.0, 5.0),
)
def test_schedule_fits_the_budget(
    step: float, val: float, load: float, budget: float, cases: int, epoch: float
) -> None:
    m = Measurement(step, val, load, 5.0, epoch)
    val_cases = max(1, cases // 5)
    s = size_schedule(m, budget, cases - val_cases, val_cases)
    if s.iterations >= 100:  # a usable schedule never overruns the usable budget
        assert s.predicted_seconds <= budget * SAFETY + 1e-6
    slower = size_schedule(Measurement(step * 2, val, load, 5.0, epoch), budget,
                           cases - val_cases, val_cases)  # fmt: skip
    assert slower.iterations <= s.iterations
    # the longest that fits: another epoch of steps (and its bookkeeping and a validation)
    # would overrun
    if s.iterations >= 100:
        per_val = s.validation_seconds / max(s.validations, 1)
        spare = budget * SAFETY - s.predicted_seconds
        assert spare < (s.iterations_per_epoch + 1) * step + epoch + per_val + 1e-6
