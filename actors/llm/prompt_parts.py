"""A prompt in parts, ordered from most shared to least, with cache breakpoints that pay.

Every microtask resends its request, so a task's calls share long prefixes: the role's
system prompt, the request (and its documents), the context siblings share. The API
caches a prefix that ends at a ``cache_control`` breakpoint, but only when it reaches the
model's minimum length (below it nothing is cached, silently); a write costs more than
plain input (1.25x for 5 minutes), so a prefix nobody else sends costs more marked than
not. A ``Part`` says whether at least one other call will send the same prefix up to its
end (the caller knows it from the plan); ``content_blocks`` places breakpoints on those
parts only, where the prefix is long enough for the model, at most four.

>>> blocks = content_blocks("s" * 100, [Part("r" * 4000, shared=True), Part("q")], 512)
>>> [("cache_control" in b, len(b["text"])) for b in blocks]
[(True, 4000), (False, 1)]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAX_BREAKPOINTS = 4  # per request, the API's limit
_CHARS_PER_TOKEN = 4  # as the client estimates elsewhere; real tokenizers count more


@dataclass(frozen=True)
class Part:
    """One piece of a user prompt; ``shared``: another call sends the same prefix up to
    and including this part (a breakpoint candidate)."""

    text: str
    shared: bool = False


Prompt = str | Sequence[Part]


def joined(prompt: Prompt) -> str:
    """The prompt as one string (what the model reads)."""
    return prompt if isinstance(prompt, str) else "".join(part.text for part in prompt)


def content_blocks(system: str, prompt: Prompt, min_tokens: int | None) -> list[dict[str, Any]]:
    """The user message's text blocks, breakpoints on the shared parts whose prefix
    (system included) reaches ``min_tokens`` — the last four if more qualify. ``None``:
    no breakpoints (caching off)."""
    parts = [Part(prompt)] if isinstance(prompt, str) else [p for p in prompt if p.text]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": p.text} for p in parts]
    if min_tokens is None:
        return blocks
    chars, marked = len(system), []
    for index, part in enumerate(parts):
        chars += len(part.text)
        if part.shared and math.ceil(chars / _CHARS_PER_TOKEN) >= min_tokens:
            marked.append(index)
    for index in marked[-MAX_BREAKPOINTS:]:
        blocks[index]["cache_control"] = {"type": "ephemeral"}
    return blocks
