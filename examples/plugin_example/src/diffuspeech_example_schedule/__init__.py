"""An example third-party diffuspeech plugin: the sigmoid masking schedule."""

from diffuspeech_example_schedule.sigmoid import SigmoidSchedule

__all__ = ["SigmoidSchedule"]
