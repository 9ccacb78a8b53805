"""Abstract base classes for every plugin kind.

Each kind states its contract (units, shapes, value ranges) in its docstring.
The registry checks at registration that a plugin subclasses one of these.
"""

from diffuspeech.interfaces.backbone import Backbone, KeyValueCache, KeyValueCaching
from diffuspeech.interfaces.noise_schedule import NoiseSchedule
from diffuspeech.interfaces.plugin import Plugin
from diffuspeech.interfaces.recognizer import Recognizer
from diffuspeech.interfaces.sampler import Sampler, SamplingRequest, SamplingStats
from diffuspeech.interfaces.speech_synthesizer import SpeechSynthesizer
from diffuspeech.interfaces.speech_tokenizer import SpeechTokenizer
from diffuspeech.interfaces.text_tokenizer import TextTokenizer
from diffuspeech.interfaces.vocoder import Vocoder

PLUGIN_KINDS: dict[str, type[Plugin]] = {
    "text_tokenizer": TextTokenizer,
    "speech_tokenizer": SpeechTokenizer,
    "vocoder": Vocoder,
    "backbone": Backbone,
    "noise_schedule": NoiseSchedule,
    "sampler": Sampler,
    "speech_synthesizer": SpeechSynthesizer,
    "recognizer": Recognizer,
}

__all__ = [
    "PLUGIN_KINDS",
    "Backbone",
    "KeyValueCache",
    "KeyValueCaching",
    "NoiseSchedule",
    "Plugin",
    "Recognizer",
    "Sampler",
    "SamplingRequest",
    "SamplingStats",
    "SpeechSynthesizer",
    "SpeechTokenizer",
    "TextTokenizer",
    "Vocoder",
]
