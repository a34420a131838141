"""The answer as it is written: from the agent streaming the synthesis to the orchestrator.

The writer's model call streams (``LLMClient.stream_text``); ``AnswerRelay.update`` gets
the text so far and sends the new part to the orchestrator's ``answer`` method, which
turns it into an ``ANSWER`` progress event that every front door follows (SSE, the CLI,
the bot). Sends are coalesced to one every ``interval_s`` (the stream delivers a few
tokens at a time) and fire-and-forget: a piece that could not be sent goes with the next
one, and a lost one only delays what a follower sees, never the answer itself, which the
report carries whole. When the writer starts over (a retried call), the relay sends the
whole text again with the next ``attempt`` number.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# (attempt, text to append) -> None, or an awaitable that is awaited (an in-process emit).
Send = Callable[[int, str], Any]


class AnswerRelay:
    def __init__(self, send: Send, interval_s: float = 0.25) -> None:
        self._send = send
        self._interval_s = interval_s
        self._attempt = 1
        self._sent = ""  # text the orchestrator has been sent, this attempt
        self._text = ""  # text written so far, this attempt
        self._last = -math.inf  # the first piece goes at once (monotonic time starts at boot)

    async def update(self, text: str) -> None:
        """The writer's text so far (``on_text`` of ``LLMClient.stream_text``)."""
        if not text.startswith(self._text):  # a new attempt: start over
            self._attempt += 1
            self._sent = ""
        self._text = text
        if time.monotonic() - self._last >= self._interval_s:
            await self.flush()

    async def flush(self) -> None:
        """Send what has not been sent yet."""
        piece = self._text[len(self._sent) :]
        if not piece:
            return
        self._last = time.monotonic()
        try:
            sent = self._send(self._attempt, piece)
            if inspect.isawaitable(sent):
                await sent
        except Exception as exc:  # e.g. the orchestrator is restarting: sent with the next
            log.debug("answer piece not sent: %s", exc)
            return
        self._sent = self._text
