"""Prices: one table, dated ids, unknown models err high."""

from __future__ import annotations

import logging

import pytest

from actors.config import _default_models
from actors.llm.pricing import PRICES_PER_MTOK, cost_usd


def test_every_default_model_has_a_price() -> None:
    assert set(_default_models().values()) <= set(PRICES_PER_MTOK)


def test_cost_from_usage() -> None:
    assert cost_usd("claude-sonnet-4-5", 1_000_000, 1_000_000) == pytest.approx(18.0)
    assert cost_usd("claude-haiku-5-5", 2000, 1000) == pytest.approx(0.0007)
    assert cost_usd("claude-opus-5-5", 0, 0) == 0


def test_dated_id_costs_its_base() -> None:
    assert cost_usd("claude-haiku-4-5-20251001", 1000, 1000) == cost_usd(
        "claude-haiku-4-5", 1000, 1000
    )


def test_unknown_model_priced_as_most_expensive_and_warned_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="actors.llm.catalog"):
        first = cost_usd("claude-unknown-9", 1_000_000, 1_000_000)
        cost_usd("claude-unknown-9", 1, 1)
    assert first == pytest.approx(30.0)  # opus-5: 5 + 25
    assert len([r for r in caplog.records if "claude-unknown-9" in r.getMessage()]) == 1
