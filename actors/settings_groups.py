"""The parts ``Settings`` is made of: purposes of a model call, effort and strategy names,
pool and level bounds with their defaults, and the limiter's and simulator's groups.

They are re-exported by ``actors.config``, where every caller imports them from; the
default model per purpose and the output budgets and efforts per purpose are here.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field, model_validator

from actors.models import Complexity, Role


class Purpose(StrEnum):
    """What a model call is for; each purpose has its own model, output budget and effort."""

    RESEARCH = "research"
    ANALYSIS = "analysis"
    GENERATION = "generation"
    VALIDATION = "validation"
    ASSESSMENT = "assessment"  # the complexity verdict before planning
    PLANNING = "planning"
    RECONCILE = "reconcile"  # grouping claims by meaning, before the synthesis
    SYNTHESIS = "synthesis"
    QUICK = "quick"  # a short direct answer shown while the plan runs (quick_answer)
    OVERVIEW = "overview"  # the short close of an answer written in sections
    SUMMARY = "summary"  # older turns of a conversation, folded when it outgrows its bound


class Effort(StrEnum):
    """``output_config.effort``: how hard an adaptive-thinking model thinks before answering."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    XHIGH = "xhigh"
    MAX = "max"


class Strategy(StrEnum):
    """Load-balancing strategies for picking an agent inside a pool."""

    ROUND_ROBIN = "round_robin"
    WEIGHTED = "weighted"
    PRIORITY = "priority"
    AFFINITY = "affinity"
    LEAST_LOADED = "least_loaded"


class PoolSize(BaseModel):
    min: int = Field(ge=0)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> PoolSize:
        if self.min > self.max:
            raise ValueError(f"pool min ({self.min}) is above max ({self.max})")
        return self


class Level(BaseModel):
    """Bounds for one complexity level."""

    max_microtasks: int = Field(ge=1)
    max_agents: int = Field(ge=1)
    time_limit_s: float = Field(gt=0)


def default_pools() -> dict[Role, PoolSize]:
    return {
        Role.RESEARCH: PoolSize(min=8, max=12),
        Role.ANALYSIS: PoolSize(min=10, max=15),
        Role.GENERATION: PoolSize(min=8, max=10),
        Role.VALIDATION: PoolSize(min=4, max=6),
    }


def default_levels() -> dict[Complexity, Level]:
    return {
        Complexity.SIMPLE: Level(max_microtasks=5, max_agents=2, time_limit_s=30),
        Complexity.MEDIUM: Level(max_microtasks=20, max_agents=10, time_limit_s=120),
        Complexity.COMPLEX: Level(max_microtasks=50, max_agents=25, time_limit_s=300),
        Complexity.MASSIVE: Level(max_microtasks=100, max_agents=50, time_limit_s=600),
    }


def default_models() -> dict[Purpose, str]:
    # Ids from the installed SDK's anthropic/types/model.py. Planning and
    # synthesis get the strongest model; bulk research/validation the cheapest.
    return {
        Purpose.PLANNING: "claude-opus-5-5",
        Purpose.SYNTHESIS: "claude-opus-5-5",
        Purpose.ANALYSIS: "claude-sonnet-5-5",
        Purpose.GENERATION: "claude-sonnet-5-5",
        Purpose.RECONCILE: "claude-sonnet-5-5",
        Purpose.RESEARCH: "claude-haiku-5-5",
        Purpose.VALIDATION: "claude-haiku-5-5",
        # A four-way label: the fastest model answers it in well under a second.
        Purpose.ASSESSMENT: "claude-haiku-5-5",
        # A short direct answer while the plan runs: a good model thinking little.
        Purpose.QUICK: "claude-sonnet-5-5",
        # A sectioned answer's closing overview: short, on the critical path, so fast.
        Purpose.OVERVIEW: "claude-sonnet-5-5",
        # Older turns of a conversation, summarised off the answer's path: the cheapest.
        Purpose.SUMMARY: "claude-haiku-5-5",
    }


def default_output_tokens() -> dict[Purpose, int]:
    # ``max_tokens`` per call: the cap on thinking and answer together (the 5.x models think
    # before they answer, and those tokens count). Planning adds plan_tokens_per_microtask
    # for each microtask the level allows on top of this headroom (see max_tokens_for).
    return {
        Purpose.RESEARCH: 4096,
        Purpose.ANALYSIS: 6144,
        Purpose.GENERATION: 8192,
        Purpose.VALIDATION: 4096,
        Purpose.ASSESSMENT: 2048,
        Purpose.PLANNING: 8192,
        Purpose.RECONCILE: 8192,
        Purpose.SYNTHESIS: 32_000,
        Purpose.QUICK: 2048,
        Purpose.OVERVIEW: 2048,
        Purpose.SUMMARY: 2048,
    }


def default_effort() -> dict[Purpose, Effort]:
    # Bulk fact-gathering and checking think little; the two long serial calls think most.
    return {
        Purpose.RESEARCH: Effort.LOW,
        Purpose.VALIDATION: Effort.LOW,
        Purpose.ASSESSMENT: Effort.LOW,
        Purpose.ANALYSIS: Effort.MEDIUM,
        Purpose.GENERATION: Effort.MEDIUM,
        Purpose.RECONCILE: Effort.MEDIUM,
        Purpose.PLANNING: Effort.HIGH,
        Purpose.SYNTHESIS: Effort.HIGH,
        Purpose.QUICK: Effort.LOW,
        Purpose.OVERVIEW: Effort.LOW,
        Purpose.SUMMARY: Effort.LOW,
    }


class LimiterSettings(BaseModel):
    """The cluster-wide rate limiter (requests, tokens, concurrency, backoff)."""

    requests_per_minute: int = Field(default=4000, ge=1)
    input_tokens_per_minute: int = Field(default=2_000_000, ge=1)
    output_tokens_per_minute: int = Field(default=400_000, ge=1)
    max_concurrency: int = Field(default=64, ge=1)
    min_concurrency: int = Field(default=1, ge=1)
    decrease_factor: float = Field(default=0.5, gt=0, lt=1)
    max_retry_wait_s: float = Field(default=10.0, gt=0)
    jitter_s: float = Field(default=0.5, ge=0)
    max_attempts: int = Field(default=6, ge=1)
    base_backoff_s: float = Field(default=0.5, gt=0)
    allowance_s: float = Field(
        default=2.0,
        ge=0,
        description="How long a caller may spend an allowance (a batch of slots, requests and "
        "tokens lent far from every limit) without asking the limiter per call; 0: always ask",
    )
    allowance_slots: int = Field(
        default=8, ge=1, description="The most concurrency slots one allowance lends"
    )


class SimulatorSettings(BaseModel):
    """The embedded Anthropic-compatible simulator used when no API key is set.

    ``latency="realistic"`` (the default) waits as a real model would: the model's time to
    first token plus every output token (thinking included) at its tokens per second
    (``actors.llm.catalog``), spread lognormally (sigma 0.25). ``zero``/``fixed``
    (``median_s``)/``lognormal`` (``median_s``, ``sigma``) are for benchmarks and tests
    that need known durations. ``per_output_token_s`` adds per output token in every mode;
    ``time_scale`` multiplies every such delay (not ``hang_s``, and not a
    ``[sim-latency S]`` marker, which are literal seconds). Content is realistic in every
    mode: thinking, answer sizes, cuts at ``max_tokens``, refusals of forced tools where
    the model refuses them; ``rate_refusal`` makes that share of answers refusals.
    """

    # Who answers model calls: "auto" — this simulator without ANTHROPIC_API_KEY, the API
    # with one; "embedded" — this simulator, started in the cluster, key or not; "external"
    # — an Anthropic-compatible simulator already serving at ANTHROPIC_BASE_URL (the
    # benchmark's own); "off" — the API, which needs the key. See ``Settings.simulation``.
    mode: str = Field(default="auto", pattern="^(auto|embedded|external|off)$")
    seed: int = 0
    latency: str = Field(default="realistic", pattern="^(zero|fixed|lognormal|realistic)$")
    time_scale: float = Field(default=0.1, ge=0)
    median_s: float = Field(default=1.0, ge=0)
    sigma: float = Field(default=0.5, ge=0)
    per_output_token_s: float = Field(default=0.0, ge=0)
    rate_429: float = Field(default=0.0, ge=0, le=1)
    retry_after_s: float = Field(default=1.0, ge=0)
    rate_529: float = Field(default=0.0, ge=0, le=1)
    rate_500: float = Field(default=0.0, ge=0, le=1)
    rate_hang: float = Field(default=0.0, ge=0, le=1)
    hang_s: float = Field(default=600.0, ge=0)
    rate_malformed: float = Field(default=0.0, ge=0, le=1)
    rate_refusal: float = Field(default=0.0, ge=0, le=1)
    rate_stream_error: float = Field(default=0.0, ge=0, le=1)  # overloaded_error mid-stream
    rpm_limit: int | None = Field(default=None, ge=1)
    concurrency_limit: int | None = Field(default=None, ge=1)
