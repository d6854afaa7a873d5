"""The notebook series: run ``notebooks/NN_*.ipynb`` in order with papermill into a run folder.

A run folder ``dist/runs/<name>/`` holds:

* ``notebooks/NN_name.ipynb`` — each executed notebook, with its outputs;
* ``NN_name/`` — the artifacts each notebook wrote (notebooks pass work to each other only
  through these files);
* ``params.yaml`` — the parameters every stage ran with; ``run.json`` — status and timings.

Parameter sets: ``--params smoke`` / ``--params full`` read ``notebooks/params/<set>/<stem>.yaml``
(a flat mapping per notebook; no file means the notebook's own defaults); ``--params FILE.yaml``
reads one mapping ``{stem: {param: value}}``, where the key ``all`` applies to every stage.
Every stage also receives ``run_dir``. A failing notebook stops the run with :class:`StageFailed`
naming the notebook and the cell; what earlier stages wrote is kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import paths
from .fileio import write_json as _write_json, write_text

__all__ = ["Stage", "StageFailed", "stages", "load_params", "run", "PARAM_SETS"]

PARAM_SETS = ("smoke", "full")
_STAGE_RE = re.compile(r"^(\d\d)_[A-Za-z0-9_]+\.ipynb$")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One notebook of the series."""

    name: str  # the file stem, e.g. "00_classify"
    path: Path


class StageFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the error."""

    def __init__(self, stage: str, message: str, executed: Path | None = None):
        self.stage, self.executed = stage, executed
        super().__init__(message)


def notebooks_dir() -> Path:
    return paths.repo_root() / "notebooks"


def stages(folder: str | os.PathLike | None = None) -> list[Stage]:
    """The series' notebooks, in order (files named ``NN_name.ipynb``)."""
    folder = Path(folder) if folder else notebooks_dir()
    found = sorted(p for p in folder.glob("*.ipynb") if _STAGE_RE.match(p.name))
    return [Stage(p.stem, p) for p in found]


def _select(all_stages: list[Stage], wanted: Sequence[str] | None) -> list[Stage]:
    if not wanted:
        return all_stages
    chosen = []
    for w in wanted:
        matches = [s for s in all_stages if s.name == w or s.name.split("_", 1)[0] == w
                   or s.name.split("_", 1)[-1] == w]
        if not matches:
            raise ValueError(f"unknown stage {w!r}; stages are {[s.name for s in all_stages]}")
        chosen += [m for m in matches if m not in chosen]
    return sorted(chosen, key=lambda s: s.name)


def load_params(params: str | os.PathLike | None, names: Iterable[str],
                folder: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Resolve a parameter set name or YAML file into ``{stage: {param: value}}``."""
    import yaml

    names = list(names)
    folder = Path(folder) if folder else notebooks_dir()
    out: dict[str, dict[str, Any]] = {n: {} for n in names}
    if params is None:
        return out
    text = str(params)
    if text in PARAM_SETS or (folder / "params" / text).is_dir():
        for n in names:
            f = folder / "params" / text / f"{n}.yaml"
            if f.is_file():
                data = yaml.safe_load(f.read_text()) or {}
                if not isinstance(data, dict):
                    raise ValueError(f"{f}: expected a mapping of parameter names to values")
                out[n].update(data)
        return out
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"{text}: not a parameter set ({', '.join(PARAM_SETS)}) nor a YAML file")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping {{stage: {{param: value}}}}")
    common = data.get("all") or {}
    for n in names:
        section = data.get(n) or data.get(n.split("_", 1)[-1]) or {}
        out[n].update(common)
        out[n].update(section)
    unknown = set(data) - {"all"} - set(names) - {n.split("_", 1)[-1] for n in names}
    if unknown:
        raise ValueError(f"{path}: unknown stages {sorted(unknown)}; stages are {names}")
    return out


@contextlib.contextmanager
def _this_python_kernel():
    """Make the kit's kernel (:mod:`nsfwkit.jupyter`) resolve to this interpreter, whatever is installed."""
    from .jupyter import KERNEL_NAME, kernel_spec

    with tempfile.TemporaryDirectory(prefix="nsfwkit-kernel-") as tmp:
        spec_dir = Path(tmp) / "kernels" / KERNEL_NAME
        spec_dir.mkdir(parents=True)
        env = {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        (spec_dir / "kernel.json").write_text(json.dumps(kernel_spec(env=env)))
        old = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = tmp + (os.pathsep + old if old else "")
        try:
            yield KERNEL_NAME
        finally:
            if old is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = old


def _last_started_cell(notebook: Path) -> tuple[int | None, str]:
    """The index and source of the cell papermill was running when execution stopped."""
    import nbformat

    try:
        nb = nbformat.read(notebook, as_version=4)
    except Exception:  # noqa: BLE001 - the notebook may not have been written at all
        return None, ""
    started = [
        (i, c) for i, c in enumerate(nb.cells)
        if c.get("metadata", {}).get("papermill", {}).get("status") in ("running", "failed", "completed")
    ]
    running = [(i, c) for i, c in started if c.metadata["papermill"]["status"] != "completed"]
    index, cell = (running or started or [(None, {"source": ""})])[-1]
    return index, cell.get("source", "")


def run(
    params: str | os.PathLike | None = "full",
    *,
    name: str | None = None,
    select: Sequence[str] | None = None,
    notebooks: str | os.PathLike | None = None,
    runs: str | os.PathLike | None = None,
    progress: bool = True,
    log_output: bool = False,
    timeout: int | None = None,
) -> Path:
    """Execute the notebook series into ``<runs>/<name>/`` and return that folder.

    Args:
        params: ``smoke``, ``full``, a YAML file, or None for the notebooks' defaults.
        name: run folder name (default: a timestamp).
        select: stage names (``04_filters``), numbers (``04``) or short names (``filters``).
        notebooks: the notebooks folder (default: the repository's).
        runs: where run folders go (default: ``dist/runs``).
        progress: show papermill's per-cell progress bar.
        log_output: echo notebook output to the log.
        timeout: per-cell execution timeout in seconds.

    Raises:
        StageFailed: a notebook raised; earlier stages' outputs are kept.
    """
    import papermill as pm
    import yaml

    all_stages = stages(notebooks)
    if not all_stages:
        raise ValueError(f"no notebooks named NN_name.ipynb in {notebooks or notebooks_dir()}")
    chosen = _select(all_stages, select)
    resolved = load_params(params, [s.name for s in chosen], notebooks)
    name = name or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ValueError(f"run name {name!r}: use letters, digits, '.', '_' and '-'")
    run_dir = (Path(runs) if runs else paths.runs_dir()) / name
    (run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    run_dir = run_dir.resolve()

    record_path = run_dir / "run.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    record.update({"name": name, "params": str(params), "python": sys.version.split()[0]})
    record.setdefault("stages", {})
    used = {}
    if (run_dir / "params.yaml").is_file():
        used = yaml.safe_load((run_dir / "params.yaml").read_text()) or {}
    with _this_python_kernel() as kernel:
        for stage in chosen:
            stage_params = {**resolved[stage.name], "run_dir": str(run_dir)}
            used[stage.name] = stage_params
            write_text(run_dir / "params.yaml", yaml.safe_dump(used, sort_keys=False))
            out_nb = run_dir / "notebooks" / stage.path.name
            print(f"[nsfwkit run] {stage.name} ...", file=sys.stderr, flush=True)
            started = time.time()
            record["stages"][stage.name] = {"status": "running", "started": _dt.datetime.now().isoformat()}
            _write_json(record_path, record)
            try:
                pm.execute_notebook(
                    str(stage.path), str(out_nb), parameters=stage_params, kernel_name=kernel,
                    cwd=str(run_dir), progress_bar=progress, log_output=log_output,
                    execution_timeout=timeout, report_mode=False,
                )
            except BaseException as exc:  # noqa: BLE001 - every failure is recorded, then re-raised
                if isinstance(exc, pm.PapermillExecutionError):
                    cell_index, source = exc.cell_index, exc.source or ""
                    error = f"{exc.ename}: {exc.evalue}"
                else:  # cell timeout, dead kernel (out of memory?), interrupt, missing kernel...
                    cell_index, source = _last_started_cell(out_nb)
                    error = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
                status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                record["stages"][stage.name].update(status=status, error=error, cell=cell_index,
                                                    seconds=round(time.time() - started, 1))
                _write_json(record_path, record)
                if not isinstance(exc, Exception):
                    raise
                lines = source.strip().splitlines()
                where = f"cell {cell_index} ({lines[0][:80]!r})" if cell_index is not None else "before any cell ran"
                message = (
                    f"notebook {stage.path.name} failed in {where}: {error}\n"
                    f"the executed notebook is {out_nb}; outputs of earlier stages are kept in {run_dir}"
                )
                raise StageFailed(stage.name, message, out_nb) from None
            record["stages"][stage.name].update(status="ok", seconds=round(time.time() - started, 1),
                                                notebook=str(out_nb.relative_to(run_dir)))
            _write_json(record_path, record)
    return run_dir
