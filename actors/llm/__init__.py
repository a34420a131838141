"""The LLM layer: one client (official SDK), one cluster-wide rate limiter, one price table."""

from actors.llm import ledger
from actors.llm.client import MAX_PROMPT_CHARS, Completion, LLMClient, Structured
from actors.llm.limiter import (
    Lease,
    Limiter,
    LimiterSnapshot,
    Outcome,
    RateLimiter,
    retry_after_s,
)
from actors.llm.limiter_actor import RateLimiterActor, RemoteLimiter
from actors.llm.pricing import PRICES_PER_MTOK, cost_usd
from actors.llm.simulator import SimulatorActor, SimulatorServer

__all__ = [
    "MAX_PROMPT_CHARS",
    "PRICES_PER_MTOK",
    "Completion",
    "LLMClient",
    "Lease",
    "Limiter",
    "LimiterSnapshot",
    "Outcome",
    "RateLimiter",
    "RateLimiterActor",
    "RemoteLimiter",
    "SimulatorActor",
    "SimulatorServer",
    "Structured",
    "cost_usd",
    "ledger",
    "retry_after_s",
]
