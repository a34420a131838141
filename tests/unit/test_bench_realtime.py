"""The real-time benchmark's figures, ratios, targets and settings (no Ray)."""

from __future__ import annotations

import json

import pytest

from actors.bench import cli
from actors.bench.realtime import (
    DEFAULT_TIME_SCALE,
    POOLS,
    SINGLE_AGENT_TOKENS,
    VARIANTS,
    RealtimeConfig,
    runnable,
    single_agent,
    variant_settings,
)
from actors.bench.realtime_figures import (
    RealtimeResults,
    SingleAgent,
    VariantFigures,
    checks,
    markdown,
    ratios,
    variant_figures,
    write,
)
from actors.config import Purpose, Settings, SimulatorSettings
from actors.models import (
    Complexity,
    EventKind,
    MicrotaskState,
    ProgressEvent,
    Role,
    TimelineEntry,
)
from actors.sim.simulator import SimulatorServer
from tests.unit.factories import report

T0 = 1_000.0  # the task's start, wall clock


def _event(kind: EventKind, at: float, seq: int = 0) -> ProgressEvent:
    return ProgressEvent(seq=seq, kind=kind, task_id="t1", at=T0 + at)


def _call(purpose: str, at: float, latency: float, microtask=None, stream=False) -> dict:
    return {
        "purpose": purpose,
        "at": T0 + at,
        "latency_s": latency,
        "microtask": microtask,
        "stream": stream,
    }


def _entry(id_: str, role: Role) -> TimelineEntry:
    return TimelineEntry(
        id=id_, role=role, depends_on=[], agent="a", node="n", start_s=0.0, end_s=1.0,
        attempts=1, status=MicrotaskState.DONE,
    )  # fmt: skip


def _report(wall_s: float = 40.0, first_microtask_s: float = 21.0, cost: float = 1.0):
    return report(
        complexity=Complexity.COMPLEX, plan_source="model", microtasks=2, wall_s=wall_s,
        first_microtask_s=first_microtask_s, cost_usd=cost, paid_calls=6,
        timeline=[_entry("r1", Role.RESEARCH), _entry("a1", Role.ANALYSIS)],
    )  # fmt: skip


def _log(stream: bool, research_at: float) -> list[dict]:
    return [
        _call("synthesis", -5.0, 1.0),  # a call from before this request: not counted
        _call("assessment", 0.1, 0.4),
        _call("plan", 0.6, 19.4, stream=stream),
        _call("microtask", 23.0, 2.0, microtask="a1"),
        _call("microtask", research_at, 2.0, microtask="r1"),
        _call("reconcile", 30.2, 1.0),
        _call("synthesis", 31.2, 8.6, stream=stream),
    ]


def test_today_has_its_first_answer_token_at_the_end():
    events = [
        _event(EventKind.PLANNED, 20.0),
        _event(EventKind.STARTED, 21.0),
        _event(EventKind.MERGING, 30.0),
        _event(EventKind.DONE, 40.0),
    ]
    got = variant_figures("today", "today's", _report(), events, _log(False, 21.0), T0)

    spans = {p.name: (p.start_s, p.end_s, p.calls) for p in got.phases}
    assert spans == {
        "assessment": pytest.approx((0.1, 0.5, 1)),
        "planning": pytest.approx((0.6, 20.0, 1)),
        "dispatch": pytest.approx((21.0, 25.0, 2)),
        "reconcile + synthesis": pytest.approx((30.2, 39.8, 2)),
    }
    assert got.first_answer_token_s == got.first_useful_text_s == got.full_answer_s == 40.0
    assert got.first_microtask_s == 21.0 and got.streamed == []
    assert got.research_before_plan_end is False and got.first_research_s == pytest.approx(21.0)
    assert got.plan_end_s == pytest.approx(20.0)


def test_streamed_run_answers_from_its_first_answer_event_and_starts_research_early():
    events = [
        _event(EventKind.STARTED, 5.0),
        _event(EventKind.MERGING, 30.0),
        _event(EventKind.ANSWER, 33.5),
        _event(EventKind.ANSWER, 35.0),
        _event(EventKind.DONE, 40.0),
    ]
    got = variant_figures("streamed", "s", _report(), events, _log(True, 5.0), T0)

    assert got.first_answer_token_s == got.first_useful_text_s == pytest.approx(33.5)
    assert got.streamed == ["plan", "synthesis"]
    assert got.research_before_plan_end is True and got.first_research_s == pytest.approx(5.0)


def test_text_before_the_merge_is_the_quick_take():
    quick = EventKind("quick") if "quick" in EventKind._value2member_map_ else EventKind.ANSWER
    events = [
        _event(quick, 2.5),  # the quick take's first piece, while the plan is written
        _event(EventKind.MERGING, 30.0),
        _event(EventKind.ANSWER, 33.5),
        _event(EventKind.DONE, 40.0),
    ]
    log = [*_log(True, 5.0), _call("quick", 0.5, 3.0, stream=True)]
    got = variant_figures("quick", "q", _report(), events, log, T0)

    assert got.first_useful_text_s == pytest.approx(2.5)
    assert got.first_answer_token_s == pytest.approx(33.5)
    quick_phase = next(p for p in got.phases if p.name == "quick answer")
    assert (quick_phase.start_s, quick_phase.end_s) == pytest.approx((0.5, 3.5))


def _figures(name: str, first_token: float, full: float, cost: float, early=None):
    return VariantFigures(
        variant=name, label=name, state="done", complexity="complex", plan_source="model",
        microtasks=30, failed=0, phases=[], first_microtask_s=1.0,
        first_answer_token_s=first_token, first_useful_text_s=first_token, full_answer_s=full,
        input_tokens=1, output_tokens=1, cost_usd=cost, paid_calls=1, streamed=[],
        research_before_plan_end=early,
    )  # fmt: skip


SINGLE = SingleAgent(
    model="claude-opus-5-5", first_token_s=4.0, full_answer_s=55.0, input_tokens=50,
    output_tokens=3000, cost_usd=0.06,
)  # fmt: skip


def test_ratios_are_against_today_and_targets_are_judged_for_every_other_variant():
    variants = [
        _figures("today", 100.0, 100.0, 1.0, early=False),
        _figures("streamed", 35.0, 55.0, 1.05, early=True),
        _figures("slow", 50.0, 70.0, 1.2, early=False),
    ]
    rows = ratios(variants, SINGLE)

    by = {r.variant: r for r in rows}
    assert [r.variant for r in rows] == ["today", "streamed", "slow", "single"]
    assert (by["streamed"].first_token, by["streamed"].full_answer, by["streamed"].cost) == (
        0.35,
        0.55,
        1.05,
    )
    assert by["single"].full_answer == 0.55 and by["single"].cost == 0.06
    assert not by["today"].judged and not by["single"].judged

    found = {c.target: c.met for c in checks(rows)}
    assert found == {
        "streamed: first answer token <= 0.4 x today's full answer": True,
        "streamed: full answer <= 0.6 x today's full answer": True,
        "streamed: cost <= 1.1 x today's cost": True,
        "streamed: the first research microtask starts before planning ends": True,
        "slow: first answer token <= 0.4 x today's full answer": False,
        "slow: full answer <= 0.6 x today's full answer": False,
        "slow: cost <= 1.1 x today's cost": False,
        "slow: the first research microtask starts before planning ends": False,
    }


def test_without_todays_run_there_is_nothing_to_judge():
    rows = ratios([_figures("streamed", 35.0, 55.0, 1.05)], None)
    assert rows[0].first_token is None and rows[0].cost is None
    assert {c.met for c in checks(rows)} == {None}


def test_the_report_shows_targets_met_and_missed_and_writes_all_three_files(tmp_path):
    variants = [
        _figures("today", 100.0, 100.0, 1.0),
        _figures("streamed", 35.0, 70.0, 1.0, early=True),
    ]
    results = RealtimeResults(
        request="Secure it", time_scale=0.1, seed=0, cpus=2, pools={"research": 4},
        single=SINGLE, variants=variants, ratios=ratios(variants, SINGLE),
        skipped=["hierarchical plan: Settings has no plan_mode yet"],
    )  # fmt: skip
    text = markdown(results)
    figures, against = text.split("## Against today's pipeline")
    assert "| streamed | — | — | — | — | — | 1.0 | 35.0 | 35.0 | 70.0 |" in figures
    streamed = next(line for line in against.splitlines() if line.startswith("| streamed |"))
    assert "0.35 (met)" in streamed and "0.70 **(missed)**" in streamed
    assert "| single agent (reference) | 0.04 |" in text
    assert "plan_mode" in text

    paths = write(results, tmp_path)
    assert [p.name for p in paths] == ["realtime.md", "realtime.png", "realtime.json"]
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert RealtimeResults.model_validate(json.loads(paths[2].read_text())) == results


def test_a_variant_runs_only_once_settings_has_its_field():
    names = [v.name for v in VARIANTS]
    chosen, skipped = runnable(names, fields=["stream_plan", "stream_answer"])
    assert [v.name for v in chosen] == ["today", "streamed-plan", "streamed"]
    assert skipped == [
        "hierarchical plan: Settings has no plan_mode yet",
        "quick answer first: Settings has no quick_answer yet",
        "answer in sections: Settings has no answer_mode yet",
        "answer in sections, quick answer first: Settings has no answer_mode, quick_answer yet",
    ]
    chosen, skipped = runnable(["today", "quick"], fields=["quick_answer"])
    assert [v.name for v in chosen] == ["today", "quick"] and skipped == []


def test_variant_settings_use_the_embedded_simulator_at_realistic_speed(tmp_path):
    base = Settings(anthropic_api_key="sk-real", simulator=SimulatorSettings(rate_429=0.5))
    today = VARIANTS[0]
    settings = variant_settings(base, today, RealtimeConfig(seed=3), tmp_path)

    assert settings.simulation == "embedded" and settings.home == tmp_path
    assert settings.simulator == SimulatorSettings(
        mode="embedded", latency="realistic", time_scale=DEFAULT_TIME_SCALE, seed=3
    )
    assert {r: (p.min, p.max) for r, p in settings.pools.items()} == {
        r: (n, n) for r, n in POOLS.items()
    }
    assert settings.stream_plan is False and settings.stream_answer is False
    if "quick_answer" in Settings.model_fields:
        assert settings.quick_answer is False  # type: ignore[attr-defined]
    assert settings.llm_timeout_s == base.llm_timeout_s

    slow = variant_settings(base, today, RealtimeConfig(time_scale=1.0), tmp_path)
    assert slow.llm_timeout_s == pytest.approx(10 * base.llm_timeout_s)
    assert slow.levels[Complexity.COMPLEX].time_limit_s == pytest.approx(
        10 * base.levels[Complexity.COMPLEX].time_limit_s
    )


async def test_the_single_agent_streams_an_answer_as_long_as_a_synthesis(tmp_path):
    config = RealtimeConfig(time_scale=0.002)
    settings = variant_settings(Settings(), VARIANTS[0], config, tmp_path)
    with SimulatorServer(settings.simulator) as sim:
        got = await single_agent(settings, sim.url, config)
        [call] = sim.recent_requests()

    assert got.model == settings.models[Purpose.SYNTHESIS]
    assert call["stream"] is True and call["model"] == got.model
    assert 0 < got.first_token_s < got.full_answer_s
    assert got.output_tokens == call["output_tokens"] >= SINGLE_AGENT_TOKENS
    assert got.cost_usd > 0


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--realtime", "--quick"], "--realtime takes no --quick"),
        (["--realtime", "--variants", "today,fastest"], "unknown variant(s): fastest"),
        (["--realtime", "--time-scale", "0"], "--time-scale must be above 0"),
    ],
)
def test_the_cli_refuses_what_the_realtime_run_cannot_do(argv, says, capsys):
    assert cli.main(argv) == 2
    assert says in capsys.readouterr().err
