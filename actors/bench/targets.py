"""Issue 8's targets, checked against one bench run (the system = the ``ray`` contestant)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors.bench.results import BenchResults, Check, Row

if TYPE_CHECKING:
    from actors.bench.harness import BenchConfig

MIN_EFFICIENCY = 0.95
MIN_WIDE_SPEEDUP_SHARE = 0.9  # 45x of the 50x that 100 microtasks on 50 agents allow
MAX_OVERHEAD_MS = 3.0
MIN_TAIL_CUT_VS_LANGGRAPH = 0.35
MIN_BACKUP_P99_CUT_PCT = 25.0


def _find(results: BenchResults, config: BenchConfig, tag: str, kind: str, who: str) -> Row | None:
    names = {s.name for s in config.scenarios if s.tag == tag and s.latency.kind.value == kind}
    return next((r for r in results.rows if r.scenario in names and r.contestant == who), None)


def checks(results: BenchResults, config: BenchConfig) -> list[Check]:
    """One line per target: what was measured and whether it was met (None: not measured)."""
    out: list[Check] = []

    row = _find(results, config, "massive", "fixed", "ray")
    out.append(
        Check(
            target=f"four-level at fixed latency: efficiency >= {MIN_EFFICIENCY}",
            measured=f"{row.efficiency:.2f} on {row.scenario}" if row else "not run",
            met=row.efficiency >= MIN_EFFICIENCY if row else None,
        )
    )

    row = _find(results, config, "wide", "fixed", "ray")
    if row is not None:
        wanted = MIN_WIDE_SPEEDUP_SHARE * row.sequential_s / max(row.ideal_s, 1e-9)
        out.append(
            Check(
                target=f"wide at fixed latency: speedup >= {wanted:.1f}x "
                f"({MIN_WIDE_SPEEDUP_SHARE:.0%} of the ideal)",
                measured=f"{row.speedup:.1f}x on {row.scenario}",
                met=row.speedup >= wanted,
            )
        )
    else:
        out.append(Check(target="wide at fixed latency: speedup", measured="not run", met=None))

    zero = [r for r in results.rows if r.contestant == "ray" and r.latency == "zero"]
    worst = max(zero, key=lambda r: r.overhead_ms, default=None)
    big = _find(results, config, "big", "zero", "ray")
    shown = big or worst
    out.append(
        Check(
            target=f"zero latency: overhead <= {MAX_OVERHEAD_MS:g} ms per microtask (amortised)",
            measured=(
                f"{shown.overhead_ms:.2f} ms on {shown.scenario}; worst {worst.overhead_ms:.2f} "
                f"ms on {worst.scenario}"
            )
            if shown and worst
            else "not run",
            met=shown.overhead_ms <= MAX_OVERHEAD_MS if shown else None,
        )
    )

    ray_tail = _find(results, config, "massive", "lognormal", "ray")
    lg_tail = _find(results, config, "massive", "lognormal", "langgraph")
    if ray_tail and lg_tail:
        cut = 1 - ray_tail.makespan_s / lg_tail.makespan_s
        out.append(
            Check(
                target=f"heavy tail, four-level: makespan >= {MIN_TAIL_CUT_VS_LANGGRAPH:.0%} "
                "below LangGraph's",
                measured=f"{cut:.0%} below ({ray_tail.makespan_s:.2f} s vs "
                f"{lg_tail.makespan_s:.2f} s)",
                met=cut >= MIN_TAIL_CUT_VS_LANGGRAPH,
            )
        )
    else:
        out.append(Check(target="heavy tail vs LangGraph", measured="not run", met=None))

    cut_pct = results.backups_p99_cut_pct
    runs = results.backups[0].runs if results.backups else 0
    out.append(
        Check(
            target=f"backups cut the p99 makespan by >= {MIN_BACKUP_P99_CUT_PCT:g}%",
            measured=f"{cut_pct:+.1f}% over {runs} runs" if cut_pct is not None else "not run",
            met=cut_pct >= MIN_BACKUP_P99_CUT_PCT if cut_pct is not None else None,
        )
    )

    out.append(
        Check(
            target="the big DAG completes; memory reported",
            measured=(
                f"{big.scenario}: {big.microtasks - big.failed}/{big.microtasks} done; peak "
                f"{results.peak_rss_mb:.0f} MB RSS"
            )
            if big
            else "not run",
            met=(big.failed == 0 and results.peak_rss_mb > 0) if big else None,
        )
    )
    return out
