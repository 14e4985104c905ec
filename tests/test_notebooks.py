"""The notebooks run on the shipped data, call the package instead of defining logic, and are
committed without outputs (issue 8).

Each notebook is executed in a fresh `python3` kernel of this virtualenv (ipykernel installs its
kernelspec into the venv's share/jupyter, so nothing in ~/.local is needed or touched), with the
working directory notebooks/ as Jupyter would use. The window-table cache goes to the session's
temporary XDG_CACHE_HOME (conftest.py), shared with the other tests that read the shipped
campaigns: the first to need a table builds it, the others read it, and the user's ~/.cache is
left alone.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL = "python3"
CELL_TIMEOUT_S = 240
NOTEBOOK_TIMEOUT_S = 300


def _ids(path: Path) -> str:
    return path.stem


def _code_cells(path: Path) -> list[nbformat.NotebookNode]:
    notebook = nbformat.read(path, as_version=4)
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_the_four_notebooks_are_there() -> None:
    assert [p.name for p in NOTEBOOKS] == [
        "01-explore-lab-data.ipynb",
        "02-features-and-ablation.ipynb",
        "03-tune-lightgbm.ipynb",
        "04-error-analysis.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == KERNEL
    dirty = [
        i for i, cell in enumerate(_code_cells(path)) if cell.outputs or cell.execution_count is not None
    ]
    assert not dirty, f"{path.name}: code cells {dirty} carry outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_defines_no_logic(path: Path) -> None:
    """Functions, classes and lambdas belong in otelprobe (experiments.py), not in a notebook."""
    for number, cell in enumerate(_code_cells(path)):
        tree = ast.parse(cell.source)  # also: no IPython magics, the cells are plain Python
        defined = [
            type(node).__name__
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda)
        ]
        assert not defined, f"{path.name} cell {number} defines {defined}: move it into the package"


@pytest.fixture
def kernel_env(xdg_cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The kernel is a child process: it inherits this environment.
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg_cache_home))
    monkeypatch.setenv("MPLBACKEND", "agg")
    yield


def test_the_kernel_is_this_virtualenv() -> None:
    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        pytest.fail(f"no {KERNEL!r} kernelspec: `make venv` installs ipykernel into .venv")
    assert "python" in Path(spec.argv[0]).name


@pytest.mark.slow  # each notebook builds window tables and trains: minutes for the four
@pytest.mark.timeout(NOTEBOOK_TIMEOUT_S)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_runs_on_the_shipped_data(path: Path, kernel_env: None) -> None:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    started = time.monotonic()
    client.execute()  # raises CellExecutionError, naming the cell, if one fails
    elapsed_s = time.monotonic() - started
    errors = [
        o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    stderr = [
        o.text
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream" and o.name == "stderr"
    ]
    assert not stderr, f"{path.name} wrote to stderr (warnings?): {stderr}"
    print(f"{path.name}: {elapsed_s:.1f} s")
