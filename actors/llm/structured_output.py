"""Structured answers: the schema a call asks for, and reading the answer back into it.

``validate`` reads a complete answer (JSON text, or a forced tool's input) into the asked-for
type or raises ``Malformed`` naming what was wrong (``correction`` is the note sent with
the retry); ``salvage`` keeps the complete part of an answer cut at ``max_tokens`` or
raises ``Cut``. ``text_of`` is an answer's visible text (never its thinking).
"""

from __future__ import annotations

import functools
import re
from typing import Any, TypeVar

import anthropic
import pydantic_core
from anthropic.types import Message
from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)


class Malformed(Exception):
    """The model answered, but not in the asked-for shape; ``problems`` names what was wrong."""

    def __init__(self, problems: str, raw: str) -> None:
        super().__init__(problems)
        self.problems = problems
        self.raw = raw


class Cut(Exception):
    """The answer stopped at ``max_tokens`` and nothing usable could be kept of it."""


def text_of(message: Message) -> str:
    """The answer's text: text blocks only (thinking blocks are never shown or sent back)."""
    return "".join(block.text for block in message.content if block.type == "text")


def tool_name(output: type[BaseModel]) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", f"record_{output.__name__}")[:64]


def validate(message: Message, output: type[T], mode: str) -> T:
    """Parse the answer into ``output`` or raise ``Malformed`` naming what was wrong."""
    try:
        if mode == "tool":
            inputs = [block.input for block in message.content if block.type == "tool_use"]
            if not inputs:
                raise Malformed("no tool call in the answer", text_of(message))
            return output.model_validate(inputs[0])
        return output.model_validate_json(text_of(message))
    except ValidationError as exc:
        raw = text_of(message) if mode != "tool" else str(inputs[0])
        raise Malformed(problems(exc), raw) from None


def problems(exc: ValidationError) -> str:
    """``claims.0.topic: Field required; confidence: Input should be ...`` (bounded)."""
    parts = []
    for error in exc.errors()[:8]:
        where = ".".join(str(part) for part in error["loc"]) or "answer"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)[:800]


def correction(problems: str) -> str:
    return (
        f"\n\n(Your previous answer did not match the required schema: {problems}. "
        "Answer again, exactly in the required format.)"
    )


def salvage(message: Message, output: type[T], mode: str) -> T:
    """The complete part of an answer cut at ``max_tokens``, or ``Cut`` when none validates.

    The JSON is parsed with ``pydantic_core.from_json(allow_partial=True)`` (incomplete
    strings are dropped). Only the value being written when the cut came can be incomplete:
    the last item of the last list still open is dropped unless the text shows it closed.
    """
    if mode == "tool":
        inputs = [block.input for block in message.content if block.type == "tool_use"]
        data: Any = inputs[0] if inputs else None
        closed = False  # the API gives only the parsed input: assume its last item is cut
    else:
        text = text_of(message)
        try:
            data = pydantic_core.from_json(text, allow_partial=True) if text.strip() else None
        except ValueError:
            data = None
        closed = text.rstrip().rstrip(",").rstrip().endswith(("}", "]"))
    if not isinstance(data, dict):
        raise Cut()
    if data and not closed:
        last_key = list(data)[-1]
        if isinstance(data[last_key], list) and data[last_key]:
            data = {**data, last_key: data[last_key][:-1]}
    try:
        return output.model_validate(data)
    except ValidationError:
        raise Cut() from None


@functools.cache
def input_schema(output: type[BaseModel]) -> dict[str, Any]:
    """The tool input schema of ``output`` (built once per type: it costs ~1 ms a call)."""
    return output.model_json_schema()


@functools.cache
def output_schema(output: type[BaseModel]) -> dict[str, Any]:
    """The json_schema output format of ``output``, as ``messages.parse`` would send it."""
    return dict(anthropic.transform_schema(output))
