"""diffuspeech: unified speech-text masked diffusion language models."""

__version__ = "0.1.0"
