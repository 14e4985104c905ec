"""The notebooks run on the shipped data, call the package instead of defining logic, and are
committed without outputs (issue 8).

Each notebook is executed in a fresh `python3` kernel of this virtualenv (ipykernel installs its
kernelspec into the venv's share/jupyter, so nothing in ~/.local is needed or touched), with the
working directory notebooks/ as Jupyter would use, two kernels at a time. The window tables come
from the session's temporary XDG_CACHE_HOME (conftest.py `shipped_table_cache`: built once before
any notebook starts, and read by the shipped-model learning tests too); the user's ~/.cache is
left alone.
"""

from __future__ import annotations

import ast
import asyncio
import time
from dataclasses import dataclass
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
PARALLEL_KERNELS = 2
"""Kernels at once: each notebook's work is single-threaded (LightGBM num_threads=1), two cores."""
ALL_NOTEBOOKS_TIMEOUT_S = 900


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


def test_the_kernel_is_this_virtualenv() -> None:
    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        pytest.fail(f"no {KERNEL!r} kernelspec: `make venv` installs ipykernel into .venv")
    assert "python" in Path(spec.argv[0]).name


@dataclass(frozen=True, slots=True)
class Executed:
    notebook: nbformat.NotebookNode
    error: str | None
    elapsed_s: float


async def _execute(path: Path, kernels: asyncio.Semaphore) -> Executed:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    async with kernels:
        started = time.monotonic()
        try:
            await client.async_execute()  # raises CellExecutionError, naming the cell, if one fails
        except Exception as exc:
            return Executed(notebook, f"{type(exc).__name__}: {exc}", time.monotonic() - started)
        return Executed(notebook, None, time.monotonic() - started)


async def _execute_all(paths: list[Path]) -> dict[Path, Executed]:
    kernels = asyncio.Semaphore(PARALLEL_KERNELS)
    runs = await asyncio.gather(*(_execute(path, kernels) for path in paths))
    return dict(zip(paths, runs, strict=True))


@pytest.fixture(scope="module")
def executed(shipped_table_cache: Path, xdg_cache_home: Path) -> dict[Path, Executed]:
    """Every notebook run in its own kernel, PARALLEL_KERNELS at a time, on tables already built."""
    with pytest.MonkeyPatch.context() as env:  # the kernels are child processes: they inherit it
        env.setenv("XDG_CACHE_HOME", str(xdg_cache_home))
        env.setenv("MPLBACKEND", "agg")
        return asyncio.run(_execute_all(NOTEBOOKS))


@pytest.mark.slow  # each notebook trains: minutes for the four
@pytest.mark.timeout(ALL_NOTEBOOKS_TIMEOUT_S)  # the first one's set-up runs them all
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_runs_on_the_shipped_data(path: Path, executed: dict[Path, Executed]) -> None:
    run = executed[path]
    assert run.error is None, f"{path.name}: {run.error}"
    notebook = run.notebook
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
    assert run.elapsed_s < NOTEBOOK_TIMEOUT_S, f"{path.name} took {run.elapsed_s:.0f} s"
    print(f"{path.name}: {run.elapsed_s:.1f} s")
