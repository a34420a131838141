"""The simulator's streamed answers: a finished reply cut into Messages API server-sent events.

``events(reply, rng)`` turns the reply the non-streamed path would send
(``fake_content.message``) into the event sequence the API streams for it::

    message_start                      the message with empty content, output_tokens 1
    content_block_start  (index 0)     then one ping
    content_block_delta  (index 0)     thinking_delta / signature_delta, text_delta or
    ...                                input_json_delta (a forced tool's input as JSON text)
    content_block_stop   (index 0)
    ...                                the next block
    message_delta                      stop_reason, stop_details, usage.output_tokens
    message_stop

Deltas carry a few tokens each (~4 characters a token, as ``estimate_tokens`` counts); each
event says how many output tokens were written before it (``tokens``) so the server can
pace the stream at the model's speed. A thinking block at the default display has no text:
its tokens are the wait before its ``signature_delta``. Concatenated, the deltas are the
reply's text or JSON exactly, cut where the reply was cut. ``interrupted`` ends a stream
halfway through its answer with an ``overloaded_error`` event, as the API does under load.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from actors.sim.fake_content import Reply

_CHUNK_TOKENS = (1, 5)  # a delta carries this many tokens (inclusive range), ~4 chars each


@dataclass(frozen=True)
class Event:
    """One server-sent event; ``tokens`` output tokens are written before it is sent."""

    name: str
    data: dict[str, Any]
    tokens: float = 0.0
    answer: bool = False  # a text or tool-input delta (thinking does not count)

    def encode(self) -> bytes:
        return f"event: {self.name}\ndata: {json.dumps(self.data)}\n\n".encode()


def error_event(type_: str, message: str) -> Event:
    """An ``event: error`` (the stream ends after it)."""
    return Event("error", {"type": "error", "error": {"type": type_, "message": message}})


def message_start(payload: dict[str, Any]) -> Event:
    message = {
        **payload,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "stop_details": None,
        "usage": {**payload["usage"], "output_tokens": 1},
    }
    return Event("message_start", {"type": "message_start", "message": message})


def events(reply: Reply, rng: random.Random) -> list[Event]:
    """The whole stream of ``reply``, deltas sized by ``rng``."""
    payload = reply.payload
    stream = [message_start(payload)]
    for index, block in enumerate(payload["content"]):
        stream.append(_block_start(index, block))
        if index == 0:
            stream.append(Event("ping", {"type": "ping"}))
        stream.extend(_deltas(index, block, reply, rng))
        stream.append(Event("content_block_stop", {"type": "content_block_stop", "index": index}))
    if not payload["content"]:
        stream.append(Event("ping", {"type": "ping"}))
    delta = {
        "stop_reason": payload["stop_reason"],
        "stop_sequence": payload["stop_sequence"],
        "stop_details": payload["stop_details"],
    }
    usage = {  # the final counts, cache included, as the API repeats them here
        key: value
        for key, value in payload["usage"].items()
        if key in ("input_tokens", "output_tokens") or key.startswith("cache_")
    }
    stream.append(Event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
    stream.append(Event("message_stop", {"type": "message_stop"}))
    return stream


def interrupted(stream: list[Event]) -> list[Event]:
    """``stream`` up to halfway through its answer, then an ``overloaded_error`` event."""
    answers = [i for i, event in enumerate(stream) if event.answer]
    # Without an answer, after the first content block has begun (or message_start).
    cut = answers[len(answers) // 2] + 1 if answers else min(2, len(stream))
    return [*stream[:cut], error_event("overloaded_error", "Overloaded")]


def _block_start(index: int, block: dict[str, Any]) -> Event:
    if block["type"] == "thinking":
        start: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
    elif block["type"] == "tool_use":
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
    else:
        start = {"type": "text", "text": ""}
    data = {"type": "content_block_start", "index": index, "content_block": start}
    return Event("content_block_start", data)


def _deltas(index: int, block: dict[str, Any], reply: Reply, rng: random.Random) -> list[Event]:
    def delta(body: dict[str, Any], tokens: float, answer: bool) -> Event:
        data = {"type": "content_block_delta", "index": index, "delta": body}
        return Event("content_block_delta", data, tokens, answer)

    if block["type"] == "thinking":
        chunks = _chunks(block["thinking"], rng)
        # Summarised thinking spreads its tokens over its deltas; omitted thinking (the
        # default display) spends them all before the signature.
        share = reply.thinking_tokens / len(chunks) if chunks else 0.0
        thought = [delta({"type": "thinking_delta", "thinking": c}, share, False) for c in chunks]
        signed = {"type": "signature_delta", "signature": block["signature"]}
        return [*thought, delta(signed, 0.0 if chunks else reply.thinking_tokens, False)]
    if block["type"] == "tool_use":
        text = reply.tool_json or json.dumps(block["input"])
        return [
            delta({"type": "input_json_delta", "partial_json": c}, len(c) / 4, True)
            for c in _chunks(text, rng)
        ]
    return [
        delta({"type": "text_delta", "text": c}, len(c) / 4, True)
        for c in _chunks(block["text"], rng)
    ]


def _chunks(text: str, rng: random.Random) -> list[str]:
    """``text`` in pieces of a few tokens each."""
    pieces, at = [], 0
    while at < len(text):
        size = 4 * rng.randint(*_CHUNK_TOKENS)
        pieces.append(text[at : at + size])
        at += size
    return pieces
