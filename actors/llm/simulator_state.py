"""The simulator's state: knobs, the latency/fault stream, its own limits, stats, request log.

One ``SimulatorState`` sits behind one app (``actors.llm.simulator``). Every method runs
on the app's event loop; nothing here awaits, so each call is atomic for the handlers.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter, deque
from datetime import UTC, datetime
from typing import Any

from actors.config import SimulatorSettings

logger = logging.getLogger(__name__)

LOG_SIZE = 10_000


class ApiError(Exception):
    """An Anthropic-shaped error response, raised inside a handler."""

    def __init__(
        self, status: int, type_: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.headers = headers or {}


def retry_headers(seconds: float) -> dict[str, str]:
    # The real API sends whole seconds; the SDK prefers the precise retry-after-ms.
    return {"retry-after": str(math.ceil(seconds)), "retry-after-ms": str(round(seconds * 1000))}


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class SimulatorState:
    """The state behind one app: knobs, the fault stream, limits, stats and the request log."""

    def __init__(self, config: SimulatorSettings) -> None:
        self.config = config
        self._draws = random.Random(config.seed)  # latency and faults, in arrival order
        self._seq = 0  # number of /v1/messages requests so far
        self._in_flight = 0  # admitted and not yet answered
        self._admitted: deque[float] = deque()  # monotonic admission times, last 60 s
        self._log: deque[dict[str, Any]] = deque(maxlen=LOG_SIZE)
        self.reset_stats()

    # --- operator API ---

    def reset_stats(self) -> None:
        self._stats: dict[str, Any] = {
            "requests": 0,
            "count_tokens_requests": 0,
            "peak_concurrency": self._in_flight,
            "status_counts": Counter(),
            "kinds": Counter(),
            "input_tokens": 0,
            "output_tokens": 0,
            "started_at": time.time(),
        }
        self._log.clear()

    def stats(self) -> dict[str, Any]:
        return {
            **self._stats,
            "status_counts": dict(self._stats["status_counts"]),
            "kinds": dict(self._stats["kinds"]),
            "in_flight": self._in_flight,
            "config": self.config.model_dump(),
        }

    def reconfigure(self, **changes: Any) -> None:
        unknown = set(changes) - set(SimulatorSettings.model_fields)
        if unknown:
            raise ValueError(f"unknown simulator settings: {', '.join(sorted(unknown))}")
        new = SimulatorSettings.model_validate({**self.config.model_dump(), **changes})
        if new.seed != self.config.seed:
            self._draws = random.Random(new.seed)
        self.config = new
        logger.info("simulator reconfigured: %s", changes)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        return list(self._log)[-limit:] if limit > 0 else []

    # --- one request ---

    def limit_headers(self) -> dict[str, str]:
        """``anthropic-ratelimit-requests-*`` while a limit is configured."""
        cfg, now = self.config, time.time()
        if cfg.rpm_limit is not None:
            self._expire(time.monotonic())
            wait = self._admitted[0] + 60 - time.monotonic() if self._admitted else 0.0
            limit, remaining, reset = cfg.rpm_limit, cfg.rpm_limit - len(self._admitted), now + wait
        elif cfg.concurrency_limit is not None:
            limit, remaining, reset = (
                cfg.concurrency_limit,
                cfg.concurrency_limit - self._in_flight,
                now,
            )
        else:
            return {}
        return {
            "anthropic-ratelimit-requests-limit": str(limit),
            "anthropic-ratelimit-requests-remaining": str(max(0, remaining)),
            "anthropic-ratelimit-requests-reset": _rfc3339(reset),
        }

    def _expire(self, now: float) -> None:
        while self._admitted and self._admitted[0] <= now - 60:
            self._admitted.popleft()

    def admit(self) -> None:
        """Count the request in, or raise the 429 the configured limits call for."""
        cfg, now = self.config, time.monotonic()
        self._expire(now)
        if cfg.concurrency_limit is not None and self._in_flight >= cfg.concurrency_limit:
            raise ApiError(
                429,
                "rate_limit_error",
                f"This request would exceed the simulated concurrency limit of "
                f"{cfg.concurrency_limit} requests.",
                retry_headers(cfg.retry_after_s),
            )
        if cfg.rpm_limit is not None and len(self._admitted) >= cfg.rpm_limit:
            raise ApiError(
                429,
                "rate_limit_error",
                f"This request would exceed the simulated rate limit of {cfg.rpm_limit} "
                f"requests per minute.",
                retry_headers(self._admitted[0] + 60 - now),
            )
        self._admitted.append(now)
        self._in_flight += 1
        self._stats["peak_concurrency"] = max(self._stats["peak_concurrency"], self._in_flight)

    def release(self) -> None:
        self._in_flight -= 1

    def draw(self) -> tuple[str | None, float]:
        """The fault (if any) and the base latency of the next admitted request."""
        cfg, rng = self.config, self._draws
        # Always draw the same count so one knob's value does not shift the other draws.
        rolls = [rng.random() for _ in range(5)]
        gauss = rng.gauss(0.0, 1.0)
        fault = next(
            (
                name
                for name, roll, rate in zip(
                    ("hang", "429", "529", "500", "malformed"),
                    rolls,
                    (cfg.rate_hang, cfg.rate_429, cfg.rate_529, cfg.rate_500, cfg.rate_malformed),
                    strict=True,
                )
                if roll < rate
            ),
            None,
        )
        if cfg.latency == "zero":
            return fault, 0.0
        if cfg.latency == "fixed":
            return fault, cfg.median_s
        return fault, cfg.median_s * math.exp(cfg.sigma * gauss)

    def record(self, entry: dict[str, Any], usage: tuple[int, int] | None) -> None:
        self._stats["status_counts"][str(entry["status"])] += 1
        if entry.get("kind"):
            self._stats["kinds"][entry["kind"]] += 1
        if usage:
            self._stats["input_tokens"] += usage[0]
            self._stats["output_tokens"] += usage[1]
        self._log.append(entry)

    def count_tokens_call(self) -> None:
        self._stats["count_tokens_requests"] += 1

    def next_seq(self) -> int:
        self._seq += 1
        self._stats["requests"] += 1
        return self._seq
