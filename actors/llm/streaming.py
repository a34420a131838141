"""Streamed model calls: one attempt read to its end, its answer handed on as it grows.

``LLMClient.stream_text`` and ``LLMClient.stream_structured`` send each attempt through
``send_streamed``; retries, the limiter, the ledger, cuts and refusals stay in the client's
one retry loop, which treats a streamed attempt like a plain one:

- the whole attempt (connecting, every event, the consumer's callbacks) must end within
  ``request["timeout"]`` seconds, or ``TimeoutError`` — the SDK's timeout only bounds each
  read, so a trickling stream would otherwise never end;
- an ``event: error`` mid-stream raises ``anthropic.APIStatusError`` on the 200 response;
- a connection that breaks mid-stream, or a stream that ends before ``message_stop``,
  raises ``StreamBrokenError`` (the provider may have billed it: the ledger says unknown).

``ItemFeed`` watches a growing JSON text and hands on each element of one list field as soon
as it is complete: once the next element has begun or the list is closed.
"""

from __future__ import annotations

import asyncio
import time
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2  # the SDK's HTTP library: a read that fails mid-stream raises its errors
import pydantic_core
from anthropic.types import InputJSONDelta, Message, RawContentBlockDeltaEvent, TextDelta
from pydantic import BaseModel, ValidationError

from actors.errors import ConfigurationError

OnAnswer = Callable[[str], Awaitable[None]]
OnItem = Callable[[int, BaseModel], Awaitable[None]]
_CLOSERS = frozenset("{]}")  # only these can complete an element or close the list


@dataclass(frozen=True)
class Sent:
    """What one HTTP attempt brought back."""

    headers: Mapping[str, str]
    message: Message
    first_token_s: float | None = None  # request to the first answer delta (streams only)


class StreamBrokenError(Exception):
    """The connection failed mid-stream, or the stream ended before ``message_stop``."""


async def send_streamed(
    client: anthropic.AsyncAnthropic, request: dict[str, Any], on_answer: OnAnswer
) -> Sent:
    """One streamed attempt of ``request`` (``messages.create``'s arguments).

    ``on_answer(so_far)`` is awaited with the whole answer so far each time it grows: the
    text (thinking never included), or a forced tool's input JSON text when the request
    forces a tool. See the module docstring for what it raises.
    """
    tool = "tool_choice" in request
    started, first = time.monotonic(), None
    so_far, stopped = "", False
    try:
        async with (
            asyncio.timeout(request["timeout"]),
            client.messages.stream(**request) as stream,
        ):
            async for event in stream:
                stopped = stopped or event.type == "message_stop"
                piece = _piece(event, tool)
                if piece:
                    if first is None:
                        first = time.monotonic() - started
                    so_far += piece
                    await on_answer(so_far)
            message = await stream.get_final_message()
            headers = stream.response.headers
    except httpx2.TimeoutException:
        raise TimeoutError from None  # the SDK's read timeout, mid-stream
    except httpx2.TransportError as exc:
        raise StreamBrokenError(f"the stream broke: {exc!r}") from None
    if not stopped:
        raise StreamBrokenError("the stream ended before message_stop")
    return Sent(headers, message, first)


def _piece(event: object, tool: bool) -> str:
    """The answer text an event adds (a text delta, or a tool-input delta when forced)."""
    if not isinstance(event, RawContentBlockDeltaEvent):
        return ""
    delta = event.delta
    if tool:
        return delta.partial_json if isinstance(delta, InputJSONDelta) else ""
    return delta.text if isinstance(delta, TextDelta) else ""


def item_type(output: type[BaseModel], items: str) -> type[BaseModel]:
    """The element model of ``output``'s list field ``items`` (``ConfigurationError`` if none)."""
    field = output.model_fields.get(items)
    annotation = field.annotation if field is not None else None
    (element,) = typing.get_args(annotation) or (None,)
    if typing.get_origin(annotation) is not list or not (
        isinstance(element, type) and issubclass(element, BaseModel)
    ):
        raise ConfigurationError(f"{output.__name__}.{items} is not a list of pydantic models")
    return element


class ItemFeed:
    """One attempt's elements of ``items``, each validated and handed to ``on_item`` once.

    ``update(json_so_far)`` parses the growing text with
    ``pydantic_core.from_json(allow_partial=True)``. Elements go out in order, by their
    index in the list; one that fails validation is skipped (the final validation decides).
    """

    def __init__(self, element: type[BaseModel], items: str, on_item: OnItem) -> None:
        self._element = element
        self._items = items
        self._on_item = on_item
        self._judged = 0  # elements delivered or skipped so far
        self._seen = 0  # characters of the text already looked at

    async def update(self, text: str) -> None:
        fresh, self._seen = text[self._seen :], len(text)
        if not _CLOSERS.intersection(fresh):
            return  # nothing new can be complete: spare a parse of the whole text
        try:
            data = pydantic_core.from_json(text, allow_partial=True)
        except ValueError:
            return
        elements = data.get(self._items) if isinstance(data, dict) else None
        if not isinstance(elements, list):
            return
        complete = len(elements) if self._closed(data, text) else len(elements) - 1
        while self._judged < complete:
            index = self._judged
            self._judged += 1
            try:
                item = self._element.model_validate(elements[index])
            except ValidationError:
                continue
            await self._on_item(index, item)

    def _closed(self, data: dict[str, Any], text: str) -> bool:
        """True once the list is closed: a later field has begun, or the JSON is whole."""
        if list(data)[-1] != self._items:
            return True
        if not text.rstrip().endswith("}"):
            return False
        try:
            pydantic_core.from_json(text)
        except ValueError:
            return False
        return True
