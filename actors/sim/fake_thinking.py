"""How a simulated model thinks: which thinking requests it accepts, and how long it thinks.

Per model (``actors.llm.catalog.info``): ``thinking="always"`` models (Opus 5.5, Fable)
think on every call and answer HTTP 400 to ``thinking: {"type": "disabled"}`` or
``{"type": "enabled", "budget_tokens": N}``; ``"default"`` models think unless disabled;
``"off"`` models think only with ``enabled`` (manual budget) and reject ``adaptive``.
``output_config.effort`` must be one of low / medium / high / xhigh / max and is refused
by models without effort; models with ``forced_tools=False`` refuse ``tool_choice``
``tool``/``any``. Every refusal is a ``ValueError`` whose text becomes the 400 message.

Thinking tokens = base for the call's purpose x effort factor x seeded jitter (0.7-1.3),
capped by a manual ``budget_tokens``; the caller caps them again at ``max_tokens``.

>>> round(BASE_TOKENS[CallPurpose.PLAN] * EFFORT_FACTOR["high"])
2500
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from actors.llm.catalog import info
from actors.sim.fake_request import CallPurpose

EFFORT_FACTOR = {"low": 0.3, "medium": 0.6, "high": 1.0, "xhigh": 1.6, "max": 2.5}
# Planning and synthesis think most, the verdict on complexity least.
BASE_TOKENS = {
    CallPurpose.PLAN: 2500,
    CallPurpose.OUTLINE: 1500,
    CallPurpose.SYNTHESIS: 2000,
    CallPurpose.RECONCILE: 1200,
    CallPurpose.MICROTASK: 500,
    CallPurpose.ASSESSMENT: 200,
    CallPurpose.TEXT: 300,
    CallPurpose.QUICK: 300,
    CallPurpose.SUMMARY: 300,
    CallPurpose.OVERVIEW: 300,
    CallPurpose.OTHER: 300,
}
GREETING_TOKENS = 30  # "hello" needs next to no thought
_THINKING_TYPES = ("adaptive", "enabled", "disabled", "between_tools")
_MIN_BUDGET = 1024


@dataclass(frozen=True)
class ThinkingOptions:
    """What a request asks of the model's thinking, once checked against the model."""

    thinks: bool
    effort: str | None  # the effort in force (asked or the model's default); None: no effort
    budget: int | None = None  # budget_tokens of manual extended thinking


def model_options(body: dict[str, Any]) -> ThinkingOptions:
    """The checked thinking options of ``body``; ``ValueError`` (an HTTP 400) if refused."""
    model = info(body["model"])
    name = body["model"]
    choice = body.get("tool_choice") or {}
    if choice.get("type") in ("tool", "any") and not model.forced_tools:
        raise ValueError(
            f"tool_choice: forced tool use (type {choice['type']!r}) is not supported by "
            f"{name}. Use output_config.format with a json_schema for structured output."
        )
    effort = (body.get("output_config") or {}).get("effort")
    if effort is not None:
        if effort not in EFFORT_FACTOR:
            raise ValueError(
                "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"
            )
        if not model.effort:
            raise ValueError(f"output_config.effort: effort is not supported by {name}")
    in_force = (effort or model.default_effort) if model.effort else None
    thinking = body.get("thinking") or {}
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind is None:
        return ThinkingOptions(thinks=model.thinking != "off", effort=in_force)
    if kind not in _THINKING_TYPES:
        raise ValueError(
            "thinking.type: Input should be 'adaptive', 'enabled', 'disabled' or 'between_tools'"
        )
    if model.thinking == "always" and kind in ("disabled", "enabled"):
        raise ValueError(
            f'thinking.type "{kind}" is not supported by {name}: its thinking is always on. '
            'Use thinking.type "adaptive" with output_config.effort to control it.'
        )
    if model.thinking == "off" and kind in ("adaptive", "between_tools"):
        raise ValueError(
            f'thinking.type "{kind}" is not supported by {name}. '
            'Use thinking.type "enabled" with budget_tokens.'
        )
    if kind == "disabled":
        return ThinkingOptions(thinks=False, effort=in_force)
    if kind == "enabled":
        return ThinkingOptions(thinks=True, effort=in_force, budget=_budget(thinking, body))
    return ThinkingOptions(thinks=True, effort=in_force)


def _budget(thinking: dict[str, Any], body: dict[str, Any]) -> int:
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or budget < _MIN_BUDGET:
        raise ValueError(
            f"thinking.enabled.budget_tokens: Input should be greater than or equal to "
            f"{_MIN_BUDGET}"
        )
    if budget >= body["max_tokens"]:
        raise ValueError("max_tokens must be greater than thinking.budget_tokens")
    return budget


def thinking_tokens(
    options: ThinkingOptions,
    model: str,
    purpose: CallPurpose,
    rng: random.Random,
    *,
    greeting: bool = False,
) -> int:
    """Tokens the model thinks before answering (0 when it does not think)."""
    if not options.thinks:
        return 0
    effort = options.effort or info(model).default_effort
    base = GREETING_TOKENS if greeting else BASE_TOKENS[purpose]
    tokens = max(1, round(base * EFFORT_FACTOR[effort] * rng.uniform(0.7, 1.3)))
    return min(tokens, options.budget) if options.budget else tokens
