"""Model prices: one table, USD per million tokens, and the cost of one call.

>>> cost_usd("claude-haiku-4-5", 1_000_000, 0)
1.0
"""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)

# USD per million tokens: (input, output). The only place prices live.
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-opus-5-5": (4.00, 20.00),
    "claude-sonnet-5-5": (2.00, 10.00),
    "claude-haiku-5-5": (0.10, 0.50),
    "claude-opus-5": (5.00, 25.00),
    "claude-sonnet-5": (2.00, 10.00),
    "claude-opus-4-5": (5.00, 25.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
}

# A dated snapshot id (claude-haiku-4-5-20251001) costs what its base id costs.
_DATE_SUFFIX = re.compile(r"-\d{8}$")

# Unknown models already warned about, so a hot loop logs each one once.
_warned: set[str] = set()


def _most_expensive() -> tuple[float, float]:
    return max(PRICES_PER_MTOK.values(), key=lambda price: price[0] + price[1])


def price_per_mtok(model: str) -> tuple[float, float]:
    """(input, output) USD per million tokens for ``model``; see ``cost_usd`` for unknown ids."""
    base = _DATE_SUFFIX.sub("", model)
    price = PRICES_PER_MTOK.get(base)
    if price is not None:
        return price
    if model not in _warned:
        _warned.add(model)
        logger.warning("no price for model %r: costing it as the most expensive known model", model)
    return _most_expensive()


def cost_usd(model: str, input_tokens: int, output_tokens: int) -> float:
    """Cost of one call in USD.

    Dated ids (``claude-haiku-4-5-20251001``) are priced as their base id. An
    unknown model is priced as the most expensive entry of the table, so cost
    reports err high rather than low, and a warning is logged once per model.
    """
    input_price, output_price = price_per_mtok(model)
    return (input_tokens * input_price + output_tokens * output_price) / 1_000_000
