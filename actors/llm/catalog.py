"""What we know about each Claude model, in one table: prices, thinking, structured output, speed.

Everything that differs by model is looked up here: the client (which structured-output
form to ask for, whether ``output_config.effort`` applies), the price of a call
(``actors.llm.pricing``) and the simulator (thinking, forced-tool refusals, latency).

Prices (USD per million tokens) and cache minimums, checked against the official pages:

- https://platform.claude.com/docs/en/about-claude/pricing — the model pricing table
  (input, 5-minute and 1-hour cache writes, cache hits, output) and the prompt-caching
  multipliers: writes 1.25x / 2x input everywhere; reads 0.1x input except Fable 5.1
  (0.025x: $0.25 on $10), Opus 5.5 and Sonnet 5.5 (0.05x; Sonnet 5.5's was cut from
  $0.20 to $0.10 on 2026-10-07). Thinking tokens are billed as output.
- https://platform.claude.com/docs/en/models/opus-5-5/overview, ``.../fable-5-1/overview``,
  ``.../sonnet-5-5/overview``, ``.../haiku-5-5/overview``, ``.../opus-5/overview``,
  ``.../sonnet-5/overview`` — each model's own price list.
- https://platform.claude.com/docs/en/build-with-claude/prompt-caching — the minimum
  cacheable prompt (as of 2026-10): 512 tokens (Opus 5.5, Sonnet 5.5, Opus 5, Fable 5.1),
  1,024 (Sonnet 5, Sonnet 4.5), 4,096 (Opus 4.5, Haiku 4.5). No figure for Haiku 5.5 was
  found; it keeps Haiku 4.5's 4,096 until one is.

Haiku 5.5 is priced by prompt length: the table holds its rate for prompts up to 100,000
tokens (input + cache reads + cache writes); longer prompts pay 5x on every token of the
request, which ``cost_usd`` does not model yet.

>>> info("claude-opus-5-5").forced_tools
False
>>> info("claude-haiku-4-5-20251001").name
'claude-haiku-4-5'
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)

Thinking = Literal["always", "default", "off"]
EffortName = Literal["low", "medium", "high", "xhigh", "max"]


@dataclass(frozen=True)
class ModelInfo:
    """One model's facts. Prices are USD per million tokens."""

    name: str
    input_price: float
    output_price: float  # thinking tokens are billed as output
    cache_write_5m_price: float
    cache_write_1h_price: float
    cache_read_price: float
    # Adaptive thinking: "always" cannot be disabled (400 if asked), "default" is on unless
    # disabled, "off" means the model does not think unless asked.
    thinking: Thinking
    forced_tools: bool  # False: tool_choice "tool"/"any" returns HTTP 400
    effort: bool  # accepts output_config.effort
    default_effort: EffortName
    min_cache_tokens: int  # shorter prefixes are silently not cached
    # Typical speed, for the simulator's latency model: seconds to the first token and
    # output tokens per second afterwards (thinking included).
    first_token_s: float
    tokens_per_s: float


def _priced(
    name: str,
    input_price: float,
    output_price: float,
    *,
    thinking: Thinking,
    forced_tools: bool = True,
    effort: bool = True,
    default_effort: EffortName = "high",
    min_cache_tokens: int = 4096,
    first_token_s: float,
    tokens_per_s: float,
    cache_read_share: float = 0.1,
) -> ModelInfo:
    # Cache writes cost 1.25x (5-minute) or 2x (1-hour) the input price on every model; reads
    # 0.1x, except where the pricing page says less (cache_read_share).
    return ModelInfo(
        name=name,
        input_price=input_price,
        output_price=output_price,
        cache_write_5m_price=round(input_price * 1.25, 6),
        cache_write_1h_price=round(input_price * 2.0, 6),
        cache_read_price=round(input_price * cache_read_share, 6),
        thinking=thinking,
        forced_tools=forced_tools,
        effort=effort,
        default_effort=default_effort,
        min_cache_tokens=min_cache_tokens,
        first_token_s=first_token_s,
        tokens_per_s=tokens_per_s,
    )


MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        _priced(
            "claude-opus-5-5", 4.00, 20.00, thinking="always", forced_tools=False,
            default_effort="medium", cache_read_share=0.05, min_cache_tokens=512,
            first_token_s=1.5, tokens_per_s=55,
        ),
        _priced(
            "claude-fable-5-1", 10.00, 50.00, thinking="always", forced_tools=False,
            default_effort="high", cache_read_share=0.025, min_cache_tokens=512,
            first_token_s=1.5, tokens_per_s=55,
        ),
        _priced(
            "claude-sonnet-5-5", 2.00, 10.00, thinking="default", default_effort="high",
            cache_read_share=0.05, min_cache_tokens=512, first_token_s=1.0, tokens_per_s=75,
        ),
        _priced(
            "claude-haiku-5-5", 0.10, 0.50, thinking="default", default_effort="medium",
            first_token_s=0.5, tokens_per_s=150,
        ),
        _priced(
            "claude-opus-5", 5.00, 25.00, thinking="default", min_cache_tokens=512,
            first_token_s=1.5, tokens_per_s=50,
        ),
        _priced(
            "claude-sonnet-5", 2.00, 10.00, thinking="default", min_cache_tokens=1024,
            first_token_s=1.0, tokens_per_s=70,
        ),
        _priced(
            "claude-opus-4-5", 5.00, 25.00, thinking="off", first_token_s=1.5, tokens_per_s=45,
        ),
        _priced(
            "claude-sonnet-4-5", 3.00, 15.00, thinking="off", effort=False,
            min_cache_tokens=1024, first_token_s=1.0, tokens_per_s=65,
        ),
        _priced(
            "claude-haiku-4-5", 1.00, 5.00, thinking="off", effort=False, first_token_s=0.5,
            tokens_per_s=120,
        ),
    )
}  # fmt: skip

# A dated snapshot id (claude-haiku-4-5-20251001) is the model of its base id.
_DATE_SUFFIX = re.compile(r"-\d{8}$")
_warned: set[str] = set()  # unknown ids already warned about, so hot loops log once


def most_expensive() -> ModelInfo:
    """The dearest model in the table: what an unknown id is priced as (errs high, not low)."""
    return max(MODELS.values(), key=lambda m: m.input_price + m.output_price)


def info(model: str) -> ModelInfo:
    """The facts for ``model``; an unknown id gets the most expensive entry, with a warning."""
    found = MODELS.get(_DATE_SUFFIX.sub("", model))
    if found is not None:
        return found
    if model not in _warned:
        _warned.add(model)
        logger.warning("unknown model %r: treating it as the most expensive known model", model)
    return most_expensive()


def known(model: str) -> bool:
    """True when ``model`` (or its dated snapshot) is in the table."""
    return _DATE_SUFFIX.sub("", model) in MODELS
