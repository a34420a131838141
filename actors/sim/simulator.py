"""An Anthropic-compatible Messages API on loopback, as unkind as the real one.

With no ``ANTHROPIC_API_KEY`` the system points the official SDK at this server, so the
demo, the tests and the benchmark run the real SDK code path offline::

    with SimulatorServer(SimulatorSettings(latency="zero")) as sim:
        client = anthropic.AsyncAnthropic(api_key="sim", base_url=sim.url)

Routes: ``POST /v1/messages``, ``POST /v1/messages/count_tokens`` (both need ``x-api-key``
or ``Authorization: Bearer``), and for operators ``GET /stats``, ``POST /stats/reset``,
``POST /config`` (partial ``SimulatorSettings`` as JSON), ``GET /requests`` (the last
10,000 requests; ``?limit=N``), ``GET /health``.

Answers (``fake_content``) depend only on seed, model, system, messages, schema and
options, and behave like Claude's by default, not kindly: models that think start with a
``thinking`` block whose tokens count toward ``max_tokens`` and ``output_tokens``; answers
have realistic sizes; an answer over ``max_tokens`` is cut (JSON mid-value, a forced
tool's input to what was complete); what a model refuses is a 400
(``invalid_request_error``): disabling thinking on Opus 5.5 / Fable, forced tools there,
an unknown or unsupported ``output_config.effort``. Per-model facts: ``actors.llm.catalog``.
Structured output works both ways the SDK asks for it: a forced tool (``tool_use`` block)
and ``output_config.format`` json_schema (a text block holding the JSON).

``"stream": true`` gets the same answer as server-sent events (``fake_stream``), paced over
the same time as the non-streamed answer would take: message_start after the model's
first-token time, thinking, then deltas of a few tokens at the model's speed (a
``[sim-latency S]`` marker spreads its S seconds the same way). Faults drawn before the
answer (429, 529, 500) stay HTTP errors; a hang sends message_start and then nothing for
``hang_s``; ``rate_stream_error`` ends that share of streams halfway with an
``overloaded_error`` event.

Knobs (``actors.config.SimulatorSettings``, changeable at runtime):

- ``seed``: content and the latency/fault stream.
- ``latency``: ``realistic`` (default: the model's first-token time plus output tokens,
  thinking included, at its speed) | ``zero`` | ``fixed`` (``median_s``) | ``lognormal``
  (``median_s``, ``sigma``); plus ``per_output_token_s`` per output token; every such
  delay times ``time_scale`` (default 0.1). Markers in the last user message
  (``fake_request``): ``[sim-latency S]`` (exactly S seconds, ``time_scale`` not applied),
  ``[sim-output-tokens N]`` (a visible answer of ~N tokens), ``[sim-refuse]``.
- faults, checked in this order on every admitted request: ``rate_hang`` (sleep ``hang_s``,
  literal seconds, then 500), ``rate_429`` (``retry-after`` = ``retry_after_s``),
  ``rate_529``, ``rate_500``, ``rate_malformed`` (structured answers that violate their
  schema), ``rate_refusal`` (``stop_reason: "refusal"``, no text); for streams only,
  ``rate_stream_error`` (an ``overloaded_error`` event mid-stream, drawn on its own).
- own limits: ``rpm_limit`` and ``concurrency_limit`` → 429 with ``retry-after`` and
  ``anthropic-ratelimit-requests-*`` headers (sent on every response while a limit is set).

Latency and fault draws come from one ``random.Random(seed)`` stream in arrival order, so a
run with the same arrival order sees the same faults; a retried request draws again.

The request log (``GET /requests``) and ``/stats``: see ``simulator_state``.

Layout: this module is the HTTP app and where it runs (``SimulatorServer`` in a thread,
``SimulatorActor`` in Ray, ``run_forever`` for the CLI); ``simulator_state`` holds limits,
draws, delays and stats; ``fake_request`` reads requests, ``fake_thinking`` decides thinking
and refusals, ``fake_content`` assembles the answers from ``fake_text`` (prose),
``fake_plan`` (plans), ``fake_claims`` (claims, reconciling) and ``json_instance``;
``fake_stream`` cuts an answer into stream events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import threading
import time
from functools import partial
from typing import Any

import ray
from aiohttp import web
from pydantic import ValidationError

from actors.config import SimulatorSettings
from actors.llm.ledger import CALL_HEADER
from actors.sim import fake_cache, fake_content, fake_request, fake_stream
from actors.sim.simulator_state import (
    LOG_FIELDS,
    LOG_SIZE,
    ApiError,
    SimulatorState,
)

logger = logging.getLogger(__name__)

_Handler = Any  # aiohttp's handler type is awkward to spell; handlers are plain coroutines
_SHAPE_HEADERS = {"x-simulated": "true"}
# The request's own request-id, set by the middleware (a stream sends its headers early).
_REQUEST_ID = web.RequestKey("request_id", str)


# --- request parsing ------------------------------------------------------------------


def _bad(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _bad(f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _bad("Request body must be a JSON object.")
    return body


def _check_auth(request: web.Request) -> None:
    bearer = request.headers.get("authorization", "")
    has_bearer = bearer.lower().startswith("bearer ") and bearer[7:].strip()
    if not request.headers.get("x-api-key") and not has_bearer:
        raise ApiError(401, "authentication_error", "x-api-key header is required")


def _validate(body: dict[str, Any], need_max_tokens: bool) -> None:
    try:
        fake_request.check_body(body, need_max_tokens)
    except ValueError as exc:
        raise _bad(str(exc)) from exc


# --- handlers -------------------------------------------------------------------------


async def _messages(sim: SimulatorState, request: web.Request) -> web.StreamResponse:
    """POST /v1/messages: admit, draw faults, answer, wait as long as the answer takes."""
    entry: dict[str, Any] = {"seq": sim.next_seq(), "at": time.time(), "status": 500}
    entry.update(dict.fromkeys(LOG_FIELDS), latency_s=0.0)
    entry["call_id"] = request.headers.get(CALL_HEADER)
    started, usage, admitted = time.monotonic(), None, False
    try:
        _check_auth(request)
        body = await _json_body(request)
        _validate(body, need_max_tokens=True)
        try:
            kind, purpose, options = fake_content.describe(body)
            fake_cache.breakpoints(body)  # more than 4 is a 400 before anything else
        except ValueError as exc:
            raise _bad(str(exc)) from exc
        streamed = bool(body.get("stream"))
        entry.update(
            prompt_sha=fake_content.prompt_sha(body),
            model=body["model"],
            kind=kind.value,
            purpose=purpose.value,
            microtask=fake_content.microtask_id(body),
            documents=fake_content.document_names(body),
            conversation=fake_content.conversation_heard(body),
            max_tokens=body["max_tokens"],
            effort=options.effort,
            stream=streamed,
        )
        sim.admit()
        admitted = True
        draw = sim.draw(streamed)
        cfg = sim.config
        hang = draw.fault == "hang"
        if hang and not streamed:
            await asyncio.sleep(cfg.hang_s)  # literal seconds: it must outlast client timeouts
        error = None if hang and streamed else sim.fault_error(draw.fault)
        if error is not None:
            raise error
        reply = fake_content.message(
            body, cfg.seed, malformed=draw.fault == "malformed", refuse=draw.fault == "refusal"
        )
        entry.update(
            thinking_tokens=reply.thinking_tokens,
            output_tokens=reply.output_tokens,
            stop_reason=reply.stop_reason,
        )
        hinted = fake_content.latency_hint(body)
        delay = (
            hinted if hinted is not None else sim.delay(draw, body["model"], reply.output_tokens)
        )
        entry["delay_s"] = round(delay, 6)
        usage_in = reply.payload["usage"]
        begins_in = sim.pacing(delay, body["model"], reply.output_tokens)[0]
        cached = sim.cache.account(
            body, usage_in["input_tokens"], time.monotonic(), begins_in, cfg.time_scale
        )
        usage_in.update(
            input_tokens=cached.uncached,
            cache_creation_input_tokens=cached.written,
            cache_read_input_tokens=cached.read,
        )
        entry.update(
            cache_read=cached.read, cache_write=cached.written, cache_keys=list(cached.keys)
        )
        response: web.StreamResponse
        if streamed:
            stream = fake_stream.events(reply, fake_content.seeded_rng(entry["prompt_sha"]))
            if hang:
                stream = stream[:1]  # message_start, then nothing for hang_s
            elif draw.stream_error:
                stream = fake_stream.interrupted(stream)
            response = await _stream(sim, request, entry, stream, delay, started, hang)
        else:
            await asyncio.sleep(delay)
            entry.update(status=200, first_token_s=round(time.monotonic() - started, 6))
            response = web.json_response(reply.payload, headers=sim.limit_headers())
        if entry["status"] == 200:
            usage = (reply.payload["usage"]["input_tokens"], reply.output_tokens)
        return response
    except ApiError as exc:
        entry["status"] = exc.status
        exc.headers.update(sim.limit_headers())
        raise
    except asyncio.CancelledError:
        entry["status"] = 499  # the client went away (usually its timeout during a hang)
        raise
    finally:
        if admitted:
            sim.release()
        entry["latency_s"] = round(time.monotonic() - started, 6)
        sim.record(entry, usage)


async def _stream(
    sim: SimulatorState,
    request: web.Request,
    entry: dict[str, Any],
    stream: list[fake_stream.Event],
    delay: float,
    started: float,
    hang: bool,
) -> web.StreamResponse:
    """Send ``stream`` as server-sent events over ``delay`` seconds, paced like the model.

    Sets ``entry``'s status once the stream has ended: 200 when it was sent to the end.
    ``hang``: after the stream, ``hang_s`` of silence (literal seconds) and then an error.
    """
    first_s, per_token_s = sim.pacing(delay, entry["model"], entry["output_tokens"])
    headers = {
        "content-type": "text/event-stream",
        "cache-control": "no-cache",
        **sim.limit_headers(),
        **_SHAPE_HEADERS,
        "request-id": request.get(_REQUEST_ID, ""),
    }
    await asyncio.sleep(first_s)
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    for event in stream:
        if event.tokens and per_token_s:
            await asyncio.sleep(event.tokens * per_token_s)
        await response.write(event.encode())
        if event.answer and entry["first_token_s"] is None:
            entry["first_token_s"] = round(time.monotonic() - started, 6)
    if hang:
        await asyncio.sleep(sim.config.hang_s)
        failed = fake_stream.error_event("api_error", "Internal server error (simulated hang)")
        await response.write(failed.encode())
    await response.write_eof()
    entry["status"] = 500 if hang else 200 if stream[-1].name == "message_stop" else 529
    return response


async def _count_tokens(sim: SimulatorState, request: web.Request) -> web.Response:
    """POST /v1/messages/count_tokens."""
    _check_auth(request)
    body = await _json_body(request)
    _validate(body, need_max_tokens=False)
    sim.count_tokens_call()
    return web.json_response({"input_tokens": fake_content.input_tokens(body)})


async def _get_stats(sim: SimulatorState, request: web.Request) -> web.Response:
    """GET /stats."""
    return web.json_response(sim.stats())


async def _reset_stats(sim: SimulatorState, request: web.Request) -> web.Response:
    """POST /stats/reset."""
    sim.reset_stats()
    return web.json_response({"ok": True})


async def _post_config(sim: SimulatorState, request: web.Request) -> web.Response:
    """POST /config: change some knobs, answer with the whole configuration."""
    try:
        sim.reconfigure(**await _json_body(request))
    except (ValueError, ValidationError) as exc:
        raise _bad(str(exc)) from exc
    return web.json_response(sim.config.model_dump())


async def _get_requests(sim: SimulatorState, request: web.Request) -> web.Response:
    """GET /requests?limit=N: the most recent requests, oldest first."""
    try:
        limit = int(request.query.get("limit", LOG_SIZE))
    except ValueError as exc:
        raise _bad("limit must be an integer") from exc
    return web.json_response({"requests": sim.recent(limit)})


async def _health(sim: SimulatorState, request: web.Request) -> web.Response:
    """GET /health."""
    return web.json_response({"status": "ok", "simulated": True})


@web.middleware
async def _anthropic_shape(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Every response: ``x-simulated``, ``request-id``, and errors in Anthropic's JSON shape."""
    request_id = f"req_sim_{secrets.token_hex(12)}"
    request[_REQUEST_ID] = request_id
    try:
        response: web.StreamResponse = await handler(request)
    except ApiError as exc:
        response = _error_response(exc, request_id)
    except web.HTTPException as exc:
        type_ = "not_found_error" if exc.status == 404 else "invalid_request_error"
        response = _error_response(ApiError(exc.status, type_, exc.reason), request_id)
    except Exception:
        logger.exception("simulator failed on %s %s", request.method, request.path)
        response = _error_response(ApiError(500, "api_error", "Internal server error"), request_id)
    if not response.prepared:  # a stream sent its headers itself
        response.headers.update(_SHAPE_HEADERS)
        response.headers["request-id"] = request_id
    return response


def _error_response(exc: ApiError, request_id: str) -> web.Response:
    body = {
        "type": "error",
        "error": {"type": exc.type, "message": str(exc)},
        "request_id": request_id,
    }
    return web.json_response(body, status=exc.status, headers=exc.headers)


def build_app(config: SimulatorSettings) -> web.Application:
    """The simulator as an aiohttp application (serve it with ``SimulatorServer`` or a runner)."""
    return _app_for(SimulatorState(config))


def _app_for(sim: SimulatorState) -> web.Application:
    app = web.Application(middlewares=[_anthropic_shape], client_max_size=32 * 1024**2)
    # Handlers get the state bound in; no app-key lookup (Ray may pickle this module by value).
    app.router.add_post("/v1/messages", partial(_messages, sim))
    app.router.add_post("/v1/messages/count_tokens", partial(_count_tokens, sim))
    app.router.add_get("/stats", partial(_get_stats, sim))
    app.router.add_post("/stats/reset", partial(_reset_stats, sim))
    app.router.add_post("/config", partial(_post_config, sim))
    app.router.add_get("/requests", partial(_get_requests, sim))
    app.router.add_get("/health", partial(_health, sim))
    return app


# --- hosting: a thread, a Ray actor, the CLI ----------------------------------------------


async def _serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    # Cancel handlers whose client left, so a hung request frees its concurrency slot.
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


def _url(host: str, port: int, wildcard_host: str) -> str:
    shown = wildcard_host if host in ("", "0.0.0.0", "::") else host
    return f"http://{shown}:{port}"


class SimulatorServer:
    """The simulator on its own event loop in a background thread (for tests and scripts)."""

    def __init__(self, config: SimulatorSettings | None = None) -> None:
        self._sim = SimulatorState(config or SimulatorSettings())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._url = ""

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving (port 0: any free port) and return the base URL."""
        if self._url:
            return self._url
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="llm-simulator", daemon=True
        )
        self._thread.start()
        # A fresh app per start: an aiohttp app stays bound to the loop it first ran on.
        app = _app_for(self._sim)
        future = asyncio.run_coroutine_threadsafe(_serve(app, host, port), self._loop)
        try:
            self._runner, bound = future.result(timeout=30)
        except BaseException:
            self.stop()  # e.g. the port is taken: do not leave the thread behind
            raise
        self._url = _url(host, bound, "127.0.0.1")
        logger.info("LLM simulator listening on %s", self._url)
        return self._url

    @property
    def url(self) -> str:
        if not self._url:
            raise RuntimeError("the simulator is not started; call start() first")
        return self._url

    def stats(self) -> dict[str, Any]:
        return self._call(self._sim.stats)

    def reset_stats(self) -> None:
        self._call(self._sim.reset_stats)

    def reconfigure(self, **changes: Any) -> None:
        self._call(lambda: self._sim.reconfigure(**changes))

    def recent_requests(self, limit: int = LOG_SIZE) -> list[dict[str, Any]]:
        return self._call(lambda: self._sim.recent(limit))

    def stop(self) -> None:
        """Stop serving and end the thread; in-flight requests are cancelled."""
        if self._loop is None or self._thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
        self._loop = self._thread = self._runner = None
        self._url = ""

    def _call(self, fn: Any) -> Any:
        # State lives on the server's loop; run there so a read never sees a half update.
        if self._loop is None:
            return fn()

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    def __enter__(self) -> SimulatorServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


_REBIND_S = 0.5  # a restarted simulator actor retries its port this often


# Restartable: every client holds the URL, so a restarted actor serves on the same port
# again (start_system picks a fixed one); its state (log, stats, runtime changes) is fresh.
@ray.remote(num_cpus=0, max_restarts=-1)
class SimulatorActor:
    """The simulator inside a Ray actor's own event loop (an async actor).

    It serves from construction on, so a restart (which re-runs ``__init__``) serves
    again without being asked; ``start`` returns the URL once it listens. Port 0 picks
    a free port, which a restart would not keep: give a fixed port where that matters.
    """

    def __init__(self, config: SimulatorSettings, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sim = SimulatorState(config)
        self._runner: web.AppRunner | None = None
        self._url = ""
        # Ray runs an async actor's __init__ on its event loop: serving starts right here.
        self._serving = asyncio.get_running_loop().create_task(self._serve(host, port))

    async def _serve(self, host: str, port: int) -> None:
        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        while True:
            try:
                self._runner, bound = await _serve(_app_for(self._sim), host, port)
                break
            except OSError as exc:
                if not restarted:
                    raise  # a first start on a taken port fails loudly, in start()
                # A restart must get its old port back: wait for whoever holds it.
                logger.warning("simulator port %s:%s busy after a restart (%s)", host, port, exc)
                await asyncio.sleep(_REBIND_S)
        self._url = _url(host, bound, ray.util.get_node_ip_address())
        logger.info("LLM simulator actor listening on %s", self._url)

    async def start(self) -> str:
        """The base URL, once the server listens (raises if it could not bind)."""
        await asyncio.shield(self._serving)
        return self._url

    @ray.method(max_task_retries=-1)  # a read: retried across a restart
    async def url(self) -> str:
        await asyncio.shield(self._serving)
        return self._url

    async def pid(self) -> int:
        """This process's id (chaos tests kill it)."""
        return os.getpid()

    async def stats(self) -> dict[str, Any]:
        return self._sim.stats()

    async def reset_stats(self) -> None:
        self._sim.reset_stats()

    async def recent_requests(self, limit: int = LOG_SIZE) -> list[dict[str, Any]]:
        return self._sim.recent(limit)

    async def reconfigure(self, changes: dict[str, Any]) -> None:
        self._sim.reconfigure(**changes)


def run_forever(config: SimulatorSettings, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve until interrupted (the CLI's ``parallel-agents simulator``)."""

    async def main() -> None:
        runner, bound = await _serve(build_app(config), host, port)
        logger.info("LLM simulator listening on %s (Ctrl-C to stop)", _url(host, bound, host))
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
