"""Domain templates: valid, bounded, layered plans for any size (pure logic, no Ray)."""

from __future__ import annotations

import pytest

from actors.engine.dag import critical_path, validate
from actors.engine.scheduler import DagScheduler
from actors.engine.templates import (
    TEMPLATE_NAMES,
    build_template,
    choose_template,
    layer_sizes,
)
from actors.models import PIPELINE, Role

SECURITY_REQUEST = (
    "Create a comprehensive security analysis of a web application with a public REST API, "
    "a PostgreSQL database and a React front end"
)


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_every_template_is_valid_and_bounded_for_sizes_1_to_100(name):
    for size in range(1, 101):
        plan = build_template(name, SECURITY_REQUEST, size)
        assert validate(plan) == [], (name, size)
        assert 1 <= len(plan) <= size
        assert len(plan) == size  # the whole budget is used
        assert plan[-1].role is Role.GENERATION and plan[-1].critical
        # Layers in order, each microtask depending on 2-4 of the layer before (fewer if small).
        roles = [t.role for t in plan]
        assert roles == sorted(roles, key=PIPELINE.index)
        by_id = {t.id: t for t in plan}
        for t in plan:
            assert all(PIPELINE.index(by_id[d].role) < PIPELINE.index(t.role) for d in t.depends_on)
            if t.role is not Role.RESEARCH and t.depends_on:
                layer_before = {by_id[d].role for d in t.depends_on}
                assert len(layer_before) == 1
                before = sum(1 for u in plan if u.role in layer_before)
                assert min(2, before) <= len(t.depends_on) <= 4
        assert all(t.branch for t in plan)


def test_security_template_reads_like_a_security_assessment():
    plan = build_template("security_analysis", SECURITY_REQUEST, 50)
    titles = " ".join(t.title for t in plan)
    for expected in ("Asset inventory", "Attack surface", "OWASP A03 Injection", "Threat model"):
        assert expected in titles
    assert plan[-1].title == "Security assessment report"
    assert all(SECURITY_REQUEST in t.instructions for t in plan)


def test_layer_sizes_follow_the_shares():
    assert layer_sizes(5) == {
        Role.RESEARCH: 2,
        Role.ANALYSIS: 1,
        Role.VALIDATION: 1,
        Role.GENERATION: 1,
    }
    assert layer_sizes(100) == {
        Role.RESEARCH: 40,
        Role.ANALYSIS: 35,
        Role.VALIDATION: 20,
        Role.GENERATION: 5,
    }
    assert layer_sizes(1) == {
        Role.RESEARCH: 0,
        Role.ANALYSIS: 0,
        Role.VALIDATION: 0,
        Role.GENERATION: 1,
    }


def test_critical_chain_is_dispatched_first():
    plan = build_template("research", "Compare vector databases", 20)
    chain = critical_path(plan)
    assert chain[-1] == plan[-1].id
    assert all(t.critical for t in plan if t.id in chain)
    first = DagScheduler(plan).ready()[0]
    assert first.id == chain[0]
    priorities = {t.role: t.priority for t in plan}
    assert [priorities[r] for r in PIPELINE] == sorted(priorities.values(), reverse=True)


def test_request_text_is_quoted_bounded_and_never_formatted():
    text = "{title} {0} %s " + "x" * 5000
    plan = build_template("generic", text, 5)
    for t in plan:
        assert "{title} {0} %s" in t.instructions
        assert len(t.instructions) < 1200


def test_choose_template():
    assert choose_template(SECURITY_REQUEST) == "security_analysis"
    assert choose_template("Please review the code in this pull request") == "code_review"
    assert choose_template("Compare the literature on battery chemistries") == "research"
    assert choose_template("Analyze the dataset and its statistics") == "data_analysis"
    assert choose_template("Write an executive summary memo for the board") == "report"
    assert choose_template("What should I cook tonight?") == "generic"


def test_unknown_template_or_size_is_refused():
    with pytest.raises(ValueError, match="unknown template"):
        build_template("nope", "x", 5)
    with pytest.raises(ValueError):
        build_template("generic", "x", 0)
