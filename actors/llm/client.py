"""The one way this package calls a model: the official SDK behind the shared rate limiter.

>>> client = LLMClient(settings, limiter=RemoteLimiter(handle))
>>> answer = await client.complete(Purpose.RESEARCH, "You are terse.", "Name three moons.")
>>> plan = await client.structured(Purpose.PLANNING, system, prompt, PlanDraft)
>>> plan.value.microtasks, plan.usage.cost_usd
>>> answer = await client.stream_text(Purpose.SYNTHESIS, system, prompt, on_text=show)
>>> plan = await client.stream_structured(
...     Purpose.PLANNING, system, prompt, PlanDraft, items="microtasks", on_item=start
... )

Streamed calls go through the same retry loop as plain ones (``_run``, in
``actors.llm.retry_loop``); only the one HTTP attempt differs (``actors.llm.streaming``).

The SDK is built with ``max_retries=0``: every retry happens here, once, through
the limiter. The SDK's own retries would multiply with ours (6 x 3 calls per
request under a 429 storm), would bypass the cluster-wide limiter, and wait for
whatever ``retry-after`` says with no upper cap.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anthropic
from anthropic.types import Message
from pydantic import BaseModel

from actors.config import Purpose, Settings
from actors.errors import ConfigurationError, ProviderError
from actors.llm import catalog, streaming
from actors.llm.answers import Completion, Structured, T
from actors.llm.call_tally import CallTally
from actors.llm.ledger import CallLedger
from actors.llm.limiter import Limiter, RateLimiter
from actors.llm.prompt_parts import Part, Prompt, content_blocks
from actors.llm.retry_loop import RetryingCaller, Send, estimate_tokens
from actors.llm.streaming import Sent
from actors.llm.structured_output import (
    input_schema,
    output_schema,
    salvage,
    text_of,
    tool_name,
    validate,
)
from actors.models import Usage

__all__ = ["MAX_PROMPT_CHARS", "Completion", "LLMClient", "Structured"]

# Longest prompt accepted, in characters (~100k tokens at 4 chars/token): well inside
# every model's context, and a clear error beats a provider 400 after queueing.
MAX_PROMPT_CHARS = 400_000
StructuredMode = Literal["json_schema", "tool"]
# A message with every content block an answer of ours can hold, read once by ``warm_up``.
_SAMPLE_MESSAGE: dict[str, Any] = {
    "id": "msg_warm_up",
    "type": "message",
    "role": "assistant",
    "model": "warm-up",
    "content": [
        {"type": "thinking", "thinking": "", "signature": ""},
        {"type": "text", "text": "{}"},
        {"type": "tool_use", "id": "toolu_warm_up", "name": "answer", "input": {}},
    ],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 1, "output_tokens": 1},
}


class LLMClient(RetryingCaller):
    """Text and structured calls for one process (agent, orchestrator, ...).

    ``limiter`` defaults to a private ``RateLimiter``; in a cluster pass a
    ``RemoteLimiter`` so every process shares one budget. ``structured_mode`` is a
    preference: ``"json_schema"`` sends ``output_config.format`` (what ``messages.parse``
    does), ``"tool"`` forces a tool call — except on models that refuse forced tools
    (``catalog.info(model).forced_tools``), which always get the JSON schema.

    Every call gets ``max_tokens`` from ``Settings.max_tokens_for(purpose)`` (the cap on
    thinking and answer together) and, where the model takes it, ``output_config.effort``
    from ``Settings.effort``. An answer cut at ``max_tokens`` is retried once with twice
    the budget and then fails with ``TruncatedAnswerError``; ``structured(partial=True)``
    instead keeps the complete part of a cut answer. A refusal fails at once.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        limiter: Limiter | None = None,
        ledger: CallLedger | None = None,
        base_url: str | None = None,
        structured_mode: str = "json_schema",
        max_prompt_chars: int = MAX_PROMPT_CHARS,
    ) -> None:
        if structured_mode not in ("json_schema", "tool"):
            raise ConfigurationError(
                f"structured_mode must be 'json_schema' or 'tool', not {structured_mode!r}"
            )
        self._settings = settings
        self._limiter: Limiter = limiter or RateLimiter(settings.limiter)
        self._ledger = ledger or CallLedger(settings.ledger_folder)
        self._mode = structured_mode
        self._max_prompt_chars = max_prompt_chars
        key = settings.anthropic_api_key
        # A simulator never gets the real key, even when one is in the environment.
        self._secret = key.get_secret_value() if key is not None and not settings.simulated else ""
        self._client = anthropic.AsyncAnthropic(
            api_key=self._secret or "simulator",
            base_url=base_url or settings.anthropic_base_url,
            max_retries=0,
            timeout=settings.llm_timeout_s,
        )

    async def complete(
        self,
        purpose: Purpose,
        system: str,
        prompt: Prompt,
        *,
        max_tokens: int | None = None,
        timeout_s: float | None = None,
        max_paid_calls: int | None = None,
    ) -> Completion:
        """A text answer to ``prompt``, retried through the limiter on provider failures."""
        return await self._text(
            purpose, system, prompt, max_tokens, timeout_s, max_paid_calls, self._send
        )

    async def stream_text(
        self,
        purpose: Purpose,
        system: str,
        prompt: Prompt,
        *,
        on_text: Callable[[str], Awaitable[None]],
        max_tokens: int | None = None,
        timeout_s: float | None = None,
        max_paid_calls: int | None = None,
    ) -> Completion:
        """``complete``, streamed: ``on_text(text_so_far)`` is awaited as the answer grows.

        The text so far never includes thinking. A retried attempt starts again from its
        own beginning, so a consumer that shows the latest text needs no special case.
        """

        async def send(request: dict[str, Any]) -> Sent:
            return await streaming.send_streamed(self._client, request, on_text)

        return await self._text(
            purpose, system, prompt, max_tokens, timeout_s, max_paid_calls, send
        )

    async def structured(
        self,
        purpose: Purpose,
        system: str,
        prompt: Prompt,
        output: type[T],
        *,
        max_tokens: int | None = None,
        timeout_s: float | None = None,
        partial: bool = False,
        max_paid_calls: int | None = None,
    ) -> Structured[T]:
        """An answer validated into ``output``; a wrong shape is retried with a correction.

        ``partial=True``: an answer cut at ``max_tokens`` is kept when its complete parts
        validate (the last item of a list being written is dropped), and ``cut`` says so.
        Raises ``ModelBehaviorError`` naming the failing fields once the attempts run out.
        """
        return await self._structured(
            purpose, system, prompt, output, max_tokens, timeout_s, partial, max_paid_calls,
            self._send,
        )  # fmt: skip

    async def stream_structured(
        self,
        purpose: Purpose,
        system: str,
        prompt: Prompt,
        output: type[T],
        *,
        items: str,
        on_item: Callable[[int, BaseModel], Awaitable[None]],
        max_tokens: int | None = None,
        timeout_s: float | None = None,
        partial: bool = False,
        max_paid_calls: int | None = None,
    ) -> Structured[T]:
        """``structured``, streamed: each element of the list field ``items`` goes out early.

        ``on_item(index, item)`` is awaited as soon as an element is complete in the stream
        (the next one has begun or the list is closed), validated as the list's item type;
        one that fails validation is skipped, and the final validation decides as in
        ``structured``. A retried attempt delivers from index 0 again: treat a repeated
        index as a replacement.
        """
        element = streaming.item_type(output, items)

        async def send(request: dict[str, Any]) -> Sent:
            feed = streaming.ItemFeed(element, items, on_item)  # each attempt from index 0
            return await streaming.send_streamed(self._client, request, feed.update)

        return await self._structured(
            purpose, system, prompt, output, max_tokens, timeout_s, partial, max_paid_calls, send
        )

    async def warm(
        self, purpose: Purpose, system: str, prompt: Prompt, output: type[BaseModel] | None = None
    ) -> Usage:
        """Write ``prompt``'s shared prefixes to the prompt cache ahead of a fan-out.

        A cache entry is usable only once the response that writes it has begun, so calls
        sent together all pay the write. This sends the prefix first with ``max_tokens: 0``
        (the API's pre-warm: no answer, the entry written at once), the way the calls after
        it will send it: same system prompt, effort and output format (``output``). Nothing
        is sent when caching is off or no shared prefix is long enough for the model.
        Returns what the warm-up cost; raises like any call.
        """
        model = self._settings.models[purpose]
        minimum = catalog.info(model).min_cache_tokens if self._settings.prompt_caching else None
        parts = [Part(prompt)] if isinstance(prompt, str) else list(prompt)
        if not any("cache_control" in block for block in content_blocks(system, parts, minimum)):
            return Usage()
        extra = self._shaped(model, output)[1] if output is not None else {}
        call = CallTally(purpose, model, "warm-up", None)
        await self._run(call, system, parts, 0, None, extra, self._send, _nothing, _nothing)
        return call.usage

    def _shaped(self, model: str, output: type[BaseModel]) -> tuple[str, dict[str, Any]]:
        """(mode, request fields) asking ``model`` for an ``output`` instance."""
        mode = self._mode if catalog.info(model).forced_tools else "json_schema"
        if mode == "tool":
            name = tool_name(output)
            tool = {
                "name": name,
                "description": f"Record the answer as {output.__name__}.",
                "input_schema": input_schema(output),
            }
            return mode, {"tools": [tool], "tool_choice": {"type": "tool", "name": name}}
        schema = output_schema(output)
        return mode, {"output_config": {"format": {"type": "json_schema", "schema": schema}}}

    async def _text(
        self,
        purpose: Purpose,
        system: str,
        prompt: Prompt,
        max_tokens: int | None,
        timeout_s: float | None,
        max_paid_calls: int | None,
        send: Send,
    ) -> Completion:
        call = CallTally(purpose, self._settings.models[purpose], "text", max_paid_calls)
        text, sent = await self._run(call, system, prompt, max_tokens, timeout_s, {}, send, text_of)
        return Completion(
            text=text,
            usage=call.usage,
            model=sent.message.model,
            simulated=call.simulated,
            stop_reason=sent.message.stop_reason,
            first_token_s=sent.first_token_s,
        )

    async def _structured(
        self,
        purpose: Purpose,
        system: str,
        prompt: Prompt,
        output: type[T],
        max_tokens: int | None,
        timeout_s: float | None,
        partial: bool,
        max_paid_calls: int | None,
        send: Send,
    ) -> Structured[T]:
        model = self._settings.models[purpose]
        mode, extra = self._shaped(model, output)

        def parse(message: Message) -> T:
            return validate(message, output, mode)

        def keep_complete(message: Message) -> T:
            return salvage(message, output, mode)

        call = CallTally(purpose, model, output.__name__, max_paid_calls)
        value, sent = await self._run(
            call, system, prompt, max_tokens, timeout_s, extra, send, parse,
            keep_complete if partial else None,
        )  # fmt: skip
        return Structured(
            value=value,
            usage=call.usage,
            model=sent.message.model,
            simulated=call.simulated,
            cut=sent.message.stop_reason == "max_tokens",
            first_token_s=sent.first_token_s,
        )

    async def count_tokens(self, purpose: Purpose, system: str, prompt: str) -> int:
        """Input tokens of this request by the provider's count (no limiter: it is free).

        Falls back to the chars/4 estimate when the endpoint does not offer counting.
        """
        system, prompt = self._checked(system, prompt)
        try:
            counted = await self._client.messages.count_tokens(
                model=self._settings.models[purpose],
                system=system,
                messages=[{"role": "user", "content": prompt}],
            )
        except anthropic.NotFoundError:
            return estimate_tokens(system, prompt)
        except anthropic.APIError as exc:
            raise ProviderError(
                self._redact(f"token count failed: {exc}"),
                getattr(exc, "status_code", None),
                attempts=1,
            ) from None
        return counted.input_tokens

    async def warm_up(self, purpose: Purpose, system: str) -> None:
        """Pay the SDK's first-call costs before the first real call: its lazily imported
        HTTP parts and connection (one token count, which the provider does not bill) and
        the schemas it builds the first time it reads a message (~20 ms of CPU here)."""
        anthropic.types.Message.construct(**_SAMPLE_MESSAGE)
        await self.count_tokens(purpose, system, "Warm-up.")

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._client.close()

    async def _send(self, request: dict[str, Any]) -> Sent:
        """One plain (not streamed) attempt of ``request``."""
        raw = await self._client.messages.with_raw_response.create(**request)
        return Sent(raw.headers, await raw.parse())


def _nothing(message: Message) -> None:
    """The value of a warm-up's answer (``max_tokens: 0``: there is none)."""
    return None
