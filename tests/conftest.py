"""Fixtures shared by the core's unit tests."""

from __future__ import annotations

import pytest

from diffuspeech.layouts import Budgets
from diffuspeech.vocabulary import Vocabulary


@pytest.fixture
def vocabulary() -> Vocabulary:
    """A small vocabulary: text ids 0-11, special tokens 12-22 (mask 21, pad 22), units 23-30."""
    return Vocabulary(text_size=12, num_units=8)


@pytest.fixture
def budgets() -> Budgets:
    """Short target budgets, closing markers included."""
    return Budgets(transcript=4, thought=4, answer=3, reply_units=5)
