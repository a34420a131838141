"""The benchmark: the same fixed plans, on the same simulator, through the same SDK, run by
sequential, asyncio, this system on Ray, and LangGraph; figures against the ideal makespan.

``parallel-agents bench`` runs it (``actors.bench.cli.main``); ``bench/README.md`` explains
the workloads, contestants and how to read the report.
"""

from actors.bench.cli import main
from actors.bench.harness import BenchConfig, Harness, Scenario
from actors.bench.results import BenchResults

__all__ = ["BenchConfig", "BenchResults", "Harness", "Scenario", "main"]
