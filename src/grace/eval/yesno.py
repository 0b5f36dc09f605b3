"""VLMEvalKit's rule-based Yes/No extraction (used here for HallusionBench).

Invariant: lower-case, apply VLMEvalKit's punctuation step (the VQA symbol list; a period is
removed only when no digit is on either side), split into words; "yes" without "no" -> Yes, "no"
without "yes" -> No, anything else -> Unknown (scored wrong without an LLM judge).
"""

from __future__ import annotations

import re

from grace.eval.vqa_norm import PUNCTUATION

_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")


def _punctuation(text: str) -> str:
    out = text
    has_comma_digit = _COMMA_DIGIT.search(text) is not None
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or has_comma_digit:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out)


def yes_no(output: str) -> str:
    """'Yes', 'No' or 'Unknown'. ``yes_no("There is no cat") == "No"``"""
    words = _punctuation(str(output).lower()).split()
    has_yes, has_no = "yes" in words, "no" in words
    if has_yes and not has_no:
        return "Yes"
    if has_no and not has_yes:
        return "No"
    return "Unknown"
