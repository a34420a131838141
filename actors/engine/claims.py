"""Claims grouped into verdicts and weighed into conflicts and one confidence; no model calls.

A ``Verdict`` is a group of claims about the same thing with its positions. Groups
come from a validation agent that reads the claims for meaning (``actors.engine.reconcile``)
or, as the fallback, from topic names (``group_by_topic``). ``summary_of`` weighs the
groups: a group whose positions are held by different microtasks is a ``Conflict``,
resolved by weighted confidence; ``summarise`` is the whole lexical merge in one call.

Example::

    summary = summarise(results, missing=["r3"])
    summary.conflicts[0].winner.statement  # the position that holds
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel

from actors.models import MicrotaskResult, Role

# The validation pool exists to judge the others, so its verdicts weigh double.
VALIDATION_WEIGHT = 2.0
# Each conflict lowers overall confidence by up to this much (when the margin is 0).
CONFLICT_PENALTY = 0.1

# Dropped from topics only. Negations are not here: "is safe" and "is not safe" must
# stay apart (statements keep all their words anyway).
# fmt: off
STOP_WORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in",
    "is", "it", "its", "of", "on", "or", "that", "the", "this", "to", "was", "were", "will",
    "with", "about", "into", "over", "than", "then", "there", "these", "those", "which", "what",
})
# fmt: on
_NON_WORD = re.compile(r"[^\w\s]+")
_SPACES = re.compile(r"\s+")


class MergeMethod(StrEnum):
    """How claims were grouped (``MergeSummary.method``)."""

    SEMANTIC = "semantic"  # a validation agent reconciled them by meaning
    LEXICAL = "lexical"  # by topic name: the fallback when reconciling failed or was not tried
    MIXED = "mixed"  # some batches each way
    NONE = "none"  # there were no claims


class ClaimView(BaseModel):
    """One claim as the merger sees it: who said what, how sure."""

    microtask_id: str
    agent_id: str
    role: Role
    statement: str
    confidence: float


class Conflict(BaseModel):
    """A real contradiction between results, and the position chosen."""

    topic: str
    positions: list[ClaimView]  # the chosen one first, then the others heaviest first
    winner: ClaimView  # positions[0]
    margin: float  # (w_winner - w_next) / sum of all positions' weights, clamped to [0, 1]
    weights: list[float] = []  # parallel to positions
    reason: str = ""  # the reconciling agent's one line; empty when chosen by weight alone


class MergeSummary(BaseModel):
    confidence: float
    conflicts: list[Conflict]
    agreed_topics: list[str]
    missing: list[str]
    method: MergeMethod = MergeMethod.LEXICAL
    notes: list[str] = []  # e.g. which reconciling batch failed and why; shown in the footer


def normalise_topic(topic: str) -> str:
    """Lowercase, punctuation stripped, whitespace collapsed, stop-words dropped."""
    words = normalise_text(topic).split()
    kept = [w for w in words if w not in STOP_WORDS]
    return " ".join(kept or words)


def normalise_text(text: str) -> str:
    """Lowercase, punctuation stripped, whitespace collapsed."""
    return _SPACES.sub(" ", _NON_WORD.sub(" ", text.lower())).strip()


def claim_weight(claim: ClaimView) -> float:
    """How much one claim counts: its result's confidence, double for a validator."""
    return claim.confidence * (VALIDATION_WEIGHT if claim.role is Role.VALIDATION else 1.0)


@dataclass
class Position:
    """Claims that say the same thing; each microtask counts once."""

    claims: dict[str, ClaimView] = field(default_factory=dict)  # microtask id -> best claim

    def add(self, claim: ClaimView) -> None:
        previous = self.claims.get(claim.microtask_id)
        if previous is None or previous.confidence < claim.confidence:
            self.claims[claim.microtask_id] = claim

    @property
    def weight(self) -> float:
        return sum(claim_weight(c) for c in self.claims.values())

    @property
    def representative(self) -> ClaimView:
        return max(self.claims.values(), key=lambda c: c.confidence)


@dataclass
class Verdict:
    """One group of claims about the same thing: its positions and which one holds.

    One position (or positions held by the very same microtasks) is agreement; two or
    more held by different microtasks is a contradiction. ``chosen`` is the reconciling
    agent's pick; ``None`` means the heaviest position wins.
    """

    subject: str
    positions: list[Position]
    chosen: Position | None = None
    reason: str = ""


def dedupe(results: Sequence[MicrotaskResult]) -> list[MicrotaskResult]:
    """``results`` with one per microtask id: the last one wins (e.g. a late backup)."""
    latest = {r.microtask_id: r for r in results}
    return [r for r in results if latest[r.microtask_id] is r]


def claim_views(results: Sequence[MicrotaskResult]) -> list[tuple[str, ClaimView]]:
    """Every claim with something to say, as (topic, view), in result order."""
    out = []
    for result in results:
        for claim in result.claims:
            if not normalise_text(claim.statement):
                continue
            view = ClaimView(
                microtask_id=result.microtask_id,
                agent_id=result.agent_id,
                role=result.role,
                statement=claim.statement.strip(),
                confidence=result.confidence,
            )
            out.append((claim.topic.strip(), view))
    return out


def group_by_topic(claims: Iterable[tuple[str, ClaimView]]) -> list[Verdict]:
    """The lexical grouping: one group per normalised topic, one position per statement.

    A claim without a topic is grouped with identical statements.
    """
    groups: dict[str, tuple[str, dict[str, Position]]] = {}  # key -> (shown name, positions)
    for topic, view in claims:
        statement = normalise_text(view.statement)
        key = normalise_topic(topic) or "\0" + statement
        _, positions = groups.setdefault(key, (topic or view.statement, {}))
        positions.setdefault(statement, Position()).add(view)
    return [Verdict(shown, list(positions.values())) for shown, positions in groups.values()]


def summary_of(
    results: Sequence[MicrotaskResult],
    missing: Sequence[str],
    verdicts: Iterable[Verdict],
    method: MergeMethod,
    notes: Sequence[str] = (),
) -> MergeSummary:
    """Conflicts, agreed subjects and overall confidence from grouped claims."""
    conflicts: list[Conflict] = []
    agreed: list[str] = []
    for verdict in verdicts:
        positions = [p for p in verdict.positions if p.claims]
        supporters = {frozenset(p.claims) for p in positions}
        if len(positions) >= 2 and len(supporters) >= 2:
            conflicts.append(_resolve(verdict, positions))
        elif len({m for p in positions for m in p.claims}) >= 2:
            agreed.append(verdict.subject)
    return MergeSummary(
        confidence=_overall_confidence(results, len(missing), conflicts),
        conflicts=conflicts,
        agreed_topics=agreed,
        missing=list(missing),
        method=method,
        notes=list(notes),
    )


def summarise(results: Sequence[MicrotaskResult], missing: Sequence[str] = ()) -> MergeSummary:
    """The lexical merge of ``results``: claims grouped by topic name, no model call.

    Results are deduplicated by microtask id (the last one wins, e.g. a backup
    that finished after the original).
    """
    results = dedupe(results)
    claims = claim_views(results)
    method = MergeMethod.LEXICAL if claims else MergeMethod.NONE
    return summary_of(results, missing, group_by_topic(claims), method)


def _resolve(verdict: Verdict, positions: list[Position]) -> Conflict:
    # Stable sort: equal weights keep first-seen order, so ties are deterministic.
    ranked = sorted(positions, key=lambda p: (-p.weight, -len(p.claims)))
    chosen = verdict.chosen
    # The reconciling agent's pick stands even against the weights; the margin says so.
    winner = chosen if chosen is not None and any(p is chosen for p in positions) else ranked[0]
    order = [winner, *(p for p in ranked if p is not winner)]
    weights = [p.weight for p in order]
    total = sum(weights)
    margin = max(0.0, (weights[0] - weights[1]) / total) if total > 0 else 0.0
    views = [p.representative for p in order]
    return Conflict(
        topic=verdict.subject,
        positions=views,
        winner=views[0],
        margin=margin,
        weights=weights,
        reason=verdict.reason,
    )


def _overall_confidence(
    results: Sequence[MicrotaskResult], missing: int, conflicts: Sequence[Conflict]
) -> float:
    total_weight = sum(r.confidence for r in results)
    if total_weight <= 0:
        return 0.0
    confidence = sum(r.confidence * r.confidence for r in results) / total_weight
    confidence *= len(results) / (len(results) + missing)
    for conflict in conflicts:
        confidence *= 1 - CONFLICT_PENALTY * (1 - conflict.margin)
    return min(1.0, max(0.0, confidence))
