"""What a model call returns: a text ``Completion`` or a validated ``Structured`` answer.

Plain values, free of the SDK, so any layer may hold them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

from actors.models import Usage

T = TypeVar("T", bound=BaseModel)


class Completion(BaseModel):
    """A plain text answer; ``first_token_s``: request to first text delta (streams only)."""

    text: str
    usage: Usage
    model: str
    simulated: bool
    stop_reason: str | None = None
    first_token_s: float | None = None


@dataclass(frozen=True)
class Structured(Generic[T]):
    """A validated structured answer (a dataclass so any ``T`` pickles across Ray).

    ``cut`` is True when the answer stopped at ``max_tokens`` and ``value`` holds only its
    complete parts (asked for with ``partial=True``). ``first_token_s``: from the successful
    attempt's request to its first JSON delta (streamed calls only).
    """

    value: T
    usage: Usage
    model: str
    simulated: bool
    cut: bool = False
    first_token_s: float | None = None
