"""Reading the provider's rate-limit headers: retry waits, reset times, what is news.

``retry_after_s`` and the reset times say how long to hold off; ``headers_teach`` says
whether a response must reach the limiter at once; ``limiter_headers`` keeps only the
headers the limiter reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

LIMIT_KINDS = ("requests", "tokens", "input-tokens", "output-tokens")


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds the provider asks us to wait: ``retry-after-ms``, then ``retry-after``
    (seconds or an HTTP date); None when absent or unreadable."""
    lowered = {key.lower(): value for key, value in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def seconds_until(reset: str) -> float | None:
    """``anthropic-ratelimit-*-reset`` is an RFC 3339 time; tolerate plain seconds too."""
    try:
        return max(0.0, float(reset))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(reset.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def headers_teach(headers: Mapping[str, str] | None, learned: Mapping[str, int]) -> bool:
    """Whether a response's headers tell the limiter something it must hear at once: a
    retry wait, a limit other than ``learned``, or a budget a quarter full or less.

    Keys are lower case. Headers that only repeat what it knows can wait for the report.
    """
    if not headers:
        return False
    if any(key.startswith("retry-after") for key in headers):
        return True
    for kind in LIMIT_KINDS:
        limit = headers.get(f"anthropic-ratelimit-{kind}-limit", "").strip()
        remaining = headers.get(f"anthropic-ratelimit-{kind}-remaining", "").strip()
        if limit and (not limit.isdigit() or learned.get(kind) != int(limit)):
            return True
        if remaining and (not remaining.isdigit() or int(remaining) * 4 <= int(limit or "0")):
            return True
    return False


def limiter_headers(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """Only the headers the limiter reads, as a plain dict (cheap to pickle)."""
    if not headers:
        return None
    wanted: dict[str, Any] = {
        key.lower(): value
        for key, value in headers.items()
        if key.lower().startswith(("anthropic-ratelimit-", "retry-after"))
    }
    return wanted or None
