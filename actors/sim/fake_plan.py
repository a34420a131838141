"""The simulator's plan: a research -> analysis -> validation -> generation DAG (and the
outline of a plan in branches, for hierarchical planning).

Asked for "at most N microtasks" (default 8), it plans most of them: all N up to 4,
else 80-100% of N, never fewer than 4. Each item is what a model writes: a title and one
or two sentences of instructions, ~100-150 tokens of JSON. Every item depends on a
window of the previous level; the chain to the final generation item is critical.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from typing import Any

from actors.models import ID_PREFIX, PIPELINE, PLAN_SHARES, Role, apportion
from actors.sim.fake_request import Prompt
from actors.sim.fake_text import keywords

# Plan shape, one level per role in pipeline order: its share of the microtasks.
_SHARES = tuple(PLAN_SHARES[role] / 100 for role in PIPELINE)
_BRANCHES = re.compile(r"at most\s+(\d+)\s+branches", re.IGNORECASE)
# The rule of answer_mode "sections" (decomposer.sections_rule).
_SECTIONS = re.compile(r"one section of the final answer.*?about (\d+) words in all", re.S)
_WORDS_PER_SECTION = 350  # how long a section the simulated planner aims at
_IN_ALL = re.compile(r"with\s+(\d+)\s+microtasks in all", re.IGNORECASE)
_PLAN_SIZE = re.compile(r"(?:at most|up to|no more than)\s+(\d+)\s+microtasks?", re.IGNORECASE)
_RESEARCH = (
    "background of",
    "current state of",
    "key facts about",
    "alternatives to",
    "constraints on",
    "prior work on",
    "stakeholders of",
    "data sources for",
)
_ANALYSIS = (
    "trade-offs of",
    "costs and benefits of",
    "risks of",
    "dependencies of",
    "impact of",
    "options for",
    "trends in",
)
_RESEARCH_TAILS = (
    "Cite the sources you rely on, say how recent each one is, and note where the evidence "
    "on {kw} is thin, disputed or out of date.",
    "Prefer primary sources over summaries, say plainly which figures are estimates, and "
    "keep what you found on {other} apart from what you found on {kw}.",
    "Keep to facts that bear on the decision, give numbers where they exist, and flag "
    "anything about {kw} that another agent should check before it is relied on.",
)
_ANALYSIS_TAILS = (
    "Rank the options, say which assumptions drive the result, and state how confident you "
    "are in each step of the reasoning.",
    "Quantify where the research allows it, name the main uncertainty, and say what "
    "evidence would settle it one way or the other.",
    "Say what would change the conclusion, how likely that is, and what it would cost to "
    "find out before committing to a recommendation.",
)


def plan_sizes(n: int) -> list[int]:
    """Microtasks per level (research, analysis, validation, generation) for ``n`` total:
    the shares by largest remainder; from 4 on, at least one per level, each taken from
    the level furthest over its share."""
    if n < 4:
        return {1: [0, 0, 0, 1], 2: [1, 0, 0, 1], 3: [1, 1, 0, 1]}[max(n, 1)]
    counts = apportion(n, _SHARES)
    for empty in [level for level, count in enumerate(counts) if count == 0]:
        donor = max(
            (level for level, count in enumerate(counts) if count > 1),
            key=lambda level: counts[level] - n * _SHARES[level],
        )
        counts[donor] -= 1
        counts[empty] = 1
    return counts


def plan_limit(prompt: Prompt) -> int:
    """N of "at most N microtasks" in the prompt (8 when it does not say)."""
    match = _PLAN_SIZE.search(prompt.conversation) or _PLAN_SIZE.search(prompt.system)
    return max(1, int(match.group(1))) if match else 8


def plan(prompt: Prompt, rng: random.Random) -> dict[str, Any]:
    """A ``PlanDraft`` instance for the request in ``prompt``."""
    limit = plan_limit(prompt)
    n = limit if limit <= 4 else max(4, round(limit * rng.uniform(0.8, 1.0)))
    words = keywords(prompt.request)
    subject = _subject(prompt.request)
    sizes = plan_sizes(n)
    sections = _SECTIONS.search(prompt.conversation)
    answer_words = int(sections.group(1)) if sections else 0
    if sections and n >= 6:  # the last level writes the answer, one section each
        wanted = max(2, min(6, n // 4, round(answer_words / _WORDS_PER_SECTION)))
        while sizes[3] < wanted:  # taken from the largest level
            sizes[max(range(3), key=lambda i: sizes[i])] -= 1
            sizes[3] += 1
    levels: list[list[dict[str, Any]]] = []
    for role, count in zip(PIPELINE, sizes, strict=True):
        items = []
        for i in range(count):
            kw = words[(i + len(levels)) % len(words)]
            other = words[(i + len(levels) + 1) % len(words)]
            if role is Role.GENERATION and sections and n >= 6:
                fields = _section(kw, subject, i, count, answer_words // count)
            else:
                fields = _wording(role, kw, other, subject, i, count, rng)
            items.append({"id": f"{ID_PREFIX[role]}{i + 1}", "role": role.value, **fields})
        if items:
            levels.append(items)
    for previous, level in itertools.pairwise(levels):
        for i, item in enumerate(level):
            # Windows spread evenly over the previous level so no item is left dangling.
            size = max(rng.randint(2, 4), math.ceil(len(previous) / len(level)))
            size = min(len(previous), size)
            start = i * len(previous) // len(level)
            item["depends_on"] = [previous[(start + j) % len(previous)]["id"] for j in range(size)]
    # Generation drafts run side by side: the synthesis step merges them anyway.
    final = levels[-1][-1]
    by_id = {item["id"]: item for level in levels for item in level}
    node: dict[str, Any] | None = final
    while node is not None:
        node["critical"], node["priority"] = True, 10
        node = by_id[node["depends_on"][0]] if node["depends_on"] else None
    return {"microtasks": [item for level in levels for item in level]}


def outline(prompt: Prompt, rng: random.Random) -> dict[str, Any]:
    """A ``PlanOutline``: one branch per few keywords of the request, each with its share
    of "N microtasks in all", and a last branch that builds on all the others."""
    most = _BRANCHES.search(prompt.conversation)
    total = _IN_ALL.search(prompt.conversation)
    limit = int(most.group(1)) if most else 6
    n = int(total.group(1)) if total else 20
    words = keywords(prompt.request)
    count = max(2, min(limit, n // 8, len(words) + 1))
    subject = _subject(prompt.request)
    branches: list[dict[str, Any]] = []
    for i in range(count - 1):
        kw = words[i % len(words)]
        branches.append(
            {
                "id": f"b{i + 1}",
                "title": f"The {kw} side",
                "focus": f"Everything about {kw} as it bears on: {subject}.",
                "depends_on": [],
            }
        )
    branches.append(
        {
            "id": f"b{count}",
            "title": "Recommendations",
            "focus": f"Weigh the other branches' findings into ranked recommendations for: "
            f"{subject}.",
            "depends_on": [b["id"] for b in branches],
        }
    )
    sizes = [max(2, round(n * rng.uniform(0.8, 1.0) / count)) for _ in branches]
    for branch, size in zip(branches, sizes, strict=True):
        branch["microtasks"] = size
    return {"branches": branches}


def _subject(request: str) -> str:
    """The request shortened to a phrase (at most ~80 characters, whole words)."""
    text = " ".join(request.split()).rstrip(".?!")
    if len(text) <= 80:
        return text
    return text[:80].rsplit(" ", 1)[0]


def _section(kw: str, subject: str, i: int, count: int, words: int) -> dict[str, Any]:
    """A generation microtask writing section ``i`` of ``count`` of the answer."""
    last = i == count - 1
    title = "Recommendations and next steps" if last else f"What matters about {kw}"
    return {
        "title": title,
        "instructions": f"Write section {i + 1} of {count} of the final answer to: {subject}, "
        f"in about {words} words, from the validated results"
        + (", ending with concrete next steps in order of priority." if last else f" on {kw}."),
        "depends_on": [],
        "priority": 1,
        "critical": False,
    }


def _wording(
    role: Role, kw: str, other: str, subject: str, i: int, count: int, rng: random.Random
) -> dict[str, Any]:
    if role is Role.RESEARCH:
        aspect = f"{_RESEARCH[i % len(_RESEARCH)]} {kw}"
        title = f"Research the {aspect}"
        instructions = f"Collect what is known about the {aspect}, as it bears on: {subject}. "
        instructions += rng.choice(_RESEARCH_TAILS).format(kw=kw, other=other)
    elif role is Role.ANALYSIS:
        aspect = f"{_ANALYSIS[i % len(_ANALYSIS)]} {kw}"
        title = f"Analyse the {aspect}"
        instructions = (
            f"Using the research results on {kw} and {other}, work out the {aspect} for "
            f"this request. "
        )
        instructions += rng.choice(_ANALYSIS_TAILS)
    elif role is Role.VALIDATION:
        title = f"Validate the findings on {kw}"
        instructions = (
            f"Check the analyses of {kw} against the research they cite, looking for "
            "contradictions, unsupported claims, stale figures and missing evidence. "
            f"List what holds, correct what does not, and say where {other} was overlooked."
        )
    elif i == count - 1:
        title = f"Write the final answer on {kw}"
        instructions = (
            f"Combine the validated results and the drafted sections into one clear answer "
            f"to: {subject}. Open with a short summary, keep the caveats that matter, and "
            "end with concrete next steps in order of priority."
        )
    else:
        title = f"Draft the section on {kw}"
        instructions = (
            f"Draft the part of the answer about {kw} from the validated results, with "
            "concrete recommendations, the evidence behind each, and their main caveats. "
            f"Mention how it interacts with {other} where that matters."
        )
    return {
        "title": title,
        "instructions": instructions,
        "depends_on": [],
        "priority": 1,
        "critical": False,
    }
