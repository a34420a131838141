"""The one way this package calls a model: the official SDK behind the shared rate limiter.

>>> client = LLMClient(settings, limiter=RemoteLimiter(handle))
>>> answer = await client.complete(Purpose.RESEARCH, "You are terse.", "Name three moons.")
>>> plan = await client.structured(Purpose.PLANNING, system, prompt, PlanDraft)
>>> plan.value.microtasks, plan.usage.cost_usd
>>> answer = await client.stream_text(Purpose.SYNTHESIS, system, prompt, on_text=show)
>>> plan = await client.stream_structured(
...     Purpose.PLANNING, system, prompt, PlanDraft, items="microtasks", on_item=start
... )

Streamed calls go through the same retry loop as plain ones (``_run``); only the one HTTP
attempt differs (``actors.llm.streaming``).

The SDK is built with ``max_retries=0``: every retry happens here, once, through
the limiter. The SDK's own retries would multiply with ours (6 x 3 calls per
request under a 429 storm), would bypass the cluster-wide limiter, and wait for
whatever ``retry-after`` says with no upper cap.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import anthropic
from anthropic.types import Message
from pydantic import BaseModel

from actors.config import Purpose, Settings
from actors.errors import (
    ConfigurationError,
    ModelBehaviorError,
    ModelRefusalError,
    ProviderError,
    ProviderTimeoutError,
    TruncatedAnswerError,
    UserInputError,
)
from actors.llm import catalog, streaming
from actors.llm.held_back import held_back
from actors.llm.ledger import CALL_HEADER, CallLedger, new_call_id
from actors.llm.limiter import Limiter, Outcome, RateLimiter, Release
from actors.llm.pricing import cache_saving_usd, cost_usd
from actors.llm.prompt_parts import Part, Prompt, content_blocks, joined
from actors.llm.streaming import Sent
from actors.llm.structured_output import (
    Cut,
    Malformed,
    correction,
    input_schema,
    output_schema,
    salvage,
    text_of,
    tool_name,
    validate,
)
from actors.models import Usage
from actors.observe import tracing

logger = logging.getLogger(__name__)

# Longest prompt accepted, in characters (~100k tokens at 4 chars/token): well inside
# every model's context, and a clear error beats a provider 400 after queueing.
MAX_PROMPT_CHARS = 400_000
StructuredMode = Literal["json_schema", "tool"]
T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")
_SIMULATED_ID_PREFIX = "msg_sim_"
# A cut answer is retried once with twice the budget, never above this (the largest output
# the current models allow in one call).
_MAX_OUTPUT_TOKENS = 64_000
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
_Send = Callable[[dict[str, Any]], Awaitable[Sent]]  # one HTTP attempt of a request


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


class LLMClient:
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
        call = _Call(purpose, model, "warm-up", None)
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
        send: _Send,
    ) -> Completion:
        call = _Call(purpose, self._settings.models[purpose], "text", max_paid_calls)
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
        send: _Send,
    ) -> Structured[T]:
        model = self._settings.models[purpose]
        mode, extra = self._shaped(model, output)

        def parse(message: Message) -> T:
            return validate(message, output, mode)

        def keep_complete(message: Message) -> T:
            return salvage(message, output, mode)

        call = _Call(purpose, model, output.__name__, max_paid_calls)
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
            return _estimate(system, prompt)
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

    # --- the one retry loop ----------------------------------------------------------

    async def _run(
        self,
        call: _Call,
        system: str,
        prompt: Prompt,
        max_tokens: int | None,
        timeout_s: float | None,
        extra: dict[str, Any],
        send: _Send,
        parse: Callable[[Message], R],
        salvage: Callable[[Message], R] | None = None,
    ) -> tuple[R, Sent]:
        parts = [Part(prompt)] if isinstance(prompt, str) else list(prompt)
        parts = [Part(p.text.replace("\x00", ""), p.shared) for p in parts]
        system, text = self._checked(system, joined(parts))
        model, info = call.model, catalog.info(call.model)
        minimum = info.min_cache_tokens if self._settings.prompt_caching else None
        blocks = content_blocks(system, parts, minimum)
        budget = self._settings.max_tokens_for(call.purpose) if max_tokens is None else max_tokens
        extra = _with_effort(extra, self._settings.effort[call.purpose].value, info.effort)
        attempts = self._settings.limiter.max_attempts
        note = ""  # corrective note after a malformed answer
        enlarged = False  # a cut answer gets one retry with twice the budget
        failure: tuple[str, int | None, bool] = ("no attempt made", None, False)
        malformed: Malformed | None = None
        with tracing.span("llm.call", model=model, purpose=call.purpose) as span:
            for attempt in range(1, attempts + 1):
                call.check_paid_cap()
                timeout = timeout_s or max(
                    self._settings.llm_timeout_s, info.first_token_s + budget / info.tokens_per_s
                )
                with held_back():
                    lease = await self._limiter.acquire(_estimate(system, text + note), budget)
                outcome, sent, message = Outcome.CONNECTION, None, None
                headers: Mapping[str, str] = {}
                call_id = new_call_id()
                self._ledger.sent(call_id, model, call.purpose.value, budget)
                try:
                    sent = await send(
                        {
                            "model": model,
                            "max_tokens": budget,
                            "system": system,
                            "messages": [{"role": "user", "content": _content(blocks, note)}],
                            "timeout": timeout,
                            "extra_headers": {CALL_HEADER: call_id},
                            **extra,
                        }
                    )
                    headers, message = sent.headers, sent.message
                    outcome = Outcome.OK
                except anthropic.APIStatusError as exc:
                    # An error event mid-stream comes on the 200 response: it means overloaded.
                    code = exc.status_code if exc.status_code >= 400 else 529
                    self._ledger.refused(call_id, code)
                    headers = exc.response.headers
                    outcome = _outcome_of(code)
                    failure = (self._redact(_describe(exc, code)), code, False)
                except (anthropic.APITimeoutError, TimeoutError):
                    outcome = Outcome.TIMEOUT
                    failure = (f"no answer within {timeout:g} s", None, True)
                except (anthropic.APIConnectionError, streaming.StreamBrokenError) as exc:
                    failure = (self._redact(f"connection failed: {exc}"), None, False)
                except BaseException:
                    await self._release_quietly(lease)  # cancelled: give the slot back
                    raise

                spent, value, verdict = Usage(), None, ""
                if message is not None:
                    spent = call.paid(message, _is_simulated(headers, message))
                    self._ledger.paid(call_id, spent)
                    try:
                        value, outcome, verdict = self._judge(message, parse, salvage)
                    except Malformed as exc:
                        outcome, malformed, verdict = Outcome.MALFORMED, exc, "malformed"
                        note = correction(exc.problems)
                wait = await self._limiter.release(
                    Release(
                        lease,
                        outcome,
                        # Cache writes count toward the provider's input-token limit; reads do not.
                        input_tokens=spent.input_tokens + spent.cache_write_tokens,
                        output_tokens=spent.output_tokens,
                        headers=headers,
                        attempt=attempt,
                    )
                )
                span.set_attributes(_call_attributes(call.usage, outcome, attempt, verdict))
                if sent is not None and verdict == "ok":
                    return value, sent  # type: ignore[return-value]
                if verdict == "refusal":
                    raise ModelRefusalError(
                        f"{model} refused to answer ({call.shape}): stop_reason refusal",
                        raw=text_of(message) if message is not None else "",
                        usage=call.usage,
                    )
                if verdict == "cut":
                    if enlarged or budget >= _MAX_OUTPUT_TOKENS:
                        raise TruncatedAnswerError(
                            f"{model}'s {call.shape} answer was cut at max_tokens twice "
                            f"({call.budgets_text(budget)} tokens, thinking included)",
                            raw=text_of(message) if message is not None else "",
                            usage=call.usage,
                        )
                    enlarged, first = True, budget
                    budget = min(2 * budget, _MAX_OUTPUT_TOKENS)
                    call.budgets.append(first)
                    logger.info(
                        "%s %s answer cut at max_tokens=%d; retrying once with %d",
                        call.purpose, call.shape, first, budget,
                    )  # fmt: skip
                    continue
                if outcome is Outcome.REJECTED:
                    raise self._rejected(failure, attempt, call.usage)
                if attempt < attempts:
                    logger.info(
                        "%s call attempt %d/%d: %s; retrying in %.2f s",
                        call.purpose, attempt, attempts, outcome, wait,
                    )  # fmt: skip
                    with held_back():
                        await asyncio.sleep(wait)

            if malformed is not None and outcome is Outcome.MALFORMED:
                raise ModelBehaviorError(
                    f"{model} answered {call.shape} in the wrong shape {_times(attempts)}; "
                    f"last problems: {malformed.problems}",
                    raw=malformed.raw,
                    usage=call.usage,
                )
            message_text, status, timed_out = failure
            error = ProviderTimeoutError if timed_out else ProviderError
            raise error(
                f"{model} failed {_times(attempts)}: {message_text}", status, attempts, call.usage
            )

    @staticmethod
    def _judge(
        message: Message, parse: Callable[[Message], R], salvage: Callable[[Message], R] | None
    ) -> tuple[R | None, Outcome, str]:
        """(value, limiter outcome, verdict): verdict "ok", "cut" or "refusal".

        Raises ``Malformed`` for a complete answer in the wrong shape.
        """
        if message.stop_reason == "refusal":
            return None, Outcome.OK, "refusal"  # a valid answer as far as the limiter goes
        if message.stop_reason == "max_tokens":
            if salvage is None:
                return None, Outcome.OK, "cut"
            try:
                return salvage(message), Outcome.OK, "ok"
            except Cut:
                return None, Outcome.OK, "cut"
        return parse(message), Outcome.OK, "ok"

    def _checked(self, system: str, prompt: str) -> tuple[str, str]:
        """Refuse unusable input before any call; NUL bytes are stripped (they carry no text)."""
        system, prompt = system.replace("\x00", ""), prompt.replace("\x00", "")
        if not prompt.strip():
            raise UserInputError("prompt is empty")
        if len(prompt) > self._max_prompt_chars:
            raise UserInputError(
                f"prompt is {len(prompt):,} characters; the limit is {self._max_prompt_chars:,}"
            )
        return system, prompt

    def _rejected(
        self, failure: tuple[str, int | None, bool], attempt: int, usage: Usage
    ) -> Exception:
        text, status, _ = failure
        if status in (401, 403):
            return ConfigurationError(f"the provider refused the credentials ({status}): {text}")
        if status == 413:
            return UserInputError(f"request too large for the provider: {text}")
        return ProviderError(f"the provider rejected the request: {text}", status, attempt, usage)

    def _redact(self, text: str) -> str:
        """Errors cross processes and reach users: never let the key ride along."""
        return text.replace(self._secret, "***") if self._secret else text

    async def _release_quietly(self, lease: Any) -> None:
        try:
            await self._limiter.release(Release(lease, Outcome.CONNECTION))
        except Exception:  # the caller's own error matters more than a lost release
            logger.debug("could not release lease after cancellation", exc_info=True)


class _Call:
    """One logical call's bookkeeping across its attempts: paid answers, budgets, the cap."""

    __slots__ = ("budgets", "max_paid", "model", "purpose", "shape", "simulated", "usage")

    def __init__(self, purpose: Purpose, model: str, shape: str, max_paid: int | None) -> None:
        self.purpose = purpose
        self.model = model
        self.shape = shape  # "text" or the output type's name, for messages
        self.max_paid = max_paid  # answers this call may pay for (None: no cap)
        self.usage = Usage()  # every answer received, whatever became of it
        self.simulated = False
        self.budgets: list[int] = []  # max_tokens of earlier cut attempts

    def paid(self, message: Message, simulated: bool) -> Usage:
        """Count one answer received (paid for, usable or not) and return its usage."""
        used = message.usage
        written = used.cache_creation_input_tokens or 0
        read = used.cache_read_input_tokens or 0
        spent = Usage(
            requests=1,
            input_tokens=used.input_tokens,
            output_tokens=used.output_tokens,
            cache_write_tokens=written,
            cache_read_tokens=read,
            cost_usd=cost_usd(
                message.model,
                used.input_tokens,
                used.output_tokens,
                cache_write_tokens=written,
                cache_read_tokens=read,
            ),
            cache_saved_usd=cache_saving_usd(message.model, written, read),
        )
        self.usage = self.usage + spent
        self.simulated = self.simulated or simulated
        return spent

    def check_paid_cap(self) -> None:
        """Refuse another attempt once the caller's cap on paid answers is reached."""
        if self.max_paid is not None and self.usage.requests >= self.max_paid:
            raise ModelBehaviorError(
                f"{self.model}: no usable {self.shape} answer within the cap of "
                f"{self.max_paid} paid calls (PARALLEL_AGENTS_MAX_PAID_CALLS_PER_MICROTASK)",
                usage=self.usage,
            )

    def budgets_text(self, last: int) -> str:
        return " then ".join(str(b) for b in [*self.budgets, last])


def _call_attributes(usage: Usage, outcome: Outcome, attempt: int, verdict: str) -> dict[str, Any]:
    """What an ``llm.call`` span records, as of its latest attempt."""
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "status": verdict if verdict in ("cut", "refusal") else outcome.value,
        "retries": attempt - 1,
    }


def _with_effort(extra: dict[str, Any], effort: str, accepted: bool) -> dict[str, Any]:
    """``extra`` with ``output_config.effort`` added where the model takes it."""
    if not accepted:
        return extra
    config = {**extra.get("output_config", {}), "effort": effort}
    return {**extra, "output_config": config}


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def _nothing(message: Message) -> None:
    """The value of a warm-up's answer (``max_tokens: 0``: there is none)."""
    return None


def _content(blocks: list[dict[str, Any]], note: str) -> str | list[dict[str, Any]]:
    """The user message's content: plain text unless a block carries a cache breakpoint;
    a correction after a malformed answer goes last, after every shared prefix."""
    if not any("cache_control" in block for block in blocks):
        return "".join(block["text"] for block in blocks) + note
    return [*blocks, {"type": "text", "text": note}] if note else blocks


def _estimate(system: str, prompt: str) -> int:
    return math.ceil((len(system) + len(prompt)) / 4)


def _outcome_of(status: int) -> Outcome:
    if status == 429:
        return Outcome.RATE_LIMITED
    if status == 529:
        return Outcome.OVERLOADED
    if status == 408:
        return Outcome.TIMEOUT
    if status >= 500 or status == 409:  # 409: a conflict the SDK also retries
        return Outcome.SERVER_ERROR
    return Outcome.REJECTED


def _describe(exc: anthropic.APIStatusError, status: int) -> str:
    body = exc.body if isinstance(exc.body, Mapping) else {}
    error = body.get("error") if isinstance(body.get("error"), Mapping) else {}
    detail = error.get("message") if error else None
    where = "mid-stream" if exc.status_code < 400 else ""
    return " ".join(filter(None, ["HTTP", str(status), where, detail or exc.message]))[:500]


def _is_simulated(headers: Mapping[str, str], message: Message) -> bool:
    flag = str(headers.get("x-simulated", "")).lower() == "true"
    return flag or message.id.startswith(_SIMULATED_ID_PREFIX)
