"""Data that crosses an actor, process or HTTP boundary: pydantic models and enums.

The flow of one request reads through these types:
``Microtask`` (a node of a ``Plan``) → ``MicrotaskResult`` (what an agent
returns) → ``ProgressEvent`` (what callers follow live) → ``RunReport``
(the answer and the figures the CLI's ``--json`` prints).

Why one file of ~480 lines: these are declarations, not logic, and every layer shares
them; kept together, a contract change is one diff and a newcomer reads every shape in one
place. (Splitting off the structured-output schemas would be circular: they use the enums
here, and ``MicrotaskResult`` uses their ``Claim``.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any, Protocol, TypeVar, overload

from pydantic import BaseModel, Field, model_validator


class Role(StrEnum):
    """The four specialised agent pools."""

    RESEARCH = "research"
    ANALYSIS = "analysis"
    GENERATION = "generation"
    VALIDATION = "validation"


# The order work flows in: each role builds on the ones before it (plan layers, the sections
# of a stitched answer, the rows of a timeline).
PIPELINE: tuple[Role, ...] = (Role.RESEARCH, Role.ANALYSIS, Role.VALIDATION, Role.GENERATION)
# How a typical plan shares its microtasks among the roles, in percent (templates, the
# simulator's plans and the cost estimate), and the prefix of each role's microtask ids.
PLAN_SHARES: dict[Role, int] = {
    Role.RESEARCH: 40, Role.ANALYSIS: 35, Role.VALIDATION: 20, Role.GENERATION: 5
}  # fmt: skip
ID_PREFIX: dict[Role, str] = {
    Role.RESEARCH: "r", Role.ANALYSIS: "a", Role.VALIDATION: "v", Role.GENERATION: "g"
}  # fmt: skip

_Key = TypeVar("_Key", bound=Hashable)


@overload
def apportion(total: int, weights: Mapping[_Key, float]) -> dict[_Key, int]: ...
@overload
def apportion(total: int, weights: Sequence[float]) -> list[int]: ...
def apportion(
    total: int, weights: Mapping[_Key, float] | Sequence[float]
) -> dict[_Key, int] | list[int]:
    """``total`` items shared in proportion to ``weights`` by largest remainder.

    Each share gets the whole part of its quota ``total * weight / sum(weights)``; the
    items left go one each to the largest fractional parts, ties in the given order. The
    shares add up to ``total`` exactly and a zero weight gets nothing. A mapping gives a
    dict with its keys, a sequence a list.

    >>> apportion(5, [40, 35, 20])
    [2, 2, 1]
    >>> apportion(3, {"a": 1, "b": 1})
    {'a': 2, 'b': 1}
    """
    keyed: Mapping[Any, float] = (
        weights if isinstance(weights, Mapping) else dict(enumerate(weights))
    )
    whole = sum(keyed.values())
    if total < 0:
        raise ValueError(f"cannot share out {total} items")
    if whole <= 0 or any(weight < 0 for weight in keyed.values()):
        raise ValueError(f"weights must be non-negative with a positive sum, not {weights!r}")
    quotas = {key: total * weight / whole for key, weight in keyed.items()}
    shares = {key: math.floor(quota) for key, quota in quotas.items()}
    # sorted() is stable, reverse=True included: equal remainders keep the given order.
    by_remainder = sorted(quotas, key=lambda key: quotas[key] - shares[key], reverse=True)
    for key in by_remainder[: total - sum(shares.values())]:
        shares[key] += 1
    return shares if isinstance(weights, Mapping) else list(shares.values())


class Complexity(StrEnum):
    SIMPLE = "simple"
    MEDIUM = "medium"
    COMPLEX = "complex"
    MASSIVE = "massive"


class MicrotaskState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskState(StrEnum):
    PLANNING = "planning"
    RUNNING = "running"
    MERGING = "merging"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AgentState(StrEnum):
    """An agent as its pool lists it. A dead agent is not listed: its pool drops it at once
    and counts it in ``replaced``."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"


class CallKind(StrEnum):
    """What an agent is asked to do with a ``MicrotaskRequest``."""

    MICROTASK = "microtask"  # structured AgentOutput for one node of the plan
    RECONCILE = "reconcile"  # a validation agent groups claims by meaning (Reconciliation)
    SYNTHESIS = "synthesis"  # the final answer as plain text
    QUICK = "quick"  # a short direct answer while the plan runs (quick_answer)
    OVERVIEW = "overview"  # the short close of an answer written in sections
    SUMMARY = "summary"  # a conversation's older turns, folded (the orchestrator's own call)


class EventKind(StrEnum):
    PLANNED = "planned"
    STARTED = "started"
    FINISHED = "finished"
    RETRIED = "retried"
    BACKUP = "backup"
    FAILED = "failed"
    CANCELLED = "cancelled"
    MERGING = "merging"
    # A piece of the answer as it is written (streamed synthesis): ``detail`` is the text
    # to append; a new ``attempt`` number means the writer started over (discard the text).
    ANSWER = "answer"
    # A piece of the quick take (quick_answer), same rules as ANSWER; it comes first and
    # the full answer replaces it.
    QUICK = "quick"
    DONE = "done"


# --- what the model is asked to return (structured output) -------------------

RoleName = Annotated[str, Field(description="one of: research, analysis, generation, validation")]


class ComplexityAssessment(BaseModel):
    """The model's verdict on how much a request can be split."""

    level: Complexity
    parallelizable: bool = Field(description="false when one agent should simply answer")
    reason: str = Field(default="", max_length=500)


class MicrotaskDraft(BaseModel):
    """One microtask as the model proposes it; checked and repaired by ``actors.engine.dag``."""

    id: str = Field(description="short unique id, e.g. r1, a2, v1, g1")
    role: RoleName
    title: str
    instructions: str
    depends_on: list[str] = Field(default_factory=list, description="ids this one needs first")
    priority: int = Field(default=0, description="higher runs first when agents are scarce")
    critical: bool = Field(default=False, description="on the critical path to the answer")


class BranchDraft(BaseModel):
    """One branch of a plan outline (hierarchical planning, ``actors.engine.hierarchical``)."""

    id: str = Field(description="short unique id, e.g. b1")
    title: str
    focus: str = Field(description="one sentence: what this branch of the work covers")
    depends_on: list[str] = Field(
        default_factory=list, description="ids of earlier branches whose results it needs"
    )
    microtasks: int = Field(default=4, ge=1, description="microtasks this branch needs")


class PlanOutline(BaseModel):
    """The first level of a hierarchical plan: a few branches, planned in parallel next."""

    branches: list[BranchDraft]


class PlanDraft(BaseModel):
    """The decomposition as the model returns it."""

    microtasks: list[MicrotaskDraft]


class Claim(BaseModel):
    """One checkable statement from a microtask, compared across agents by ``topic``."""

    topic: str = Field(description="a few words naming what the claim is about")
    statement: str


class AgentOutput(BaseModel):
    """What an agent's model call returns for one microtask."""

    content: str
    claims: list[Claim] = Field(default_factory=list)
    confidence: float = Field(ge=0, le=1)


class ReconciledPosition(BaseModel):
    """One position inside a group of claims: what it says and which claims hold it."""

    statement: str = Field(description="the position in one sentence")
    claim_ids: list[str] = Field(description="ids of the claims that state this position")


class ClaimGroup(BaseModel):
    """Claims about the same thing, however they were worded or titled."""

    subject: str = Field(description="what the claims are about, in a few words")
    positions: list[ReconciledPosition] = Field(
        description="one position when the claims agree; two or more when they contradict"
    )
    chosen: int = Field(default=0, ge=0, description="index of the position that holds")
    reason: str = Field(default="", description="one line: why that position holds")


class Reconciliation(BaseModel):
    """A validation agent's verdict on a batch of claims (the semantic merge)."""

    groups: list[ClaimGroup]


# --- validated plan and results ----------------------------------------------


class Microtask(BaseModel):
    """A validated node of the plan."""

    id: str
    role: Role
    title: str
    instructions: str
    depends_on: list[str] = Field(default_factory=list)
    priority: int = 0
    critical: bool = False
    branch: str = Field(default="", description="root of its DAG branch, for affinity")


class Plan(BaseModel):
    complexity: Complexity
    microtasks: list[Microtask]
    source: str = Field(description="'model', 'repaired', 'template:<name>' or 'direct'")
    notes: list[str] = Field(default_factory=list, description="what repair changed and why")
    cut: list[str] = Field(
        default_factory=list, description="planning answers cut at max_tokens, and what was kept"
    )


class Usage(BaseModel):
    """Tokens and cost of one or more model calls."""

    requests: int = 0
    input_tokens: int = 0  # uncached input, as the API reports it
    output_tokens: int = 0
    cache_write_tokens: int = 0  # input written to the prompt cache (5 min: 1.25x input)
    cache_read_tokens: int = 0  # input read from it (0.1x input; Opus 5.5 0.05x)
    cost_usd: float = 0.0
    # What caching saved against the same input sent uncached (the writes' premium counted).
    cache_saved_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{name: getattr(self, name) + getattr(other, name) for name in _USAGE})


_USAGE = tuple(Usage.model_fields)


class _Counted(Protocol):
    input_tokens: int
    cache_write_tokens: int
    cache_read_tokens: int
    output_tokens: int


def used_tokens(usage: _Counted) -> int:
    """Every token a usage (or a report) counts: input, cached or not, and output."""
    return (
        usage.input_tokens + usage.cache_write_tokens + usage.cache_read_tokens
        + usage.output_tokens
    )  # fmt: skip


class MicrotaskRequest(BaseModel):
    """What the orchestrator sends to a pool: the microtask and its dependencies' results."""

    task_id: str
    microtask: Microtask
    context: list[MicrotaskResult] = Field(default_factory=list)
    request_text: str = ""
    # The task's earlier turns as a ``<conversation>`` block (actors.conversation), sent
    # before the request: every call of the task shares it as part of the cached prefix.
    conversation: str = ""
    attempt: int = 1
    exclude_agents: list[str] = Field(default_factory=list)
    affinity_key: str = ""
    kind: CallKind = CallKind.MICROTASK
    max_paid_calls: int | None = Field(
        default=None, description="answers this attempt may still pay for (None: no cap)"
    )
    # Whether other calls of the same role send the same prompt prefix up to the request
    # (other microtasks of the role in the plan) and up to the dependencies' context
    # (siblings with the same dependencies): the agent marks those prefixes for caching.
    shares_request: bool = False
    shares_context: bool = False
    timeout_s: float | None = Field(
        default=None, description="deadline for the agent's run, from the moment it starts"
    )
    trace_context: dict[str, str] = Field(
        default_factory=dict, description="W3C trace context of the caller's span (tracing)"
    )

    @property
    def attempt_key(self) -> str:
        """This attempt of this microtask, as pools and agents name it."""
        return f"{self.task_id}/{self.microtask.id}/{self.kind.value}/{self.attempt}"


class MicrotaskResult(BaseModel):
    task_id: str
    microtask_id: str
    role: Role
    agent_id: str
    node_id: str
    content: str
    claims: list[Claim] = Field(default_factory=list)
    confidence: float = Field(ge=0, le=1)
    usage: Usage = Field(default_factory=Usage)
    started_at: float
    finished_at: float
    attempt: int = 1
    simulated: bool = False

    @property
    def duration_s(self) -> float:
        return self.finished_at - self.started_at


class ProgressEvent(BaseModel):
    """One step of a task that callers can follow live."""

    seq: int = Field(
        description="the orchestrator's incarnation * 1,000,000 + the event's index; "
        "ask for the events after this one with ``after=next_after``"
    )
    kind: EventKind
    task_id: str
    at: float = Field(default_factory=time.time)
    microtask_id: str | None = None
    role: Role | None = None
    agent_id: str | None = None
    attempt: int | None = None
    done: int = 0
    total: int = 0
    duration_s: float | None = None
    detail: str = ""

    @property
    def next_after(self) -> int:
        """The cursor (``after``) that asks ``Orchestrator.events`` for what follows this."""
        return self.seq + 1


class TimelineEntry(BaseModel):
    id: str
    role: Role
    depends_on: list[str]
    agent: str | None
    node: str | None
    start_s: float | None
    end_s: float | None
    attempts: int
    status: MicrotaskState


class RunReport(BaseModel):
    """The outcome of one request: the contract printed by ``run --json``."""

    task_id: str
    conversation_id: str | None = Field(
        default=None, description="the conversation the task answers in (follow-ups pass it)"
    )
    state: TaskState
    complexity: Complexity
    plan_source: str
    microtasks: int
    agents: int
    max_parallel: int
    wall_s: float
    work_s: float
    parallelism: float = Field(description="work_s / wall_s: microtasks at once, on average")
    speedup: float = Field(description="deprecated alias of parallelism (not a speedup)")
    succeeded: int
    failed: int
    retries: int
    backups: int
    input_tokens: int
    output_tokens: int
    cache_write_tokens: int = Field(default=0, description="input written to the prompt cache")
    cache_read_tokens: int = Field(default=0, description="input read from the prompt cache")
    cache_saved_usd: float = Field(
        default=0.0, description="what caching saved against sending that input uncached"
    )
    paid_calls: int = Field(default=0, description="model answers paid for, failed ones included")
    estimated_cost_usd: float | None = Field(
        default=None, description="the estimate once the plan was known (actors.engine.estimate)"
    )
    token_multiple: float | None = Field(
        default=None, description="tokens used against one agent answering directly"
    )
    first_microtask_s: float | None = Field(
        default=None, description="seconds from the request to the first microtask's start"
    )
    first_answer_s: float | None = Field(
        default=None,
        description="seconds from the request to the first answer text a follower could "
        "read (the first streamed piece; the whole answer when nothing streamed)",
    )
    unsettled_calls: int = Field(
        default=0,
        description="calls whose answer no process saw (it died or timed out); maybe billed",
    )
    cost_usd: float
    simulated: bool
    result: str
    confidence: float
    conflicts: list[str] = Field(
        default_factory=list, description="real contradictions, each naming both positions"
    )
    merge: str = Field(
        default="none", description="how claims were reconciled: semantic, lexical or none"
    )
    missing: list[str] = Field(default_factory=list)
    cut: list[str] = Field(
        default_factory=list, description="answers cut at max_tokens, and what was kept of them"
    )
    timeline: list[TimelineEntry] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _parallelism_from_speedup(cls, data: Any) -> Any:
        """Reports stored before the rename carry only ``speedup``; it meant parallelism."""
        if isinstance(data, dict):
            if "parallelism" not in data and "speedup" in data:
                data = {**data, "parallelism": data["speedup"]}
            elif "speedup" not in data and "parallelism" in data:
                data = {**data, "speedup": data["parallelism"]}
        return data


class AgentInfo(BaseModel):
    agent_id: str
    node_id: str | None
    state: AgentState
    in_flight: int
    completed: int
    failed: int


class PoolSnapshot(BaseModel):
    """One pool's state, for progress displays, ``/pools`` and ``/status``."""

    role: Role
    min: int
    max: int
    size: int
    busy: int
    idle: int
    queued: int
    running: int
    utilization: float = Field(description="percent of agent capacity in use")
    completed: int
    failed: int
    replaced: int
    pressure: float
    agents: list[AgentInfo] = Field(default_factory=list)


MicrotaskRequest.model_rebuild()
