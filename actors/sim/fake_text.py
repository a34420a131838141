"""The simulator's prose: answers, microtask contributions and the long sectioned synthesis.

Everything is built from the request's keywords and a seeded generator, so the same
request reads the same. Sizes follow what Claude writes (tokens at chars/4):

- plain answers: 150-400 tokens; greetings a sentence or two.
- microtask ``content``: research 250-450, analysis and generation 400-700,
  validation 250-400 tokens; it opens with the microtask's title.
- synthesis: 2,000-3,500 tokens in sections (Findings, Analysis, Checks,
  Recommendations) made from the ``<result>`` blocks, opening "Simulated synthesis: ".

A prompt asking for a length ("in about N words") gets about that many words, a little
over as often as not, as models write them; a ``[sim-output-tokens N]`` marker replaces
the drawn size with N tokens. All prose starts with
``SIMULATED_PREFIX``.
"""

from __future__ import annotations

import random
import re

from actors.engine.complexity import is_greeting
from actors.sim.fake_request import Prompt

SIMULATED_PREFIX = "[simulated] "

GREETING_REPLY = (
    "Hello! Ask me anything: simple questions get a direct answer, bigger tasks are split "
    "across a team of parallel agents."
)
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
# Microtask content size by role, in tokens.
_WORDS_ASKED = re.compile(r"\bin about (\d+) words\b", re.IGNORECASE)
_ROLE_TOKENS = {
    "research": (250, 450),
    "analysis": (400, 700),
    "generation": (400, 700),
    "validation": (250, 400),
}
_SENTENCES = (
    "The main point about {a} is that it shapes most of the outcome.",
    "{A} and {b} have to be considered together.",
    "Evidence on {a} is mixed, so the conclusion stays cautious.",
    "A practical first step is to clarify what {a} means in this context.",
    "The trade-off between {a} and {b} decides the recommendation.",
    "Experience with {b} suggests a gradual approach rather than one large change.",
    "Nothing found so far contradicts the earlier reading of {a}.",
    "Where {a} is concerned, getting it wrong costs more than checking twice.",
    "Most published guidance on {a} assumes a larger team than this one, so it needs adapting.",
    "{A} tends to fail quietly, which is why monitoring matters as much as the design.",
    "The strongest argument for {a} is operational: it removes a whole class of incidents.",
    "The weakest part of the case for {b} is the lack of measurements from similar setups.",
    "If {a} changes, {b} usually has to change with it, so review the two together.",
    "A reasonable default is the simpler option for {a}, revisited after a quarter.",
    "Two independent sources agree on {a}; a third disagrees on the details of {b}.",
    "The figures on {b} are estimates and should be replaced with measured ones.",
    "Teams that handled {a} well wrote their assumptions down and checked them regularly.",
    "For {b}, the limiting factor is usually people and process rather than technology.",
)
_RESULT_BLOCK = re.compile(
    r'<result id="([^"]*)" role="([a-z]+)" confidence="([0-9.]+)">\n(.*?)\n</result>', re.DOTALL
)
_ROLE_HEADINGS = (
    ("research", "Findings"),
    ("analysis", "Analysis"),
    ("validation", "Checks"),
    ("generation", "Recommendations"),
)


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


def sentences(rng: random.Random, words: list[str], count: int) -> list[str]:
    """``count`` sentences about ``words``."""
    out, last = [], -1
    for _ in range(count):
        a = rng.choice(words)
        b = rng.choice([w for w in words if w != a] or words)
        pick = rng.randrange(len(_SENTENCES) - 1)
        last = pick + (pick >= last >= 0)  # never the same template twice in a row
        out.append(_SENTENCES[last].format(a=a, b=b, A=a.capitalize()))
    return out


def paragraphs(rng: random.Random, words: list[str], tokens: int) -> str:
    """Paragraphs of four to six sentences, about ``tokens`` long in all."""
    chars, parts, size = tokens * 4, [], 0
    while size < chars:
        paragraph = " ".join(sentences(rng, words, rng.randint(4, 6)))
        parts.append(paragraph)
        size += len(paragraph) + 2
    return fit("\n\n".join(parts), chars)


def fit(text: str, chars: int) -> str:
    """``text`` cut to at most ``chars`` characters, at a sentence end where one is near."""
    if len(text) <= chars or chars < 2:
        return text[: max(chars, 1)]
    cut = text[:chars]
    end = cut.rfind(". ")
    if end >= chars * 0.8:
        return cut[: end + 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > 0 else cut[: max(1, chars - 1)]).rstrip(",;:") + "."


def asked_tokens(prompt: Prompt, rng: random.Random) -> int | None:
    """The length the prompt asks for ("in about N words"), as a model writes it: in
    tokens (4 per 3 words), a little over as often as not; None when it asks none."""
    asked = _WORDS_ASKED.findall(prompt.last_user)
    if not asked:
        return None
    return max(1, round(int(asked[-1]) * 4 / 3 * rng.uniform(0.95, 1.15)))


def plain_answer(prompt: Prompt, rng: random.Random) -> str:
    """A plain text answer about the request."""
    if is_greeting(prompt.request) and prompt.markers.output_tokens is None:
        return SIMULATED_PREFIX + GREETING_REPLY
    tokens = prompt.markers.output_tokens or asked_tokens(prompt, rng) or rng.randint(150, 400)
    body = paragraphs(rng, keywords(prompt.request), tokens)
    return fit(SIMULATED_PREFIX + body, max(len(SIMULATED_PREFIX) + 1, tokens * 4))


def microtask_content(prompt: Prompt, rng: random.Random) -> str:
    """One agent's contribution: the title, then a few paragraphs on the request."""
    if is_greeting(prompt.request) and prompt.markers.output_tokens is None:
        return SIMULATED_PREFIX + GREETING_REPLY
    low, high = _ROLE_TOKENS.get(prompt.role, (300, 500))
    tokens = prompt.markers.output_tokens or asked_tokens(prompt, rng) or rng.randint(low, high)
    head = f"{SIMULATED_PREFIX}{prompt.title}. "
    words = keywords(prompt.request)
    body = paragraphs(rng, words, max(1, tokens - len(head) // 4))
    return fit(head + body, tokens * 4)


def synthesis(prompt: Prompt, rng: random.Random) -> str:
    """A long report stitched from the ``<result>`` blocks of a synthesis prompt."""
    by_role: dict[str, list[str]] = {}
    for _id, role, _confidence, content in _RESULT_BLOCK.findall(prompt.last_user):
        lead = ". ".join(content.replace(SIMULATED_PREFIX, "").split(". ")[:2]).strip()
        if lead:
            by_role.setdefault(role, []).append(lead.rstrip("."))
    words = keywords(prompt.request)
    tokens = prompt.markers.output_tokens or rng.randint(2000, 3500)
    sections: list[tuple[str, list[str]]] = [("Summary", [])] + [
        (f"{heading} ({len(by_role[role])} parts)", by_role[role][:8])
        for role, heading in _ROLE_HEADINGS
        if by_role.get(role)
    ]
    sections.append(("Conclusion", []))
    # Bullets first, then the prose shared out so every section gets its part.
    prose_tokens = max(60, tokens - sum(len(p) + 4 for _, ps in sections for p in ps) // 4)
    share = max(40, prose_tokens // len(sections))
    lines = ["Simulated synthesis: " + prompt.request[:120].strip()]
    for heading, points in sections:
        lines += ["", f"{heading}:"]
        lines += [f"- {point}." for point in points]
        lines += ["", paragraphs(rng, words, share)]
    return fit(SIMULATED_PREFIX + "\n".join(lines), tokens * 4)
