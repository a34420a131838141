"""Domain templates: ready-made plans for when the model's plan is unusable.

Every template is four layers, research → analysis → validation → generation,
sized to roughly 40/35/20/5 % of ``max_microtasks`` (at least one generation
microtask). Each microtask after the first layer depends on two to four
microtasks of the layer before, chosen so every earlier microtask feeds
something later. The last generation microtask writes the final answer and is
on the critical path.

>>> plan = build_template(choose_template("Audit the security of our REST API"), "...", 5)
>>> [t.id for t in plan]
['r1', 'r2', 'a1', 'v1', 'g1']
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from actors.engine.dag import assign_branches, mark_critical
from actors.models import ID_PREFIX, PIPELINE, PLAN_SHARES, Microtask, Role, apportion

TEMPLATE_NAMES: tuple[str, ...] = (
    "security_analysis",
    "research",
    "code_review",
    "report",
    "data_analysis",
    "generic",
)

MAX_QUOTE_CHARS = 500
_SHARES: dict[Role, float] = {r: s for r, s in PLAN_SHARES.items() if r is not Role.GENERATION}
_ASK = {
    Role.RESEARCH: "Gather the facts for: {title}. List what you find with its source or "
    "assumption; do not draw conclusions yet.",
    Role.ANALYSIS: "Analyse: {title}. Use the research you are given; name causes, risks, "
    "trade-offs and how sure you are.",
    Role.VALIDATION: "Check: {title}. Test the earlier findings for errors, gaps and "
    "contradictions; say which hold and which do not.",
    Role.GENERATION: "Write: {title}. Build on the validated findings you are given; be "
    "concrete and well structured.",
}


@dataclass(frozen=True)
class _Domain:
    """What makes one template different: when it applies and what its microtasks are called."""

    keywords: str  # regex alternatives, matched as whole words in the request
    focus: str  # one sentence added to every instruction
    titles: Mapping[Role, tuple[str, ...]]  # most important first; generation[0] is the answer


_DOMAINS: dict[str, _Domain] = {
    "security_analysis": _Domain(
        keywords=(
            r"secur\w*|vulnerab\w*|threat\w*|owasp|pen-?test\w*|penetration"
            r"|attack\w*|exploit\w*|cve|breach\w*|xss|csrf|injection|hardening"
        ),
        focus="Focus on security: assets, threats, weaknesses, likelihood and impact.",
        titles={
            Role.RESEARCH: (
                "Asset inventory",
                "Attack surface of the public API",
                "Authentication and session handling",
                "Data storage and the database",
                "Third-party dependencies",
                "Front-end and browser exposure",
                "Infrastructure and network exposure",
                "Secrets and configuration",
                "Logging and monitoring",
                "Access control model",
                "Input handling and injection points",
                "Deployment pipeline",
            ),
            Role.ANALYSIS: (
                "Threat model (STRIDE)",
                "OWASP A01 Broken access control",
                "OWASP A02 Cryptographic failures",
                "OWASP A03 Injection",
                "OWASP A04 Insecure design",
                "OWASP A05 Security misconfiguration",
                "OWASP A06 Vulnerable components",
                "OWASP A07 Identification and authentication failures",
                "OWASP A08 Software and data integrity failures",
                "OWASP A09 Logging and monitoring failures",
                "OWASP A10 Server-side request forgery",
            ),
            Role.VALIDATION: (
                "Validate findings and severities",
                "Check for false positives",
                "Check coverage of the attack surface",
                "Check the remediation advice",
            ),
            Role.GENERATION: (
                "Security assessment report",
                "Prioritised remediation plan",
                "Executive summary",
            ),
        },
    ),
    "research": _Domain(
        keywords=(
            r"research\w*|literature|compar\w*|survey|investigat\w*|state of the art"
            r"|sources?|market|stud(y|ies)|trends?|pros and cons|alternatives"
        ),
        focus="Focus on evidence: cite sources, separate facts from opinions.",
        titles={
            Role.RESEARCH: (
                "Background and definitions",
                "Primary sources",
                "Current state of the art",
                "Competing approaches",
                "Recent developments",
                "Quantitative evidence",
                "Expert opinions",
                "Case studies",
                "Open questions",
            ),
            Role.ANALYSIS: (
                "Compare the approaches",
                "Strength of the evidence",
                "Trends and drivers",
                "Gaps and disagreements",
                "Implications",
                "Risks and limitations",
            ),
            Role.VALIDATION: (
                "Check facts against sources",
                "Check for bias and missing views",
                "Check the conclusions follow",
            ),
            Role.GENERATION: ("Research summary", "Recommendations", "Annotated sources"),
        },
    ),
    "code_review": _Domain(
        keywords=(
            r"code review|review (the|this|my) code|pull request|refactor\w*"
            r"|codebase|source code|bugs?|lint|code quality|diff|technical debt"
            r"|unit tests?"
        ),
        focus="Focus on the code: correctness, clarity, tests, performance and safety.",
        titles={
            Role.RESEARCH: (
                "Structure and modules",
                "Public interfaces",
                "Dependencies",
                "Tests and coverage",
                "Build and tooling",
                "Error handling",
                "Concurrency and state",
                "Documentation",
            ),
            Role.ANALYSIS: (
                "Correctness and bugs",
                "Design and readability",
                "Performance",
                "Security issues",
                "Test quality",
                "Maintainability",
            ),
            Role.VALIDATION: (
                "Confirm each issue is real",
                "Check suggested fixes",
                "Check severity",
            ),
            Role.GENERATION: ("Code review", "Suggested changes", "Summary for the author"),
        },
    ),
    "report": _Domain(
        keywords=(
            r"reports?|summar\w*|memo|brief|write-?up|overview|white ?paper"
            r"|documentation|executive"
        ),
        focus="Focus on the reader: clear structure, key points first, no filler.",
        titles={
            Role.RESEARCH: (
                "Scope and audience",
                "Key facts",
                "Background",
                "Figures and data",
                "Stakeholders",
                "Prior documents",
                "Timeline",
            ),
            Role.ANALYSIS: (
                "Key findings",
                "Causes and effects",
                "Options",
                "Risks",
                "Outlook",
            ),
            Role.VALIDATION: ("Check facts and figures", "Check clarity and structure"),
            Role.GENERATION: ("Report", "Executive summary", "Appendix"),
        },
    ),
    "data_analysis": _Domain(
        keywords=(
            r"data analysis|datasets?|data set|statistic\w*|csv|regression"
            r"|correlation|metrics?|kpi|sql quer(y|ies)|spreadsheet|forecast"
            r"|analy[sz]e (the )?data"
        ),
        focus="Focus on data: state assumptions, methods, numbers and uncertainty.",
        titles={
            Role.RESEARCH: (
                "Data sources and schema",
                "Data quality and gaps",
                "Definitions of metrics",
                "Descriptive statistics",
                "Segments and groupings",
                "External benchmarks",
                "Time ranges and seasonality",
            ),
            Role.ANALYSIS: (
                "Trends over time",
                "Correlations and drivers",
                "Segment comparison",
                "Anomalies and outliers",
                "Forecast",
                "Statistical significance",
            ),
            Role.VALIDATION: ("Check calculations", "Check methods and assumptions"),
            Role.GENERATION: (
                "Data analysis report",
                "Charts and tables to produce",
                "Recommended actions",
            ),
        },
    ),
    "generic": _Domain(
        keywords="",
        focus="Answer what the request asks, completely and accurately.",
        titles={
            Role.RESEARCH: (
                "Background and context",
                "Key facts",
                "Constraints and requirements",
                "Existing approaches",
                "Examples",
                "Open questions",
            ),
            Role.ANALYSIS: (
                "Main analysis",
                "Options and trade-offs",
                "Risks",
                "Implications",
            ),
            Role.VALIDATION: ("Check accuracy", "Check completeness"),
            Role.GENERATION: ("Final answer", "Summary", "Next steps"),
        },
    ),
}
_PATTERNS = {
    name: re.compile(r"\b(" + domain.keywords + r")\b", re.IGNORECASE)
    for name, domain in _DOMAINS.items()
    if domain.keywords
}


def choose_template(text: str) -> str:
    """The template whose keywords the request mentions most; ``"generic"`` if none."""
    sample = text[:10_000]
    best, best_hits = "generic", 0
    for name in TEMPLATE_NAMES:  # ties go to the earlier, more specific template
        pattern = _PATTERNS.get(name)
        hits = len(pattern.findall(sample)) if pattern else 0
        if hits > best_hits:
            best, best_hits = name, hits
    return best


def build_template(name: str, text: str, max_microtasks: int) -> list[Microtask]:
    """The plan of template ``name`` for request ``text``, at most ``max_microtasks`` long.

    Raises ``ValueError`` for an unknown name or ``max_microtasks`` < 1.
    """
    domain = _DOMAINS.get(name)
    if domain is None:
        raise ValueError(f"unknown template {name!r}; choose one of {', '.join(TEMPLATE_NAMES)}")
    return layered_plan(domain.titles, text, max_microtasks, focus=domain.focus)


def layer_sizes(max_microtasks: int) -> dict[Role, int]:
    """Microtasks per role: ≈40/35/20/5 %, at least one generation (5 → 2, 1, 1, 1)."""
    if max_microtasks < 1:
        raise ValueError(f"max_microtasks must be at least 1, not {max_microtasks}")
    generation = max(1, int(max_microtasks * 0.05 + 0.5))
    return {**apportion(max_microtasks - generation, _SHARES), Role.GENERATION: generation}


def layered_plan(
    titles: Mapping[Role, Sequence[str]],
    text: str,
    max_microtasks: int,
    *,
    focus: str = "",
) -> list[Microtask]:
    """The shared builder: research → analysis → validation → generation.

    ``titles`` lists, per role, titles in order of importance; the first
    generation title names the final answer, which comes last and is critical.
    Titles are reused with "(part n)" when a layer needs more than given.
    Empty layers are skipped. Priorities fall with depth so the chain that
    blocks the most work is dispatched first.
    """
    quote = text.strip()
    if len(quote) > MAX_QUOTE_CHARS:
        quote = quote[:MAX_QUOTE_CHARS] + " […]"
    sizes = layer_sizes(max_microtasks)
    layers = [role for role in PIPELINE if sizes[role] > 0]
    tasks: list[Microtask] = []
    previous: list[str] = []
    for depth, role in enumerate(layers):
        names = _layer_titles(titles.get(role) or (role.value.capitalize(),), sizes[role], role)
        current: list[str] = []
        for index, title in enumerate(names):
            tid = f"{ID_PREFIX[role]}{index + 1}"
            # The request is data: concatenated, never used as a format string.
            instructions = (
                _ASK[role].replace("{title}", title)
                + (" " + focus if focus else "")
                + "\n\nThe request:\n«"
                + quote
                + "»"
            )
            tasks.append(
                Microtask(
                    id=tid,
                    role=role,
                    title=title,
                    instructions=instructions,
                    depends_on=_pick(previous, index, len(names)),
                    priority=10 * (len(layers) - depth),
                )
            )
            current.append(tid)
        previous = current
    tasks[-1].critical = True
    return assign_branches(mark_critical(tasks))


def _layer_titles(given: Sequence[str], count: int, role: Role) -> list[str]:
    """``count`` titles for one layer; in generation the answer (``given[0]``) comes last."""
    if role is Role.GENERATION:
        return [*_cycle(given[1:] or given, count - 1), given[0]]
    return _cycle(given, count)


def _cycle(given: Sequence[str], count: int) -> list[str]:
    """The first ``count`` titles, repeating with "(part n)" when there are too few."""
    names = []
    for index in range(count):
        title, rounds = given[index % len(given)], index // len(given)
        names.append(title if rounds == 0 else f"{title} (part {rounds + 1})")
    return names


def _pick(previous: Sequence[str], index: int, count: int) -> list[str]:
    """Two to four consecutive ids of the layer before (fewer if it is smaller).

    Start points are spread evenly over the layer before, so every microtask
    there feeds one here whenever the layers' ratio allows (at most 4 : 1).
    """
    if not previous:
        return []
    size = len(previous)
    want = min(size, 4, max(2 + index % 3, math.ceil(size / count)))
    start = min(index * size // count, size - want)
    return list(previous[start : start + want])
