"""The semantic merge end to end: simulated claims, the real client, the simulator on loopback.

Claims come from the simulator's own vocabulary (``fake_claims``), worded the way its
agents word them; ``ask`` is a real structured call through the SDK (no Ray).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator

import pytest
from factories import result  # tests/unit/factories.py

from actors.agents.agent import RECONCILE_SYSTEM
from actors.config import LimiterSettings, Purpose, Settings, SimulatorSettings
from actors.engine.claims import summarise
from actors.engine.reconcile import reconcile
from actors.errors import ProviderError
from actors.llm import LLMClient
from actors.models import Reconciliation, Role
from actors.sim import fake_claims
from actors.sim.fake_claims import Finding, findings, identify, true_side
from actors.sim.simulator import SimulatorServer

WORDS = ["kubernetes", "migration"]
SEED = 3


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorSettings(latency="zero", seed=SEED)) as server:
        yield server


@pytest.fixture
async def client(sim: SimulatorServer) -> AsyncIterator[LLMClient]:
    limiter = LimiterSettings(jitter_s=0.0, base_backoff_s=0.01, max_attempts=1)
    llm = LLMClient(Settings(limiter=limiter), base_url=sim.url)
    yield llm
    await llm.close()


class Validator:
    """``ask`` as the orchestrator makes it: one structured RECONCILE call per prompt."""

    def __init__(self, client: LLMClient) -> None:
        self.client = client
        self.calls: list[tuple[str, Reconciliation]] = []

    async def __call__(self, prompt: str) -> Reconciliation:
        answer = await self.client.structured(
            Purpose.RECONCILE, RECONCILE_SYSTEM, prompt, Reconciliation, max_tokens=8192
        )
        self.calls.append((prompt, answer.value))
        return answer.value


def finding(n: int = 0) -> Finding:
    return findings(WORDS)[n]


async def test_one_finding_in_five_wordings_under_three_names_is_no_conflict(
    client: LLMClient,
) -> None:
    cost = finding()
    side = true_side(cost, SEED)
    results = [
        result(f"r{i}", claims=[(cost.topics[i % 3], wording)])
        for i, wording in enumerate(cost.wordings(side))
    ]
    assert summarise(results).conflicts  # topic names alone call paraphrases a conflict
    validator = Validator(client)
    summary = await reconcile(results, [], validator)
    assert summary.method == "semantic" and summary.notes == []
    assert summary.conflicts == []
    assert summary.agreed_topics == [cost.topics[0]]
    assert len(validator.calls) == 1


async def test_a_contradiction_under_two_names_is_one_conflict_naming_both_sides(
    client: LLMClient,
) -> None:
    maturity = finding(2)
    results = [
        result("r1", confidence=0.9, claims=[(maturity.topics[0], maturity.wordings(0)[1])]),
        result("v1", Role.VALIDATION, 0.7, claims=[(maturity.topics[2], maturity.wordings(1)[3])]),
        result("a1", Role.ANALYSIS, claims=[(finding(1).topics[1], finding(1).wordings(0)[2])]),
    ]
    assert summarise(results).conflicts == []  # under different names it goes unseen
    summary = await reconcile(results, [], Validator(client))
    assert summary.method == "semantic"
    [conflict] = summary.conflicts
    assert conflict.topic == maturity.topics[0]
    assert {p.statement for p in conflict.positions} == {
        maturity.wordings(0)[1],
        maturity.wordings(1)[3],
    }
    assert conflict.winner.microtask_id == "v1"  # 0.7 x 2 for a validator beats 0.9
    assert conflict.margin == pytest.approx((1.4 - 0.9) / 2.3)
    assert conflict.reason


async def test_a_failing_reconciling_call_falls_back_to_topic_names(
    sim: SimulatorServer, client: LLMClient
) -> None:
    cost = finding()
    results = [
        result("r1", claims=[(cost.topics[0], cost.wordings(0)[0])]),
        result("r2", claims=[(cost.topics[0], cost.wordings(1)[0])]),
    ]
    sim.reconfigure(rate_500=1.0)
    summary = await reconcile(results, [], Validator(client))
    assert summary.method == "lexical"
    [note] = summary.notes
    assert note.startswith("the reconciling call failed (ProviderError")
    assert len(summary.conflicts) == 1  # found by topic name, as before


async def test_150_simulated_claims_in_three_batches_each_claim_in_one_group(
    client: LLMClient,
) -> None:
    rng = random.Random(7)
    said: list[tuple[str, str, str]] = []  # (microtask, topic, statement)
    for n in range(100):
        for claim in fake_claims.agent_claims(WORDS, SEED, rng, f"m{n}"):
            said.append((f"m{n}", claim["topic"], claim["statement"]))
    said = said[:150]
    assert all(identify(statement) for _, _, statement in said)
    mids = list(dict.fromkeys(mid for mid, _, _ in said))
    results = [result(m, claims=[(t, s) for mid, t, s in said if mid == m]) for m in mids]
    validator = Validator(client)
    summary = await reconcile(results, [], validator, batch_claims=60)
    assert summary.method == "semantic"
    assert len(validator.calls) == 3
    asked: list[str] = []
    for prompt, answer in validator.calls:
        ids = [line.split('"')[1] for line in prompt.splitlines() if line.startswith("<claim ")]
        grouped = [i for g in answer.groups for p in g.positions for i in p.claim_ids]
        assert sorted(grouped) == sorted(ids)  # every claim of the batch in exactly one group
        asked.extend(ids)
    assert sorted(asked) == sorted(f"c{n}" for n in range(1, 151))
    assert summary.conflicts  # about one claim in eight states the other side
    for conflict in summary.conflicts:  # each one real: both sides of one finding
        sides = [identify(p.statement) for p in conflict.positions]
        assert len({known[0] for known in sides if known}) == 1
        assert {known[1] for known in sides if known} == {0, 1}


async def test_one_failing_batch_makes_the_merge_mixed(client: LLMClient) -> None:
    cost = finding()
    results = [
        result(f"r{i}", claims=[(cost.topics[i % 3], cost.wordings(0)[i % 5])]) for i in range(150)
    ]
    validator = Validator(client)

    async def ask(prompt: str) -> Reconciliation:
        if 'id="c51"' in prompt:
            raise ProviderError("overloaded", status_code=529)
        return await validator(prompt)

    summary = await reconcile(results, [], ask, batch_claims=60)
    assert summary.method == "mixed" and len(validator.calls) == 2
    assert "batch 2 of 3" in summary.notes[0]


# --- the simulator's vocabulary ---------------------------------------------------


@pytest.mark.parametrize("words", [WORDS, ["real-time", "data"], [], ["more-cost", "running"]])
def test_every_wording_maps_back_to_its_finding_and_side(words: list[str]) -> None:
    for known in findings(words):
        assert len(known.topics) == 3
        for side in (0, 1):
            assert len(set(known.wordings(side))) == 5
            for wording in known.wordings(side):
                assert identify(wording) == (known, side)
                assert identify(wording.upper().rstrip(".")) == (known, side)  # normalised
    assert identify("The sky is green.") is None


def test_agent_claims_are_reproducible_and_mostly_on_the_true_side() -> None:
    def claims(mid: str, rng_seed: int) -> list[tuple[Finding, int]]:
        said = fake_claims.agent_claims(WORDS, SEED, random.Random(rng_seed), mid)
        assert 1 <= len(said) <= 3
        out = []
        for claim in said:
            known = identify(claim["statement"])
            assert known is not None and claim["topic"] in known[0].topics
            out.append(known)
        return out

    assert claims("r1", 5) == claims("r1", 5)
    said = [known for n in range(400) for known in claims(f"m{n}", n)]
    flipped = sum(side != true_side(known, SEED) for known, side in said)
    assert 0.06 < flipped / len(said) < 0.2  # about one in eight


def test_reconcile_answer_groups_unknown_statements_by_topic() -> None:
    cost = finding()

    def line(cid: str, topic: str, confidence: str, role: str, statement: str) -> str:
        attributes = f'id="{cid}" topic="{topic}" confidence="{confidence}" role="{role}"'
        return f"<claim {attributes}>{statement}</claim>"

    text = "\n".join(
        [
            line("c1", "a", "0.50", "research", cost.wordings(0)[0]),
            line("c2", "b", "0.40", "validation", cost.wordings(1)[2]),
            line("c3", "Latency", "0.90", "research", "It is slow."),
            line("c4", "latency!", "0.90", "research", "It is fast."),
            line("c5", "Other", "0.90", "research", "Same."),
            line("c6", "other", "0.90", "analysis", "same"),
        ]
    )
    answer = Reconciliation.model_validate(fake_claims.reconcile_answer(text, SEED))
    found, latency, other = answer.groups
    assert [p.claim_ids for p in found.positions] == [["c1"], ["c2"]]
    assert found.chosen == 1  # 0.40 x 2 for a validator
    assert [p.claim_ids for p in latency.positions] == [["c3"], ["c4"]]
    assert [p.claim_ids for p in other.positions] == [["c5", "c6"]]
