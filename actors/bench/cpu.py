"""Where the CPU goes: CPU seconds per kind of process over a window of the benchmark.

On a small machine the system's makespans at zero latency are bounded by CPU,
not by scheduling: every microtask costs CPU in the orchestrator, its pool, an
agent, the rate limiter and the simulator, and idle Ray workers burn some too.
This measures both over the driver's process tree (see ``memory``), so the
report can say what bounds the overhead instead of guessing.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict

import psutil

from actors.bench.memory import tree_pids

# Ray names a worker's process "ray::<actor class>"; the rest are Ray's own services.
_KINDS = {
    "ray::Orchestrator": "orchestrator",
    "ray::AgentPool": "pools",
    "ray::Agent": "agents",
    "ray::RateLimiterActor": "rate limiter",
    "ray::ModelClientActor": "model clients",
}


def _kind(proc: psutil.Process) -> str:
    if proc.pid == os.getpid():
        return "bench driver"
    cmdline = proc.cmdline()
    first = cmdline[0] if cmdline else ""
    if first in _KINDS:
        return _KINDS[first]
    if "simulator" in cmdline:
        return "simulator"
    return "Ray services"  # GCS, raylet, dashboard agent, idle workers


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """Process id -> (kind, CPU seconds used so far) for the benchmark's processes."""
    out: dict[int, tuple[str, float]] = {}
    for pid in tree_pids():
        try:
            proc = psutil.Process(pid)
            times = proc.cpu_times()
            out[pid] = (_kind(proc), times.user + times.system)
        except psutil.Error:  # it ended between the listing and the read
            continue
    return out


class CpuMeter:
    """CPU seconds per kind of process between ``__enter__`` and ``__exit__``.

    A process that starts inside the window counts from zero; one that ends
    inside it is lost (its last seconds are not readable any more).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.processes: dict[str, int] = {}
        self.wall_s = 0.0
        self._before: dict[int, tuple[str, float]] = {}
        self._started = 0.0

    def __enter__(self) -> CpuMeter:
        self._before = cpu_seconds()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wall_s = time.perf_counter() - self._started
        seconds: dict[str, float] = defaultdict(float)
        processes: dict[str, int] = defaultdict(int)
        for pid, (kind, used) in cpu_seconds().items():
            seconds[kind] += used - self._before.get(pid, (kind, 0.0))[1]
            processes[kind] += 1
        self.seconds, self.processes = dict(seconds), dict(processes)

    def cores(self) -> dict[str, float]:
        """Average cores used per kind over the window."""
        return {kind: s / self.wall_s for kind, s in self.seconds.items()} if self.wall_s else {}


def idle_burn(window_s: float = 3.0) -> CpuMeter:
    """What the processes use while no work runs (Ray workers are never fully idle)."""
    with CpuMeter() as meter:
        time.sleep(window_s)
    return meter
