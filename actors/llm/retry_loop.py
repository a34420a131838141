"""The one retry loop every model call goes through, behind the shared rate limiter.

Each attempt takes a lease, sends the request once, reads the reply (paid, cut, refused,
malformed or failed), releases the lease with what happened, and waits as the limiter
says before the next. ``RetryingCaller`` is the part of ``LLMClient`` that runs it; the
client (``actors.llm.client``) builds the requests and sets up the attributes declared here.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anthropic
from anthropic.types import Message

from actors.config import Settings
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
from actors.llm.call_tally import CallTally
from actors.llm.held_back import held_back
from actors.llm.ledger import CALL_HEADER, CallLedger, new_call_id
from actors.llm.limiter import Limiter, Outcome, Release
from actors.llm.prompt_parts import Part, Prompt, content_blocks, joined
from actors.llm.provider_replies import describe, is_simulated, outcome_of
from actors.llm.streaming import Sent
from actors.llm.structured_output import Cut, Malformed, correction, text_of
from actors.models import Usage
from actors.observe import tracing

logger = logging.getLogger(__name__)

R = TypeVar("R")
# A cut answer is retried once with twice the budget, never above this (the largest output
# the current models allow in one call).
_MAX_OUTPUT_TOKENS = 64_000
Send = Callable[[dict[str, Any]], Awaitable[Sent]]  # one HTTP attempt of a request


class RetryingCaller:
    """The retry loop of an ``LLMClient``, which sets these attributes up."""

    _settings: Settings
    _limiter: Limiter
    _ledger: CallLedger
    _max_prompt_chars: int
    _secret: str  # the API key, redacted from every error text
    _client: anthropic.AsyncAnthropic

    async def _run(
        self,
        call: CallTally,
        system: str,
        prompt: Prompt,
        max_tokens: int | None,
        timeout_s: float | None,
        extra: dict[str, Any],
        send: Send,
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
                    lease = await self._limiter.acquire(
                        estimate_tokens(system, text + note), budget
                    )
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
                    outcome = outcome_of(code)
                    failure = (self._redact(describe(exc, code)), code, False)
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
                    spent = call.paid(message, is_simulated(headers, message))
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


def _content(blocks: list[dict[str, Any]], note: str) -> str | list[dict[str, Any]]:
    """The user message's content: plain text unless a block carries a cache breakpoint;
    a correction after a malformed answer goes last, after every shared prefix."""
    if not any("cache_control" in block for block in blocks):
        return "".join(block["text"] for block in blocks) + note
    return [*blocks, {"type": "text", "text": note}] if note else blocks


def estimate_tokens(system: str, prompt: str) -> int:
    return math.ceil((len(system) + len(prompt)) / 4)
