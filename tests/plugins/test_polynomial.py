"""Tests for the polynomial noise schedule."""

from __future__ import annotations

import pytest
import torch

from diffuspeech.errors import RecipeError
from diffuspeech.recipe import load_recipe
from diffuspeech.system import compose
from diffuspeech.vocabulary import SPEECH
from diffuspeech_plugins.noise_schedules.linear import LinearSchedule
from diffuspeech_plugins.noise_schedules.polynomial import PolynomialSchedule


@pytest.mark.parametrize("exponent", [0.5, 1.0, 2.0, 3.5])
def test_endpoints_and_monotonic(exponent: float) -> None:
    """gamma(0) = 0, gamma(1) = 1 and gamma increases strictly in between."""
    schedule = PolynomialSchedule(exponent)
    t = torch.linspace(0.0, 1.0, 501, dtype=torch.float64)

    gamma = schedule.mask_probability(t)

    assert gamma[0].item() == 0.0
    assert gamma[-1].item() == pytest.approx(1.0, abs=1e-12)
    assert bool((gamma.diff() > 0).all())


@pytest.mark.parametrize("exponent", [0.5, 2.0, 3.5])
def test_weight_matches_finite_difference(exponent: float) -> None:
    """loss_weight(t) equals gamma'(t) / gamma(t) with gamma' from a central difference."""
    schedule = PolynomialSchedule(exponent)
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    step = 1e-6

    derivative = (schedule.mask_probability(t + step) - schedule.mask_probability(t - step)) / (2 * step)

    torch.testing.assert_close(schedule.loss_weight(t), derivative / schedule.mask_probability(t), rtol=1e-6, atol=0.0)


def test_exponent_one_is_linear() -> None:
    """With exponent 1 the schedule equals the linear one."""
    t = torch.rand(4, 5, dtype=torch.float64) * 0.9 + 0.1

    torch.testing.assert_close(PolynomialSchedule(1.0).mask_probability(t), LinearSchedule().mask_probability(t))
    torch.testing.assert_close(PolynomialSchedule(1.0).loss_weight(t), LinearSchedule().loss_weight(t))


def test_known_values() -> None:
    """t = 0.5 with exponent 3 gives gamma 0.125 and weight 6."""
    schedule = PolynomialSchedule(3.0)
    t = torch.tensor([0.5], dtype=torch.float64)

    assert schedule.mask_probability(t).item() == pytest.approx(0.125)
    assert schedule.loss_weight(t).item() == pytest.approx(6.0)


@pytest.mark.parametrize("exponent", [0.0, -1.0, float("inf"), float("nan")])
def test_invalid_exponent_named(exponent: float) -> None:
    """A non-positive or non-finite exponent fails, naming the argument."""
    with pytest.raises(ValueError, match="exponent must be a positive finite number"):
        PolynomialSchedule(exponent)


def test_recipe_selects_it() -> None:
    """A recipe line selects the first-party schedule, and a bad exponent names the recipe key."""
    system = compose(
        load_recipe("tiny", ["noise_schedule.speech.name=polynomial", "noise_schedule.speech.args={exponent: 3}"])
    )
    assert isinstance(system.schedules[SPEECH], PolynomialSchedule)
    assert system.schedules[SPEECH].exponent == 3.0

    recipe = load_recipe("tiny", ["noise_schedule.text.name=polynomial", "noise_schedule.text.args={exponent: -2}"])
    with pytest.raises(RecipeError, match=r"noise_schedule\.text: invalid arguments for PolynomialSchedule"):
        compose(recipe)
