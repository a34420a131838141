"""``parallel-agents bench``: run the benchmark and write bench/results.{md,png,json}."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from actors.config import load_settings
from actors.errors import ConfigurationError

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
"""

EPILOG = """\
Output: OUT/results.md (tables and target checks), OUT/results.png (chart),
OUT/results.json (every figure); --json also prints that object on stdout.
Progress goes to stderr. See bench/README.md for how to read the report.
"""


def _parser() -> argparse.ArgumentParser:
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
        help="folder for results.md/.png/.json (default: bench/)",
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
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran (targets missed are reported, not an error)."""
    from actors.bench import plans
    from actors.bench.harness import CONTESTANTS, Harness
    from actors.bench.results import write

    args = _parser().parse_args(argv)
    if args.runs is not None and args.runs < 0:
        print("--runs must be 0 or more", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = plans.quick() if args.quick else plans.full()
    if args.runs is not None:
        config.backups_runs = args.runs
    if config.backups_runs == 0:
        config.backups_workload = None
    if args.skip_langgraph:
        config.contestants = tuple(c for c in CONTESTANTS if c != "langgraph")

    def say(line: str) -> None:
        print(f"bench: {line}", file=sys.stderr, flush=True)

    try:
        settings = load_settings()
    except ConfigurationError as exc:  # one line naming the setting, not a traceback
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    harness = Harness(config, settings, say)
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
    say("wrote " + ", ".join(str(p) for p in paths))
    return 0
