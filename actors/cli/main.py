"""``parallel-agents`` (also ``python -m actors``): run a request, run the simulator.

Logging is configured here and nowhere else; progress goes to stderr, the
answer (or with ``--json`` one JSON object) to stdout, and nothing else ever does
(``actors.cli.live_view`` decides how each is shown):
while Ray runs in this process, file descriptor 1 points at stderr (``_reserve_stdout``).
An invalid setting is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from rich.console import Console

from actors.cli.live_view import RunView
from actors.config import Settings, SimulatorSettings, load_settings
from actors.engine.documents import Document, check_limits, check_size, read_document
from actors.engine.intake import clean_request
from actors.errors import (
    ConfigurationError,
    ParallelAgentsError,
    UnknownConversationError,
    UserInputError,
)
from actors.models import EventKind, PoolSnapshot, ProgressEvent, RunReport, TaskState
from actors.observe.logs import log_to_stderr

log = logging.getLogger("actors.cli.main")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_CANCELLED = 0, 1, 2, 3, 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parallel-agents",
        description="Many Claude agents in parallel on one request, on Ray.",
        epilog="Without ANTHROPIC_API_KEY an embedded simulator answers (marked as simulated).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run one request end to end",
        description="Run one request end to end: plan, parallel microtasks, merged answer. "
        "Starts a local Ray if none is running.",
        epilog="What is shown where: progress goes to stderr (on a terminal a live display: "
        "a bar per pool role, the microtasks running, the answer as it is written; "
        "elsewhere plain lines), then a summary line. The answer goes to stdout: on a "
        "terminal once, rendered as Markdown, when the task ends; piped, as it is written, "
        "ending with exactly the final answer (if the writer started over, a separator on "
        "stderr and the whole final answer follow). --json: one JSON object on stdout "
        "and nothing else there.",
    )
    run.add_argument("text", help="the request; '-' reads it from standard input")
    run.add_argument(
        "--file",
        action="append",
        default=[],
        dest="files",
        metavar="PATH",
        help="a document the request is about: plain text, Markdown or PDF; repeatable "
        "(limits: PARALLEL_AGENTS_MAX_DOCUMENT_BYTES per file, PARALLEL_AGENTS_MAX_DOCUMENTS)",
    )
    run.add_argument("--json", action="store_true", help="print one JSON object (the report)")
    run.add_argument("--address", help="Ray cluster address (default: running one, or local)")
    run.add_argument("--quiet", action="store_true", help="no progress or summary on stderr")
    run.add_argument(
        "--quick",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a short quick take first while the plan runs, on stderr's live view "
        "(default: PARALLEL_AGENTS_QUICK_ANSWER, off)",
    )
    run.add_argument(
        "--cost-limit",
        type=float,
        default=None,
        metavar="USD",
        help="stop the task at this cost and answer with what finished (default: "
        "PARALLEL_AGENTS_TASK_BUDGET_USD, $5)",
    )
    following = run.add_mutually_exclusive_group()
    following.add_argument(
        "--continue",
        action="store_true",
        dest="follow_last",
        help="follow up on the last conversation run from here: the request's prompts "
        "carry its earlier turns (a new conversation if there is none)",
    )
    following.add_argument(
        "--conversation",
        metavar="ID",
        help="follow up in conversation ID (printed with each task, and conversation_id in --json)",
    )
    run.add_argument(
        "--timeline",
        metavar="FILE.png",
        help="also write a Gantt chart of the run: one lane per agent, bars coloured by role",
    )

    start = commands.add_parser(
        "start",
        help="bring up the whole system in the background",
        description="Join the Ray cluster at RAY_ADDRESS (or the one `ray start` last "
        "started), else start a Ray head on 127.0.0.1 with the dashboard; then the agent "
        "pools, the orchestrator, the HTTP app on PARALLEL_AGENTS_HTTP_HOST:PORT (default "
        "127.0.0.1:9090) and, when TELEGRAM_BOT_TOKEN is set, the Telegram bot. Returns once "
        "/health is 200. Refuses to join a running system with other settings.",
    )
    start.add_argument(
        "--adopt",
        action="store_true",
        help="join a running system even if its pools, models or home differ (as it is)",
    )
    stop = commands.add_parser(
        "stop",
        help="tear down what start started",
        description="Stop the bot and the HTTP app, let running tasks finish (up to "
        "--drain-timeout; unfinished ones resume on the next start), stop the actors, and "
        "Ray if start started it. Says what it left running.",
    )
    stop.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long running tasks may take to finish (default 30)",
    )
    status = commands.add_parser(
        "status", help="show the running system's status", description="Print /status readably."
    )
    status.add_argument("--json", action="store_true", help="print the raw /status JSON")

    commands.add_parser(
        "bench",
        add_help=False,
        help="benchmark against the ideal makespan and against peers (see bench/README.md)",
    )

    sim = commands.add_parser(
        "simulator",
        help="run the Anthropic-compatible simulator standalone",
        description="Serve the embedded Anthropic-compatible simulator (POST /v1/messages). "
        "Point ANTHROPIC_BASE_URL at it.",
    )
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8765)
    sim.add_argument("--seed", type=int)
    sim.add_argument("--latency", choices=["zero", "fixed", "lognormal"])
    sim.add_argument("--median-s", type=float, help="median (or fixed) latency in seconds")
    sim.add_argument("--sigma", type=float, help="lognormal sigma (tail weight)")
    sim.add_argument("--rate-429", type=float, help="fraction answered 429 with retry-after")
    sim.add_argument("--rate-529", type=float, help="fraction answered 529 overloaded")
    sim.add_argument("--rate-500", type=float, help="fraction answered 500")
    sim.add_argument("--rate-hang", type=float, help="fraction that hang")
    sim.add_argument("--rate-malformed", type=float, help="fraction with schema-breaking JSON")
    sim.add_argument("--rpm-limit", type=int, help="own requests-per-minute limit")
    sim.add_argument("--concurrency-limit", type=int, help="own concurrent-request limit")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # the benchmark has its own options (bench --help)
        from actors.bench.cli import main as bench_main

        return bench_main(argv[1:])
    args = _parser().parse_args(argv)
    log_to_stderr(args.verbose)
    try:
        settings = load_settings()
    except ConfigurationError as exc:  # before anything starts: one line, not a traceback
        print(f"parallel-agents: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "simulator":
            return _simulator(args, settings)
        if args.command in ("start", "stop", "status"):
            return _control(args, settings)
        return _run(args, settings)
    except UserInputError as exc:
        print(f"parallel-agents: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ParallelAgentsError as exc:
        print(f"parallel-agents: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _control(args: argparse.Namespace, settings: Settings) -> int:
    from actors.runtime import control

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    url = control.http_url(settings)
    if args.command == "start":
        answer = _reserve_stdout()
        control.start(settings, adopt=args.adopt, say=say)
        print(
            f"parallel-agents is running: {url} (dashboard {url}/, Ray dashboard 127.0.0.1:8265)",
            file=answer,
            flush=True,
        )
        return EXIT_OK
    if args.command == "stop":
        answer = _reserve_stdout()
        stopped = control.stop(settings, drain_timeout_s=args.drain_timeout, say=say)
        for item in stopped.left:
            say(f"left running: {item}")
        state = "not stopped" if stopped.refused else "stopped"
        print(f"parallel-agents is {state}", file=answer, flush=True)
        return EXIT_FAILED if stopped.refused else EXIT_OK
    body = control.status(settings)
    if body is None:
        print(f"parallel-agents is not running (nothing answers at {url})", file=sys.stderr)
        return EXIT_NOT_RUNNING
    print(json.dumps(body, indent=2) if args.json else control.render_status(body, url))
    return EXIT_OK


def _simulator(args: argparse.Namespace, settings: Settings) -> int:
    from actors.sim.simulator import run_forever

    changes = {
        key: value
        for key, value in vars(args).items()
        if key in SimulatorSettings.model_fields and value is not None
    }
    config = settings.simulator.model_copy(update=changes)
    SimulatorSettings.model_validate(config.model_dump())
    run_forever(config, args.host, args.port)
    return EXIT_OK


def _run(args: argparse.Namespace, settings: Settings) -> int:
    raw = sys.stdin.buffer.read() if args.text == "-" else args.text
    text = clean_request(raw, settings.max_request_chars)  # fail before starting Ray
    documents = _read_files(args.files, settings)  # ... and so does a refused file
    if args.cost_limit is not None and not args.cost_limit > 0:
        raise UserInputError(f"--cost-limit must be above 0, not {args.cost_limit:g}")
    answer = _reserve_stdout()
    view = RunView(
        Console(file=sys.stderr), Console(file=answer), json_out=args.json, quiet=args.quiet
    )
    try:
        # The actors of a system this run starts get no bot or API token (they need neither).
        report = _submit_and_follow(args, settings.for_actors(), text, documents, view)
    finally:
        view.close()  # the terminal as it was before anything else is printed
    if args.timeline:
        from actors.observe.plots import save_timeline

        print(f"timeline written to {save_timeline(report, args.timeline)}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2), file=answer)
        answer.flush()
    else:
        view.show_answer(report, summary_line(report))
    if report.state is TaskState.CANCELLED:
        return EXIT_CANCELLED
    return EXIT_OK if report.state is TaskState.DONE else EXIT_FAILED


def _read_files(paths: list[str], settings: Settings) -> list[Document]:
    """The ``--file`` documents, read and checked; ``UserInputError`` names the first refused."""
    documents = []
    for path in paths:
        try:
            with Path(path).open("rb") as file:
                check_size(path, os.fstat(file.fileno()).st_size, settings)  # before reading it
                data = file.read()
        except OSError as exc:
            raise UserInputError(f"cannot read {path}: {exc.strerror or exc}") from None
        documents.append(read_document(path, data, settings))
    check_limits(documents, settings)
    return documents


def _reserve_stdout() -> TextIO:
    """The real stdout, kept for the answer; from now on file descriptor 1 is stderr.

    Ray's driver prints raylet warnings to ``sys.stdout`` from a thread of its own,
    whenever they come (after the answer, too: "(raylet) WARNING: 8 PYTHON worker
    processes have been started ...") and at exit; C code and the processes started
    from here write to fd 1 directly. So fd 1 itself is pointed at stderr, for the rest
    of this process, and ``--json | jq`` sees one object.
    """
    sys.stdout.flush()
    try:
        kept = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no stdout at all: nothing to keep clean
        return sys.stdout
    return os.fdopen(kept, "w", encoding=sys.stdout.encoding or "utf-8", closefd=True)


def _submit_and_follow(
    args: argparse.Namespace,
    settings: Settings,
    text: str,
    documents: list[Document],
    progress: RunView,
) -> RunReport:
    """Find or start the system, submit ``text`` with ``documents``, show its progress,
    return the report."""

    import ray

    from actors.runtime.system import find_system, init_ray, start_system

    progress.say("connecting to Ray ...")
    init_ray(args.address)
    system = find_system()
    if system is None:
        sizes = ", ".join(f"{r.value} {s.min}-{s.max}" for r, s in settings.pools.items())
        progress.say(f"starting pools ({sizes}) ...")
        started = time.monotonic()
        system = start_system(settings, resume=False)  # a private run: only its own task
        progress.say(f"pools warm in {time.monotonic() - started:.1f} s")
    orchestrator = system.orchestrator
    conversation_id: str | None = args.conversation
    if args.follow_last:
        latest: ray.ObjectRef = orchestrator.latest_conversation.remote(None)
        conversation_id = ray.get(latest)
        if conversation_id is None:
            progress.say("no earlier conversation: this request starts one")
    submitted: ray.ObjectRef = orchestrator.submit.remote(
        text,
        quick=args.quick,
        documents=documents or None,
        cost_limit_usd=args.cost_limit,
        conversation_id=conversation_id,
    )
    try:
        task_id = str(ray.get(submitted))
    except UnknownConversationError as exc:  # nothing was submitted
        said = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) else exc
        # With --continue it was deleted (expired, or forgotten) since it was looked up.
        hint = "" if args.follow_last else "; --continue follows up on the last one"
        raise UserInputError(f"{said}{hint}") from None
    progress.say(f"task {task_id} submitted in conversation {conversation_id or task_id}")
    after = 0
    try:
        while True:
            events: list[ProgressEvent] = ray.get(orchestrator.events.remote(task_id, after, 0.5))
            after = events[-1].next_after if events else after
            pools: list[PoolSnapshot] = ray.get(orchestrator.pools.remote())
            progress.update(events, pools)
            if any(e.kind is EventKind.DONE for e in events):
                break
    except KeyboardInterrupt:
        progress.say("cancelling ...")
        ray.get(orchestrator.cancel.remote(task_id))
    report: RunReport = ray.get(orchestrator.wait.remote(task_id))
    return report


def summary_line(report: RunReport) -> str:
    """One human line with the figures that matter."""
    label = " [simulated: no ANTHROPIC_API_KEY]" if report.simulated else ""
    return (
        f"{report.state.value}: {report.complexity.value}, {report.microtasks} microtasks on "
        f"{report.agents} agents (peak {report.max_parallel} at once), "
        f"wall {report.wall_s:.1f} s, work {report.work_s:.1f} s, "
        f"parallelism {report.parallelism:.1f} (work / wall), "
        f"{report.retries} retries, {report.failed} failed, "
        f"{report.input_tokens + report.output_tokens:,} tokens, ${report.cost_usd:.4f}{label}"
    )


if __name__ == "__main__":
    sys.exit(main())
