"""The HTTP gateway as a hostile caller meets it, over real HTTP to the real Serve app:
event streams that would fill it, forged Host and Origin, a token on every route, other
callers' tasks, and bodies that are huge, not UTF-8, nested 100,000 deep or of the
wrong shape. After each, the system still answers ``/health``."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import ray
from browser import browser_dom
from ray import serve
from waiting import wait_until  # tests/integration is on pytest's pythonpath

from actors.config import Settings
from actors.gateway import app as gateway_app
from actors.gateway.http_guard import ANONYMOUS
from actors.models import Microtask, Role
from actors.runtime.system import start_system, stop_system

ROLES = ("research", "analysis", "generation", "validation")
ALICE, BOB = "alice-token", "bob-token"
STREAM_CAP_REQUESTS = 32  # the smallest allowed; 16 of them may be event streams


@pytest.fixture(scope="module")
def system(ray_session):
    settings = Settings().with_overrides(
        pools={role: {"min": 1, "max": 2} for role in ROLES},
        simulator={"latency": "fixed", "median_s": 0.05},
        max_tasks_per_user=50,
    )
    system = start_system(settings)
    yield system
    stop_system(system)


@pytest.fixture(scope="module")
def http(serve_url, system):
    """The session's gateway: loopback, no token (everyone is ``http:anonymous``)."""
    with httpx.Client(base_url=serve_url, timeout=30) as client:
        wait_until(lambda: _answers(client, "/health") == 200, timeout_s=60, every_s=0.2)
        yield client


@pytest.fixture(scope="module")
def gateways(http):
    """Gateways beside the session's: ``/alice`` and ``/bob`` each with its own token,
    ``/small`` taking the fewest requests at once (for the event-stream cap)."""
    apps = {
        "alice": Settings().with_overrides(api_token=ALICE),
        "bob": Settings().with_overrides(api_token=BOB),
        "small": Settings().with_overrides(http_max_ongoing_requests=STREAM_CAP_REQUESTS),
    }
    serve.run_many(
        [
            serve.RunTarget(
                gateway_app.application(settings, name=f"gateway-{name}"),
                name=name,
                route_prefix=f"/{name}",
            )
            for name, settings in apps.items()
        ]
    )
    try:
        yield
    finally:
        for name in apps:
            serve.delete(name)


def _answers(client: httpx.Client, path: str) -> int:
    try:
        return client.get(path).status_code
    except httpx.TransportError:
        return 0


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _slow_plan(seconds: float) -> list[Microtask]:
    return [
        Microtask(
            id="slow", role=Role.RESEARCH, title="slow", instructions=f"[sim-latency {seconds}]"
        )
    ]


def _slow_task(system, user: str = ANONYMOUS, seconds: float = 60) -> str:
    """A task that runs until cancelled (or ``seconds``), owned by ``user``."""
    return ray.get(system.orchestrator.submit.remote("a long one", _slow_plan(seconds), user=user))


def _task_count(system) -> int:
    return len(ray.get(system.orchestrator.tasks.remote()))


class Follower(threading.Thread):
    """Follows one task's event stream in a thread; ``connected`` once its first bytes came."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.connected = threading.Event()
        self.status = 0
        self.lines: list[str] = []

    def run(self) -> None:
        with (
            httpx.Client(timeout=httpx.Timeout(60, connect=10)) as client,
            client.stream("GET", self.url) as stream,
        ):
            self.status = stream.status_code
            self.connected.set()
            for line in stream.iter_lines():
                self.lines.append(line)


def _follow(url: str, count: int) -> list[Follower]:
    followers = [Follower(url) for _ in range(count)]
    for follower in followers:
        follower.start()
    return followers


# --- 3: the gateway is sized for event streams --------------------------------------


def test_health_and_status_answer_while_eight_streams_follow_a_task(http, serve_url, system):
    # Ray Serve's default of 5 requests at once: five streams used to block every route.
    task_id = _slow_task(system)
    followers = _follow(f"{serve_url}/tasks/{task_id}/events", 8)
    served = lambda: sum(f.connected.is_set() for f in followers)  # noqa: E731
    try:
        try:
            wait_until(lambda: served() == 8, timeout_s=30)
        except AssertionError:
            pytest.fail(f"only {served()} of 8 event streams were served")
        assert all(f.status == 200 for f in followers)
        with httpx.Client(base_url=serve_url, timeout=20) as fresh:
            assert fresh.get("/health").status_code == 200
            assert fresh.get("/status").status_code == 200
    finally:
        http.delete(f"/tasks/{task_id}")
    for follower in followers:
        follower.join(30)
        assert any(line.startswith("event: result") for line in follower.lines)


def test_streams_past_the_cap_get_503_and_the_rest_still_answers(http, serve_url, gateways, system):
    task_id = _slow_task(system)
    url = f"{serve_url}/small/tasks/{task_id}/events"
    cap = STREAM_CAP_REQUESTS - gateway_app._STREAM_HEADROOM
    followers = _follow(url, cap)
    try:
        wait_until(lambda: all(f.connected.is_set() for f in followers), timeout_s=30)
        refused = http.get(f"/small/tasks/{task_id}/events")
        assert refused.status_code == 503 and "event streams are open" in refused.json()["detail"]
        assert refused.headers["retry-after"]
        assert http.get("/small/health").status_code == 200
        assert http.get(f"/small/tasks/{task_id}").status_code == 200
    finally:
        http.delete(f"/tasks/{task_id}")
    for follower in followers:
        follower.join(30)
    # the finished streams gave their places back
    with http.stream("GET", f"/small/tasks/{task_id}/events") as again:
        assert again.status_code == 200


# --- 11: Host, Origin, the token, and whose task it is ------------------------------


@pytest.mark.parametrize(("method", "path"), [("GET", "/health"), ("POST", "/tasks")])
def test_a_forged_host_is_421(http, system, method, path):
    before = _task_count(system)
    answer = http.request(method, path, json={"text": "Hello"}, headers={"Host": "evil.example"})
    assert answer.status_code == 421 and "evil.example" in answer.json()["detail"]
    assert _task_count(system) == before  # nothing was submitted


def test_a_cross_origin_post_is_refused(http, serve_url, system):
    before = _task_count(system)
    refused = http.post("/tasks", json={"text": "Hello"}, headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403 and "cross-origin" in refused.json()["detail"]
    assert _task_count(system) == before
    own = http.post("/tasks", json={"text": "Hello"}, headers={"Origin": serve_url})
    assert own.status_code == 202


ROUTES = [
    ("GET", "/status"),
    ("GET", "/pools"),
    ("GET", "/metrics"),
    ("GET", "/tasks"),
    ("POST", "/tasks"),
    ("GET", "/tasks/nope"),
    ("DELETE", "/tasks/nope"),
    ("GET", "/tasks/nope/events"),
    ("GET", "/tasks-active"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_with_a_token_every_route_needs_it(http, gateways, method, path):
    answer = http.request(method, f"/alice{path}", json={"text": "Hello"})
    assert answer.status_code == 401, answer.text
    assert answer.headers["www-authenticate"] == "Bearer"
    wrong = http.request(method, f"/alice{path}", headers=_bearer(BOB))
    assert wrong.status_code == 401


def test_with_a_token_health_is_open_but_says_only_healthy(http, gateways):
    anonymous = http.get("/alice/health")
    assert anonymous.status_code == 200 and anonymous.json() == {"healthy": True}
    full = http.get("/alice/health", headers=_bearer(ALICE)).json()
    assert full["healthy"] is True and full["checks"]["orchestrator"] == "ok"
    assert http.get("/alice/").status_code == 200  # the page itself holds no data


def test_another_callers_task_is_404_on_read_and_cancel(http, gateways, system):
    alice, bob = _bearer(ALICE), _bearer(BOB)
    mine = http.post("/alice/tasks", json={"text": "Hello"}, headers=alice)
    assert mine.status_code == 202
    task_id = mine.json()["task_id"]
    assert http.get(f"/alice/tasks/{task_id}", headers=alice).status_code == 200
    unknown = http.get("/bob/tasks/0123456789ab", headers=bob)
    for answer in (
        http.get(f"/bob/tasks/{task_id}", headers=bob),
        http.delete(f"/bob/tasks/{task_id}", headers=bob),
        http.get(f"/bob/tasks/{task_id}/events", headers=bob),
        http.get(f"/tasks/{task_id}"),  # loopback without a token is yet another caller
    ):
        assert answer.status_code == 404
        # the same answer as for an id that does not exist: ids do not leak
        assert answer.json()["detail"] == unknown.json()["detail"].replace("0123456789ab", task_id)
    telegram = _slow_task(system, user="telegram:42")
    try:
        assert http.get(f"/alice/tasks/{telegram}", headers=alice).status_code == 404
        assert http.delete(f"/alice/tasks/{telegram}", headers=alice).status_code == 404
        assert ray.get(system.orchestrator.status.remote(telegram))["state"] != "cancelled"
    finally:
        ray.get(system.orchestrator.cancel.remote(telegram))


def _done(http: httpx.Client, path: str, headers: dict[str, str]) -> dict:
    return wait_until(
        lambda: (got := http.get(path, headers=headers).json())["state"] == "done" and got
    )


def _heard_since(system, seen: int) -> list[dict]:
    """What each answered microtask call since ``seen`` carried of a conversation."""
    url = ray.get(system.simulator.url.remote())
    calls = httpx.get(f"{url}/requests", timeout=10).json()["requests"][seen:]
    return [c["conversation"] for c in calls if c["status"] == 200 and c["microtask"]]


def test_a_follow_up_in_ones_own_conversation_carries_its_answer_and_others_get_404(
    http, gateways, system
):
    alice, bob = _bearer(ALICE), _bearer(BOB)
    first = http.post("/alice/tasks", json={"text": "Hello"}, headers=alice).json()
    assert first["conversation_id"] == first["task_id"]
    answer = _done(http, f"/alice/tasks/{first['task_id']}", alice)["report"]["result"]
    url = ray.get(system.simulator.url.remote())
    seen = len(httpx.get(f"{url}/requests", timeout=10).json()["requests"])
    body = {"text": "make it shorter", "conversation_id": first["conversation_id"]}
    follow_up = http.post("/alice/tasks", json=body, headers=alice)
    assert follow_up.status_code == 202
    assert follow_up.json()["conversation_id"] == first["conversation_id"]
    status = _done(http, f"/alice/tasks/{follow_up.json()['task_id']}", alice)
    assert status["conversation_id"] == first["conversation_id"]
    heard = _heard_since(system, seen)
    assert heard and all(h["answers"] == [answer[:120]] for h in heard)
    before = _task_count(system)
    for refused in (
        http.post("/bob/tasks", json=body, headers=bob),
        http.post("/tasks", json=body),  # loopback without a token is yet another caller
        http.post("/alice/tasks", json={**body, "conversation_id": "nope"}, headers=alice),
    ):
        assert refused.status_code == 404 and "no conversation" in refused.json()["detail"]
    assert _task_count(system) == before  # nothing was submitted


def test_listings_show_only_ones_own_tasks(http, gateways, system):
    alice, bob = _bearer(ALICE), _bearer(BOB)
    task_id = http.post("/alice/tasks", json={"text": "Hello"}, headers=alice).json()["task_id"]
    slow = _slow_task(system, user="telegram:7")
    try:
        ray.get(system.orchestrator.wait.remote(task_id), timeout=60)

        def listed(path: str, headers: dict[str, str] | None = None) -> set[str]:
            rows = http.get(path, headers=headers or {}).json()["tasks"]
            return {row["task_id"] for row in rows}

        assert task_id in listed("/alice/tasks?limit=1000", alice)
        assert task_id not in listed("/bob/tasks?limit=1000", bob)
        assert task_id not in listed("/tasks?limit=1000")
        assert slow not in listed("/alice/tasks?limit=1000", alice)
        assert slow not in listed("/alice/tasks-active", alice)
        assert slow not in listed("/tasks-active")
    finally:
        ray.get(system.orchestrator.cancel.remote(slow))


def test_the_owner_can_follow_and_cancel(http, gateways, system):
    alice = _bearer(ALICE)
    task_id = http.post("/alice/tasks", json={"text": "Hello"}, headers=alice).json()["task_id"]
    with http.stream("GET", f"/alice/tasks/{task_id}/events", headers=alice) as stream:
        assert stream.status_code == 200
        assert any(line.startswith("event: result") for line in stream.iter_lines())
    assert http.delete(f"/alice/tasks/{task_id}", headers=alice).status_code == 200


# --- 12: the token before the body; the dashboard with a token -----------------------


def test_the_token_is_checked_before_the_body_is_read(http, serve_url, gateways):
    unparsable = http.post(
        "/alice/tasks", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert unparsable.status_code == 401
    status, _ = _raw_post(f"{serve_url}/alice/tasks", iter([b"{" * 1024]), length=100_000_000)
    assert status == 401
    status, body = _raw_post(
        f"{serve_url}/alice/tasks", iter([b"{" * 1024]), length=100_000_000, token=ALICE
    )
    assert status == 413 and "limit" in json.loads(body)["detail"]


def test_the_dashboard_asks_for_the_token_and_then_works(http, serve_url, gateways, tmp_path):
    refused = browser_dom(f"{serve_url}/alice/", tmp_path)
    assert "API token needed" in refused and '<form id="login">' in refused  # not hidden
    live = browser_dom(f"{serve_url}/alice/#token={ALICE}", tmp_path)
    assert ">live<" in live
    for role in ROLES:
        assert f'data-role="{role}"' in live


# --- hostile bodies ------------------------------------------------------------------


def _raw_post(
    url: str, chunks: Iterator[bytes], *, length: int | None = None, token: str | None = None
) -> tuple[int, bytes]:
    """POST over a bare socket: ``length`` declared (or chunked), ``chunks`` sent from a
    thread while the answer is read, so a server that answers early is seen answering."""
    parts = urlsplit(url)
    head = [
        f"POST {parts.path} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Content-Type: application/json",
    ]
    head.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    if token:
        head.append(f"Authorization: Bearer {token}")
    stop = threading.Event()
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())

        def send() -> None:
            try:
                for chunk in chunks:
                    if stop.is_set():
                        return
                    frame = chunk if length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk)
                    sock.sendall(frame)
            except OSError:  # the server answered and closed the connection
                pass

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < _expected_size(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        stop.set()
    head_part, _, body = answer.partition(b"\r\n\r\n")
    return int(head_part.split(b" ", 2)[1]), body


def _expected_size(answer: bytes) -> int:
    head, _, _ = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(answer)


def _megabytes(total: int) -> Iterator[bytes]:
    for _ in range(total // 65536):
        yield b" " * 65536


def test_a_declared_100_mb_body_is_413_before_it_is_sent(http, serve_url):
    # only 1 KB of the 100 MB is ever sent: the answer comes without waiting for the rest
    status, body = _raw_post(f"{serve_url}/tasks", iter([b" " * 1024]), length=100_000_000)
    assert status == 413 and "limit" in json.loads(body)["detail"]
    assert http.get("/health").status_code == 200


def test_a_chunked_100_mb_body_is_413_after_the_cap(http, serve_url):
    status, body = _raw_post(f"{serve_url}/tasks", _megabytes(100_000_000))
    assert status == 413 and "limit" in json.loads(body)["detail"]
    assert http.get("/health").status_code == 200


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        (json.dumps({"text": "a" * 1_000_000}).encode(), JSON, 400, "limit"),  # chars
        (b'{"text": "caf\xe9"}', JSON, 400, "not valid UTF-8"),
        (b'{"text": "a\x00b"}', JSON, 400, "not valid JSON: control character"),
        (b'{"text": "a\\u0000b"}', JSON, 400, "NUL"),
        (b"[" * 100_000 + b"]" * 100_000, JSON, 400, "recursion limit"),
        (b'{"text": 5}', JSON, 422, "text: Input should be a valid string"),
        (b'{"text": null}', JSON, 422, "text: Input should be a valid string"),
        (b'["Hello"]', JSON, 422, "Input should be an object"),
        (b"{}", JSON, 422, "text: Field required"),
        (b"text=Hello", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "json"),
    ],
    ids=[
        "1MB",
        "invalid-utf8",
        "raw-nul",
        "escaped-nul",
        "nested-100000",
        "text-int",
        "text-null",
        "list",
        "no-text",
        "form",
    ],
)
def test_hostile_bodies_get_a_clear_4xx_and_the_system_stays_healthy(
    http, system, body, headers, status, says
):
    before = _task_count(system)
    answer = http.post("/tasks", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["detail"]
    assert _task_count(system) == before
    assert http.get("/health").status_code == 200
