"""Tests for the first-party noise schedules: linear and cosine."""

from __future__ import annotations

import math

import pytest
import torch

from diffuspeech.interfaces import NoiseSchedule
from diffuspeech_plugins.noise_schedules.cosine import CosineSchedule
from diffuspeech_plugins.noise_schedules.linear import LinearSchedule

SCHEDULES = [LinearSchedule, CosineSchedule]


@pytest.mark.parametrize("schedule_class", SCHEDULES)
def test_schedule_endpoints(schedule_class: type[NoiseSchedule]) -> None:
    """gamma(0) is 0 (clean) and gamma(1) is 1 (all masked)."""
    schedule = schedule_class()

    gamma = schedule.mask_probability(torch.tensor([0.0, 1.0], dtype=torch.float64))

    assert gamma[0].item() == pytest.approx(0.0, abs=1e-12)
    assert gamma[1].item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("schedule_class", SCHEDULES)
def test_schedule_monotonic(schedule_class: type[NoiseSchedule]) -> None:
    """gamma is non-decreasing on [0, 1] and stays within [0, 1]."""
    schedule = schedule_class()
    t = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)

    gamma = schedule.mask_probability(t)

    assert bool((gamma.diff() >= 0).all())
    assert float(gamma.min()) >= -1e-12
    assert float(gamma.max()) <= 1.0 + 1e-12


@pytest.mark.parametrize("schedule_class", SCHEDULES)
def test_weight_matches_finite_difference(schedule_class: type[NoiseSchedule]) -> None:
    """loss_weight(t) equals gamma'(t) / gamma(t) with gamma' from a central difference."""
    schedule = schedule_class()
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    step = 1e-6

    derivative = (schedule.mask_probability(t + step) - schedule.mask_probability(t - step)) / (2 * step)
    expected = derivative / schedule.mask_probability(t)

    torch.testing.assert_close(schedule.loss_weight(t), expected, rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("schedule_class", SCHEDULES)
def test_schedule_keeps_shape(schedule_class: type[NoiseSchedule]) -> None:
    """Both methods return a tensor of the input's shape."""
    schedule = schedule_class()
    t = torch.rand(3, 4) * 0.9 + 0.1

    assert schedule.mask_probability(t).shape == (3, 4)
    assert schedule.loss_weight(t).shape == (3, 4)


def test_linear_weight_is_inverse_time() -> None:
    """The linear schedule's ELBO weight is 1/t, as in MDLM and LLaDA."""
    t = torch.tensor([1e-3, 0.1, 0.5, 1.0], dtype=torch.float64)

    schedule = LinearSchedule()

    torch.testing.assert_close(schedule.mask_probability(t), t, rtol=0.0, atol=0.0)
    torch.testing.assert_close(schedule.loss_weight(t), 1.0 / t, rtol=0.0, atol=0.0)


def test_linear_does_not_alias_input() -> None:
    """The linear schedule returns a new tensor, so callers may change it in place."""
    t = torch.tensor([0.25, 0.75])

    gamma = LinearSchedule().mask_probability(t)
    gamma.fill_(0.0)

    assert t.tolist() == [0.25, 0.75]


@pytest.mark.parametrize("time", [0.1, 0.3, 0.5, 0.9])
def test_cosine_matches_formula(time: float) -> None:
    """The cosine schedule is cos(pi/2 * (1 - t)) with weight (pi/2) tan(pi/2 * (1 - t))."""
    t = torch.tensor([time], dtype=torch.float64)

    schedule = CosineSchedule()

    assert schedule.mask_probability(t).item() == pytest.approx(math.cos(math.pi / 2 * (1 - time)), rel=1e-12)
    assert schedule.loss_weight(t).item() == pytest.approx(math.pi / 2 * math.tan(math.pi / 2 * (1 - time)), rel=1e-12)


def test_cosine_weight_vanishes_at_one() -> None:
    """At t = 1 every position is masked, so the cosine ELBO weight is 0."""
    weight = CosineSchedule().loss_weight(torch.tensor([1.0], dtype=torch.float64))

    assert weight.item() == pytest.approx(0.0, abs=1e-12)
