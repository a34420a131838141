"""Deterministic complexity heuristic: the fallback when the model's assessment fails.

It looks at what a person would: length, how many distinct things are asked
for, and words that signal breadth ("comprehensive", "compare", "each").
A greeting or one short question is not parallelisable at all.
"""

from __future__ import annotations

import re

from actors.models import Complexity, ComplexityAssessment

_GREETING = re.compile(
    r"^\s*(hi|hello|hey|hallo|hola|yo|thanks|thank you|good (morning|evening|night)|"
    r"how are you|what's up|ping)\b[\s!.?,]*\w*[\s!.?]*$",
    re.IGNORECASE,
)
_BROAD = re.compile(
    r"\b(comprehensive|complete|full|thorough|in-depth|detailed|end-to-end|exhaustive|"
    r"audit|analy[sz]e|analysis|compare|comparison|evaluate|review|assess|research|"
    r"report|strategy|plan|architecture|security|threat|each|every|all)\b",
    re.IGNORECASE,
)
_MASSIVE = re.compile(
    r"\b(massive|enterprise-wide|entire (company|organisation|organization|codebase)|"
    r"hundreds?|every (service|system|component)|all (services|systems|components))\b",
    re.IGNORECASE,
)
_PARTS = re.compile(r",|;|\band\b|\bplus\b|\n[-*\d]", re.IGNORECASE)


def assess(text: str) -> ComplexityAssessment:
    """Classify ``text`` without a model call (same input, same answer)."""
    stripped = text.strip()
    words = len(stripped.split())
    if _GREETING.match(stripped) or words <= 3:
        return ComplexityAssessment(
            level=Complexity.SIMPLE, parallelizable=False, reason="greeting or very short"
        )
    broad = len(_BROAD.findall(stripped))
    parts = len(_PARTS.findall(stripped)) + 1
    score = broad * 2 + parts + words / 25
    if _MASSIVE.search(stripped):
        score += 8
    if score >= 14:
        level = Complexity.MASSIVE
    elif score >= 8:
        level = Complexity.COMPLEX
    elif score >= 4:
        level = Complexity.MEDIUM
    else:
        level = Complexity.SIMPLE
    parallelizable = broad > 0 or parts > 1 or words > 30
    reason = f"{words} words, {broad} breadth signals, {parts} parts (score {score:.1f})"
    return ComplexityAssessment(level=level, parallelizable=parallelizable, reason=reason)
