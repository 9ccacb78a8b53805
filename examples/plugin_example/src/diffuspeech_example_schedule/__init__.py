"""An example third-party diffuspeech plugin: the polynomial masking schedule."""

from diffuspeech_example_schedule.polynomial import PolynomialSchedule

__all__ = ["PolynomialSchedule"]
