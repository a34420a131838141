"""/health's model check through the real SDK against a small Anthropic-shaped server on
loopback (no Ray): what it calls healthy, how a failure reads, and how often it asks."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from actors.config import Settings
from actors.gateway.model_check import ModelCheck
from actors.settings_groups import default_models

KEY = "sk-test-secret"
MODELS = sorted(set(default_models().values()))


def _error(status: int, kind: str, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"}
    return web.json_response(body, status=status)


class FakeProvider:
    """Answers ``/{mode}/v1/...`` the way an endpoint in that state would; counts the calls."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()  # mode -> count_tokens calls
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        mode, tail = request.match_info["mode"], request.match_info["tail"]
        if tail.startswith("v1/models/"):
            if mode == "nocount":
                model = tail.rsplit("/", 1)[1]
                return web.json_response(
                    {
                        "type": "model",
                        "id": model,
                        "display_name": model,
                        "created_at": "2026-10-07T00:00:00Z",
                    }
                )
            return _error(404, "not_found_error", "Not Found")
        model = (await request.json())["model"]
        self.hits[mode] += 1
        if mode == "deny":  # the message echoes the key, to prove it is redacted
            return _error(401, "authentication_error", f"invalid x-api-key {KEY}")
        if mode == "broken":
            return _error(500, "api_error", "Internal server error")
        if mode == "throttled":
            return _error(429, "rate_limit_error", "Number of requests has exceeded your limit")
        if mode in ("nocount", "nowhere"):
            raise web.HTTPNotFound()  # a proxy that never heard of count_tokens
        if mode == "mixed" and "sonnet" in model:
            return _error(529, "overloaded_error", "Overloaded")
        if mode == "mixed" and "opus" in model:
            return _error(404, "not_found_error", f"model: {model}")
        return web.json_response({"input_tokens": 3})


@pytest.fixture(scope="module")
async def provider() -> AsyncIterator[FakeProvider]:
    fake = FakeProvider()
    app = web.Application()
    app.router.add_route("*", "/{mode}/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield fake
    await runner.cleanup()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _check(clock: Clock | None = None) -> ModelCheck:
    settings = Settings().with_overrides(anthropic_api_key=KEY)
    return ModelCheck(settings, clock=clock or Clock(), ok_ttl_s=30.0, fail_ttl_s=5.0)


async def test_an_answering_endpoint_is_healthy_for_every_model(provider: FakeProvider) -> None:
    verdicts = await _check().verdicts(f"{provider.url}/ok")
    assert set(verdicts) == set(MODELS)
    assert all(v.ok and v.text == "ok" for v in verdicts.values())


async def test_a_good_verdict_is_reused_for_30_s_and_then_asked_again(
    provider: FakeProvider,
) -> None:
    clock = Clock()
    check = _check(clock)
    before = provider.hits["ok"]
    await check.verdicts(f"{provider.url}/ok")
    clock.now += 29
    await check.verdicts(f"{provider.url}/ok")
    assert provider.hits["ok"] - before == len(MODELS)  # once per model, not per request
    clock.now += 2
    await check.verdicts(f"{provider.url}/ok")
    assert provider.hits["ok"] - before == 2 * len(MODELS)


async def test_a_failure_is_kept_for_a_shorter_while(provider: FakeProvider) -> None:
    clock = Clock()
    check = _check(clock)
    before = provider.hits["broken"]
    verdicts = await check.verdicts(f"{provider.url}/broken")
    assert not any(v.ok for v in verdicts.values())
    assert all("HTTP 500 api_error" in v.text for v in verdicts.values())
    clock.now += 4
    await check.verdicts(f"{provider.url}/broken")
    assert provider.hits["broken"] - before == len(MODELS)
    clock.now += 2
    await check.verdicts(f"{provider.url}/broken")
    assert provider.hits["broken"] - before == 2 * len(MODELS)


async def test_concurrent_checks_share_one_request_per_model(provider: FakeProvider) -> None:
    check = _check()
    before = provider.hits["ok"]
    await asyncio.gather(*(check.verdicts(f"{provider.url}/ok") for _ in range(8)))
    assert provider.hits["ok"] - before == len(MODELS)


async def test_refused_credentials_say_401_and_where_without_the_key(
    provider: FakeProvider,
) -> None:
    verdicts = await _check().verdicts(f"{provider.url}/deny")
    for model, verdict in verdicts.items():
        assert not verdict.ok
        assert f"{provider.url}/deny refused {model}" in verdict.text
        assert "HTTP 401 authentication_error" in verdict.text
        assert KEY not in verdict.text and "***" in verdict.text


async def test_an_unreachable_endpoint_says_connection_refused() -> None:
    with socket.socket() as sock:  # a port nobody listens on once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    verdicts = await _check().verdicts(url)
    for verdict in verdicts.values():
        assert not verdict.ok
        assert f"{url} is unreachable" in verdict.text
        assert "connection refused" in verdict.text


async def test_each_model_is_named_with_how_it_failed(provider: FakeProvider) -> None:
    verdicts = await _check().verdicts(f"{provider.url}/mixed")
    assert verdicts["claude-haiku-5-5"].ok
    sonnet, opus = verdicts["claude-sonnet-5-5"], verdicts["claude-opus-5-5"]
    assert not sonnet.ok and "refused claude-sonnet-5-5: HTTP 529 overloaded_error" in sonnet.text
    assert not opus.ok and "does not serve claude-opus-5-5: HTTP 404" in opus.text


async def test_an_endpoint_without_token_counting_is_checked_through_the_models_api(
    provider: FakeProvider,
) -> None:
    verdicts = await _check().verdicts(f"{provider.url}/nocount")
    for model, verdict in verdicts.items():
        assert verdict.ok, verdict.text
        assert f"has no token counting; /v1/models/{model} answered" in verdict.text


async def test_a_404_that_the_models_api_does_not_explain_is_unhealthy(
    provider: FakeProvider,
) -> None:
    # /nowhere: count_tokens is a 404 naming no model, and there is no Models API either.
    verdicts = await _check().verdicts(f"{provider.url}/nowhere")
    for model, verdict in verdicts.items():
        assert not verdict.ok
        assert f"does not serve {model}: HTTP 404" in verdict.text


async def test_rate_limited_counting_still_means_the_endpoint_answers(
    provider: FakeProvider,
) -> None:
    verdicts = await _check().verdicts(f"{provider.url}/throttled")
    assert all(v.ok and "rate-limited: HTTP 429" in v.text for v in verdicts.values())
