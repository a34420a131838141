"""Peak memory of the benchmark: the driver plus every process it started (Ray, agents, simulator).

A local ``ray.init`` starts the GCS and raylet as children of the driver, and
every worker (agents, pools, orchestrators) as children of the raylet, so the
driver's descendants are exactly this run's processes, even on a machine where
other Ray instances run. RSS counts shared pages once per process, so the sum
over-states what the processes hold together; it is the figure ``ps`` shows.
Uses psutil when importable, else reads ``/proc``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

try:
    import psutil
except ImportError:  # pragma: no cover - psutil ships with ray[default]
    psutil = None


def _tree_psutil(root: int) -> list[int]:
    proc = psutil.Process(root)
    return [root, *(child.pid for child in proc.children(recursive=True))]


def _tree_proc(root: int) -> list[int]:
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name may hold spaces: the ppid is the 2nd field after ")".
            parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parent.items() if ppid in frontier]
        tree += frontier
    return tree


def _rss_bytes(pid: int) -> int:
    if psutil is not None:
        return int(psutil.Process(pid).memory_info().rss)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def tree_pids() -> list[int]:
    """This process and its descendants: the benchmark's own processes."""
    root = os.getpid()
    return _tree_psutil(root) if psutil is not None else _tree_proc(root)


def tree_rss() -> tuple[float, int]:
    """(RSS in MB summed over this process and its descendants, number of processes)."""
    pids = tree_pids()
    total = count = 0
    for pid in pids:
        try:
            total += _rss_bytes(pid)
            count += 1
        except Exception:  # it ended between the listing and the read (psutil or /proc)
            continue
    return total / 2**20, count


class MemoryProbe:
    """Samples ``tree_rss`` in a background thread and keeps the peak, with a label."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-memory", daemon=True)
        self.label = ""  # what is running now; the peak remembers it
        self.peak_mb = 0.0
        self.peak_processes = 0
        self.peak_label = ""

    def start(self) -> MemoryProbe:
        self._thread.start()
        return self

    def sample(self) -> None:
        mb, count = tree_rss()
        if mb > self.peak_mb:
            self.peak_mb, self.peak_processes, self.peak_label = mb, count, self.label

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()
