"""Every notebook of the series: conventions, a papermill smoke run, and nbval on the results.

The smoke run executes the whole series in order in one run folder (notebooks hand work to each
other through its files), then nbval re-executes each executed notebook and compares the cells
marked ``# NBVAL_CHECK_OUTPUT`` after sanitising paths, timings and progress bars.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nsfwkit import pipeline

ROOT = Path(__file__).resolve().parent.parent
STAGES = pipeline.stages(ROOT / "notebooks")
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"


def _parameters(nb) -> dict[str, str]:
    """The parameters cell's ``name -> annotation``, checking each line is a typed literal."""
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    annotations = {}
    for line in tagged[0].source.splitlines():
        if not line.strip():
            continue
        node = ast.parse(line).body[0]
        assert isinstance(node, ast.AnnAssign), f"typed literal expected: {line!r}"
        ast.literal_eval(node.value)  # a literal, not an expression
        assert "#" in line.split("=", 1)[1], f"one comment per parameter: {line!r}"
        annotations[node.target.id] = ast.unparse(node.annotation)
    return annotations


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_notebook_conventions(stage):
    nb = nbformat.read(stage.path, as_version=4)
    nbformat.validate(nb)
    cells = nb.cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# "), "first cell: a title"
    assert "run_dir" in _parameters(nb)
    # JupyterLab opens each notebook on the kit's kernel (no TensorFlow start-up noise), not a bare python3
    assert nb.metadata.kernelspec.name == "nsfwkit", "kernelspec: the kit's kernel (nsfwkit.jupyter.KERNEL_NAME)"
    for cell in cells:
        if cell.cell_type != "code":
            continue
        assert not cell.get("outputs"), "commit notebooks without outputs"
        tree = ast.parse("\n".join(l for l in cell.source.splitlines() if not l.startswith("%")))
        defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        assert not defs, "the package computes, notebooks narrate: no def/class in notebooks"


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_papermill_documents_every_parameter(stage):
    """``papermill --help-notebook`` reads every parameter line (it skips, with a warning only, a
    line it cannot parse) and shows each with its type and its comment as the help text."""
    import papermill

    annotations = _parameters(nbformat.read(stage.path, as_version=4))
    inferred = papermill.inspect_notebook(str(stage.path))
    assert list(inferred) == list(annotations), "papermill could not parse some parameter lines"
    for name, info in inferred.items():
        assert info["inferred_type_name"] == annotations[name], name
        assert info["help"].strip(), f"{name}: no help text"


@pytest.fixture(scope="session")
def smoke_run(build_once):
    """The whole series run once per test run with the smoke parameters (shared by xdist workers)."""
    return build_once("smoke", lambda dest: pipeline.run("smoke", name=dest.name, runs=dest.parent,
                                                         progress=False))


@pytest.mark.slow
def test_smoke_run_of_the_whole_series(smoke_run):
    for stage in STAGES:
        executed = smoke_run / "notebooks" / stage.path.name
        assert executed.is_file(), stage.name
        outputs = smoke_run / stage.name
        assert outputs.is_dir() and any(outputs.iterdir()), f"{stage.name} wrote no artifacts"
    assert (smoke_run / "00_classify" / "predictions.jsonl").read_text().count("\n") >= 9


@pytest.mark.slow
def test_nbval_on_executed_notebooks(smoke_run):
    executed = sorted((smoke_run / "notebooks").glob("*.ipynb"))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
         "--nbval-current-env", "--nbval-sanitize-with", str(SANITIZE), *map(str, executed)],
        capture_output=True, text=True, cwd=smoke_run, timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
