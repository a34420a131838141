"""Reading a provider's reply: its status as a limiter ``Outcome``, its error text, its origin."""

from __future__ import annotations

from collections.abc import Mapping

import anthropic
from anthropic.types import Message

from actors.llm.limiter import Outcome

SIMULATED_ID_PREFIX = "msg_sim_"


def outcome_of(status: int) -> Outcome:
    if status == 429:
        return Outcome.RATE_LIMITED
    if status == 529:
        return Outcome.OVERLOADED
    if status == 408:
        return Outcome.TIMEOUT
    if status >= 500 or status == 409:  # 409: a conflict the SDK also retries
        return Outcome.SERVER_ERROR
    return Outcome.REJECTED


def describe(exc: anthropic.APIStatusError, status: int) -> str:
    body = exc.body if isinstance(exc.body, Mapping) else {}
    error = body.get("error") if isinstance(body.get("error"), Mapping) else {}
    detail = error.get("message") if error else None
    where = "mid-stream" if exc.status_code < 400 else ""
    return " ".join(filter(None, ["HTTP", str(status), where, detail or exc.message]))[:500]


def is_simulated(headers: Mapping[str, str], message: Message) -> bool:
    flag = str(headers.get("x-simulated", "")).lower() == "true"
    return flag or message.id.startswith(SIMULATED_ID_PREFIX)
