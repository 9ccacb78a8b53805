"""Speech synthesis with the espeak-ng library shipped by the PyPI package ``espeakng-loader``.

The library is driven through ctypes and its C API (``speak_lib.h``) in
synchronous mode: ``espeak_Synth`` returns once the whole text is spoken, and
the wave data arrives in a callback in chunks of 16-bit samples.
"""

from __future__ import annotations

import ctypes
import logging
import math
import threading
from typing import ClassVar

import numpy as np
import torch

from diffuspeech.interfaces import SpeechSynthesizer

log = logging.getLogger(__name__)

DEFAULT_VOICES = ("en-us", "en-us+f3", "en-us+m3", "en")

# Constants from espeak-ng's speak_lib.h.
AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_INITIALIZE_DONT_EXIT = 0x8000
ESPEAK_CHARS_UTF8 = 1
POS_CHARACTER = 1
ESPEAK_RATE = 1
ESPEAK_PITCH = 3
ESPEAK_RANGE = 4
EE_OK = 0

NORMAL_RATE_WPM = 175
MIN_RATE_WPM = 80
# speak_lib.h documents 80 to 450 words per minute. Up to 900 the output of
# espeakng-loader 0.2.4 measured here still gets shorter in proportion (4.9x
# shorter at 900 than at 175), and below 80 espeak-ng speaks at 80.
MAX_RATE_WPM = 900
NORMAL_PITCH = 50
NORMAL_RANGE = 50

SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakVoice(ctypes.Structure):
    """espeak_VOICE from speak_lib.h: one entry of ``espeak_ListVoices``."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        # A list of (priority byte, language string) pairs that ends with a zero byte.
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


class EspeakEngine:
    """The process-wide espeak-ng library state.

    espeak-ng keeps one global voice, one set of parameters and one callback,
    so every use goes through ``lock``. Build it only through ``get_engine``.
    """

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as error:
            raise ImportError(
                "EspeakNGSynthesizer needs the PyPI package espeakng-loader: run `pip install espeakng-loader`"
            ) from error

        library_path = espeakng_loader.get_library_path()
        data_path = espeakng_loader.get_data_path()
        try:
            self.library = ctypes.CDLL(library_path)
        except OSError as error:
            raise RuntimeError(
                f"could not load the espeak-ng library '{library_path}' from espeakng-loader: {error}. "
                "Reinstall it with `pip install --force-reinstall espeakng-loader`."
            ) from error
        self._declare_signatures()

        self.lock = threading.Lock()
        self._chunks: list[bytes] = []
        # ctypes frees the trampoline of a callback that Python no longer references.
        self._callback = SynthCallback(self._collect)

        sample_rate = self.library.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), ESPEAK_INITIALIZE_DONT_EXIT
        )
        if sample_rate <= 0:
            raise RuntimeError(
                f"espeak_Initialize failed (returned {sample_rate}) with data folder '{data_path}'. "
                "Reinstall espeakng-loader with `pip install --force-reinstall espeakng-loader`."
            )
        self.sample_rate: int = sample_rate
        self.library.espeak_SetSynthCallback(self._callback)
        self.voice_names, self.variants = self._list_voices()
        log.debug(
            "espeak-ng initialized from '%s': %d Hz, %d voices, %d variants",
            library_path,
            sample_rate,
            len(self.voice_names),
            len(self.variants),
        )

    def _declare_signatures(self) -> None:
        library = self.library
        library.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        library.espeak_Initialize.restype = ctypes.c_int
        library.espeak_SetSynthCallback.argtypes = [SynthCallback]
        library.espeak_SetSynthCallback.restype = None
        library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        library.espeak_SetVoiceByName.restype = ctypes.c_int
        library.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        library.espeak_SetParameter.restype = ctypes.c_int
        library.espeak_ListVoices.argtypes = [ctypes.POINTER(EspeakVoice)]
        library.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(EspeakVoice))
        library.espeak_Synth.argtypes = [
            ctypes.c_void_p,  # text
            ctypes.c_size_t,  # buffer size in bytes, including the terminating zero
            ctypes.c_uint,  # start position
            ctypes.c_int,  # position type
            ctypes.c_uint,  # end position, 0 for none
            ctypes.c_uint,  # flags
            ctypes.c_void_p,  # unique identifier (out)
            ctypes.c_void_p,  # user data
        ]
        library.espeak_Synth.restype = ctypes.c_int

    def _collect(self, samples: ctypes._Pointer[ctypes.c_short], count: int, events: int | None) -> int:
        """Append ``count`` 16-bit samples to the current utterance. Returning 0 lets espeak-ng continue."""
        if count > 0:
            self._chunks.append(ctypes.string_at(samples, count * ctypes.sizeof(ctypes.c_short)))
        return 0

    def _list_voices(self) -> tuple[list[str], list[str]]:
        """Return the voice names (like "en-us") and the variant names (like "f3") of the data folder.

        A voice name is the last part of the voice's identifier ("gmw/en-US"
        gives "en-us"), which is what ``espeak_SetVoiceByName`` matches.
        Language codes are not always names: British English is "en".
        """
        names = sorted(
            {
                (voice.identifier or b"").decode("utf-8", "replace").rpartition("/")[2].lower()
                for voice in self._voice_entries(None)
            }
            - {""}
        )

        variant_filter = EspeakVoice()
        variant_filter.languages = b"variant"
        variants = sorted(
            (voice.identifier or b"").decode("utf-8", "replace").rpartition("/")[2]
            for voice in self._voice_entries(variant_filter)
        )
        return names, variants

    def _voice_entries(self, voice_filter: EspeakVoice | None) -> list[EspeakVoice]:
        pointer = ctypes.byref(voice_filter) if voice_filter is not None else None
        entries = self.library.espeak_ListVoices(pointer)
        found = []
        index = 0
        while entries[index]:
            found.append(entries[index].contents)
            index += 1
        return found

    def set_voice(self, name: str) -> bool:
        """Select voice ``name`` and return whether espeak-ng found it. The caller must hold ``lock``."""
        return bool(self.library.espeak_SetVoiceByName(name.encode()) == EE_OK)

    def synthesize(self, text: str, voice: str, rate_wpm: int, pitch: int, pitch_range: int) -> np.ndarray:
        """Speak ``text`` and return its int16 samples at ``sample_rate``."""
        with self.lock:
            if not self.set_voice(voice):
                raise ValueError(f"espeak-ng could not select voice {voice!r}")
            for parameter, value in (
                (ESPEAK_RATE, rate_wpm),
                (ESPEAK_PITCH, pitch),
                (ESPEAK_RANGE, pitch_range),
            ):
                status = self.library.espeak_SetParameter(parameter, value, 0)
                if status != EE_OK:
                    raise RuntimeError(f"espeak_SetParameter({parameter}, {value}) failed with status {status}")

            encoded = text.encode("utf-8")
            buffer = ctypes.create_string_buffer(encoded)
            self._chunks = []
            try:
                status = self.library.espeak_Synth(
                    buffer, len(encoded) + 1, 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None
                )
                audio = b"".join(self._chunks)
            finally:
                self._chunks = []
        if status != EE_OK:
            raise RuntimeError(f"espeak_Synth failed with status {status} for voice {voice!r} on {text[:80]!r}")
        return np.frombuffer(audio, dtype=np.int16)


_engine: EspeakEngine | None = None
_engine_lock = threading.Lock()


def get_engine() -> EspeakEngine:
    """Return the process's espeak-ng engine, initializing the library on the first call."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = EspeakEngine()
        return _engine


class EspeakNGSynthesizer(SpeechSynthesizer):
    """Speaks text with espeak-ng formant synthesis, at 22,050 Hz.

    A voice name is the file name of an espeak-ng voice, which is the last part
    of the File column of ``espeak-ng --voices`` ("en-us", "en" for British
    English, "en-gb-x-rp"). It may end in ``+`` and a variant from the
    ``voices/!v`` folder of the voice data ("en-us+f3", "en-us+m3").

    ``rate`` scales espeak-ng's normal speed of 175 words per minute and must
    keep it within 80 to 900. ``pitch`` scales both the voice's base pitch
    (espeakPITCH, where each step of 1 from 50 is a factor of 2**(1/50)) and
    its pitch range (espeakRANGE, 50 is the voice's own), so it must lie
    within 0.5 to 2.0.

    NOTE: with ``pitch=0.8`` and ``1.25``, the median F0 measured here moved
    by factors of about 0.85 and 1.20, because espeak-ng shifts the base by
    a further amount when the range changes.

    NOTE: two calls with the same arguments in one process do not give
    identical samples, because the wave generator carries state (such as the
    phase of its pitch flutter) from one utterance to the next. The same
    sequence of calls in a fresh process does repeat exactly.

    The library is initialized once per process, and a lock makes concurrent
    calls wait for each other.
    """

    description: ClassVar[str] = "espeak-ng formant synthesizer via espeakng-loader (22,050 Hz, many languages)"

    def __init__(self, voices: list[str] | None = None) -> None:
        self._engine = get_engine()
        requested = list(DEFAULT_VOICES) if voices is None else list(voices)
        if not requested:
            raise ValueError("voices must name at least one espeak-ng voice, for example ['en-us', 'en-us+f3']")
        for name in requested:
            self._check_voice(name)
        self._voices = requested

    @property
    def voices(self) -> list[str]:
        """Names of the espeak-ng voices this synthesizer speaks with."""
        return list(self._voices)

    @property
    def sample_rate(self) -> int:
        """Output sample rate in Hz (22,050 for the espeak-ng data in espeakng-loader)."""
        return self._engine.sample_rate

    def synthesize(self, text: str, voice: str, rate: float = 1.0, pitch: float = 1.0) -> tuple[torch.Tensor, int]:
        """Speak ``text`` and return (float32 waveform (samples,) in [-1, 1], 22,050).

        Raises ``ValueError`` for an unknown voice, empty text, or a rate or
        pitch outside the ranges in the class docstring, and ``RuntimeError``
        when espeak-ng fails or produces no samples.
        """
        if voice not in self._voices:
            raise ValueError(f"unknown espeak-ng voice {voice!r}; available voices: {', '.join(self._voices)}")
        if not text.strip():
            raise ValueError(f"text to synthesize is empty or only whitespace: {text!r}")
        rate_wpm = self._rate_to_wpm(rate)
        pitch_value, range_value = self._pitch_to_parameters(pitch)

        samples = self._engine.synthesize(text, voice, rate_wpm, pitch_value, range_value)
        if samples.size == 0:
            raise RuntimeError(f"espeak-ng produced no samples for voice {voice!r} on text {text[:80]!r}")
        waveform = torch.from_numpy(samples.astype(np.float32) / 32768.0)
        return waveform, self._engine.sample_rate

    def _check_voice(self, name: str) -> None:
        """Raise ``ValueError`` unless espeak-ng has the voice and the variant that ``name`` names."""
        engine = self._engine
        language, plus, variant = name.partition("+")
        if plus and variant not in engine.variants:
            raise ValueError(
                f"unknown espeak-ng voice variant {variant!r} in {name!r}; "
                f"available variants: {', '.join(engine.variants)}"
            )
        with engine.lock:
            known = bool(language) and engine.set_voice(language)
        if not known:
            raise ValueError(
                f"unknown espeak-ng voice {name!r}; available voices: {', '.join(engine.voice_names)} "
                "(add +variant for a variant, as in 'en-us+f3')"
            )

    @staticmethod
    def _rate_to_wpm(rate: float) -> int:
        if not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"rate must be a positive finite number, got {rate!r}")
        rate_wpm = round(NORMAL_RATE_WPM * rate)
        if not MIN_RATE_WPM <= rate_wpm <= MAX_RATE_WPM:
            raise ValueError(
                f"rate {rate} gives {rate_wpm} words per minute, outside espeak-ng's {MIN_RATE_WPM} to "
                f"{MAX_RATE_WPM}; use a rate from {MIN_RATE_WPM / NORMAL_RATE_WPM:.3f} "
                f"to {MAX_RATE_WPM / NORMAL_RATE_WPM:.3f}"
            )
        return rate_wpm

    @staticmethod
    def _pitch_to_parameters(pitch: float) -> tuple[int, int]:
        """Return (espeakPITCH, espeakRANGE) values that scale the voice's pitch by ``pitch``."""
        if not math.isfinite(pitch) or not 0.5 <= pitch <= 2.0:
            raise ValueError(f"pitch must be a number from 0.5 to 2.0 for espeak-ng, got {pitch!r}")
        # espeak-ng multiplies the base pitch by pitch_adjust_tab[value] / 128, which is
        # about 2 ** ((value - 50) / 50).
        pitch_value = min(100, round(NORMAL_PITCH + 50 * math.log2(pitch)))
        range_value = min(100, round(NORMAL_RANGE * pitch))
        return pitch_value, range_value
