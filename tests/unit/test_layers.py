"""Imports point one way: front ends → runtime → gateway / simulator → engine → agents → llm
→ observe → the base modules (models, config, errors, conversation, home_lock).

Every ``import`` counts, also one inside a function or under ``TYPE_CHECKING``: a lazy
import is still a dependency. Peers of one rank (the gateway and the simulator; the bot
and the benchmark) may not import each other either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Higher ranks may import lower ones; a package imports freely inside itself.
RANKS: dict[str, int] = {
    "entry": 9,  # bot.py, serve_app.py, python -m actors
    "cli": 8,  # parallel-agents: dispatches to every command, the benchmark's too
    "bot": 7,
    "bench": 7,
    "runtime": 6,
    "gateway": 5,
    "sim": 5,
    "engine": 4,
    "agents": 3,
    "llm": 2,
    "observe": 1,
    "base": 0,
}
ENTRY_POINTS = {"bot", "serve_app", "actors.__main__"}


def layer_of(module: str) -> str:
    if module in ENTRY_POINTS:
        return "entry"
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANKS):
        return parts[1]
    return "base"  # actors, actors.models, actors.config, ...


def modules_under(root: Path) -> dict[str, Path]:
    """Every module of the ``actors`` package and the top-level entry points under ``root``."""
    found = {}
    for path in [*root.glob("actors/**/*.py"), *root.glob("*.py")]:
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports_of(root: Path) -> dict[str, set[str]]:
    """Which of the project's modules each module imports."""
    modules = modules_under(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, *([base] if base else [])])
                # ``from package import module`` names the module; ``import name`` the package
                candidates = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            else:
                continue
            for candidate in candidates:
                while candidate and candidate not in modules:
                    candidate = candidate.rpartition(".")[0]
                if candidate and candidate != name:
                    targets.add(candidate)
        graph[name] = targets
    return graph


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Each import of a module from another layer of the same rank or above."""
    found = []
    for module, targets in sorted(graph.items()):
        mine = layer_of(module)
        for target in sorted(targets):
            theirs = layer_of(target)
            if theirs != mine and RANKS[theirs] >= RANKS[mine]:
                found.append(f"{module} ({mine}) imports {target} ({theirs})")
    return found


def test_no_import_runs_upward_in_the_tree():
    graph = imports_of(ROOT)
    assert len(graph) > 90  # the whole package was read, not an empty folder
    assert upward(graph) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        (
            "actors/llm/client.py",
            "from actors.engine.dag import Plan\n",
            "actors.llm.client (llm) imports actors.engine.dag (engine)",
        ),
        (  # lazy, inside a function
            "actors/observe/stats.py",
            "def f():\n    from actors.engine import dag\n",
            "actors.observe.stats (observe) imports actors.engine.dag (engine)",
        ),
        (  # relative, from the base into a layer
            "actors/models.py",
            "from .agents import pool\n",
            "actors.models (base) imports actors.agents.pool (agents)",
        ),
        (  # peers of one rank
            "actors/sim/simulator.py",
            "import actors.gateway.app\n",
            "actors.sim.simulator (sim) imports actors.gateway.app (gateway)",
        ),
        (  # the package importing its entry point
            "actors/runtime/control.py",
            "def start():\n    import serve_app\n",
            "actors.runtime.control (runtime) imports serve_app (entry)",
        ),
    ],
)
def test_an_upward_import_in_a_built_tree_is_found(tmp_path, module, source, expected):
    _write(
        tmp_path,
        {
            "actors/__init__.py": "",
            "actors/models.py": "",
            "actors/engine/__init__.py": "",
            "actors/engine/dag.py": "from actors.models import *\n",
            "actors/agents/__init__.py": "",
            "actors/agents/pool.py": "from actors.llm import client\n",
            "actors/llm/__init__.py": "",
            "actors/llm/client.py": "",
            "actors/observe/__init__.py": "",
            "actors/observe/stats.py": "",
            "actors/gateway/__init__.py": "",
            "actors/gateway/app.py": "",
            "actors/sim/__init__.py": "",
            "actors/sim/simulator.py": "",
            "actors/runtime/__init__.py": "",
            "actors/runtime/control.py": "",
            "serve_app.py": "from actors.gateway import app\n",
        },
    )
    assert upward(imports_of(tmp_path)) == []  # the tree as built points one way
    _write(tmp_path, {module: source})
    assert upward(imports_of(tmp_path)) == [expected]
