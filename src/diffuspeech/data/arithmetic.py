"""A built-in generator of spoken arithmetic questions with reasoning traces.

Each item is a question ("what is seven plus five"), a thought ("seven plus
five is twelve") and an answer ("twelve"). Questions are phrased by several
templates. The held-out split contains question texts that never occur in
training, while each arithmetic fact still appears in training under another
phrasing: it tests recognizing and reasoning over unseen sentences, not
learning facts never shown.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]

TEMPLATES: dict[str, tuple[str, ...]] = {
    "plus": (
        "what is {a} plus {b}",
        "how much is {a} plus {b}",
        "what do you get when you add {a} and {b}",
        "add {a} and {b}",
        "tell me {a} plus {b}",
        "please compute {a} plus {b}",
    ),
    "minus": (
        "what is {a} minus {b}",
        "how much is {a} minus {b}",
        "what do you get when you take {b} from {a}",
        "subtract {b} from {a}",
        "tell me {a} minus {b}",
        "please compute {a} minus {b}",
    ),
}


@dataclass(frozen=True)
class ArithmeticItem:
    """One spoken-arithmetic question with its thought and answer."""

    question: str
    thought: str
    answer: str
    fact: str


def number_word(value: int) -> str:
    """Return the English word of ``value`` in [0, 20]."""
    if not 0 <= value < len(NUMBER_WORDS):
        raise ValueError(f"{value} has no number word; the generator covers 0 to {len(NUMBER_WORDS) - 1}")
    return NUMBER_WORDS[value]


def generate_items(max_operand: int = 9, operations: tuple[str, ...] = ("plus",)) -> list[ArithmeticItem]:
    """Return every question over operands 0..max_operand, each template once.

    Subtraction keeps the result non-negative. Results must stay within 20.
    """
    items = []
    for operation in operations:
        if operation not in TEMPLATES:
            raise ValueError(f"unknown operation {operation!r}; choices: {', '.join(TEMPLATES)}")
        for a in range(max_operand + 1):
            for b in range(max_operand + 1):
                result = a + b if operation == "plus" else a - b
                if result < 0:
                    continue
                words = {"a": number_word(a), "b": number_word(b)}
                thought = f"{words['a']} {operation} {words['b']} is {number_word(result)}"
                for template in TEMPLATES[operation]:
                    items.append(
                        ArithmeticItem(
                            question=template.format(**words),
                            thought=thought,
                            answer=number_word(result),
                            fact=f"{a} {operation} {b}",
                        )
                    )
    return items


def split_items(
    items: list[ArithmeticItem], held_out_fraction: float, seed: int
) -> tuple[list[ArithmeticItem], list[ArithmeticItem]]:
    """Split into (training, held-out) so that no held-out question text is in training.

    Every fact keeps at least one phrasing in training. ``held_out_fraction``
    is the share of question texts held out, in [0, 1).
    """
    if not 0 <= held_out_fraction < 1:
        raise ValueError(f"held_out_fraction must be in [0, 1), got {held_out_fraction}")
    by_fact: dict[str, list[ArithmeticItem]] = {}
    for item in items:
        by_fact.setdefault(item.fact, []).append(item)

    rng = random.Random(seed)
    target = round(held_out_fraction * len(items))
    candidates = [item for group in by_fact.values() for item in group]
    rng.shuffle(candidates)
    kept_per_fact = {fact: len(group) for fact, group in by_fact.items()}
    held_out: list[ArithmeticItem] = []
    for item in candidates:
        if len(held_out) >= target:
            break
        if kept_per_fact[item.fact] > 1:
            held_out.append(item)
            kept_per_fact[item.fact] -= 1

    held_out_questions = {item.question for item in held_out}
    training = [item for item in items if item.question not in held_out_questions]
    return training, held_out
