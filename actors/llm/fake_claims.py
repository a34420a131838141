"""The claims simulated agents make, and the simulator's answer to a reconciling call.

Work in progress this round: the wording table and the reconciler are being filled in.
"""

from __future__ import annotations

import random
import re
from typing import Any

_ASPECTS = ("cost", "risk", "demand")
_CLAIM_LINE = re.compile(r'<claim id="([^"]+)" topic="([^"]*)">(.*?)</claim>', re.DOTALL)


def agent_claims(
    words: list[str], seed: int, rng: random.Random, microtask_id: str | None = None
) -> list[dict[str, Any]]:
    """The 1-3 claims one agent states about the request whose keywords are ``words``."""
    from actors.llm.fake_content import seeded_rng

    vocabulary = [f"{word} {aspect}" for word in words[:2] for aspect in _ASPECTS]
    claims = []
    for topic in rng.sample(vocabulary, rng.randint(1, min(3, len(vocabulary)))):
        high = seeded_rng(seed, topic).random() < 0.5
        if rng.random() < 0.3:
            high = not high
        claims.append({"topic": topic, "statement": f"The {topic} is {'high' if high else 'low'}."})
    return claims


def reconcile_answer(text: str, seed: int) -> dict[str, Any]:
    """A ``Reconciliation`` for the ``<claim id=... topic=...>`` lines in ``text``."""
    groups: dict[str, dict[str, list[str]]] = {}
    for claim_id, topic, statement in _CLAIM_LINE.findall(text):
        groups.setdefault(topic.strip().lower(), {}).setdefault(statement.strip(), []).append(
            claim_id
        )
    out = []
    for subject, positions in groups.items():
        ranked = sorted(positions.items(), key=lambda kv: -len(kv[1]))
        out.append(
            {
                "subject": subject,
                "positions": [{"statement": s, "claim_ids": ids} for s, ids in ranked],
                "chosen": 0,
                "reason": "most agents hold it",
            }
        )
    return {"groups": out}
