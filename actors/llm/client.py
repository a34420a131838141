"""The one way this package calls a model: the official SDK behind the shared rate limiter.

>>> client = LLMClient(settings, limiter=RemoteLimiter(handle))
>>> answer = await client.complete(Purpose.RESEARCH, "You are terse.", "Name three moons.")
>>> plan = await client.structured(Purpose.PLANNING, system, prompt, PlanDraft)
>>> plan.value.microtasks, plan.usage.cost_usd

The SDK is built with ``max_retries=0``: every retry happens here, once, through
the limiter. The SDK's own retries would multiply with ours (6 x 3 calls per
request under a 429 storm), would bypass the cluster-wide limiter, and wait for
whatever ``retry-after`` says with no upper cap.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import anthropic
from anthropic.types import Message
from pydantic import BaseModel, ValidationError

from actors import tracing
from actors.config import Purpose, Settings
from actors.errors import (
    ConfigurationError,
    ModelBehaviorError,
    ProviderError,
    ProviderTimeoutError,
    UserInputError,
)
from actors.llm.limiter import Limiter, Outcome, RateLimiter
from actors.llm.pricing import cost_usd
from actors.models import Usage

logger = logging.getLogger(__name__)

# Longest prompt accepted, in characters (~100k tokens at 4 chars/token): well inside
# every model's context, and a clear error beats a provider 400 after queueing.
MAX_PROMPT_CHARS = 400_000
StructuredMode = Literal["json_schema", "tool"]
T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")
_SIMULATED_ID_PREFIX = "msg_sim_"


class Completion(BaseModel):
    """A plain text answer."""

    text: str
    usage: Usage
    model: str
    simulated: bool
    stop_reason: str | None = None


@dataclass(frozen=True)
class Structured(Generic[T]):
    """A validated structured answer (a dataclass so any ``T`` pickles across Ray)."""

    value: T
    usage: Usage
    model: str
    simulated: bool


class _Malformed(Exception):
    """The model answered, but not in the asked-for shape; ``problems`` names what was wrong."""

    def __init__(self, problems: str, raw: str) -> None:
        super().__init__(problems)
        self.problems = problems
        self.raw = raw


class LLMClient:
    """Text and structured calls for one process (agent, orchestrator, ...).

    ``limiter`` defaults to a private ``RateLimiter``; in a cluster pass a
    ``RemoteLimiter`` so every process shares one budget. ``structured_mode``
    ``"json_schema"`` sends ``output_config.format`` (what ``messages.parse``
    does; the newest models reject forced tool use), ``"tool"`` forces a tool call.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        limiter: Limiter | None = None,
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
        self._mode = structured_mode
        self._max_prompt_chars = max_prompt_chars
        key = settings.anthropic_api_key
        self._secret = key.get_secret_value() if key is not None else ""
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
        prompt: str,
        *,
        max_tokens: int | None = None,
        timeout_s: float | None = None,
    ) -> Completion:
        """A text answer to ``prompt``, retried through the limiter on provider failures."""
        text, message, usage, simulated = await self._run(
            purpose, system, prompt, max_tokens, timeout_s, {}, _text_of
        )
        return Completion(
            text=text,
            usage=usage,
            model=message.model,
            simulated=simulated,
            stop_reason=message.stop_reason,
        )

    async def structured(
        self,
        purpose: Purpose,
        system: str,
        prompt: str,
        output: type[T],
        *,
        max_tokens: int | None = None,
        timeout_s: float | None = None,
    ) -> Structured[T]:
        """An answer validated into ``output``; a wrong shape is retried with a correction.

        Raises ``ModelBehaviorError`` naming the failing fields once the attempts run out.
        """
        extra: dict[str, Any]
        if self._mode == "tool":
            name = _tool_name(output)
            tool = {
                "name": name,
                "description": f"Record the answer as {output.__name__}.",
                "input_schema": _input_schema(output),
            }
            extra = {"tools": [tool], "tool_choice": {"type": "tool", "name": name}}
        else:
            schema = _output_schema(output)
            extra = {"output_config": {"format": {"type": "json_schema", "schema": schema}}}

        def parse(message: Message) -> T:
            return _validate(message, output, self._mode)

        value, message, usage, simulated = await self._run(
            purpose, system, prompt, max_tokens, timeout_s, extra, parse, output.__name__
        )
        return Structured(value=value, usage=usage, model=message.model, simulated=simulated)

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

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._client.close()

    # --- the one retry loop ----------------------------------------------------------

    async def _run(
        self,
        purpose: Purpose,
        system: str,
        prompt: str,
        max_tokens: int | None,
        timeout_s: float | None,
        extra: dict[str, Any],
        parse: Callable[[Message], R],
        shape: str = "text",
    ) -> tuple[R, Message, Usage, bool]:
        system, prompt = self._checked(system, prompt)
        model = self._settings.models[purpose]
        max_tokens = max_tokens or self._settings.max_tokens
        timeout = timeout_s or self._settings.llm_timeout_s
        attempts = self._settings.limiter.max_attempts
        usage = Usage()
        note = ""  # corrective note after a malformed answer
        failure: tuple[str, int | None, bool] = ("no attempt made", None, False)
        malformed: _Malformed | None = None
        with tracing.span("llm.call", model=model, purpose=purpose) as span:
            for attempt in range(1, attempts + 1):
                lease = await self._limiter.acquire(_estimate(system, prompt + note), max_tokens)
                outcome, message = Outcome.CONNECTION, None
                headers: Mapping[str, str] = {}
                try:
                    raw = await self._client.messages.with_raw_response.create(
                        model=model,
                        max_tokens=max_tokens,
                        system=system,
                        messages=[{"role": "user", "content": prompt + note}],
                        timeout=timeout,
                        **extra,
                    )
                    headers, message = raw.headers, await raw.parse()
                    outcome = Outcome.OK
                except anthropic.APIStatusError as exc:
                    headers = exc.response.headers
                    outcome = _outcome_of(exc.status_code)
                    failure = (self._redact(_describe(exc)), exc.status_code, False)
                except anthropic.APITimeoutError:
                    outcome = Outcome.TIMEOUT
                    failure = (f"no answer within {timeout:g} s", None, True)
                except anthropic.APIConnectionError as exc:
                    failure = (self._redact(f"connection failed: {exc}"), None, False)
                except BaseException:
                    await self._release_quietly(lease)  # cancelled: give the slot back
                    raise

                spent = Usage()
                if message is not None:
                    spent = Usage(
                        requests=1,
                        input_tokens=message.usage.input_tokens,
                        output_tokens=message.usage.output_tokens,
                        cost_usd=cost_usd(
                            message.model, message.usage.input_tokens, message.usage.output_tokens
                        ),
                    )
                    usage = usage + spent
                    try:
                        value = parse(message)
                    except _Malformed as exc:
                        outcome, malformed = Outcome.MALFORMED, exc
                        note = _correction(exc.problems, message.stop_reason)
                wait = await self._limiter.release(
                    lease,
                    outcome,
                    input_tokens=spent.input_tokens,
                    output_tokens=spent.output_tokens,
                    headers=headers,
                    attempt=attempt,
                )
                span.set_attributes(_call_attributes(usage, outcome, attempt))
                if outcome is Outcome.OK and message is not None:
                    return value, message, usage, _is_simulated(headers, message)
                if outcome is Outcome.REJECTED:
                    raise self._rejected(failure, attempt)
                if attempt < attempts:
                    logger.info(
                        "%s call attempt %d/%d: %s; retrying in %.2f s",
                        purpose, attempt, attempts, outcome, wait,
                    )  # fmt: skip
                    await asyncio.sleep(wait)

            if malformed is not None and outcome is Outcome.MALFORMED:
                raise ModelBehaviorError(
                    f"{model} answered {shape} in the wrong shape {_times(attempts)}; "
                    f"last problems: {malformed.problems}",
                    raw=malformed.raw,
                )
            message_text, status, timed_out = failure
            error = ProviderTimeoutError if timed_out else ProviderError
            raise error(f"{model} failed {_times(attempts)}: {message_text}", status, attempts)

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

    def _rejected(self, failure: tuple[str, int | None, bool], attempt: int) -> Exception:
        text, status, _ = failure
        if status in (401, 403):
            return ConfigurationError(f"the provider refused the credentials ({status}): {text}")
        if status == 413:
            return UserInputError(f"request too large for the provider: {text}")
        return ProviderError(f"the provider rejected the request: {text}", status, attempt)

    def _redact(self, text: str) -> str:
        """Errors cross processes and reach users: never let the key ride along."""
        return text.replace(self._secret, "***") if self._secret else text

    async def _release_quietly(self, lease: Any) -> None:
        try:
            await self._limiter.release(lease, Outcome.CONNECTION)
        except Exception:  # the caller's own error matters more than a lost release
            logger.debug("could not release lease after cancellation", exc_info=True)


def _call_attributes(usage: Usage, outcome: Outcome, attempt: int) -> dict[str, Any]:
    """What an ``llm.call`` span records, as of its latest attempt."""
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "status": outcome.value,
        "retries": attempt - 1,
    }


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


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


def _describe(exc: anthropic.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, Mapping) else {}
    error = body.get("error") if isinstance(body.get("error"), Mapping) else {}
    detail = error.get("message") if error else None
    return f"HTTP {exc.status_code} {detail or exc.message}"[:500]


def _is_simulated(headers: Mapping[str, str], message: Message) -> bool:
    flag = str(headers.get("x-simulated", "")).lower() == "true"
    return flag or message.id.startswith(_SIMULATED_ID_PREFIX)


def _text_of(message: Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def _tool_name(output: type[BaseModel]) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", f"record_{output.__name__}")[:64]


def _validate(message: Message, output: type[T], mode: str) -> T:
    """Parse the answer into ``output`` or raise ``_Malformed`` naming what was wrong."""
    try:
        if mode == "tool":
            inputs = [block.input for block in message.content if block.type == "tool_use"]
            if not inputs:
                raise _Malformed("no tool call in the answer", _text_of(message))
            return output.model_validate(inputs[0])
        return output.model_validate_json(_text_of(message))
    except ValidationError as exc:
        raw = _text_of(message) if mode != "tool" else str(inputs[0])
        raise _Malformed(_problems(exc), raw) from None


def _problems(exc: ValidationError) -> str:
    """``claims.0.topic: Field required; confidence: Input should be ...`` (bounded)."""
    parts = []
    for error in exc.errors()[:8]:
        where = ".".join(str(part) for part in error["loc"]) or "answer"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)[:800]


def _correction(problems: str, stop_reason: str | None) -> str:
    cut = (
        " It was cut off at max_tokens: answer more briefly." if stop_reason == "max_tokens" else ""
    )
    return (
        f"\n\n(Your previous answer did not match the required schema: {problems}.{cut} "
        "Answer again, exactly in the required format.)"
    )


@functools.cache
def _input_schema(output: type[BaseModel]) -> dict[str, Any]:
    """The tool input schema of ``output`` (built once per type: it costs ~1 ms a call)."""
    return output.model_json_schema()


@functools.cache
def _output_schema(output: type[BaseModel]) -> dict[str, Any]:
    """The json_schema output format of ``output``, as ``messages.parse`` would send it."""
    return dict(anthropic.transform_schema(output))
