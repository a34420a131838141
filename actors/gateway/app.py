"""Ray Serve application: the HTTP front door on :9090 (loopback by default).

Routes: ``GET /health``, ``GET /status`` (dashboard JSON), ``GET /pools``,
``GET /metrics`` (Prometheus text), ``POST /tasks``, ``GET /tasks``,
``GET /tasks/{id}``, ``DELETE /tasks/{id}``, ``GET /tasks/{id}/events``
(server-sent events ending with the result), ``GET /history/daily`` (trends per UTC
day) and ``GET /`` (a live dashboard page).

Who may call is decided before a route runs (``actors.gateway.http_guard``): the ``Host``
must name this server, a browser's ``Origin`` must be its own, and with
``PARALLEL_AGENTS_API_TOKEN`` set every route but ``GET /health`` and ``GET /`` needs
``Authorization: Bearer``; ``deploy`` refuses a public bind without a token. Tasks
belong to the caller who submitted them: another caller's task is a 404, and lists
show only one's own. Every figure comes from the running system's actors, found by
name, so any number of replicas show the same cluster-wide view.

The deployment takes ``http_max_ongoing_requests`` requests at once (each open event
stream holds one); event streams past that less ``_STREAM_HEADROOM`` get a 503, so
``/health`` and the task API always have room.

``/health`` asks every part it reports on: each actor answers a call, and the model
endpoint (the real provider, or the embedded simulator) answers a free token count for
each distinct configured model (``actors.gateway.model_check``, cached for a short while).

Run it with ``parallel-agents start``, ``deploy(Settings())`` from a driver, or Serve's own
``serve run serve_app:build`` (``serve_app.py`` is the entry point).

No ``from __future__ import annotations`` here: FastAPI must see real types in
the route signatures to read request bodies.
"""

import asyncio
import math
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import ray
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve import Application

from actors.config import (
    LIMITER_NAME,
    NAMESPACE,
    ORCHESTRATOR_NAME,
    SIMULATOR_NAME,
    Settings,
    pool_actor_name,
)
from actors.engine.store import MAX_TREND_DAYS
from actors.errors import (
    CapacityError,
    ConfigurationError,
    UnknownConversationError,
    UnknownTaskError,
    UserInputError,
)
from actors.gateway.http_guard import (
    ANY_HOST,
    PAGE_HEADERS,
    TASK_BODY_OPENAPI,
    AccessGuard,
    AccessPolicy,
    Refusal,
    is_public,
    task_body,
    task_documents,
)
from actors.gateway.metrics import dashboard_status, prometheus_text
from actors.gateway.model_check import ModelCheck, Verdict
from actors.models import ProgressEvent, Role

APP_NAME = "parallel-agents"
_CALL_TIMEOUT_S = 10.0
# Requests kept free of event streams, so /health and the task API always answer.
_STREAM_HEADROOM = 16

app = FastAPI(title="parallel-agents", description="Many Claude agents in parallel, on Ray.")


def _replica_policy() -> AccessPolicy:
    """The access policy of the gateway this process serves (one replica per process)."""
    gateway: Gateway = serve.get_replica_context().servable_object  # type: ignore[assignment]
    return gateway.access


# Added before ``serve.ingress`` copies the app, so every replica runs the guard.
app.add_middleware(AccessGuard, policy=_replica_policy)


@app.exception_handler(Refusal)
async def _refused(request: Request, refusal: Refusal) -> JSONResponse:
    return JSONResponse({"detail": refusal.detail}, refusal.status, refusal.headers)


def said(exc: Exception) -> str:
    """An actor's error message without Ray's traceback (and its file paths) around it."""
    return str(exc.cause if isinstance(exc, ray.exceptions.RayTaskError) else exc)


def check_bind(settings: Settings) -> None:
    """Refuse a public bind, or any Host accepted, without an API token."""
    if settings.api_token is not None:
        return
    if is_public(settings):
        raise ConfigurationError(
            f"refusing to serve the task API on {settings.http_host}: set "
            "PARALLEL_AGENTS_API_TOKEN, or bind to 127.0.0.1"
        )
    if ANY_HOST in AccessPolicy.from_settings(settings).hosts:
        raise ConfigurationError(
            "refusing PARALLEL_AGENTS_HTTP_ALLOWED_HOSTS=* without PARALLEL_AGENTS_API_TOKEN: "
            "any web page could then reach the task API through DNS rebinding"
        )


@serve.deployment(name="gateway", num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Gateway:
    """Answers HTTP from the system's actors."""

    def __init__(self, settings: Settings) -> None:
        check_bind(settings)
        self._settings = settings
        self.access = AccessPolicy.from_settings(settings)  # read by the guard middleware
        self._model_check = ModelCheck(settings)
        self._max_streams = settings.http_max_ongoing_requests - _STREAM_HEADROOM
        self._open_streams = 0  # event streams being sent now

    # --- helpers -----------------------------------------------------------------

    def _actor(self, name: str) -> Any:
        try:
            return ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            raise HTTPException(503, f"{name} is not running") from None

    async def _call(self, name: str, method: str, *args: Any, **kwargs: Any) -> Any:
        ref = getattr(self._actor(name), method).remote(*args, **kwargs)
        try:
            return await asyncio.wait_for(ref, _CALL_TIMEOUT_S)
        except (UnknownTaskError, UnknownConversationError) as exc:
            raise HTTPException(404, said(exc)) from None
        except UserInputError as exc:
            raise HTTPException(400, said(exc)) from None
        except CapacityError as exc:
            wait_s = 5 if exc.retry_after_s is None else max(1, math.ceil(exc.retry_after_s))
            raise HTTPException(429, said(exc), {"Retry-After": str(wait_s)}) from None
        except (TimeoutError, ray.exceptions.RayActorError) as exc:
            raise HTTPException(503, f"{name} did not answer: {type(exc).__name__}") from None

    async def _answers(self, name: str, method: str) -> Verdict:
        try:
            await self._call(name, method)
        except HTTPException as exc:
            return Verdict(False, str(exc.detail))
        return Verdict(True, "ok")

    async def _model_checks(self) -> dict[str, Verdict]:
        """The model endpoint's verdict per model; a simulator when one answers the calls."""
        simulation = self._settings.simulation
        if simulation == "off":
            verdicts = await self._model_check.verdicts(self._settings.anthropic_base_url)
            return {f"llm:anthropic:{model}": v for model, v in verdicts.items()}
        if simulation == "external":
            url = self._settings.anthropic_base_url
        else:
            try:
                url = await self._call(SIMULATOR_NAME, "url")
            except HTTPException as exc:
                return {"llm:simulator": Verdict(False, str(exc.detail))}
        verdicts = await self._model_check.verdicts(str(url))
        found = {"llm:simulator": Verdict(True, "ok")}
        found.update({f"llm:simulator:{model}": v for model, v in verdicts.items()})
        return found

    async def _snapshots(self) -> tuple[Any, list[Any], Any]:
        stats, pools, limiter = await asyncio.gather(
            self._call(ORCHESTRATOR_NAME, "stats"),
            self._call(ORCHESTRATOR_NAME, "pools"),
            self._call(LIMITER_NAME, "snapshot"),
        )
        return stats, pools, limiter

    async def _own_status(self, task_id: str, request: Request) -> dict[str, Any]:
        """The task's status if the caller submitted it; 404 (as for no task) if not."""
        status: dict[str, Any] = await self._call(ORCHESTRATOR_NAME, "status", task_id)
        if status.get("user") != self.access.caller(request.headers):
            raise HTTPException(404, f"no task with id {task_id!r}")  # as if none existed
        return status

    def _mine(self, rows: list[dict[str, Any]], request: Request) -> list[dict[str, Any]]:
        caller = self.access.caller(request.headers)
        return [row for row in rows if row.get("user") == caller]

    # --- routes ------------------------------------------------------------------

    @app.get("/health")
    async def health(self, request: Request) -> JSONResponse:
        """200 when Ray, every pool, the orchestrator and the model endpoint answer; else 503.

        ``checks`` names each part; the model endpoint has one entry per configured model,
        ``llm:anthropic:<model>`` (or ``llm:simulator:<model>``), saying how it failed.
        Without the token (when one is set) the body is only ``{"healthy": ...}``.
        """
        calls = {"orchestrator": (ORCHESTRATOR_NAME, "ping"), "limiter": (LIMITER_NAME, "snapshot")}
        calls.update({f"pool:{role.value}": (pool_actor_name(role), "snapshot") for role in Role})
        answers, models = await asyncio.gather(
            asyncio.gather(*(self._answers(name, method) for name, method in calls.values())),
            self._model_checks(),
        )
        checks = {"ray": Verdict(True, "ok"), **dict(zip(calls, answers, strict=True)), **models}
        healthy = all(verdict.ok for verdict in checks.values())
        body: dict[str, Any] = {"healthy": healthy}
        if self.access.authenticated(request.headers):
            body["checks"] = {label: v.text for label, v in checks.items()}
        return JSONResponse(body, 200 if healthy else 503)

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
            prometheus_text(
                stats, pools, limiter, daily_budget_usd=self._settings.daily_budget_usd
            ),
            media_type="text/plain; version=0.0.4",
        )

    # The body is read by hand (task_body): capped, and only after the guard has passed.
    @app.post("/tasks", status_code=202, openapi_extra=TASK_BODY_OPENAPI)
    async def submit(self, request: Request) -> dict[str, str]:
        """Accept a request (``{"text", "quick_answer", "documents", "cost_limit_usd",
        "conversation_id"}``); 202 with its task id and the conversation it answers in (a
        follow-up passes that id; another caller's is a 404). A document is ``{"name",
        "text"}`` or ``{"name", "data_base64"}``."""
        body = await task_body(request, self.access.max_body_bytes)
        documents = await asyncio.to_thread(task_documents, body, self._settings)  # PDF parsing
        caller = self.access.caller(request.headers)
        task_id = await self._call(
            ORCHESTRATOR_NAME,
            "submit",
            body.text,
            user=caller,
            quick=body.quick_answer,
            documents=documents or None,
            cost_limit_usd=body.cost_limit_usd,
            conversation_id=body.conversation_id,
        )
        return {"task_id": task_id, "conversation_id": body.conversation_id or task_id}

    @app.get("/tasks")
    async def history(self, request: Request, limit: int = 50) -> dict[str, Any]:
        """The caller's recent tasks, newest first (finished ones survive restarts)."""
        caller = self.access.caller(request.headers)
        rows = await self._call(ORCHESTRATOR_NAME, "history", limit, user=caller)
        return {"tasks": self._mine(rows, request)}

    @app.get("/history/daily")
    async def daily(self, days: int = 30) -> dict[str, Any]:
        """Per UTC day, oldest first: tasks, success rate, p50/p95 time to answer, tokens, cost.

        Over every caller's finished tasks, like ``/status``; ``days`` is 1 to 365.
        """
        if not 1 <= days <= MAX_TREND_DAYS:
            raise HTTPException(422, f"days must be 1 to {MAX_TREND_DAYS}, not {days}")
        return {"days": await self._call(ORCHESTRATOR_NAME, "daily", days)}

    @app.get("/tasks/{task_id}")
    async def task(self, task_id: str, request: Request) -> dict[str, Any]:
        """State, progress, per-microtask states and (when finished) the result."""
        return await self._own_status(task_id, request)

    @app.delete("/tasks/{task_id}")
    async def cancel(self, task_id: str, request: Request) -> dict[str, Any]:
        """Cancel a running task; what finished is kept."""
        await self._own_status(task_id, request)
        cancelled = await self._call(ORCHESTRATOR_NAME, "cancel", task_id)
        return {"task_id": task_id, "cancelled": cancelled}

    @app.get("/tasks/{task_id}/events")
    async def events(self, task_id: str, request: Request) -> StreamingResponse:
        """Server-sent events: every progress event, then the task's result."""
        await self._own_status(task_id, request)  # 404 before streaming
        if self._open_streams >= self._max_streams:
            raise HTTPException(
                503,
                f"{self._open_streams} event streams are open, the limit is "
                f"{self._max_streams}; poll GET /tasks/{task_id} or try again later",
                {"Retry-After": "5"},
            )
        return StreamingResponse(
            self._counted(self._stream(task_id)), media_type="text/event-stream"
        )

    async def _counted(self, stream: AsyncIterator[str]) -> AsyncIterator[str]:
        """``stream``, counted in ``_open_streams`` while it is being sent."""
        self._open_streams += 1
        try:
            async for chunk in stream:
                yield chunk
        finally:
            self._open_streams -= 1

    async def _stream(self, task_id: str) -> AsyncIterator[str]:
        orchestrator = self._actor(ORCHESTRATOR_NAME)
        after = 0
        while True:
            batch: list[ProgressEvent] = await orchestrator.events.remote(task_id, after, 10.0)
            for event in batch:
                yield f"event: progress\ndata: {event.model_dump_json()}\n\n"
            after = batch[-1].next_after if batch else after
            if any(event.kind == "done" for event in batch):
                break
            if not batch:
                yield ": keep-alive\n\n"
        report = await orchestrator.wait.remote(task_id)
        yield f"event: result\ndata: {report.model_dump_json()}\n\n"

    @app.get("/", response_class=HTMLResponse)
    async def dashboard(self) -> HTMLResponse:
        """A live dashboard page: pools, active tasks, throughput and latency over time."""
        page = resources.files("actors.gateway").joinpath("dashboard.html").read_text()
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.get("/tasks-active")
    async def active(self, request: Request) -> dict[str, Any]:
        """The caller's running tasks with their progress (for the dashboard page)."""
        return {"tasks": self._mine(await self._call(ORCHESTRATOR_NAME, "active"), request)}


def application(settings: Settings, name: str = "gateway") -> Application:
    """The gateway bound to ``settings``, taking ``http_max_ongoing_requests`` at once."""
    gateway = Gateway.options(  # type: ignore[attr-defined]
        name=name, max_ongoing_requests=settings.http_max_ongoing_requests
    )
    bound: Application = gateway.bind(settings)
    return bound


def deploy(settings: Settings) -> str:
    """Start Serve on the configured host and port and run the app; returns its URL."""
    check_bind(settings)
    serve.start(
        detached=True, http_options={"host": settings.http_host, "port": settings.http_port}
    )
    serve.run(application(settings), name=APP_NAME, route_prefix="/")
    return f"http://{settings.http_host}:{settings.http_port}"


def undeploy() -> None:
    """Stop the app and Serve itself (its proxies stop listening)."""
    serve.shutdown()
