"""What the simulator answers: a Messages API request in, a deterministic message out.

``message(body, seed)`` is a pure function of the seed, model, system prompt, messages
and schema, so the same request always gets the same answer (only ids differ).
Plain requests get prose prefixed ``[simulated] ``; structured requests (forced tool or
``output_config.format`` json_schema) get an instance valid for their schema
(``json_instance``). Three of the project's own schemas, recognised by their property
names, get plausible content instead of filler:

- ``ComplexityAssessment`` (``level`` + ``parallelizable``): ``actors.complexity.assess``.
- ``PlanDraft`` (``microtasks`` whose items have ``depends_on``): a research → analysis →
  validation → generation DAG of at most N microtasks, N read from "at most N microtasks"
  in the prompt (default 8).
- ``AgentOutput`` (``content`` + ``claims`` + ``confidence``): a few sentences about the
  microtask's title plus 1–3 claims on topics drawn from the request's words, so that
  different agents sometimes contradict each other on the same topic.

Where the prompt's parts are found: the user's request inside ``<request>...</request>``
or after a line starting ``Request:`` (else the last user message is the request); a
microtask's title inside ``<title>...</title>``, on a line ``Title: ...`` or after
``Your microtask (r1, research): ``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from actors.complexity import assess
from actors.llm import fake_claims
from actors.llm.json_instance import break_instance, build_instance, resolve

SIMULATED_PREFIX = "[simulated] "


class RequestKind(StrEnum):
    """How the caller asked for the answer."""

    TEXT = "text"
    JSON_SCHEMA = "json_schema"
    TOOL = "tool"


@dataclass(frozen=True)
class Prompt:
    """The text of one request, flattened, plus what bounds the answer."""

    seed: int
    system: str
    last_user: str
    conversation: str
    max_tokens: int

    @property
    def request(self) -> str:
        """The end user's request, as marked in the prompt (see the module docstring)."""
        for text in (self.conversation, self.system):
            for pattern in (_REQUEST_TAG, _REQUEST_LINE):
                match = pattern.search(text)
                if match and match.group(1).strip():
                    return match.group(1).strip()
        return self.last_user.strip()


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
_GREETING = re.compile(
    r"^\s*(hi|hello|hey|hallo|hola|good (morning|afternoon|evening))\b[\s!.,?]*"
    r"(there|everyone|all|bot)?[\s!.,?]*$",
    re.IGNORECASE,
)
_LATENCY_HINT = re.compile(r"\[sim-latency (\d+(?:\.\d+)?)\]")
_PLAN_SIZE = re.compile(r"(?:at most|up to|no more than)\s+(\d+)\s+microtasks?", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9-]{3,}")
_STOPWORD_TEXT = """
    about above after again against also among another answer answers anything around
    because been before being below best better between both could does doing done down
    during each either else enough even every explain from give given have having here
    into just know less like make many more most much must need needs only other ought
    over please provide really same should show since some such tell than that their
    them then there these they thing things this those through under until using very
    want were what when where which while will with within without would write your
    yours detailed short brief simple quick question request requests compare evaluate
    analyse analyze assess review research describe summarise summarize list create build
    design find plan draft comprehensive thorough complete full
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


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


def keywords(text: str, limit: int = 6) -> list[str]:
    """The first distinct content words of ``text``: what the request is about."""
    seen: list[str] = []
    for word in _WORD.findall(text):
        lowered = word.lower().strip("-")
        if lowered not in _STOPWORDS and lowered not in seen:
            seen.append(lowered)
        if len(seen) == limit:
            break
    return seen or ["the request"]


# --- reading a request -----------------------------------------------------------


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


def read_prompt(body: dict[str, Any], seed: int) -> Prompt:
    """The flattened text of a validated request."""
    messages = body["messages"]
    users = [flatten(m["content"]) for m in messages if m["role"] == "user"]
    return Prompt(
        seed=seed,
        system=flatten(body.get("system") or ""),
        last_user=users[-1] if users else "",
        conversation="\n\n".join(flatten(m["content"]) for m in messages),
        max_tokens=int(body.get("max_tokens") or 1),
    )


def input_tokens(body: dict[str, Any]) -> int:
    """What the request costs in input tokens: system, messages, tools and schema."""
    prompt = read_prompt(body, 0)
    extra = [body[key] for key in ("tools", "output_config") if body.get(key)]
    return estimate_tokens(
        prompt.system + prompt.conversation + (json.dumps(extra) if extra else "")
    )


def latency_hint(body: dict[str, Any]) -> float | None:
    """Seconds asked for by a ``[sim-latency S]`` marker in the last user message, if any.

    Experiments and tests put it in a microtask's instructions to give that one
    microtask a known duration; it replaces the drawn latency (faults still apply).
    """
    match = _LATENCY_HINT.search(read_prompt(body, 0).last_user)
    return min(float(match.group(1)), 3600.0) if match else None


_MICROTASK_ID = re.compile(r"Your microtask \(([^,\s)]+),")


def microtask_id(body: dict[str, Any]) -> str | None:
    """The id in an agent prompt's "Your microtask (ID, role)" line, for the request log."""
    match = _MICROTASK_ID.search(read_prompt(body, 0).last_user)
    return match.group(1) if match else None


def prompt_sha(body: dict[str, Any]) -> str:
    """sha256 of the system prompt and messages, for the request log."""
    blob = json.dumps([body.get("system"), body.get("messages")], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def message(body: dict[str, Any], seed: int, malformed: bool = False) -> dict[str, Any]:
    """The Messages API response body for an admitted, successful request."""
    kind, schema, tool_name = answer_shape(body)
    prompt = read_prompt(body, seed)
    rng = seeded_rng(seed, body["model"], body.get("system"), body["messages"], schema, kind.value)
    stop_reason = "end_turn"
    if schema is None:
        text, truncated = text_answer(prompt, rng)
        stop_reason = "max_tokens" if truncated else stop_reason
        content: dict[str, Any] = {"type": "text", "text": text}
        output = text
    else:
        instance = schema_answer(schema, prompt, rng)
        if malformed:
            instance = break_instance(instance, schema)
        output = json.dumps(instance)
        if kind is RequestKind.TOOL:
            stop_reason = "tool_use"
            content = {
                "type": "tool_use",
                "id": f"toolu_sim_{secrets.token_hex(12)}",
                "name": tool_name,
                "input": instance,
            }
        else:
            content = {"type": "text", "text": output}
    return {
        "id": f"msg_sim_{secrets.token_hex(12)}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [content],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens(body),
            "output_tokens": estimate_tokens(output),
        },
    }


# --- plain text -----------------------------------------------------------------

_SENTENCES = (
    "The main point about {a} is that it shapes most of the outcome.",
    "{A} and {b} have to be considered together.",
    "Evidence on {a} is mixed, so the conclusion stays cautious.",
    "A practical first step is to clarify what {a} means here.",
    "The trade-off between {a} and {b} decides the recommendation.",
    "Experience with {b} suggests a gradual approach.",
    "Nothing found so far contradicts the earlier reading of {a}.",
)


def _sentences(rng: random.Random, words: list[str], count: int) -> list[str]:
    out = []
    for _ in range(count):
        a = rng.choice(words)
        b = rng.choice([w for w in words if w != a] or words)
        out.append(rng.choice(_SENTENCES).format(a=a, b=b, A=a.capitalize()))
    return out


_RESULT_BLOCK = re.compile(
    r'<result id="([^"]*)" role="([a-z]+)" confidence="([0-9.]+)">\n(.*?)\n</result>', re.DOTALL
)
_ROLE_HEADINGS = (
    ("research", "Findings"),
    ("analysis", "Analysis"),
    ("validation", "Checks"),
    ("generation", "Recommendations"),
)


def _synthesis(prompt: Prompt, rng: random.Random) -> str:
    """A report stitched from the ``<result>`` blocks of a synthesis prompt."""
    by_role: dict[str, list[str]] = {}
    for _id, role, _confidence, content in _RESULT_BLOCK.findall(prompt.last_user):
        first = content.replace(SIMULATED_PREFIX, "").split(". ")[0].strip().rstrip(".")
        if first:
            by_role.setdefault(role, []).append(first)
    words = keywords(prompt.request)
    lines = ["Simulated synthesis: " + prompt.request[:120].strip()]
    for role, heading in _ROLE_HEADINGS:
        points = by_role.get(role, [])
        if points:
            lines.append("")
            lines.append(f"{heading} ({len(points)} parts):")
            lines.extend(f"- {point}." for point in points[:8])
    lines.append("")
    lines.append(" ".join(_sentences(rng, words, 2)))
    return SIMULATED_PREFIX + "\n".join(lines)


def text_answer(prompt: Prompt, rng: random.Random) -> tuple[str, bool]:
    """Prose about the request; ``True`` second when cut off at ``max_tokens``."""
    if "<result id=" in prompt.last_user:
        text = _synthesis(prompt, rng)
    else:
        body = " ".join(_sentences(rng, keywords(prompt.request), rng.randint(3, 6)))
        text = SIMULATED_PREFIX + body
    limit = prompt.max_tokens * 4
    if len(text) > limit:
        return text[:limit], True
    return text, False


# --- the project's own schemas ---------------------------------------------------


def _complexity(prompt: Prompt) -> dict[str, Any]:
    return assess(prompt.request).model_dump(mode="json")


# Plan shape: role, id prefix, share of the microtasks.
_SHARES: tuple[tuple[str, str, float], ...] = (
    ("research", "r", 0.40),
    ("analysis", "a", 0.35),
    ("validation", "v", 0.20),
    ("generation", "g", 0.05),
)
_RESEARCH = "background of|current state of|key facts about|alternatives to|constraints on|"
_RESEARCH += "prior work on|stakeholders of|data sources for"
_ANALYSIS = "trade-offs of|costs and benefits of|risks of|dependencies of|impact of|options for|"
_ANALYSIS += "trends in"


def plan_sizes(n: int) -> list[int]:
    """Microtasks per level (research, analysis, validation, generation) for ``n`` total."""
    if n < 4:
        return {1: [0, 0, 0, 1], 2: [1, 0, 0, 1], 3: [1, 1, 0, 1]}[max(n, 1)]
    ideal = [share * n for _, _, share in _SHARES]
    counts = [max(1, math.floor(x)) for x in ideal]
    while sum(counts) < n:
        counts[max(range(4), key=lambda i: ideal[i] - counts[i])] += 1
    while sum(counts) > n:
        counts[max(range(4), key=lambda i: counts[i])] -= 1
    return counts


def _plan(prompt: Prompt, rng: random.Random) -> dict[str, Any]:
    match = _PLAN_SIZE.search(prompt.conversation) or _PLAN_SIZE.search(prompt.system)
    n = max(1, int(match.group(1))) if match else 8
    request = prompt.request
    words = keywords(request)
    short = request[:160]
    levels: list[list[dict[str, Any]]] = []
    for (role, prefix, _), count in zip(_SHARES, plan_sizes(n), strict=True):
        items = []
        for i in range(count):
            kw = words[(i + len(levels)) % len(words)]
            items.append(_plan_item(role, f"{prefix}{i + 1}", kw, short, i, count))
        if items:
            levels.append(items)
    for previous, level in itertools.pairwise(levels):
        for i, item in enumerate(level):
            # Windows spread evenly over the previous level so no item is left dangling.
            size = max(rng.randint(2, 4), math.ceil(len(previous) / len(level)))
            size = min(len(previous), size)
            start = i * len(previous) // len(level)
            item["depends_on"] = [previous[(start + j) % len(previous)]["id"] for j in range(size)]
    # Generation drafts run side by side: the synthesis step merges them anyway.
    final = levels[-1][-1]
    by_id = {item["id"]: item for level in levels for item in level}
    node: dict[str, Any] | None = final
    while node is not None:
        node["critical"], node["priority"] = True, 10
        node = by_id[node["depends_on"][0]] if node["depends_on"] else None
    return {"microtasks": [item for level in levels for item in level]}


def _plan_item(role: str, id_: str, kw: str, short: str, i: int, count: int) -> dict[str, Any]:
    if role == "research":
        aspects = _RESEARCH.split("|")
        aspect = f"{aspects[i % len(aspects)]} {kw}"
        title = f"Research the {aspect}"
        instructions = f"Collect the {aspect} relevant to: {short}. Note sources and gaps."
    elif role == "analysis":
        aspects = _ANALYSIS.split("|")
        aspect = f"{aspects[i % len(aspects)]} {kw}"
        title = f"Analyse the {aspect}"
        instructions = f"Using the research results, analyse the {aspect} for: {short}."
    elif role == "validation":
        title = f"Validate the findings on {kw}"
        instructions = f"Check the analyses of {kw} for contradictions and missing evidence."
    elif i == count - 1:
        title = f"Write the final answer on {kw}"
        instructions = f"Combine the validated results into one clear answer to: {short}"
    else:
        title = f"Draft the section on {kw}"
        instructions = f"Draft the part of the answer about {kw} from the validated results."
    return {
        "id": id_,
        "role": role,
        "title": title,
        "instructions": instructions,
        "depends_on": [],
        "priority": 1,
        "critical": False,
    }


def _agent_output(prompt: Prompt, rng: random.Random) -> dict[str, Any]:
    if _GREETING.match(prompt.request):
        return {
            "content": SIMULATED_PREFIX + "Hello! Ask me anything: simple questions get a "
            "direct answer, bigger tasks are split across a team of parallel agents.",
            "claims": [],
            "confidence": 0.95,
        }
    title = _title(prompt)
    words = keywords(prompt.request)
    sentences = _sentences(rng, words, rng.randint(2, 4))
    claims = fake_claims.agent_claims(words, prompt.seed, rng)
    return {
        "content": f"{SIMULATED_PREFIX}{title}. " + " ".join(sentences),
        "claims": claims,
        "confidence": round(rng.uniform(0.5, 0.95), 2),
    }


def _title(prompt: Prompt) -> str:
    for pattern in _TITLE_PATTERNS:
        match = pattern.search(prompt.conversation)
        if match and match.group(1).strip():
            return match.group(1).strip().rstrip(".")
    lines = [line.strip() for line in prompt.last_user.splitlines() if line.strip()]
    return (lines[0] if lines else "the microtask")[:80].rstrip(".")


# --- structured answers ----------------------------------------------------------------


def schema_answer(schema: dict[str, Any], prompt: Prompt, rng: random.Random) -> Any:
    """An instance valid for ``schema``; plausible content for the project's own schemas."""
    root = resolve(schema)
    props = root.get("properties") or {}
    if {"level", "parallelizable"} <= props.keys():
        return _complexity(prompt)
    if "microtasks" in props:
        items = resolve(resolve(props["microtasks"], schema).get("items") or {}, schema)
        if "depends_on" in (items.get("properties") or {}):
            return _plan(prompt, rng)
    if {"content", "claims", "confidence"} <= props.keys():
        return _agent_output(prompt, rng)
    return build_instance(schema, rng, keywords(prompt.request))
