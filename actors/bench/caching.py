"""Prompt caching measured (``parallel-agents bench --caching``): does it really hit?

One complex request carrying a 40,000-character document, run with caching off and on,
and a short request (its prefix below every model's minimum) both ways — each on a freshly
started system, side by side in one run, on the simulator at realistic speed (the realtime
run's settings, ``actors.bench.realtime.variant_settings``). Figures per run, from the
report and the simulator's request log:

- **billed input**: input token equivalents as billed — uncached input, cache writes at
  1.25x and reads at 0.1x (the usual multipliers; Opus 5.5 reads cost 0.05x, so this errs
  high) — and the report's cost;
- **writes per prefix**: the most times any one cached prefix was written (a fan-out that
  all writes shows here), and how many prefixes were written;
- **breakpoints**: calls that carried one (the short request should send none).

Targets (issue 15): billed input with caching ≤ 0.35x without, for the document; the short
request costs no more with caching on than off.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from pydantic import BaseModel

from actors.bench.realtime import RealtimeConfig, Variant, variant_settings
from actors.config import NAMESPACE, Settings
from actors.engine.documents import Document
from actors.models import RunReport
from actors.runtime.system import start_system, stop_system

BILLED_INPUT_TARGET = 0.35
WRITE_SHARE, READ_SHARE = 1.25, 0.1
DOCUMENT_CHARS = 40_000
SHORT = "Compare PostgreSQL and MySQL for a write-heavy workload"


class CachingRun(BaseModel):
    name: str
    document: bool
    caching: bool
    state: str
    microtasks: int
    input_tokens: int
    cache_write_tokens: int
    cache_read_tokens: int
    billed_input: float
    cost_usd: float
    cache_saved_usd: float
    calls: int
    calls_with_breakpoints: int
    prefixes_written: int
    most_writes_of_one_prefix: int
    warm_ups: int


class CachingResults(BaseModel):
    request: str
    document_chars: int
    time_scale: float
    runs: list[CachingRun] = []
    checks: list[str] = []
    total_s: float = 0.0


RUNS = (  # name, with the document, caching on
    ("document, caching off", True, False),
    ("document, caching on", True, True),
    ("short request, caching off", False, False),
    ("short request, caching on", False, True),
)


def document_text(chars: int = DOCUMENT_CHARS) -> str:
    """A specification of about ``chars`` characters, the same on every run."""
    lines: list[str] = []
    n = 0
    while sum(len(line) + 1 for line in lines) < chars:
        n += 1
        lines.append(
            f"{n}. The REST API endpoint /v1/orders/{n} requires an OAuth 2 bearer token, "
            f"validates its JSON body against schema order-{n % 7}, writes one row to the "
            f"orders table in PostgreSQL and logs the change to the audit trail."
        )
    return "\n".join(lines)[:chars]


def run(
    request: str, base: Settings, say: Callable[[str], None], time_scale: float = 0.1
) -> CachingResults:
    """The four runs, one fresh system each; their figures and the targets' checks."""
    started = time.perf_counter()
    document = Document(name="api-spec.md", text=document_text())
    results = CachingResults(
        request=request, document_chars=len(document.text), time_scale=time_scale
    )
    if not ray.is_initialized():
        ray.init(address="local", namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    root = Path(tempfile.mkdtemp(prefix="parallel-agents-caching-"))
    config = RealtimeConfig(time_scale=time_scale)
    for name, with_document, caching in RUNS:
        overrides = {"prompt_caching": caching, "warm_cache": caching, "quick_answer": False}
        variant = Variant(name.replace(" ", "-").replace(",", ""), name, overrides)
        settings = variant_settings(base, variant, config, root / variant.name)
        text, documents = (request, [document]) if with_document else (SHORT, [])
        say(f"{name}: starting the system")
        system = start_system(settings, resume=False)
        try:
            say(f"{name}: running the request")
            assert system.simulator is not None, "the benchmark runs on the embedded simulator"
            orchestrator = system.orchestrator
            task_id: Any = ray.get(orchestrator.submit.remote(text, documents=documents))
            finished: Any = ray.get(orchestrator.wait.remote(task_id), timeout=1800)
            report = RunReport.model_validate(finished)
            log: list[dict] = ray.get(system.simulator.recent_requests.remote())
            results.runs.append(_figures(name, with_document, caching, report, log))
            say(
                f"{name}: billed input {results.runs[-1].billed_input:,.0f}, ${report.cost_usd:.4f}"
            )
        finally:
            stop_system(system)
    results.checks = checks(results.runs)
    results.total_s = round(time.perf_counter() - started, 1)
    return results


def _figures(
    name: str, document: bool, caching: bool, report: RunReport, log: list[dict]
) -> CachingRun:
    paid = [e for e in log if e["status"] == 200]
    writes = Counter(key for e in paid for key in e.get("cache_keys") or [])
    billed = (
        report.input_tokens
        + WRITE_SHARE * report.cache_write_tokens
        + READ_SHARE * report.cache_read_tokens
    )
    return CachingRun(
        name=name,
        document=document,
        caching=caching,
        state=report.state.value,
        microtasks=report.microtasks,
        input_tokens=report.input_tokens,
        cache_write_tokens=report.cache_write_tokens,
        cache_read_tokens=report.cache_read_tokens,
        billed_input=round(billed, 1),
        cost_usd=report.cost_usd,
        cache_saved_usd=report.cache_saved_usd,
        calls=len(paid),
        calls_with_breakpoints=sum(1 for e in paid if e.get("cache_write") or e.get("cache_read")),
        prefixes_written=len(writes),
        most_writes_of_one_prefix=max(writes.values(), default=0),
        warm_ups=sum(1 for e in paid if e.get("max_tokens") == 0),
    )


def checks(runs: list[CachingRun]) -> list[str]:
    """The issue's targets, one line each ("met" or "missed")."""
    by = {(r.document, r.caching): r for r in runs}
    out = []
    if (True, False) in by and (True, True) in by:
        ratio = by[True, True].billed_input / max(1.0, by[True, False].billed_input)
        verdict = "met" if ratio <= BILLED_INPUT_TARGET else "missed"
        out.append(f"document: billed input with caching {ratio:.2f}x without "
                   f"(≤ {BILLED_INPUT_TARGET}): {verdict}")  # fmt: skip
        most = by[True, True].most_writes_of_one_prefix
        out.append(f"document: the most writes of one prefix: {most} (≤ 1): "
                   f"{'met' if most <= 1 else 'missed'}")  # fmt: skip
    if (False, False) in by and (False, True) in by:
        on, off = by[False, True], by[False, False]
        good = on.calls_with_breakpoints == 0 and on.cost_usd <= off.cost_usd
        out.append(
            f"short request: {on.calls_with_breakpoints} calls cached, cost ${on.cost_usd:.4f} "
            f"with caching vs ${off.cost_usd:.4f} without: {'met' if good else 'missed'}"
        )
    return out


def markdown(results: CachingResults) -> str:
    """``bench/caching.md``."""
    lines = [
        "# Prompt caching: does it hit?",
        "",
        f"Request: “{results.request}” with a {results.document_chars:,}-character document "
        f"(and a short request, “{SHORT}”). Simulated Claude at realistic speed × "
        f"{results.time_scale:g}, caching accounted as the API does (`actors/sim/fake_cache.py`); "
        f"{os.cpu_count()} CPUs; total {results.total_s:.0f} s. How to read it: the module "
        "docstring of `actors/bench/caching.py`.",
        "",
        "| run | microtasks | calls | input | cache writes | cache reads | billed input | "
        "cost $ | saved $ | prefixes written | most writes of one | warm-ups |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results.runs:
        lines.append(
            f"| {r.name} | {r.microtasks} | {r.calls} | {r.input_tokens:,} | "
            f"{r.cache_write_tokens:,} | {r.cache_read_tokens:,} | {r.billed_input:,.0f} | "
            f"{r.cost_usd:.4f} | {r.cache_saved_usd:.4f} | {r.prefixes_written} | "
            f"{r.most_writes_of_one_prefix} | {r.warm_ups} |"
        )
    lines += ["", "## Targets", "", *(f"- {line}" for line in results.checks), ""]
    return "\n".join(lines)


def write(results: CachingResults, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    md, js = folder / "caching.md", folder / "caching.json"
    md.write_text(markdown(results))
    js.write_text(results.model_dump_json(indent=2) + "\n")
    return [md, js]
