"""The LLM layer: one client (official SDK), one cluster-wide rate limiter, one price table.

Every name loads its module on first use, so a process takes only what it touches: the
limiter or the prices without the SDK (~1 s and ~50 MB to import). The simulator that
stands in for the provider is ``actors.sim``, a layer above.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors.llm import ledger
    from actors.llm.answers import Completion, Structured
    from actors.llm.client import MAX_PROMPT_CHARS, LLMClient
    from actors.llm.limiter import (
        Lease,
        Limiter,
        LimiterSnapshot,
        Outcome,
        RateLimiter,
        Release,
        retry_after_s,
    )
    from actors.llm.limiter_actor import RemoteLimiter
    from actors.llm.pricing import PRICES_PER_MTOK, cost_usd
    from actors.llm.shared_limiter import RateLimiterActor

_HOME = {
    "MAX_PROMPT_CHARS": "client",
    "Completion": "answers",
    "LLMClient": "client",
    "Structured": "answers",
    "Lease": "limiter",
    "Limiter": "limiter",
    "LimiterSnapshot": "limiter",
    "Outcome": "limiter",
    "RateLimiter": "limiter",
    "Release": "limiter",
    "retry_after_s": "limiter",
    "RateLimiterActor": "shared_limiter",
    "RemoteLimiter": "limiter_actor",
    "PRICES_PER_MTOK": "pricing",
    "cost_usd": "pricing",
}

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
    "Release",
    "RemoteLimiter",
    "Structured",
    "cost_usd",
    "ledger",
    "retry_after_s",
]


def __getattr__(name: str) -> Any:
    if name == "ledger":
        return import_module("actors.llm.ledger")
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"actors.llm.{home}"), name)
    globals()[name] = value  # found once; later lookups skip this function
    return value
