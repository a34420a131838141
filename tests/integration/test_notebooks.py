"""Every notebook in notebooks/ runs top to bottom on the simulator, as a user would run it.

Kernel: nbclient starts the ``python3`` kernelspec, which is ipykernel's own
(``.venv/share/jupyter/kernels/python3``, argv ``python -m ipykernel_launcher``);
jupyter_client swaps a bare ``python`` for ``sys.executable``, so with the suite run
by ``.venv/bin/python`` the kernel is the venv's interpreter. No
``ipykernel install --user`` is needed; the first test checks the kernel's command.

The kernel is a separate process and a separate Ray driver: it joins this
session's Ray through ``RAY_ADDRESS`` (set here to the session's GCS address),
because ``address="auto"`` alone would pick the latest Ray started on the machine,
which need not be ours. Each notebook finds no system running (modules stop
theirs), starts its own small one and stops it; the test checks none is left.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
import ray
from jupyter_client import KernelManager
from nbclient import NotebookClient

from actors.runtime.system import find_system

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def session_address(ray_session, tmp_path_factory) -> Iterator[str]:
    """Point every kernel started by this module at the session's Ray, and at a home of its
    own (one orchestrator per home: the user's ``~/.parallel-agents`` stays untouched)."""
    address = ray.get_runtime_context().gcs_address
    changes = {"RAY_ADDRESS": address, "PARALLEL_AGENTS_HOME": str(tmp_path_factory.mktemp("nb"))}
    previous = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    yield address
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _execute(path: Path, out_dir: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=240,  # per cell; a whole notebook takes well under a minute when idle
        resources={"metadata": {"path": str(ROOT)}},
    )
    try:
        client.execute()
    finally:  # keep what ran, to read after a failure
        nbformat.write(notebook, out_dir / path.name)
    return notebook


def _stdout(notebook: nbformat.NotebookNode) -> str:
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream"
    )


def _images(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def test_the_kernel_is_the_interpreter_running_the_tests():
    command = KernelManager(kernel_name="python3").format_kernel_cmd()
    assert command[:3] == [sys.executable, "-m", "ipykernel_launcher"]


def test_there_are_notebooks():
    assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb", "experiments.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, session_address, tmp_path):
    running_before = find_system() is not None
    notebook = _execute(path, tmp_path)  # raises CellExecutionError on any cell error
    assert (find_system() is not None) == running_before  # nothing left behind
    assert _images(notebook) >= 1
    out = _stdout(notebook)
    if path.stem == "quickstart":
        match = re.search(r"timeline: (\d+) bars, (\d+) microtasks ran, (\d+) planned", out)
        assert match, out
        bars, ran, planned = map(int, match.groups())
        assert bars == ran == planned > 1  # one bar per microtask
        assert _images(notebook) == 2  # the timeline and the utilisation plot
        assert "done:" in out
    if path.stem == "experiments":
        assert len(re.findall(r"parallelism \d", out)) >= 9
        assert "speedup" not in out  # work / wall is parallelism; only the bench measures speedup
