"""The HTTP guard on a small real Starlette app (no Ray): Host and Origin checks, the
token on every route but the open ones, caller identity, the body cap before reading,
and what each kind of bad body gets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from actors.config import Settings
from actors.gateway.http_guard import (
    ANONYMOUS,
    AccessGuard,
    AccessPolicy,
    Refusal,
    body_limit,
    task_body,
)

TOKEN = "s3cret"


class App:
    """Echoes the caller and the task text; counts the requests that reached a route."""

    def __init__(self, settings: Settings) -> None:
        self.policy = AccessPolicy.from_settings(settings)
        self.reached = 0
        routes = [
            Route("/health", self.echo),
            Route("/", self.echo),
            Route("/status", self.echo),
            Route("/tasks", self.submit, methods=["POST"]),
        ]
        self.asgi = AccessGuard(Starlette(routes=routes), lambda: self.policy)

    async def echo(self, request: Request) -> JSONResponse:
        self.reached += 1
        return JSONResponse({"caller": self.policy.caller(request.headers)})

    async def submit(self, request: Request) -> JSONResponse:
        self.reached += 1
        try:
            text = (await task_body(request, self.policy.max_body_bytes)).text
        except Refusal as refusal:
            return JSONResponse({"detail": refusal.detail}, refusal.status)
        return JSONResponse({"text": text}, 202)


def _client(app: App, host: str = "127.0.0.1:9090") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app.asgi), base_url=f"http://{host}")


LOOPBACK_SETTINGS = Settings().with_overrides(
    max_request_chars=1000, max_documents_chars=1000, max_document_bytes=1000
)


@pytest.fixture
def loopback() -> App:
    return App(LOOPBACK_SETTINGS)


@pytest.fixture
def guarded() -> App:
    return App(Settings().with_overrides(api_token=TOKEN, http_allowed_hosts="agents.example"))


@pytest.mark.parametrize("host", ["127.0.0.1:9090", "localhost:9090", "[::1]:9090", "localhost"])
async def test_loopback_names_are_served(loopback, host):
    async with _client(loopback, host) as client:
        answer = await client.get("/status")
    assert answer.status_code == 200 and answer.json() == {"caller": ANONYMOUS}


@pytest.mark.parametrize("host", ["evil.example", "evil.example:9090", "127.0.0.1.evil.example"])
async def test_a_forged_host_is_421_before_any_route(loopback, host):
    async with _client(loopback) as client:
        answer = await client.get("/health", headers={"Host": host})
    assert answer.status_code == 421 and "host" in answer.json()["detail"]
    assert loopback.reached == 0


@pytest.mark.parametrize("host", ["", "127.0.0.1:port", "[::1"])
async def test_a_missing_or_malformed_host_is_421(loopback, host):
    async with _client(loopback) as client:
        answer = await client.get("/health", headers={"Host": host})
    assert answer.status_code == 421


async def test_the_bind_host_and_the_allowlist_are_served():
    app = App(
        Settings().with_overrides(
            http_host="10.0.0.5", api_token=TOKEN, http_allowed_hosts=" Agents.Example , x.test"
        )
    )
    for host in ("10.0.0.5:9090", "agents.example", "x.test:80", "127.0.0.1"):
        async with _client(app, host) as client:
            assert (await client.get("/health")).status_code == 200, host


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:8080"])
async def test_a_cross_origin_post_is_403_and_reaches_nothing(loopback, origin):
    async with _client(loopback) as client:
        answer = await client.post("/tasks", json={"text": "hi"}, headers={"Origin": origin})
    assert answer.status_code == 403 and "cross-origin" in answer.json()["detail"]
    assert loopback.reached == 0


async def test_a_same_origin_post_passes(loopback):
    async with _client(loopback) as client:
        answer = await client.post(
            "/tasks", json={"text": "hi"}, headers={"Origin": "http://127.0.0.1:9090"}
        )
    assert answer.status_code == 202


async def test_with_a_token_every_route_but_the_open_ones_needs_it(guarded):
    async with _client(guarded) as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/")).status_code == 200
        for method, path in (("GET", "/status"), ("POST", "/tasks"), ("GET", "/nowhere")):
            answer = await client.request(method, path, content=b"{not json")
            assert answer.status_code == 401, path  # refused before the body is looked at
            assert answer.headers["www-authenticate"] == "Bearer"
        wrong = await client.get("/status", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
    assert guarded.reached == 2  # only the open routes ran


async def test_the_caller_is_known_by_its_token(guarded):
    async with _client(guarded) as client:
        answer = await client.get("/status", headers={"Authorization": f"Bearer {TOKEN}"})
        anonymous = await client.get("/health")
    assert answer.status_code == 200
    caller = answer.json()["caller"]
    assert caller.startswith("http:") and len(caller) == len("http:") + 12
    assert TOKEN not in caller
    assert anonymous.json()["caller"] == ANONYMOUS  # open route, no token: not the owner


async def test_a_declared_body_over_the_cap_is_413_without_reading_it(loopback):
    async def endless() -> AsyncIterator[bytes]:
        raise AssertionError("the body was read")
        yield b""  # pragma: no cover

    async with _client(loopback) as client:
        answer = await client.post(
            "/tasks",
            content=endless(),
            headers={"Content-Length": str(100_000_000), "Content-Type": "application/json"},
        )
    assert answer.status_code == 413 and "limit" in answer.json()["detail"]
    assert loopback.reached == 0


async def test_a_chunked_body_over_the_cap_is_413(loopback):
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1000):  # 64 MB if it were all read
            sent += 1
            yield b" " * 65536

    async with _client(loopback) as client:
        answer = await client.post(
            "/tasks", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert answer.status_code == 413 and sent < 1000  # refused before all of it was read
    assert loopback.policy.max_body_bytes == body_limit(LOOPBACK_SETTINGS)


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b'{"text": "caf\xe9"}', 400, "not valid UTF-8 (bad byte at position 13)"),
        (b'{"text": "a\x00b"}', 400, "not valid JSON: control character"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "recursion limit exceeded"),
        (b'{"text": "x"', 400, "not valid JSON: EOF"),
        (b'{"text": 5}', 422, "text: Input should be a valid string"),
        (b'{"text": null}', 422, "text: Input should be a valid string"),
        (b'["Hello"]', 422, "body: Input should be an object"),
        (b"{}", 422, "text: Field required"),
        (b'{"text": "Hi", "quick_answer": "yes"}', 422, "quick_answer: Input should be"),
        (b'{"text": "Hi", "conversation_id": 5}', 422, "conversation_id: Input should be a"),
        (b'{"text": "Hi", "conversation_id": ""}', 422, "conversation_id: String should have"),
        (b'{"text": "Hi", "conversation_id": "%s"}' % (b"x" * 65), 422, "at most 64"),
    ],
)
async def test_each_bad_body_gets_a_4xx_naming_the_problem(body, status, says):
    app = App(Settings())  # the default cap holds 100,000 nested lists
    async with _client(app) as client:
        answer = await client.post(
            "/tasks", content=body, headers={"Content-Type": "application/json"}
        )
    assert answer.status_code == status
    assert says in answer.json()["detail"]


async def test_a_body_that_is_not_json_is_415(loopback):
    async with _client(loopback) as client:
        answer = await client.post("/tasks", data={"text": "hi"})
    assert answer.status_code == 415 and "application/json" in answer.json()["detail"]


async def test_a_good_body_keeps_its_text(loopback):
    async with _client(loopback) as client:
        answer = await client.post("/tasks", json={"text": "caf\u00e9 \U0001f600"})
    assert answer.status_code == 202 and answer.json() == {"text": "caf\u00e9 \U0001f600"}


def test_a_cost_limit_must_be_above_zero():
    from pydantic import ValidationError

    from actors.gateway.http_guard import TaskIn

    assert TaskIn.model_validate({"text": "x", "cost_limit_usd": 0.5}).cost_limit_usd == 0.5
    with pytest.raises(ValidationError, match="greater than 0"):
        TaskIn.model_validate({"text": "x", "cost_limit_usd": 0})


def test_a_follow_up_names_its_conversation_and_a_new_request_names_none():
    from actors.gateway.http_guard import TaskIn

    follow_up = TaskIn.model_validate({"text": "make it shorter", "conversation_id": "t-1"})
    assert follow_up.conversation_id == "t-1"
    assert TaskIn.model_validate({"text": "Hello"}).conversation_id is None
