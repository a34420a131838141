"""The claims simulated agents make, and the simulator's answer to a reconciling call.

Real agents name one topic differently and paraphrase one finding, and now and then two
of them contradict each other. The simulator does the same from a deterministic
vocabulary: for a request's keywords, ``findings(words)`` are things an agent can find
(a theme such as cost or maturity applied to a keyword), each with three topic names
and five wordings for each of its two opposite sides.

- ``agent_claims`` states 1–3 findings, each in a seeded-random wording under a
  seeded-random topic name, mostly on the finding's true side (``true_side``); about one
  claim in eight (``FLIP_RATE``) states the other side, decided by a hash of the seed,
  the microtask and the finding, so runs are reproducible.
- ``reconcile_answer`` reads the ``<claim id=... topic=...>`` lines of a reconciling
  prompt, maps each statement back to its finding and side (``identify``: normalised
  exact match against the templates, so it needs no request), and groups by finding:
  one position when every claim is on one side, two when both are; the heavier side
  holds. Statements it does not recognise are grouped by normalised topic.

Example::

    [cost, *_] = findings(["kubernetes"])
    cost.topics  # ('Kubernetes cost', 'Budget for kubernetes', 'Cost of running kubernetes')
    identify(cost.wordings(1)[3])  # (cost, 1)
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from typing import Any

from actors.engine.claims import VALIDATION_WEIGHT, normalise_topic

# Share of claims that state the other side of their finding: real contradictions.
FLIP_RATE = 1 / 8
# Findings are drawn for this many of the request's keywords.
_KEYWORDS = 2

# Theme: three topic names, then five wordings of each side. ``{k}`` is the keyword,
# ``{K}`` the keyword capitalised. No wording of one side may end like one of the other
# (the reverse lookup is a full match), which the unit tests check.
_THEMES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "cost": (
        ("{K} cost", "Budget for {k}", "Cost of running {k}"),
        (
            "{K} costs less than the current approach.",
            "Running {k} is cheaper than the alternatives.",
            "The total cost of {k} is lower than today's spend.",
            "{K} reduces operating costs over three years.",
            "Moving to {k} lowers the monthly bill.",
        ),
        (
            "{K} costs more than the current approach.",
            "Running {k} is more expensive than the alternatives.",
            "The total cost of {k} is higher than today's spend.",
            "{K} raises operating costs over three years.",
            "Moving to {k} increases the monthly bill.",
        ),
    ),
    "demand": (
        ("Demand for {k}", "{K} adoption", "Market interest in {k}"),
        (
            "Demand for {k} is growing year over year.",
            "{K} adoption is rising steadily.",
            "More teams take up {k} every year.",
            "Interest in {k} keeps increasing.",
            "The market for {k} is expanding.",
        ),
        (
            "Demand for {k} is shrinking year over year.",
            "{K} adoption is falling.",
            "Fewer teams take up {k} every year.",
            "Interest in {k} is declining.",
            "The market for {k} is contracting.",
        ),
    ),
    "maturity": (
        ("{K} maturity", "Stability of {k}", "Production readiness of {k}"),
        (
            "{K} is mature enough for production use.",
            "{K} runs stably in production.",
            "{K} has a proven track record in production.",
            "Production deployments of {k} are reliable.",
            "{K} is ready for production workloads.",
        ),
        (
            "{K} is too immature for production use.",
            "{K} runs unstably in production.",
            "{K} has no track record in production yet.",
            "Production deployments of {k} are unreliable.",
            "{K} is not ready for production workloads.",
        ),
    ),
    "timeline": (
        ("{K} timeline", "Time to deliver {k}", "Schedule for {k}"),
        (
            "{K} can be delivered within six months.",
            "A rollout of {k} takes less than half a year.",
            "The {k} work fits in two quarters.",
            "Delivering {k} is a matter of months, not years.",
            "{K} will be in place before the end of the year.",
        ),
        (
            "{K} needs more than a year to deliver.",
            "A rollout of {k} takes well over a year.",
            "The {k} work spans at least four quarters.",
            "Delivering {k} will take years, not months.",
            "{K} will not be in place before next year.",
        ),
    ),
    "compliance": (
        ("{K} compliance", "Regulatory status of {k}", "Legal requirements for {k}"),
        (
            "{K} meets current regulatory requirements.",
            "{K} is compliant with the applicable rules.",
            "No legal obstacle blocks {k}.",
            "Regulators have cleared {k} for use.",
            "{K} passes the required compliance checks.",
        ),
        (
            "{K} falls short of current regulatory requirements.",
            "{K} breaches the applicable rules.",
            "A legal obstacle blocks {k}.",
            "Regulators have not cleared {k} for use.",
            "{K} fails the required compliance checks.",
        ),
    ),
    "skills": (
        ("Skills for {k}", "{K} staffing", "Team experience with {k}"),
        (
            "The team already has the skills {k} needs.",
            "Enough engineers know {k} well.",
            "Hiring for {k} is easy.",
            "In-house experience with {k} is strong.",
            "{K} needs no outside specialists.",
        ),
        (
            "The team lacks the skills {k} needs.",
            "Too few engineers know {k} well.",
            "Hiring for {k} is hard.",
            "In-house experience with {k} is thin.",
            "{K} needs outside specialists.",
        ),
    ),
}

_SLOT = "qqslotqq"  # stands in for the keyword while a template is normalised
_CLAIM = re.compile(r'<claim((?:\s+[\w-]+="[^"]*")*)\s*>(.*?)</claim>', re.DOTALL)
_ATTRIBUTE = re.compile(r'([\w-]+)="([^"]*)"')


@dataclass(frozen=True)
class Finding:
    """Something an agent can find about one keyword, and the two ways to state it."""

    id: str  # "<theme>:<keyword>"
    topics: tuple[str, ...]  # names agents file it under
    sides: tuple[tuple[str, ...], tuple[str, ...]]  # wordings of each side

    def wordings(self, side: int) -> tuple[str, ...]:
        return self.sides[side]


def findings(words: list[str]) -> list[Finding]:
    """What agents can find about a request whose keywords are ``words``."""
    keys = [_normalise(w) for w in words[:_KEYWORDS] if _normalise(w)] or ["the request"]
    return [_finding(theme, key) for key in dict.fromkeys(keys) for theme in _THEMES]


def true_side(finding: Finding, seed: int) -> int:
    """The side most agents state (0 or 1), fixed by the seed."""
    return 0 if _fraction(seed, finding.id) < 0.5 else 1


def identify(statement: str) -> tuple[Finding, int] | None:
    """The finding and side ``statement`` is a wording of, if it is one."""
    text = _normalise(statement)
    best: tuple[str, str, int] | None = None  # (keyword, theme, side)
    for theme, side, pattern in _PATTERNS:
        match = pattern.fullmatch(text)
        # Where two templates fit, the shorter keyword is the one meant.
        if match and (best is None or len(match.group(1)) < len(best[0])):
            best = (match.group(1), theme, side)
    return None if best is None else (_finding(best[1], best[0]), best[2])


def agent_claims(
    words: list[str], seed: int, rng: random.Random, microtask_id: str | None = None
) -> list[dict[str, Any]]:
    """The 1-3 claims one agent states about the request whose keywords are ``words``."""
    pool = findings(words)
    claims = []
    for finding in rng.sample(pool, rng.randint(1, min(3, len(pool)))):
        draw = microtask_id if microtask_id is not None else rng.getrandbits(32)
        side = true_side(finding, seed)
        if _fraction(seed, draw, finding.id, "flip") < FLIP_RATE:
            side = 1 - side
        claims.append(
            {"topic": rng.choice(finding.topics), "statement": rng.choice(finding.wordings(side))}
        )
    return claims


def reconcile_answer(text: str, seed: int) -> dict[str, Any]:
    """A ``Reconciliation`` (as JSON) for the ``<claim ...>`` lines in ``text``."""
    by_finding: dict[str, tuple[Finding, dict[int, list[_Said]]]] = {}
    by_topic: dict[str, tuple[str, dict[str, list[_Said]]]] = {}
    for said in _read_claims(text):
        known = identify(said.statement)
        if known is not None:
            finding, side = known
            _, sides = by_finding.setdefault(finding.id, (finding, {}))
            sides.setdefault(side, []).append(said)
        else:
            key = normalise_topic(said.topic) or _normalise(said.statement)
            _, statements = by_topic.setdefault(key, (said.topic or said.statement, {}))
            statements.setdefault(_normalise(said.statement), []).append(said)
    groups = []
    for finding, sides in by_finding.values():
        order = sorted(sides)
        positions = [(finding.wordings(side)[0], sides[side]) for side in order]
        truth = true_side(finding, seed)
        groups.append(_group(finding.topics[0], positions, [side == truth for side in order]))
    for subject, statements in by_topic.values():
        positions = [(claims[0].statement, claims) for claims in statements.values()]
        groups.append(_group(subject, positions, [False] * len(positions)))
    return {"groups": groups}


@dataclass(frozen=True)
class _Said:
    """One ``<claim>`` line of a reconciling prompt."""

    id: str
    topic: str
    statement: str
    weight: float


def _read_claims(text: str) -> list[_Said]:
    out = []
    for attributes, statement in _CLAIM.findall(text):
        attrs = dict(_ATTRIBUTE.findall(attributes))
        if "id" not in attrs:
            continue
        try:
            confidence = float(attrs.get("confidence", "1"))
        except ValueError:
            confidence = 1.0
        factor = VALIDATION_WEIGHT if attrs.get("role") == "validation" else 1.0
        out.append(
            _Said(attrs["id"], attrs.get("topic", ""), statement.strip(), confidence * factor)
        )
    return out


def _group(
    subject: str, positions: list[tuple[str, list[_Said]]], favoured: list[bool]
) -> dict[str, Any]:
    """One group; the heaviest position holds (then the most claims, then ``favoured``)."""
    weights = [sum(s.weight for s in claims) for _, claims in positions]
    chosen = max(
        range(len(positions)), key=lambda i: (weights[i], len(positions[i][1]), favoured[i])
    )
    total = len([s for _, claims in positions for s in claims])
    if len(positions) == 1:
        reason = f"All {total} claims agree." if total > 1 else "The only claim on this."
    else:
        rest = sorted(weights[:chosen] + weights[chosen + 1 :], reverse=True)
        reason = (
            f"Held by {len(positions[chosen][1])} of {total} claims, weighted confidence "
            f"{weights[chosen]:.2f} against {rest[0]:.2f}."
        )
    return {
        "subject": subject,
        "positions": [
            {"statement": statement, "claim_ids": [s.id for s in claims]}
            for statement, claims in positions
        ],
        "chosen": chosen,
        "reason": reason,
    }


def _finding(theme: str, keyword: str) -> Finding:
    topics, *sides = _THEMES[theme]

    def fill(template: str) -> str:
        return template.replace("{k}", keyword).replace("{K}", keyword[:1].upper() + keyword[1:])

    first, second = (tuple(fill(t) for t in side) for side in sides)
    return Finding(f"{theme}:{keyword}", tuple(fill(t) for t in topics), (first, second))


def _normalise(text: str) -> str:
    """Lowercase, punctuation but hyphens stripped, whitespace collapsed."""
    return " ".join(re.sub(r"[^\w\s-]", " ", text.lower()).split())


def _pattern(template: str) -> re.Pattern[str]:
    text = _normalise(template.replace("{k}", _SLOT).replace("{K}", _SLOT))
    # A keyword is one word, or two ("the request", the fallback).
    return re.compile(re.escape(text).replace(_SLOT, r"([\w-]+(?: [\w-]+)?)"))


_PATTERNS = [
    (theme, side, _pattern(template))
    for theme, (_, *sides) in _THEMES.items()
    for side, templates in enumerate(sides)
    for template in templates
]


def _fraction(*parts: Any) -> float:
    """A number in [0, 1) fixed by ``parts`` (any JSON-able values)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") / 2**64
