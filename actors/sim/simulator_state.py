"""The simulator's state: knobs, the latency/fault stream, its own limits, stats, request log.

One ``SimulatorState`` sits behind one app (``actors.sim.simulator``). Every method runs
on the app's event loop; nothing here awaits, so each call is atomic for the handlers.

A request's delay (``delay``) once its answer is known, with ``spread`` its draw:

- ``realistic``: ``(first_token_s + output_tokens / tokens_per_s) * exp(0.25 * spread)``
  with the model's speed from ``actors.llm.catalog`` (thinking tokens are output tokens);
- ``zero``: 0; ``fixed``: ``median_s``; ``lognormal``: ``median_s * exp(sigma * spread)``;

plus ``per_output_token_s`` per output token in every mode, all times ``time_scale``.
A streamed answer takes the same time in all (``pacing``): the model's share of it for the
first token (``first_token_s`` against ``output_tokens / tokens_per_s``), the rest spread
evenly over the output tokens, thinking included.

Each request log entry holds ``seq``, ``at``, ``status``, ``latency_s`` (measured) and
``LOG_FIELDS`` (None until known): ``prompt_sha``, ``model``, ``kind`` (text / json_schema
/ tool), ``purpose`` (plan / synthesis / reconcile / microtask / assessment / text /
other), ``microtask``, ``documents`` (names of the prompt's ``<document name="...">``
blocks), ``max_tokens``, ``effort`` (in force; None where the model takes
none), ``thinking_tokens``, ``output_tokens`` (thinking included), ``stop_reason`` and
``delay_s`` (the wait chosen), ``call_id`` (the client's ``x-parallel-agents-call``
header, to match the caller's call ledger), ``stream`` (True for ``"stream": true``) and
``first_token_s`` (from arrival to the first text or tool-input delta — thinking does not
count; a non-streamed answer's first token comes with the whole answer), ``cache_read``
and ``cache_write`` (input tokens read from and written to the prompt cache,
``actors.sim.fake_cache``), ``cache_keys`` (short hashes of the prefixes written). A stream
is logged 200 only once sent to its end, 529 when it ended in an ``overloaded_error`` event,
500 after a hang. ``stats()`` counts ``status_counts``, ``kinds``, ``purposes`` and
``stop_reasons``.

Mid-stream errors (``rate_stream_error``) are drawn from a stream of their own, for streamed
requests only, so streaming changes none of the other draws.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from actors.config import SimulatorSettings
from actors.llm.catalog import info
from actors.sim.fake_cache import PromptCache

logger = logging.getLogger(__name__)

LOG_SIZE = 10_000
# What every /requests entry holds besides seq, at, status and latency_s (None until known).
LOG_FIELDS = (
    "prompt_sha",
    "model",
    "kind",
    "purpose",
    "microtask",
    "documents",
    "conversation",
    "max_tokens",
    "effort",
    "thinking_tokens",
    "output_tokens",
    "stop_reason",
    "delay_s",
    "call_id",
    "stream",
    "first_token_s",
    "cache_read",
    "cache_write",
    "cache_keys",
)
FAULTS = ("hang", "429", "529", "500", "malformed", "refusal")  # checked in this order
_REALISTIC_SIGMA = 0.25  # spread of a real model's speed from one call to the next


@dataclass(frozen=True)
class Draw:
    """One admitted request's draws: its fault (if any) and its latency spread."""

    fault: str | None
    spread: float  # a standard normal value
    stream_error: bool = False  # a streamed answer ends in an overloaded_error event


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
        self._stream_draws = random.Random(f"stream-{config.seed}")  # mid-stream errors
        self._seq = 0  # number of /v1/messages requests so far
        self._in_flight = 0  # admitted and not yet answered
        self._admitted: deque[float] = deque()  # monotonic admission times, last 60 s
        self._log: deque[dict[str, Any]] = deque(maxlen=LOG_SIZE)
        self.cache = PromptCache()
        self.reset_stats()

    # --- operator API ---

    def reset_stats(self) -> None:
        self._stats: dict[str, Any] = {
            "requests": 0,
            "count_tokens_requests": 0,
            "peak_concurrency": self._in_flight,
            "status_counts": Counter(),
            "kinds": Counter(),
            "purposes": Counter(),
            "stop_reasons": Counter(),
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
            "purposes": dict(self._stats["purposes"]),
            "stop_reasons": dict(self._stats["stop_reasons"]),
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
            self._stream_draws = random.Random(f"stream-{new.seed}")
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

    def draw(self, streamed: bool = False) -> Draw:
        """The fault (if any) and the latency spread of the next admitted request."""
        cfg, rng = self.config, self._draws
        # Always draw the same count so one knob's value does not shift the other draws.
        rolls = [rng.random() for _ in FAULTS]
        spread = rng.gauss(0.0, 1.0)
        rates = (
            cfg.rate_hang,
            cfg.rate_429,
            cfg.rate_529,
            cfg.rate_500,
            cfg.rate_malformed,
            cfg.rate_refusal,
        )
        fault = next(
            (name for name, roll, rate in zip(FAULTS, rolls, rates, strict=True) if roll < rate),
            None,
        )
        broken = streamed and self._stream_draws.random() < cfg.rate_stream_error
        return Draw(fault, spread, broken)

    def fault_error(self, fault: str | None) -> ApiError | None:
        """The error response a drawn fault ends in (a hang, after its sleep, is a 500)."""
        if fault == "hang":
            return ApiError(500, "api_error", "Internal server error (simulated hang)")
        if fault == "429":
            return ApiError(
                429,
                "rate_limit_error",
                "Simulated rate limit: too many requests, please retry later.",
                retry_headers(self.config.retry_after_s),
            )
        if fault == "529":
            return ApiError(529, "overloaded_error", "Overloaded")
        if fault == "500":
            return ApiError(500, "api_error", "Internal server error")
        return None  # no fault, or one that shapes the answer (malformed, refusal)

    def delay(self, draw: Draw, model: str, output_tokens: int) -> float:
        """Seconds to wait before answering (see the module docstring)."""
        cfg = self.config
        if cfg.latency == "realistic":
            speed = info(model)
            base = speed.first_token_s + output_tokens / speed.tokens_per_s
            base *= math.exp(_REALISTIC_SIGMA * draw.spread)
        elif cfg.latency == "fixed":
            base = cfg.median_s
        elif cfg.latency == "lognormal":
            base = cfg.median_s * math.exp(cfg.sigma * draw.spread)
        else:
            base = 0.0
        return (base + cfg.per_output_token_s * output_tokens) * cfg.time_scale

    @staticmethod
    def pacing(total_s: float, model: str, output_tokens: int) -> tuple[float, float]:
        """(seconds to the first token, seconds per output token) of a stream taking ``total_s``."""
        speed = info(model)
        writing_s = output_tokens / speed.tokens_per_s
        first = total_s * speed.first_token_s / (speed.first_token_s + writing_s)
        return first, (total_s - first) / output_tokens if output_tokens else 0.0

    def record(self, entry: dict[str, Any], usage: tuple[int, int] | None) -> None:
        self._stats["status_counts"][str(entry["status"])] += 1
        if entry.get("kind"):
            self._stats["kinds"][entry["kind"]] += 1
        if entry.get("purpose"):
            self._stats["purposes"][entry["purpose"]] += 1
        if entry.get("stop_reason"):
            self._stats["stop_reasons"][entry["stop_reason"]] += 1
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
