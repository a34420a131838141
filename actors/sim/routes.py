"""The simulator's HTTP app: the Messages API routes (``POST /v1/messages`` streamed or
not, ``count_tokens``), the operators' routes (``/stats``, ``/config``, ``/requests``,
``/health``) and the Anthropic-shaped errors and headers around them. The behaviour is
described in ``actors.sim.simulator``; where it runs is there too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from functools import partial
from typing import Any

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
    return app_for(SimulatorState(config))


def app_for(sim: SimulatorState) -> web.Application:
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
