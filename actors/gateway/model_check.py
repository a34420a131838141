"""``/health``'s question to the model endpoint: would it serve each configured model?

``ModelCheck`` sends one free ``count_tokens`` call per distinct model (cached for a short
while) and turns the SDK's errors into one line a person can act on, key redacted.
"""

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import anthropic

from actors.config import Settings

# The model probe must answer well inside the 5 s that ``parallel-agents start`` waits.
_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Verdict:
    """One health check's outcome: healthy or not, and what a person should read."""

    ok: bool
    text: str


class ModelCheck:
    """Asks the model endpoint whether it would serve each distinct configured model.

    One ``POST /v1/messages/count_tokens`` per model: free, and it proves the endpoint is
    reachable, the key is accepted and the model id exists, all at once. Per model rather
    than once per endpoint, because a retired or misspelt id for one purpose fails only
    that purpose's calls. A verdict is kept ``ok_ttl_s`` when good and ``fail_ttl_s`` when
    not (a recovery shows soon), so ``/health`` under load asks at most once per model per
    interval; concurrent checks share one request.

    >>> check = ModelCheck(settings)
    >>> await check.verdicts("http://127.0.0.1:8765")  # doctest: +SKIP
    {'claude-haiku-5-5': Verdict(ok=True, text='ok'), ...}
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        ok_ttl_s: float = 30.0,
        fail_ttl_s: float = 5.0,
        timeout_s: float = _PROBE_TIMEOUT_S,
    ) -> None:
        key = settings.anthropic_api_key
        self._secret = key.get_secret_value() if key is not None else ""
        self._models = sorted(set(settings.models.values()))
        self._clock = clock
        self._ok_ttl_s = ok_ttl_s
        self._fail_ttl_s = fail_ttl_s
        self._timeout_s = timeout_s
        self._base_url: str | None = None  # the endpoint self._client talks to
        self._client: anthropic.AsyncAnthropic | None = None  # built on first use
        # (endpoint, model) -> (verdict, good until); and the probes in flight
        self._seen: dict[tuple[str | None, str], tuple[Verdict, float]] = {}
        self._pending: dict[tuple[str | None, str], asyncio.Future[Verdict]] = {}

    async def verdicts(self, base_url: str | None) -> dict[str, Verdict]:
        """Each model's verdict from the endpoint at ``base_url`` (None: the SDK's default)."""
        client = await self._client_for(base_url)
        found = await asyncio.gather(
            *(self._verdict(client, (base_url, model)) for model in self._models)
        )
        return dict(zip(self._models, found, strict=True))

    async def _client_for(self, base_url: str | None) -> anthropic.AsyncAnthropic:
        if self._client is None or base_url != self._base_url:
            old, self._base_url = self._client, base_url
            self._seen = {key: seen for key, seen in self._seen.items() if key[0] == base_url}
            self._client = anthropic.AsyncAnthropic(
                api_key=self._secret or "simulator",
                base_url=base_url,
                max_retries=0,
                timeout=self._timeout_s,
            )
            if old is not None:  # the simulator moved (restarted on another port)
                await old.close()
        return self._client

    async def _verdict(
        self, client: anthropic.AsyncAnthropic, key: tuple[str | None, str]
    ) -> Verdict:
        seen = self._seen.get(key)
        if seen is not None and self._clock() < seen[1]:
            return seen[0]
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = asyncio.ensure_future(self._probe(client, key))
        # shield: one caller giving up must not cancel the probe the others wait for
        return await asyncio.shield(pending)

    async def _probe(
        self, client: anthropic.AsyncAnthropic, key: tuple[str | None, str]
    ) -> Verdict:
        try:
            verdict = await self._ask(client, key[1])
        finally:
            del self._pending[key]
        ttl = self._ok_ttl_s if verdict.ok else self._fail_ttl_s
        self._seen[key] = (verdict, self._clock() + ttl)
        return verdict

    async def _ask(self, client: anthropic.AsyncAnthropic, model: str) -> Verdict:
        where = str(client.base_url).rstrip("/")
        try:
            await client.messages.count_tokens(
                model=model, messages=[{"role": "user", "content": "health check"}]
            )
            return Verdict(True, "ok")
        except anthropic.NotFoundError as exc:
            return await self._not_found(client, model, where, exc)
        except anthropic.RateLimitError as exc:  # it answered, knows the key; just throttled
            return Verdict(True, f"ok (answers, but rate-limited: {self._status(exc)})")
        except anthropic.APIStatusError as exc:
            return Verdict(False, f"{where} refused {model}: {self._status(exc)}")
        except anthropic.APITimeoutError:
            return Verdict(False, f"{where} did not answer within {self._timeout_s:g} s")
        except anthropic.APIConnectionError as exc:
            return Verdict(False, f"{where} is unreachable: {self._redact(_cause(exc))}")

    async def _not_found(
        self, client: anthropic.AsyncAnthropic, model: str, where: str, exc: anthropic.NotFoundError
    ) -> Verdict:
        # Anthropic's 404 for an unknown model names it ("model: claude-x"). A 404 that does
        # not may be an endpoint without token counting: the Models API tells which.
        if model not in _error_parts(exc)[1]:
            try:
                await client.models.retrieve(model)
            except anthropic.APIError:
                pass
            else:
                return Verdict(
                    True, f"ok ({where} has no token counting; /v1/models/{model} answered)"
                )
        return Verdict(False, f"{where} does not serve {model}: {self._status(exc)}")

    def _status(self, exc: anthropic.APIStatusError) -> str:
        """``HTTP 401 authentication_error: invalid x-api-key`` (bounded, key redacted)."""
        kind, message = _error_parts(exc)
        text = f"{kind}: {message}" if kind else message
        return self._redact(f"HTTP {exc.status_code} {text}")[:300]

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text


def _error_parts(exc: anthropic.APIStatusError) -> tuple[str, str]:
    """(type, message) from Anthropic's error shape; ("", the SDK's text) from any other."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error")
    if not isinstance(error, dict):
        return "", exc.message
    return str(error.get("type") or ""), str(error.get("message") or exc.message)


def _cause(exc: BaseException) -> str:
    """The innermost reason (``connection refused (...)``), not the SDK's "Connection error."."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    if isinstance(exc, OSError) and exc.errno and exc.errno > 0:
        return f"{os.strerror(exc.errno).lower()} ({exc})"
    return str(exc) or type(exc).__name__
