"""Reading a Messages API request for the simulator: its text, shape, purpose and markers.

Where the prompt's parts are found: the user's request inside ``<request>...</request>``
or after a line starting ``Request:`` (else the last user message is the request); a
microtask's title inside ``<title>...</title>``, on a line ``Title: ...`` or after
``Your microtask (r1, research): ``.

Markers in the last user message steer one answer (tests and experiments use them; they
are removed from the text the answer is written from):

- ``[sim-latency S]``: the call takes S seconds (literal seconds: ``time_scale`` does not
  apply), replacing the latency model; faults still apply.
- ``[sim-output-tokens N]``: the visible answer (text, or an ``AgentOutput``'s
  ``content``) is about N tokens long.
- ``[sim-refuse]``: the model refuses (``stop_reason: "refusal"``).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from actors.llm.json_instance import resolve


class RequestKind(StrEnum):
    """How the caller asked for the answer."""

    TEXT = "text"
    JSON_SCHEMA = "json_schema"
    TOOL = "tool"


class CallPurpose(StrEnum):
    """What a call is for, as the simulator recognises it (it decides thinking and size)."""

    PLAN = "plan"  # PlanDraft schema
    OUTLINE = "outline"  # PlanOutline schema (hierarchical planning)
    QUICK = "quick"  # plain text under a "quick take" system prompt (quick_answer)
    OVERVIEW = "overview"  # plain text closing the <section> blocks of a sectioned answer
    SYNTHESIS = "synthesis"  # plain text over <result id=...> blocks
    RECONCILE = "reconcile"  # Reconciliation schema
    MICROTASK = "microtask"  # AgentOutput schema
    ASSESSMENT = "assessment"  # ComplexityAssessment schema
    SUMMARY = "summary"  # plain text folding a conversation's older turns
    TEXT = "text"  # any other plain text call
    OTHER = "other"  # any other schema


@dataclass(frozen=True)
class Markers:
    """The ``[sim-...]`` markers of one request (see the module docstring)."""

    latency_s: float | None = None
    output_tokens: int | None = None
    refuse: bool = False


@dataclass(frozen=True)
class Prompt:
    """The text of one request, flattened and without markers, plus what bounds the answer."""

    seed: int
    system: str
    last_user: str
    conversation: str
    max_tokens: int
    markers: Markers

    @property
    def request(self) -> str:
        """The end user's request, as marked in the prompt (see the module docstring)."""
        for text in (self.conversation, self.system):
            for pattern in (_REQUEST_TAG, _REQUEST_LINE):
                match = pattern.search(text)
                if match and match.group(1).strip():
                    return match.group(1).strip()
        return self.last_user.strip()

    @property
    def title(self) -> str:
        """The microtask's title, or the first line of the last user message."""
        for pattern in _TITLE_PATTERNS:
            match = pattern.search(self.conversation)
            if match and match.group(1).strip():
                return match.group(1).strip().rstrip(".")
        lines = [line.strip() for line in self.last_user.splitlines() if line.strip()]
        return (lines[0] if lines else "the microtask")[:80].rstrip(".")

    @property
    def role(self) -> str:
        """The role in an agent prompt's "Your microtask (ID, role)" line, else ``""``."""
        match = _MICROTASK_LINE.search(self.last_user)
        return match.group(2) if match else ""

    @property
    def microtask_id(self) -> str | None:
        """The id in an agent prompt's "Your microtask (ID, role)" line, if any."""
        match = _MICROTASK_LINE.search(self.last_user)
        return match.group(1) if match else None


# The innermost <request>...</request>: prompts may mention "<request>" in prose first.
_REQUEST_TAG = re.compile(
    r"<request>\s*((?:(?!<request>).)*?)\s*</request>", re.IGNORECASE | re.DOTALL
)
_REQUEST_LINE = re.compile(
    r"^[ \t]*(?:user(?:'s)?\s+)?request\s*:[ \t]*(.+?)(?:\n[ \t]*\n|\Z)",
    re.IGNORECASE | re.DOTALL | re.MULTILINE,
)
_TITLE_PATTERNS = (
    re.compile(r"<title>\s*(.*?)\s*</title>", re.IGNORECASE | re.DOTALL),
    re.compile(r"^[ \t]*(?:microtask\s+)?title\s*:[ \t]*(.+)$", re.IGNORECASE | re.MULTILINE),
    # "Microtask: X", "Microtask r1: X", "Your microtask (r1, research): X"
    re.compile(r"^[ \t]*(?:your\s+)?microtask\b[^:\n]*:[ \t]*(.+)$", re.IGNORECASE | re.MULTILINE),
)
_MICROTASK_LINE = re.compile(r"Your microtask \(([^,\s)]+),\s*([a-z]*)")
_LATENCY = re.compile(r"\[sim-latency (\d+(?:\.\d+)?)\]")
_OUTPUT_TOKENS = re.compile(r"\[sim-output-tokens (\d+)\]")
_REFUSE = re.compile(r"\[sim-refuse\]")
_ANY_MARKER = re.compile(r"[ \t]*\[sim-(?:latency [\d.]+|output-tokens \d+|refuse)\]")


def flatten(content: Any) -> str:
    """The text of a message's content (a string or a list of content blocks)."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_result":
                parts.append(flatten(block.get("content", "")))
            elif block.get("type") == "tool_use":
                parts.append(json.dumps(block.get("input", {}), sort_keys=True))
    return "\n".join(parts)


def estimate_tokens(text: str) -> int:
    """Roughly what Claude's tokenizer would count: one token per four characters."""
    return max(1, math.ceil(len(text) / 4))


def seeded_rng(*parts: Any) -> random.Random:
    """A generator determined by ``parts`` (any JSON-able values)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return random.Random(int.from_bytes(hashlib.sha256(blob).digest()[:8], "big"))


def check_body(body: dict[str, Any], need_max_tokens: bool) -> None:
    """Refuse a body the Messages API would refuse (``ValueError``: its 400 message)."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise ValueError("model: Field required")
    if need_max_tokens:
        if "max_tokens" not in body:
            raise ValueError("max_tokens: Field required")
        if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 0:
            raise ValueError("max_tokens: Input should be an integer greater than or equal to 0")
        if body["max_tokens"] == 0 and body.get("stream"):  # 0 pre-warms the cache only
            raise ValueError("max_tokens: 0 is not supported with streaming")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise ValueError("messages: Field required")
    if not messages:
        raise ValueError("messages: at least one message is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise ValueError(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        last_assistant = i == len(messages) - 1 and message["role"] == "assistant"
        if not content and not last_assistant:
            raise ValueError(
                f"messages.{i}: all messages must have non-empty content except for the "
                f"optional final assistant message"
            )
        if isinstance(content, list):
            for j, block in enumerate(content):
                if (
                    isinstance(block, dict)
                    and block.get("type") == "text"
                    and not block.get("text")
                ):
                    raise ValueError(
                        f"messages.{i}.content.{j}: text content blocks must be non-empty"
                    )
    if not isinstance(body.get("stream", False), bool):
        raise ValueError("stream: Input should be a valid boolean")


def answer_shape(body: dict[str, Any]) -> tuple[RequestKind, dict[str, Any] | None, str]:
    """What shape the answer takes: the kind, its JSON schema, and the tool's name."""
    choice = body.get("tool_choice") or {}
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    if choice.get("type") in ("tool", "any") and tools:
        name = choice.get("name") if choice["type"] == "tool" else tools[0].get("name")
        tool = next((t for t in tools if t.get("name") == name), None)
        if tool is None:
            raise ValueError(f"tool_choice.name: no tool named {name!r} in tools")
        return RequestKind.TOOL, tool.get("input_schema") or {"type": "object"}, str(name)
    fmt = (body.get("output_config") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise ValueError("output_config.format.schema: Field required")
        return RequestKind.JSON_SCHEMA, fmt["schema"], ""
    return RequestKind.TEXT, None, ""


def _last_user(body: dict[str, Any]) -> str:
    users = [flatten(m["content"]) for m in body["messages"] if m["role"] == "user"]
    return users[-1] if users else ""


def markers(body: dict[str, Any]) -> Markers:
    """The ``[sim-...]`` markers in the last user message."""
    text = _last_user(body)
    latency = _LATENCY.search(text)
    tokens = _OUTPUT_TOKENS.search(text)
    return Markers(
        latency_s=min(float(latency.group(1)), 3600.0) if latency else None,
        output_tokens=max(1, int(tokens.group(1))) if tokens else None,
        refuse=bool(_REFUSE.search(text)),
    )


def latency_hint(body: dict[str, Any]) -> float | None:
    """Seconds asked for by a ``[sim-latency S]`` marker in the last user message, if any."""
    return markers(body).latency_s


def read_prompt(body: dict[str, Any], seed: int) -> Prompt:
    """The flattened text of a validated request, markers removed."""
    messages = body["messages"]
    return Prompt(
        seed=seed,
        system=_ANY_MARKER.sub("", flatten(body.get("system") or "")),
        last_user=_ANY_MARKER.sub("", _last_user(body)),
        conversation=_ANY_MARKER.sub("", "\n\n".join(flatten(m["content"]) for m in messages)),
        max_tokens=int(body["max_tokens"]) if body.get("max_tokens") is not None else 1,
        markers=markers(body),
    )


def input_tokens(body: dict[str, Any]) -> int:
    """What the request costs in input tokens: system, messages, tools and schema."""
    text = flatten(body.get("system") or "") + "".join(
        flatten(m.get("content")) for m in body["messages"] if isinstance(m, dict)
    )
    extra = [body[key] for key in ("tools", "output_config") if body.get(key)]
    return estimate_tokens(text + (json.dumps(extra) if extra else ""))


def purpose_of(schema: dict[str, Any] | None, prompt: Prompt) -> CallPurpose:
    """Which of the project's calls this is, recognised by schema property names."""
    if schema is None:
        if "<result id=" in prompt.last_user:
            return CallPurpose.SYNTHESIS
        if "<section>" in prompt.last_user:
            return CallPurpose.OVERVIEW
        if "quick take" in prompt.system.lower():
            return CallPurpose.QUICK
        if "summarise the earlier turns" in prompt.system.lower():
            return CallPurpose.SUMMARY
        return CallPurpose.TEXT
    root = resolve(schema)
    props = root.get("properties") or {}
    if {"level", "parallelizable"} <= props.keys():
        return CallPurpose.ASSESSMENT
    if "depends_on" in _item_properties(schema, props, "microtasks"):
        return CallPurpose.PLAN
    if "focus" in _item_properties(schema, props, "branches"):
        return CallPurpose.OUTLINE
    if "positions" in _item_properties(schema, props, "groups"):
        return CallPurpose.RECONCILE
    if {"content", "claims", "confidence"} <= props.keys():
        return CallPurpose.MICROTASK
    return CallPurpose.OTHER


def _item_properties(schema: dict[str, Any], props: dict[str, Any], name: str) -> dict[str, Any]:
    if not isinstance(props.get(name), dict):
        return {}
    items = resolve(resolve(props[name], schema).get("items") or {}, schema)
    return items.get("properties") or {}


def microtask_id(body: dict[str, Any]) -> str | None:
    """The id in an agent prompt's "Your microtask (ID, role)" line, for the request log."""
    match = _MICROTASK_LINE.search(_last_user(body))
    return match.group(1) if match else None


_DOCUMENT_TAG = re.compile(r'<document name="([^"]*)"')


def document_names(body: dict[str, Any]) -> list[str]:
    """The names of the ``<document name="...">`` blocks in the prompt, for the request log
    (tests check that a user's document reached every microtask)."""
    text = flatten(body.get("system") or "") + "".join(
        flatten(m.get("content")) for m in body["messages"] if isinstance(m, dict)
    )
    return _DOCUMENT_TAG.findall(text)


_ANSWER_BLOCK = re.compile(r"<answer>\n(.*?)\n</answer>", re.DOTALL)
_SUMMARY_BLOCK = re.compile(r"<summary>\n(.*?)\n</summary>", re.DOTALL)
_HEARD_CHARS = 120  # of each earlier answer, for the request log


def conversation_heard(body: dict[str, Any]) -> dict[str, Any] | None:
    """What a follow-up's ``<conversation>`` block carried, for the request log (tests
    check which earlier answers reached which prompts): the start of each turn's answer
    and of the summary. None: the prompt carries no conversation."""
    text = "".join(flatten(m.get("content")) for m in body["messages"] if isinstance(m, dict))
    start, end = text.find("<conversation>"), text.find("</conversation>")
    if start < 0 or end < start:
        return None
    block = text[start:end]
    summary = _SUMMARY_BLOCK.search(block)
    return {
        "answers": [a[:_HEARD_CHARS] for a in _ANSWER_BLOCK.findall(block)],
        "summary": summary.group(1)[:_HEARD_CHARS] if summary else None,
    }


def prompt_sha(body: dict[str, Any]) -> str:
    """sha256 of the system prompt and messages, for the request log."""
    blob = json.dumps([body.get("system"), body.get("messages")], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
