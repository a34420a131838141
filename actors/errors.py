"""One error tree for the whole system, split by who caused the problem.

::

    ParallelAgentsError
    ├── UserInputError            the caller's request is unusable (empty, too big, binary)
    │   └── DocumentLimitError    ... because a document, or all of them, pass a size or
    │                             count limit (HTTP 413)
    ├── CapacityError             a limit on running tasks or on cost refuses the request now
    │                             (``retry_after_s``: when asking again may succeed)
    ├── TaskBudgetError           a task's own budget cannot cover another model call
    ├── ConfigurationError        settings that cannot work together
    ├── ModelBehaviorError        the model answered, but not in the asked-for shape
    │   ├── TruncatedAnswerError  ... because the answer was cut at max_tokens, even
    │   │                         after a retry with a larger budget
    │   └── ModelRefusalError     ... because it refused (stop_reason "refusal")
    ├── ProviderError             the LLM provider failed after every allowed retry
    │   └── ProviderTimeoutError  ... by not answering within the per-call timeout
    ├── AgentLostError            the agent running a microtask died (Ray's own errors
    │                             are translated to this at the pool, one boundary)
    ├── MicrotaskTimeoutError     a microtask passed its deadline
    ├── TaskCancelledError        a caller cancelled the task
    └── UnknownTaskError          no task with that id

Every error pickles with its message (Ray ships exceptions between processes);
errors with extra fields define ``__reduce__``. Errors of model calls carry ``usage``:
the answers that were paid for before the call failed, so budgets count them.
"""

from __future__ import annotations

from typing import Any

from actors.models import Usage


class ParallelAgentsError(Exception):
    """Base class: every error this package raises on purpose."""


class UserInputError(ParallelAgentsError, ValueError):
    """The request itself cannot be processed; the message says what to change."""


class DocumentLimitError(UserInputError):
    """A document, or the documents together, pass a size or count limit."""


class CapacityError(ParallelAgentsError):
    """Refused for now: too many running tasks (overall or for this user) or over budget.

    ``retry_after_s`` is the wait after which asking again may succeed (HTTP ``Retry-After``);
    None when nothing is known.
    """

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.retry_after_s))


class TaskBudgetError(ParallelAgentsError):
    """A task's spending plus the calls it has in flight leave no room for another call.

    Raised inside a task (never to a submitter): the task merges what it has instead.
    """


class ConfigurationError(ParallelAgentsError):
    """Settings that cannot work (e.g. a public HTTP host without an API token)."""


class ModelBehaviorError(ParallelAgentsError):
    """The model's answer did not match the requested schema.

    ``detail`` names what was wrong; ``raw`` keeps (a bounded part of) what the
    model said so nothing is lost for debugging.
    """

    def __init__(self, message: str, raw: str = "", usage: Usage | None = None) -> None:
        super().__init__(message)
        self.raw = raw[:2000]
        self.usage = usage or Usage()

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.raw, self.usage))


class TruncatedAnswerError(ModelBehaviorError):
    """The answer was cut at ``max_tokens`` again after one retry with a larger budget."""


class ModelRefusalError(ModelBehaviorError):
    """The model declined to answer (``stop_reason: "refusal"``); asking again will not help."""


class ProviderError(ParallelAgentsError):
    """The provider kept failing (429/529/5xx/connection) past the retry budget."""

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        attempts: int = 0,
        usage: Usage | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.attempts = attempts
        self.usage = usage or Usage()

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.status_code, self.attempts, self.usage))


class ProviderTimeoutError(ProviderError):
    """No answer from the provider within the per-call timeout."""


class AgentLostError(ParallelAgentsError):
    """The agent process running a microtask died or became unreachable."""


class MicrotaskTimeoutError(ParallelAgentsError):
    """A microtask ran past its deadline and was cancelled."""


class TaskCancelledError(ParallelAgentsError):
    """The task was cancelled by its caller."""


class UnknownTaskError(ParallelAgentsError, KeyError):
    """No task with the given id is known."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown task"


class UnknownConversationError(ParallelAgentsError, KeyError):
    """No conversation with the given id belongs to the caller (missing, forgotten, expired
    or another identity's: the same answer for each, so ids reveal nothing)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown conversation"
