"""Settings for a system small enough for this 2-core machine, shared by integration modules."""

from __future__ import annotations

from typing import Any

from actors.config import Settings
from actors.models import Role


def tiny_settings(min_agents: int = 1, max_agents: int = 2, **changes: Any) -> Settings:
    """``min_agents``–``max_agents`` agents per pool, a simulator answering in a fixed 0.05 s,
    no backup copies (they would make attempt counts depend on timing); ``changes`` on top,
    each replacing its whole field (e.g. ``simulator={...}``, ``pools={...}``)."""
    fields: dict[str, Any] = {
        "pools": {role.value: {"min": min_agents, "max": max_agents} for role in Role},
        "simulator": {"latency": "fixed", "median_s": 0.05},
        "backups": False,
    }
    return Settings().with_overrides(**(fields | changes))
