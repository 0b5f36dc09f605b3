"""Option-letter extraction shared by the multiple-choice benchmarks (VLMEvalKit exact matching).

Invariant: :func:`can_infer` follows VLMEvalKit's current ``can_infer`` without an LLM judge:
first the option-letter rule (a single choice letter as a whole token among the last five tokens,
a refusal -> 'Z', or "answer is X"), then the option-text rule (exactly one option text inside a
short enough output). It returns the letter, 'Z' or None (not inferable, scored wrong).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_API_FAILURE = "Failed to obtain answer via API"
_TO_SPACE = ".()[],:;!*#{}"
# "... answer is X" / "... answer is **X**"; case-insensitive, the letter must end the word.
_ANSWER_IS = re.compile(r"answer is\s*\*{0,2}\s*([A-Za-z])\b", re.IGNORECASE)


def infer_option(output: str, choices: Mapping[str, str]) -> str | None:
    """The letter read from option markers alone (VLMEvalKit ``can_infer_option``)."""
    if _API_FAILURE in output:
        return None
    for r in _REFUSALS:
        if r in output:
            return "Z"
    mod = output
    for ch in _TO_SPACE:
        mod = mod.replace(ch, " ")
    tokens = mod.split()
    present = [c for c in choices if c in tokens]
    if len(present) == 1:
        c = present[0]
        # Only a letter near the end is the model's pick; "B is correct because ..." is not.
        if tokens.index(c) > len(tokens) - 5:
            return c
    elif not present and "Z" in tokens:
        return "Z"
    m = _ANSWER_IS.search(output)
    if m and m.group(1).upper() in choices:
        return m.group(1).upper()
    return None


def infer_text(output: str, choices: Mapping[str, str]) -> str | None:
    """The letter whose option text (lower-cased) is the only one inside the output."""
    low = output.lower()
    if len(low) > 2 * sum(len(str(v)) for v in choices.values()):
        return None
    hits = [k for k, v in choices.items() if str(v).lower() in low]
    return hits[0] if len(hits) == 1 else None


def can_infer(output: str, choices: Mapping[str, str]) -> str | None:
    """Letter (or 'Z') VLMEvalKit's exact matching reads from ``output``; None if not inferable.

    ``can_infer("a cute teddy bear", {"A": "teddy bear", "B": "rabbit"}) == "A"``
    """
    output = str(output)
    return infer_option(output, choices) or infer_text(output, choices)
