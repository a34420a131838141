"""The simulator's prompt cache, accounted as the API does it.

A request marks cache breakpoints with ``cache_control`` on its blocks (system, then
messages, at most 4: a fifth is a 400). Each breakpoint names the prefix up to and
including its block; the prefix's tokens must reach the model's minimum
(``catalog.info(model).min_cache_tokens``) or the breakpoint is silently ignored. Then:

- the longest prefix with a usable entry is **read** (``cache_read_input_tokens``), and
  its entry lives on for its TTL from now;
- the rest up to the last qualifying breakpoint is **written**
  (``cache_creation_input_tokens``), as an entry per breakpoint;
- ``input_tokens`` is what remains.

An entry is usable only once the response that wrote it has begun (its first token), so
calls sent together all write and none reads. Entries last 5 minutes from their last use
(``"ttl": "1h"``: an hour), both scaled by the simulator's ``time_scale`` like every other
simulated duration. The key is the model, the tools, output format and thinking settings,
and the prefix's content, ``cache_control`` markers left out (they do not change the prompt).

>>> cache = PromptCache()
>>> body = {"model": "claude-opus-5-5", "messages": [{"role": "user", "content": [
...     {"type": "text", "text": "x" * 4000, "cache_control": {"type": "ephemeral"}},
...     {"type": "text", "text": "the question"}]}]}
>>> cache.account(body, total=1003, now=0.0, begins_in=1.0, time_scale=1.0)  # doctest: +ELLIPSIS
CacheUse(read=0, written=1000, uncached=3, keys=('...',))
>>> cache.account(body, total=1003, now=2.0, begins_in=1.0, time_scale=1.0)
CacheUse(read=1000, written=0, uncached=3, keys=())
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from actors.llm.catalog import info
from actors.sim.fake_request import estimate_tokens, flatten

MAX_BREAKPOINTS = 4
TTL_S = {"5m": 300.0, "1h": 3600.0}


@dataclass(frozen=True)
class CacheUse:
    """What one request read from and wrote to the cache, and its uncached input."""

    read: int
    written: int
    uncached: int
    keys: tuple[str, ...] = ()  # the prefixes written (short key hashes), for the request log


@dataclass
class _Entry:
    usable_at: float  # when the writing response began (simulator monotonic time)
    expires_at: float
    ttl_s: float


@dataclass(frozen=True)
class _Breakpoint:
    key: str
    tokens: int  # the prefix's tokens, its block included
    ttl_s: float


class PromptCache:
    """The cache entries of one simulator (lost when it restarts, like its request log)."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def account(
        self, body: dict[str, Any], total: int, now: float, begins_in: float, time_scale: float
    ) -> CacheUse:
        """Read and write ``body``'s breakpoints at ``now``; the answer begins in
        ``begins_in`` s. ``total``: the request's input tokens, cached or not.
        ``ValueError`` (an HTTP 400) for more than 4 breakpoints."""
        points = breakpoints(body)
        if not points:
            return CacheUse(0, 0, total)
        self._expire(now)
        read, start = 0, 0
        for index in range(len(points) - 1, -1, -1):
            entry = self._entries.get(points[index].key)
            if entry is not None and entry.usable_at <= now:
                entry.expires_at = now + entry.ttl_s
                read, start = points[index].tokens, index + 1
                break
        written, keys = 0, []
        for point in points[start:]:
            keys.append(point.key[:12])
            ttl = point.ttl_s * time_scale
            entry = self._entries.get(point.key)
            usable = now + begins_in
            if entry is None:
                self._entries[point.key] = _Entry(usable, usable + ttl, ttl)
            else:  # another call is writing it too: the first to begin makes it usable
                entry.usable_at = min(entry.usable_at, usable)
                entry.expires_at = max(entry.expires_at, usable + ttl)
            written = point.tokens - read
        return CacheUse(read, written, max(0, total - read - written), tuple(keys))

    def _expire(self, now: float) -> None:
        for key in [k for k, e in self._entries.items() if e.expires_at <= now]:
            del self._entries[key]


def breakpoints(body: dict[str, Any]) -> list[_Breakpoint]:
    """The request's breakpoints long enough for its model, in prompt order."""
    model = body["model"]
    minimum = info(model).min_cache_tokens
    blocks = [*_blocks(body.get("system"), "system")]
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            blocks.extend(_blocks(message.get("content"), str(message.get("role"))))
    marked = [i for i, (_, block) in enumerate(blocks) if _marker(block) is not None]
    if len(marked) > MAX_BREAKPOINTS:
        raise ValueError(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(marked)}."
        )
    points: list[_Breakpoint] = []
    for index in marked:
        prefix = blocks[: index + 1]
        text = "".join(flatten([block]) for _, block in prefix)
        tokens = estimate_tokens(text)
        if tokens < minimum:
            continue  # silently not cached, as the API does
        marker = _marker(blocks[index][1]) or {}
        plain = [(where, _unmarked(block)) for where, block in prefix]
        # Tools, the output format and thinking change what the model reads: another entry.
        shape = [body.get("tools"), (body.get("output_config") or {}).get("format"),
                 body.get("thinking")]  # fmt: skip
        blob = json.dumps([model, shape, plain], sort_keys=True)
        key = hashlib.sha256(blob.encode()).hexdigest()
        points.append(_Breakpoint(key, tokens, TTL_S.get(str(marker.get("ttl", "5m")), 300.0)))
    return points


def _blocks(content: Any, where: str) -> list[tuple[str, Any]]:
    if isinstance(content, str):
        return [(where, {"type": "text", "text": content})] if content else []
    if isinstance(content, list):
        return [(where, block) for block in content]
    return []


def _marker(block: Any) -> dict[str, Any] | None:
    marker = block.get("cache_control") if isinstance(block, dict) else None
    return marker if isinstance(marker, dict) else None


def _unmarked(block: Any) -> Any:
    if isinstance(block, dict):
        return {k: v for k, v in block.items() if k != "cache_control"}
    return block
