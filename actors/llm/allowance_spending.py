"""A ``RemoteLimiter``'s side of a borrowed allowance: what is left of it, what it did.

``Spending`` counts down an allowance's slots, requests and token estimates as calls
start on it, and builds the ``AllowanceReport`` handed back when it ends;
``AllowanceCall`` is one call started on it (or carried into it) while that call runs.
"""

from __future__ import annotations

from actors.llm.limiter import Allowance, AllowanceReport, Release


class AllowanceCall:
    """A call started on an allowance, while it runs."""

    __slots__ = ("done", "input_tokens", "known", "output_tokens", "spending")

    def __init__(self, input_tokens: int, output_tokens: int, spending: Spending | None) -> None:
        self.input_tokens, self.output_tokens = input_tokens, output_tokens  # estimated
        self.spending = spending  # the allowance it runs on; None: a lease of the limiter's
        self.known = False  # the limiter holds it as a lease of its own (carried or not)
        self.done: Release | None = None  # released while a borrow carries it


class Spending:
    """This process's side of an allowance: what is left of it, and what it did."""

    __slots__ = ("deadline", "free", "grant", "next_id", "report", "requests", "tokens")

    def __init__(self, grant: Allowance, deadline: float, carried: int) -> None:
        self.grant = grant
        self.deadline = deadline  # clock time from which no call starts on it
        self.free = grant.slots - carried  # slots no running call holds
        self.next_id = grant.first_call_id
        self.requests = grant.requests  # calls it may still start
        self.tokens = [grant.input_tokens, grant.output_tokens]  # estimates it may still take
        self.report = AllowanceReport(id=grant.id)

    def covers(self, now: float, input_tokens: int, output_tokens: int) -> bool:
        left_in, left_out = self.tokens
        return (
            now < self.deadline
            and self.free > 0
            and self.requests > 0
            and input_tokens <= left_in
            and output_tokens <= left_out
        )

    def start(self, input_tokens: int, output_tokens: int) -> int:
        key, self.next_id = self.next_id, self.next_id + 1
        self.free -= 1
        self.requests -= 1
        self.tokens[0] -= input_tokens
        self.tokens[1] -= output_tokens
        self.report.started += 1
        return key

    def finish(self, call: AllowanceCall, done: Release) -> None:
        """An answered call ends: counted for the report (no tokens reported: the estimate)."""
        self.free += 1
        report = self.report
        report.outcomes[done.outcome.value] = report.outcomes.get(done.outcome.value, 0) + 1
        used = (done.input_tokens, done.output_tokens)
        input_tokens, output_tokens = used if any(used) else (call.input_tokens, call.output_tokens)
        if call.known:
            report.finished.append((done.lease.id, input_tokens, output_tokens))
        else:
            report.input_tokens += input_tokens
            report.output_tokens += output_tokens
        if done.headers:
            report.headers = dict(done.headers)
