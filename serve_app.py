"""Ray Serve application: the HTTP front door on :9090 (loopback by default).

Routes: ``GET /health``, ``GET /status`` (dashboard JSON), ``GET /pools``,
``GET /metrics`` (Prometheus text), ``POST /tasks``, ``GET /tasks``,
``GET /tasks/{id}``, ``DELETE /tasks/{id}``, ``GET /tasks/{id}/events``
(server-sent events ending with the result) and ``GET /`` (a live dashboard page).

The task API needs ``Authorization: Bearer $PARALLEL_AGENTS_API_TOKEN`` whenever
the app is bound to a non-loopback host; ``deploy`` refuses to start such an app
without a token. Every figure comes from the running system's actors, found by
name, so any number of replicas show the same cluster-wide view.

Run it with ``parallel-agents start`` (or ``deploy(Settings())`` from a driver).

No ``from __future__ import annotations`` here: FastAPI must see real types in
the route signatures to read request bodies.
"""

import asyncio
import hmac
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import ray
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from ray import serve

from actors.config import (
    LIMITER_NAME,
    NAMESPACE,
    ORCHESTRATOR_NAME,
    SIMULATOR_NAME,
    Settings,
    pool_actor_name,
)
from actors.errors import CapacityError, ConfigurationError, UnknownTaskError, UserInputError
from actors.metrics import dashboard_status, prometheus_text
from actors.models import ProgressEvent, Role

APP_NAME = "parallel-agents"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_CALL_TIMEOUT_S = 10.0

app = FastAPI(title="parallel-agents", description="Many Claude agents in parallel, on Ray.")


# A first, fixed bound on the body; the configured request limit is checked after it.
MAX_TEXT_CHARS = 1_000_000


class TaskIn(BaseModel):
    text: str = Field(description="the request, as a user would type it", max_length=MAX_TEXT_CHARS)


def check_bind(settings: Settings) -> None:
    """Refuse a public bind without an API token."""
    if settings.http_host not in LOOPBACK_HOSTS and settings.api_token is None:
        raise ConfigurationError(
            f"refusing to serve the task API on {settings.http_host}: set "
            "PARALLEL_AGENTS_API_TOKEN, or bind to 127.0.0.1"
        )


@serve.deployment(name="gateway", num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Gateway:
    """Answers HTTP from the system's actors."""

    def __init__(self, settings: Settings) -> None:
        check_bind(settings)
        self._settings = settings
        self._public = settings.http_host not in LOOPBACK_HOSTS

    # --- helpers -----------------------------------------------------------------

    def _actor(self, name: str) -> Any:
        try:
            return ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            raise HTTPException(503, f"{name} is not running") from None

    async def _call(self, name: str, method: str, *args: Any) -> Any:
        ref = getattr(self._actor(name), method).remote(*args)
        try:
            return await asyncio.wait_for(ref, _CALL_TIMEOUT_S)
        except UnknownTaskError as exc:
            raise HTTPException(404, str(exc)) from None
        except UserInputError as exc:
            raise HTTPException(400, str(exc)) from None
        except CapacityError as exc:
            raise HTTPException(429, str(exc), {"Retry-After": "5"}) from None
        except (TimeoutError, ray.exceptions.RayActorError) as exc:
            raise HTTPException(503, f"{name} did not answer: {type(exc).__name__}") from None

    async def _snapshots(self) -> tuple[Any, list[Any], Any]:
        stats, pools, limiter = await asyncio.gather(
            self._call(ORCHESTRATOR_NAME, "stats"),
            self._call(ORCHESTRATOR_NAME, "pools"),
            self._call(LIMITER_NAME, "snapshot"),
        )
        return stats, pools, limiter

    def _authorize(self, request: Request) -> None:
        """Bearer-token check for the task API (only when bound off loopback)."""
        if not self._public:
            return
        token = self._settings.api_token
        given = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}" if token else ""
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(
                401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
            )

    # --- routes ------------------------------------------------------------------

    @app.get("/health")
    async def health(self) -> JSONResponse:
        """200 when Ray, every pool, the orchestrator and the LLM backend answer; else 503."""
        checks: dict[str, str] = {"ray": "ok"}
        names = {"orchestrator": ORCHESTRATOR_NAME, "limiter": LIMITER_NAME}
        names.update({f"pool:{role.value}": pool_actor_name(role) for role in Role})
        if self._settings.simulated:
            names["llm:simulator"] = SIMULATOR_NAME
        for label, name in names.items():
            method = "snapshot" if label.startswith("pool") or label == "limiter" else "ping"
            if name == SIMULATOR_NAME:
                method = "url"
            try:
                await self._call(name, method)
                checks[label] = "ok"
            except HTTPException as exc:
                checks[label] = str(exc.detail)
        if not self._settings.simulated:
            checks["llm:anthropic"] = "configured"
        healthy = all(v in ("ok", "configured") for v in checks.values())
        return JSONResponse({"healthy": healthy, "checks": checks}, 200 if healthy else 503)

    @app.get("/status")
    async def status(self) -> dict[str, Any]:
        """The dashboard JSON: agents, queue, throughput, latency, success, utilisation."""
        stats, pools, limiter = await self._snapshots()
        return dashboard_status(stats, pools, limiter, self._settings.simulated)

    @app.get("/pools")
    async def pools(self) -> list[dict[str, Any]]:
        """Every pool: bounds, size, load and each agent."""
        pools = await self._call(ORCHESTRATOR_NAME, "pools")
        return [pool.model_dump(mode="json") for pool in pools]

    @app.get("/metrics")
    async def metrics(self) -> Response:
        """Prometheus text format, one consistent view of the whole cluster."""
        stats, pools, limiter = await self._snapshots()
        return Response(
            prometheus_text(stats, pools, limiter), media_type="text/plain; version=0.0.4"
        )

    @app.post("/tasks", status_code=202)
    async def submit(self, task: TaskIn, request: Request) -> dict[str, str]:
        """Accept a request; 202 with its task id."""
        self._authorize(request)
        task_id = await self._call(ORCHESTRATOR_NAME, "submit", task.text)
        return {"task_id": task_id}

    @app.get("/tasks")
    async def history(self, request: Request, limit: int = 50) -> dict[str, Any]:
        """Recent tasks, newest first (finished ones survive restarts)."""
        self._authorize(request)
        rows = await self._call(ORCHESTRATOR_NAME, "history", limit)
        return {"tasks": rows}

    @app.get("/tasks/{task_id}")
    async def task(self, task_id: str, request: Request) -> dict[str, Any]:
        """State, progress, per-microtask states and (when finished) the result."""
        self._authorize(request)
        status: dict[str, Any] = await self._call(ORCHESTRATOR_NAME, "status", task_id)
        return status

    @app.delete("/tasks/{task_id}")
    async def cancel(self, task_id: str, request: Request) -> dict[str, Any]:
        """Cancel a running task; what finished is kept."""
        self._authorize(request)
        cancelled = await self._call(ORCHESTRATOR_NAME, "cancel", task_id)
        return {"task_id": task_id, "cancelled": cancelled}

    @app.get("/tasks/{task_id}/events")
    async def events(self, task_id: str, request: Request) -> StreamingResponse:
        """Server-sent events: every progress event, then the task's result."""
        self._authorize(request)
        await self._call(ORCHESTRATOR_NAME, "status", task_id)  # 404 before streaming
        return StreamingResponse(self._stream(task_id), media_type="text/event-stream")

    async def _stream(self, task_id: str) -> AsyncIterator[str]:
        orchestrator = self._actor(ORCHESTRATOR_NAME)
        seen = 0
        while True:
            batch: list[ProgressEvent] = await orchestrator.events.remote(task_id, seen, 10.0)
            for event in batch:
                yield f"event: progress\ndata: {event.model_dump_json()}\n\n"
            seen += len(batch)
            if any(event.kind == "done" for event in batch):
                break
            if not batch:
                yield ": keep-alive\n\n"
        report = await orchestrator.wait.remote(task_id)
        yield f"event: result\ndata: {report.model_dump_json()}\n\n"

    @app.get("/", response_class=HTMLResponse)
    async def dashboard(self) -> HTMLResponse:
        """A live dashboard page: pools, active tasks, throughput and latency over time."""
        page = resources.files("actors").joinpath("dashboard.html").read_text()
        return HTMLResponse(page)

    @app.get("/tasks-active")
    async def active(self, request: Request) -> dict[str, Any]:
        """Running tasks with their progress (for the dashboard page)."""
        self._authorize(request)
        return {"tasks": await self._call(ORCHESTRATOR_NAME, "active")}


def deploy(settings: Settings) -> str:
    """Start Serve on the configured host and port and run the app; returns its URL."""
    check_bind(settings)
    serve.start(
        detached=True, http_options={"host": settings.http_host, "port": settings.http_port}
    )
    serve.run(Gateway.bind(settings), name=APP_NAME, route_prefix="/")  # type: ignore[attr-defined]
    return f"http://{settings.http_host}:{settings.http_port}"


def undeploy() -> None:
    """Stop the app and Serve itself (its proxies stop listening)."""
    serve.shutdown()
