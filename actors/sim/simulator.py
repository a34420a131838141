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

Layout: this module is where the HTTP app (``routes``) runs (``SimulatorServer`` in a thread,
``SimulatorActor`` in Ray, ``run_forever`` for the CLI); ``simulator_state`` holds limits,
draws, delays and stats; ``fake_request`` reads requests, ``fake_thinking`` decides thinking
and refusals, ``fake_content`` assembles the answers from ``fake_text`` (prose),
``fake_plan`` (plans), ``fake_claims`` (claims, reconciling) and ``json_instance``;
``fake_stream`` cuts an answer into stream events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from typing import Any

import ray
from aiohttp import web

from actors.config import SimulatorSettings
from actors.sim.routes import app_for, build_app
from actors.sim.simulator_state import (
    LOG_SIZE,
    SimulatorState,
)

logger = logging.getLogger(__name__)


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
        app = app_for(self._sim)
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
                self._runner, bound = await _serve(app_for(self._sim), host, port)
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
