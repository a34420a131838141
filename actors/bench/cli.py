"""``parallel-agents bench``: run the benchmark and write bench/results.{md,png,json};
``--realtime``: the critical-path run, written to bench/realtime.{md,png,json}."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from actors.config import Settings, load_settings
from actors.errors import ConfigurationError
from actors.observe.logs import log_to_stderr

DESCRIPTION = """\
Benchmark this system against its limit and its peers. Every contestant runs the same
fixed plans (wide fan-out, the four-level research -> analysis -> validation -> generation
shape, a chain, diamonds, a large DAG) against one Anthropic-compatible simulator through
the same SDK, with the same per-microtask latencies (seeded; zero, fixed, and lognormal
with a heavy tail) and the same agents per role.

Contestants: sequential (one agent), asyncio (an in-process dependency-driven executor,
the no-Ray floor), ray (this system: orchestrator, pools, agents, limiter, with backups),
ray-no-backups, and langgraph (StateGraph with Send fan-out; skipped when not installed).

Figures: makespan, speedup versus sequential, efficiency = ideal / measured (ideal: the
critical path or the busiest role's work per agent), schedule efficiency = greedy list
schedule / measured, overhead per microtask = (measured - greedy) / microtasks (at zero
latency: all of it is overhead), p50/p99 microtask latency, backups on versus off under
per-attempt heavy-tailed draws, pool warm-up (apart from makespans), peak memory.
No API key is used or needed: the simulator answers every call.

--realtime runs something else: one request ("Create a comprehensive security analysis of
a web application with a public REST API, a PostgreSQL database and a React front end")
end to end through the real system (planner, pools, agents, merge) on the embedded
simulator at realistic model speeds (each model's first-token time and tokens per second,
thinking included, every delay x --time-scale), once per variant, on a fresh system each:
today's pipeline (nothing streamed), streamed plan, streamed plan + streamed synthesis,
and, once Settings has them, hierarchical plan and quick answer first; beside them one
agent answering directly (one streamed call of the synthesis model). Figures: the phases
(assessment, planning, dispatch, reconcile + synthesis) from the simulator's request log,
time to first microtask, to first answer token, to first useful text and to the full
answer, tokens and cost, and ratios against today's pipeline with issue 14's targets
(first answer token <= 0.4 x and full answer <= 0.6 x today's full answer, cost <= 1.1 x).
"""

EPILOG = """\
Output: OUT/results.md (tables and target checks), OUT/results.png (chart),
OUT/results.json (every figure); --json also prints that object on stdout.
--realtime: OUT/realtime.md, OUT/realtime.png (phases per variant), OUT/realtime.json;
it prints the two tables (or with --json the object) on stdout. A few minutes on 2 cores.
Progress goes to stderr. See bench/README.md for how to read the report.
"""


def _parser() -> argparse.ArgumentParser:
    from actors.bench.realtime import DEFAULT_TIME_SCALE, VARIANTS

    parser = argparse.ArgumentParser(
        prog="parallel-agents bench",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small analogues of every workload on 8 agents, latencies x0.25 (< 3 min "
        "on 2 cores); default is the full run (100 agents, < 20 min)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print every figure as one JSON object on stdout"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench"),
        help="folder for results.md/.png/.json, or realtime.* (default: bench/)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        metavar="N",
        help="repetitions of the backups on/off comparison (default: 10 full, 3 quick); 0 skips it",
    )
    parser.add_argument(
        "--skip-langgraph", action="store_true", help="leave LangGraph out even if installed"
    )
    realtime = parser.add_argument_group("real-time run (--realtime)")
    realtime.add_argument(
        "--realtime",
        action="store_true",
        help="the critical path instead: the security-analysis request through the real "
        "system at realistic model speeds, per variant, against one agent answering directly",
    )
    realtime.add_argument(
        "--time-scale",
        type=float,
        default=DEFAULT_TIME_SCALE,
        metavar="X",
        help=f"multiply every simulated model delay by X (default {DEFAULT_TIME_SCALE:g}; "
        "1 = as long as the real models)",
    )
    realtime.add_argument(
        "--variants",
        type=lambda text: tuple(part.strip() for part in text.split(",") if part.strip()),
        default=tuple(v.name for v in VARIANTS),
        metavar="A,B",
        help="variants to run, of: " + ", ".join(v.name for v in VARIANTS) + " (default: all)",
    )
    realtime.add_argument(
        "--no-single-agent", action="store_true", help="leave out the single-agent call"
    )
    parser.add_argument(
        "--caching",
        action="store_true",
        help="prompt caching instead: a complex request with a 40,000-character document and "
        "a short request, each with caching off and on (OUT/caching.md, OUT/caching.json; "
        "uses --time-scale)",
    )
    agents = parser.add_argument_group("agent processes (--agents)")
    agents.add_argument(
        "--agents",
        action="store_true",
        help="what an agent process costs instead: start time, USS/RSS and idle CPU of bare "
        "Ray actors and of agents, and `import actors.agents.agent` by package (OUT/agent_cost.md, "
        "OUT/agent_cost.json)",
    )
    agents.add_argument(
        "--agents-count",
        type=int,
        default=12,
        metavar="N",
        help="actors of each kind for --agents (default 12)",
    )
    parser.add_argument(
        "--throughput",
        action="store_true",
        help="throughput instead: seeded streams of medium requests through the real system "
        "at 10, 20, 40 and 80 agents (--quick: 4 and 8), tasks/min against agents with the "
        "linear line (OUT/throughput.md, .png, .json; ~15 min, --quick under 2)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran (targets missed are reported, not an error)."""
    from actors.bench import plans
    from actors.bench.harness import CONTESTANTS, Harness
    from actors.bench.results import write

    args = _parser().parse_args(argv)
    if args.throughput:
        return _throughput(args)
    if args.realtime:
        return _realtime(args)
    if args.caching:
        return _caching(args)
    if args.agents:
        return _agents(args)
    if args.runs is not None and args.runs < 0:
        print("--runs must be 0 or more", file=sys.stderr)
        return 2
    config = plans.quick() if args.quick else plans.full()
    if args.runs is not None:
        config.backups_runs = args.runs
    if config.backups_runs == 0:
        config.backups_workload = None
    if args.skip_langgraph:
        config.contestants = tuple(c for c in CONTESTANTS if c != "langgraph")

    settings = _settings(args)  # a bad setting: one line naming it, not a traceback
    if settings is None:
        return 2
    harness = Harness(config, settings, _say)
    if args.skip_langgraph:
        harness.results.skipped.append("langgraph: --skip-langgraph")
    results = asyncio.run(harness.run())
    paths = write(results, args.out)
    if args.json:
        print(json.dumps(results.model_dump(mode="json")))
    else:
        for check in results.checks:
            met = "n/a" if check.met is None else ("met" if check.met else "MISSED")
            print(f"{met:>6}  {check.target}: {check.measured}")
    _say("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _say(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace) -> Settings | None:
    """Logging set up and the settings loaded; None (said on stderr) when they are bad."""
    log_to_stderr(args.verbose)
    try:
        return load_settings()
    except ConfigurationError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return None


def _agents(args: argparse.Namespace) -> int:
    """``bench --agents``: what an agent process costs; 0 when it ran."""
    from actors.bench.agent_cost import main as agent_cost

    if args.agents_count < 1:
        print("bench: --agents-count must be 1 or more", file=sys.stderr)
        return 2
    settings = _settings(args)
    if settings is None:
        return 2
    return agent_cost(args.agents_count, args.out, args.json, settings, _say)


def _caching(args: argparse.Namespace) -> int:
    """``bench --caching``: prompt caching off and on, side by side; 0 when it ran."""
    from actors.bench.caching import run, write
    from actors.bench.realtime import SECURITY

    if args.time_scale <= 0:
        print("bench: --time-scale must be above 0", file=sys.stderr)
        return 2
    settings = _settings(args)
    if settings is None:
        return 2
    results = run(SECURITY, settings, _say, args.time_scale)
    paths = write(results, args.out)
    if args.json:
        print(json.dumps(results.model_dump(mode="json")))
    for line in results.checks:
        print(f"bench: {line}", file=sys.stderr)
    print("bench: wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0


def _throughput(args: argparse.Namespace) -> int:
    """``bench --throughput``: the stream at each agent count; 0 when it ran (a missed
    target included)."""
    from actors.bench.throughput import full, quick, run
    from actors.bench.throughput_figures import table, write

    mixed = [flag for flag, on in (("--realtime", args.realtime), ("--caching", args.caching),
                                   ("--runs", args.runs is not None),
                                   ("--skip-langgraph", args.skip_langgraph)) if on]  # fmt: skip
    if mixed:
        print(f"bench: --throughput takes no {', '.join(mixed)}", file=sys.stderr)
        return 2
    settings = _settings(args)
    if settings is None:
        return 2
    results = run(quick() if args.quick else full(), settings, _say)
    paths = write(results, args.out)
    if args.json:
        print(json.dumps(results.model_dump(mode="json")))
    else:
        print(table(results))
        for check in results.checks:
            met = "n/a" if check.met is None else ("met" if check.met else "MISSED")
            print(f"{met:>6}  {check.target}: {check.measured}")
    for line in results.notes:
        _say(line)
    _say("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _realtime(args: argparse.Namespace) -> int:
    """``bench --realtime``: the critical-path run; 0 when it ran (targets missed included)."""
    from actors.bench.realtime import VARIANTS, RealtimeConfig, run
    from actors.bench.realtime_figures import figures_table, ratios_table, write

    mixed = [flag for flag, on in (("--quick", args.quick), ("--runs", args.runs is not None),
                                   ("--skip-langgraph", args.skip_langgraph)) if on]  # fmt: skip
    unknown = sorted(set(args.variants) - {v.name for v in VARIANTS})
    problem = (
        f"--realtime takes no {', '.join(mixed)}"
        if mixed
        else f"unknown variant(s): {', '.join(unknown)}"
        if unknown
        else "--time-scale must be above 0"
        if args.time_scale <= 0
        else ""
    )
    if problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 2
    settings = _settings(args)
    if settings is None:
        return 2
    config = RealtimeConfig(
        time_scale=args.time_scale,
        variants=args.variants,
        single_agent=not args.no_single_agent,
    )
    results = run(config, settings, _say)
    paths = write(results, args.out)
    if args.json:
        print(json.dumps(results.model_dump(mode="json")))
    else:
        print(figures_table(results))
        print(ratios_table(results))
    for line in results.skipped:
        _say(f"not run: {line}")
    _say("wrote " + ", ".join(str(p) for p in paths))
    return 0
