"""Live counters: cost, cache and the token multiple as /status and /metrics show them."""

from __future__ import annotations

from factories import report

from actors.observe.stats import Stats


def test_cache_savings_and_the_token_multiple_add_up_over_finished_tasks():
    stats = Stats()
    assert stats.snapshot(active_tasks=0).token_multiple is None
    common = {"input_tokens": 1000, "output_tokens": 1000, "cache_write_tokens": 0}
    stats.task_finished(report(**common, cache_read_tokens=2000, cache_saved_usd=0.5,
                               token_multiple=4.0), 1.0)  # fmt: skip
    stats.task_finished(report(**common, cache_read_tokens=0, token_multiple=2.0), 2.0)
    snapshot = stats.snapshot(active_tasks=0, now=3.0)
    assert snapshot.cache_read_tokens_total == 2000 and snapshot.cache_saved_usd_total == 0.5
    # 6,000 tokens against 1,000 + 1,000 for two direct answers.
    assert snapshot.token_multiple == 3.0
