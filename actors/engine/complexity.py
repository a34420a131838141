"""Deterministic complexity heuristic: the fallback when the model's assessment fails.

It looks at what a person would: length, how many distinct things are asked
for, and words that signal breadth ("comprehensive", "compare", "each").
A greeting or one short question is not parallelisable at all.
"""

from __future__ import annotations

import re

from actors.models import Complexity, ComplexityAssessment

# The one greeting rule: the heuristic and the simulator (``actors.sim.fake_text``) both use it.
_GREETING = re.compile(
    r"^\s*(hi|hello|hey|hallo|hola|yo|thanks|thank you|good (morning|afternoon|evening|night)|"
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
# A follow-up that reworks the answer above rather than asking for new work.
_RESHAPE = re.compile(
    r"\b(shorter|longer|briefer|simpler|table|bullets?|bullet points|list|rephrase|reword|"
    r"rewrite|reformat|format|translate|summari[sz]e|tl;?dr|condense|shorten|expand on|"
    r"explain|clarify|what do you mean|in (plain|simple) (english|words)|make (it|that|this))\b",
    re.IGNORECASE,
)
_RESHAPE_WORDS = 15  # longer follow-ups are judged on their own


def is_greeting(text: str) -> bool:
    """True for "hi", "hello there!", "thanks" and the like."""
    return bool(_GREETING.match(text.strip()))


def assess(text: str, follow_up: bool = False) -> ComplexityAssessment:
    """Classify ``text`` without a model call (same input, same answer). ``follow_up``: the
    text follows up on a conversation, and a short one that reworks its answer is direct."""
    stripped = text.strip()
    words = len(stripped.split())
    if is_greeting(stripped) or words <= 3:
        return ComplexityAssessment(
            level=Complexity.SIMPLE, parallelizable=False, reason="greeting or very short"
        )
    if follow_up and words <= _RESHAPE_WORDS and _RESHAPE.search(stripped):
        return ComplexityAssessment(
            level=Complexity.SIMPLE,
            parallelizable=False,
            reason="a follow-up that reworks the answer above",
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
