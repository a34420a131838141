"""Prices: one table that matches the official pages, cache writes and reads, dated ids,
unknown models err high."""

from __future__ import annotations

import logging

import pytest

from actors.llm.catalog import MODELS, most_expensive
from actors.llm.pricing import PRICES_PER_MTOK, cost_usd
from actors.settings_groups import default_models

M = 1_000_000

# The official rate cards (platform.claude.com/docs/en/about-claude/pricing and each model's
# overview page), USD per million tokens: input, output, 5-minute write, 1-hour write, read.
OFFICIAL = {
    "claude-fable-5-1": (10.00, 50.00, 12.50, 20.00, 0.25),
    "claude-opus-5-5": (4.00, 20.00, 5.00, 8.00, 0.20),
    "claude-sonnet-5-5": (2.00, 10.00, 2.50, 4.00, 0.10),
    "claude-haiku-5-5": (0.10, 0.50, 0.125, 0.20, 0.01),  # prompts up to 100k tokens
    "claude-opus-5": (5.00, 25.00, 6.25, 10.00, 0.50),
    "claude-sonnet-5": (2.00, 10.00, 2.50, 4.00, 0.20),
    "claude-opus-4-5": (5.00, 25.00, 6.25, 10.00, 0.50),
    "claude-sonnet-4-5": (3.00, 15.00, 3.75, 6.00, 0.30),
    "claude-haiku-4-5": (1.00, 5.00, 1.25, 2.00, 0.10),
}


def test_every_default_model_has_a_price() -> None:
    assert set(default_models().values()) <= set(PRICES_PER_MTOK)


def test_the_table_covers_exactly_the_checked_models() -> None:
    assert set(MODELS) == set(OFFICIAL)


@pytest.mark.parametrize("model", sorted(OFFICIAL))
def test_each_model_costs_what_its_rate_card_says(model: str) -> None:
    input_, output, write_5m, write_1h, read = OFFICIAL[model]
    assert cost_usd(model, M, 0) == pytest.approx(input_)
    assert cost_usd(model, 0, M) == pytest.approx(output)
    assert cost_usd(model, 0, 0, cache_write_tokens=M) == pytest.approx(write_5m)
    assert cost_usd(model, 0, 0, cache_write_tokens=M, cache_write_1h=True) == pytest.approx(
        write_1h
    )
    assert cost_usd(model, 0, 0, cache_read_tokens=M) == pytest.approx(read)


def test_a_call_with_cache_writes_and_reads_adds_every_part() -> None:
    # Opus 5.5: 2,000 uncached input, 10,000 written (5 min), 50,000 read, 1,000 output.
    cost = cost_usd(
        "claude-opus-5-5", 2000, 1000, cache_write_tokens=10_000, cache_read_tokens=50_000
    )
    assert cost == pytest.approx((2000 * 4 + 1000 * 20 + 10_000 * 5 + 50_000 * 0.20) / M)


def test_opus_5_5_reads_the_cache_at_a_twentieth_of_input() -> None:
    read = cost_usd("claude-opus-5-5", 0, 0, cache_read_tokens=M)
    assert read == pytest.approx(0.05 * cost_usd("claude-opus-5-5", M, 0))
    # not the usual tenth, which other models still pay
    assert cost_usd("claude-opus-5", 0, 0, cache_read_tokens=M) == pytest.approx(
        0.1 * cost_usd("claude-opus-5", M, 0)
    )


def test_thinking_is_billed_as_output() -> None:
    # The API counts thinking inside output_tokens: 3,000 thinking + 500 answer tokens.
    thinking, answer = 3000, 500
    cost = cost_usd("claude-opus-5-5", 100, thinking + answer)
    assert cost == pytest.approx((100 * 4 + (thinking + answer) * 20) / M)
    assert cost > cost_usd("claude-opus-5-5", 100, answer)


def test_cost_from_usage() -> None:
    assert cost_usd("claude-sonnet-4-5", M, M) == pytest.approx(18.0)
    assert cost_usd("claude-haiku-5-5", 2000, 1000) == pytest.approx(0.0007)
    assert cost_usd("claude-opus-5-5", 0, 0) == 0


@pytest.mark.parametrize(
    ("dated", "base"),
    [
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-opus-5-5-20260922", "claude-opus-5-5"),
    ],
)
def test_dated_id_costs_its_base(dated: str, base: str) -> None:
    usage = dict(cache_write_tokens=700, cache_read_tokens=900)
    assert cost_usd(dated, 1000, 1000, **usage) == cost_usd(base, 1000, 1000, **usage)


def test_unknown_model_priced_as_most_expensive_and_warned_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert most_expensive().name == "claude-fable-5-1"
    with caplog.at_level(logging.WARNING, logger="actors.llm.catalog"):
        first = cost_usd("claude-unknown-9", M, M, cache_read_tokens=M)
        cost_usd("claude-unknown-9", 1, 1)
    assert first == pytest.approx(10 + 50 + 0.25)  # Fable 5.1, the dearest in the table
    assert first >= max(cost_usd(model, M, M, cache_read_tokens=M) for model in OFFICIAL)
    assert len([r for r in caplog.records if "claude-unknown-9" in r.getMessage()]) == 1
