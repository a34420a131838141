"""The cost of a call, from the one price table in ``actors.llm.catalog``.

>>> cost_usd("claude-haiku-4-5", 1_000_000, 0)
1.0
"""

from __future__ import annotations

from actors.llm.catalog import MODELS, info

# USD per million tokens: (input, output), a view of the catalog for readers and tests.
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    name: (m.input_price, m.output_price) for name, m in MODELS.items()
}


def cost_usd(
    model: str,
    input_tokens: int,
    output_tokens: int,
    *,
    cache_write_tokens: int = 0,
    cache_read_tokens: int = 0,
    cache_write_1h: bool = False,
) -> float:
    """Cost of one call in USD; thinking tokens are part of ``output_tokens``.

    ``input_tokens`` counts only the uncached input (as the API reports it); cache
    writes and reads are priced separately. Dated ids (``claude-haiku-4-5-20251001``)
    are priced as their base id; an unknown model as the most expensive entry of the
    table, so cost reports err high rather than low (a warning is logged once per model).
    """
    m = info(model)
    write_price = m.cache_write_1h_price if cache_write_1h else m.cache_write_5m_price
    total = (
        input_tokens * m.input_price
        + output_tokens * m.output_price
        + cache_write_tokens * write_price
        + cache_read_tokens * m.cache_read_price
    )
    return total / 1_000_000


def cache_saving_usd(model: str, cache_write_tokens: int, cache_read_tokens: int) -> float:
    """What the cache saved one call against sending the same input uncached: reads at
    their discount, less the premium its writes cost (negative for a write never read).

    >>> round(cache_saving_usd("claude-opus-5-5", 0, 1_000_000), 2)  # $4 input, $0.20 read
    3.8
    """
    m = info(model)
    saved = cache_read_tokens * (m.input_price - m.cache_read_price)
    premium = cache_write_tokens * (m.cache_write_5m_price - m.input_price)
    return (saved - premium) / 1_000_000
