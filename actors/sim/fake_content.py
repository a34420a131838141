"""What the simulator answers: a Messages API request in, a deterministic message out.

``message(body, seed)`` is a pure function of the seed, model, system prompt, messages,
schema and options, so the same request always gets the same answer (only ids differ).
It answers as Claude does, not kindly:

- **Thinking** (``fake_thinking``): a model that thinks (``catalog.info(model).thinking``
  "always", or "default" unless disabled) starts its content with
  ``{"type": "thinking", "thinking": "", "signature": ...}``. Its tokens grow with
  ``output_config.effort`` and the call's purpose, count toward ``max_tokens`` and are
  part of ``usage.output_tokens``. Thinking that reaches ``max_tokens`` leaves only the
  thinking block (``stop_reason: "max_tokens"``).
- **Sizes** (``fake_text``, ``fake_plan``): plans of most of the microtasks asked for, at
  ~100-150 tokens each; microtask results of several hundred tokens; a synthesis of
  2,000-3,500 tokens; short greetings and complexity verdicts.
- **Cuts** at ``max_tokens`` (the answer gets what thinking left): plain text and
  ``output_config.format`` JSON are cut mid-value (the JSON text is then invalid); a
  forced tool's ``input`` keeps only what was complete. ``stop_reason: "max_tokens"``.
- **Refusals** (``[sim-refuse]`` marker or the ``rate_refusal`` knob): no text, maybe a
  thinking block, a few output tokens, ``stop_reason: "refusal"`` with ``stop_details``.
- **Prompt caching** (``fake_cache``, accounted by the app): ``cache_creation_input_tokens``
  and ``cache_read_input_tokens`` start at 0 here. ``max_tokens: 0`` (not streamed) is the
  API's pre-warm: no thinking, no content, ``stop_reason: "max_tokens"``.

Plain requests get prose prefixed ``[simulated] ``; structured requests (forced tool or
``output_config.format`` json_schema) get an instance valid for their schema
(``json_instance``). The project's own schemas, recognised by their property names
(``fake_request.purpose_of``), get plausible content instead of filler:

- ``ComplexityAssessment`` (``level`` + ``parallelizable``): ``actors.engine.complexity.assess``,
  a follow-up (a ``<conversation>`` before the request) judged as one.
- ``PlanDraft`` (``microtasks`` whose items have ``depends_on``): ``fake_plan.plan``.
- ``PlanOutline`` (``branches`` whose items have ``focus``): ``fake_plan.outline``.
- ``Reconciliation`` (``groups`` whose items have ``positions``):
  ``fake_claims.reconcile_answer`` over the prompt's ``<claim id=... topic=...>`` lines.
- ``AgentOutput`` (``content`` + ``claims`` + ``confidence``): a few paragraphs on the
  microtask's title and the request, plus ``fake_claims.agent_claims``.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
from dataclasses import dataclass
from typing import Any

import pydantic_core

from actors.engine.complexity import assess, is_greeting
from actors.llm.json_instance import break_instance, build_instance
from actors.sim import fake_claims, fake_plan, fake_text
from actors.sim.fake_request import (
    CallPurpose,
    Prompt,
    RequestKind,
    answer_shape,
    conversation_heard,
    document_names,
    estimate_tokens,
    input_tokens,
    latency_hint,
    markers,
    microtask_id,
    prompt_sha,
    purpose_of,
    read_prompt,
    seeded_rng,
)
from actors.sim.fake_thinking import ThinkingOptions, model_options, thinking_tokens

__all__ = [
    "CallPurpose",
    "Reply",
    "RequestKind",
    "answer_shape",
    "conversation_heard",
    "describe",
    "document_names",
    "estimate_tokens",
    "input_tokens",
    "latency_hint",
    "markers",
    "message",
    "microtask_id",
    "prompt_sha",
    "schema_answer",
    "seeded_rng",
]

_REFUSAL_THINKING = 40  # a refusal is decided early: at most this much thinking precedes it


@dataclass(frozen=True)
class Reply:
    """One answer: the response body and what the request log records about it."""

    payload: dict[str, Any]
    purpose: CallPurpose
    effort: str | None
    thinking_tokens: int
    tool_json: str = ""  # a forced tool's input as written (cut mid-value when cut), to stream

    @property
    def output_tokens(self) -> int:
        return int(self.payload["usage"]["output_tokens"])

    @property
    def stop_reason(self) -> str:
        return str(self.payload["stop_reason"])


def describe(body: dict[str, Any]) -> tuple[RequestKind, CallPurpose, ThinkingOptions]:
    """The shape, purpose and thinking options of a request; ``ValueError`` means HTTP 400."""
    kind, schema, _ = answer_shape(body)
    options = model_options(body)
    return kind, purpose_of(schema, read_prompt(body, 0)), options


def message(
    body: dict[str, Any], seed: int, *, malformed: bool = False, refuse: bool = False
) -> Reply:
    """The Messages API response for an admitted, successful request."""
    kind, schema, tool_name = answer_shape(body)
    options = model_options(body)
    prompt = read_prompt(body, seed)
    purpose = purpose_of(schema, prompt)
    key = (seed, body["model"], body.get("system"), body["messages"], schema, kind.value)
    rng = seeded_rng(*key)
    # Its own stream, without the effort in it: the same call thinks more at a higher effort.
    greeting = is_greeting(prompt.request)
    thinking = thinking_tokens(
        options, body["model"], purpose, seeded_rng(*key, "thinking"), greeting=greeting
    )
    thinking = min(thinking, prompt.max_tokens)
    refused = (refuse or prompt.markers.refuse) and prompt.max_tokens > 0
    if refused:
        thinking = min(thinking, _REFUSAL_THINKING)
    # max_tokens 0 pre-warms the prompt cache: no thinking, no answer.
    thinks = options.thinks and prompt.max_tokens > 0
    content: list[dict[str, Any]] = [_thinking_block()] if thinks else []
    budget = prompt.max_tokens - thinking  # what is left for the visible answer
    written, stop_reason, tool_json = 0, "end_turn", ""
    if refused:
        written, stop_reason = 0 if thinking else 1, "refusal"
    elif budget <= 0:
        stop_reason = "max_tokens"
    elif schema is None:
        text, cut = _cut(_prose(purpose, prompt, rng), budget)
        content.append({"type": "text", "text": text})
        written, stop_reason = estimate_tokens(text), "max_tokens" if cut else stop_reason
    else:
        instance = schema_answer(purpose, schema, prompt, rng)
        if malformed:
            instance = break_instance(instance, schema)
        text, cut = _cut(json.dumps(instance), budget)
        written = estimate_tokens(text)
        if kind is RequestKind.TOOL:
            content.append(_tool_use(tool_name, _partial(text) if cut else instance))
            tool_json = text
            stop_reason = "max_tokens" if cut else "tool_use"
        else:
            content.append({"type": "text", "text": text})
            stop_reason = "max_tokens" if cut else stop_reason
    payload = {
        "id": f"msg_sim_{secrets.token_hex(12)}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "stop_details": (
            {"type": "refusal", "category": None, "explanation": None} if refused else None
        ),
        "usage": {
            "input_tokens": input_tokens(body),
            "output_tokens": thinking + written,
            "cache_creation_input_tokens": 0,  # the simulator's PromptCache fills these in
            "cache_read_input_tokens": 0,
        },
    }
    return Reply(payload, purpose, options.effort, thinking, tool_json)


def _thinking_block() -> dict[str, Any]:
    # Empty text as at the default display; the signature is opaque to callers.
    signature = base64.b64encode(secrets.token_bytes(96)).decode()
    return {"type": "thinking", "thinking": "", "signature": signature}


def _tool_use(name: str, instance: Any) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": f"toolu_sim_{secrets.token_hex(12)}",
        "name": name,
        "input": instance if isinstance(instance, dict) else {},
    }


def _cut(text: str, budget: int) -> tuple[str, bool]:
    """``text`` as written within ``budget`` tokens, and whether it was cut."""
    limit = budget * 4
    return (text[:limit], True) if len(text) > limit else (text, False)


def _partial(cut_json: str) -> Any:
    """What was complete of a cut JSON text (incomplete trailing values dropped)."""
    try:
        return pydantic_core.from_json(cut_json, allow_partial=True)
    except ValueError:
        return {}


def _prose(purpose: CallPurpose, prompt: Prompt, rng: random.Random) -> str:
    if purpose is CallPurpose.SYNTHESIS:
        return fake_text.synthesis(prompt, rng)
    return fake_text.plain_answer(prompt, rng)


def schema_answer(
    purpose: CallPurpose, schema: dict[str, Any], prompt: Prompt, rng: random.Random
) -> Any:
    """An instance valid for ``schema``; plausible content for the project's own schemas."""
    if purpose is CallPurpose.ASSESSMENT:
        follow_up = "<conversation>" in prompt.last_user  # as a model reads the turns above
        return assess(prompt.request, follow_up=follow_up).model_dump(mode="json")
    if purpose is CallPurpose.PLAN:
        return fake_plan.plan(prompt, rng)
    if purpose is CallPurpose.OUTLINE:
        return fake_plan.outline(prompt, rng)
    if purpose is CallPurpose.RECONCILE:
        return fake_claims.reconcile_answer(prompt.last_user, prompt.seed)
    if purpose is CallPurpose.MICROTASK:
        return _agent_output(prompt, rng)
    return build_instance(schema, rng, fake_text.keywords(prompt.request))


def _agent_output(prompt: Prompt, rng: random.Random) -> dict[str, Any]:
    content = fake_text.microtask_content(prompt, rng)
    if is_greeting(prompt.request):
        return {"content": content, "claims": [], "confidence": 0.95}
    words = fake_text.keywords(prompt.request)
    claims = fake_claims.agent_claims(words, prompt.seed, rng, prompt.microtask_id)
    return {"content": content, "claims": claims, "confidence": round(rng.uniform(0.5, 0.95), 2)}
