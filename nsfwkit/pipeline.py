"""The notebook series: run ``notebooks/NN_*.ipynb`` in order with papermill into a run folder.

A run folder ``dist/runs/<name>/`` holds:

* ``notebooks/NN_name.ipynb`` — each executed notebook, with its outputs;
* ``NN_name/`` — the artifacts each notebook wrote (notebooks pass work to each other only
  through these files);
* ``params.yaml`` — the parameters every stage ran with; ``run.json`` — status and timings.

Parameter sets: ``--params smoke`` / ``--params full`` read ``notebooks/params/<set>/<stem>.yaml``
(a flat mapping per notebook; no file means the notebook's own defaults); ``--params FILE.yaml``
reads one mapping ``{stem: {param: value}}``, where the key ``all`` applies to every stage.
Every stage also receives ``run_dir``. Parameters are checked against each notebook's typed
parameters cell (papermill's inspection) before any kernel starts (:func:`load_params`). A failing
notebook stops the run with :class:`StageFailed` naming the notebook and the cell; what earlier
stages wrote is kept. A stage that processed nothing fails through the package call it makes (e.g.
:func:`nsfwkit.classify.summarize`), so it is never recorded as ok.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import datetime as _dt
import difflib
import json
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import fileio, paths
from .fileio import write_json as _write_json
from .fileio import write_text

__all__ = ["Stage", "StageFailed", "ParameterError", "stages", "notebook_parameters", "load_params", "run",
           "PARAM_SETS"]

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


class ParameterError(ValueError):
    """Parameters that do not fit the notebooks: the message names the file, the notebook and the parameter."""


#: papermill's inferred type names -> the Python types a value may have (an int is a fine float).
_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
                                       "list": (list,), "dict": (dict,)}


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def notebook_parameters(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """A notebook's parameters as papermill reads them: ``{name: {inferred_type_name, default, help}}``.

    Uses ``papermill.inspect_notebook`` (what ``papermill --help-notebook`` shows), refusing a
    parameters cell with a line papermill skips (it only logs a warning for those, e.g. a comment
    containing ``=``): such a parameter would silently keep its default.

    Raises:
        ParameterError: the notebook cannot be read, or papermill cannot read a parameter line.
    """
    import papermill

    path = Path(path)
    collect = _Collect()
    logger = logging.getLogger("papermill.translators")
    logger.addHandler(collect)
    try:
        found = papermill.inspect_notebook(str(path))
    except Exception as exc:  # noqa: BLE001 - papermill raises many types for a bad notebook
        raise ParameterError(f"{path}: cannot read the notebook's parameters ({type(exc).__name__}: {exc})") from None
    finally:
        logger.removeHandler(collect)
    skipped = [m for m in collect.messages if m.startswith("Unable to parse")]
    if skipped:
        raise ParameterError(f"{path}: papermill cannot read its parameters cell ({skipped[0]}); write one "
                             "typed literal per line with one comment and no '=' in the comment")
    return found


def _expected_type(info: dict[str, str]) -> str | None:
    """The type a parameter's value must have: its annotation, else its default's, else unknown."""
    annotation = info.get("inferred_type_name", "None").split("[", 1)[0].strip()
    if annotation in _TYPES:
        return annotation
    try:
        default = ast.literal_eval(info.get("default", ""))
    except (ValueError, SyntaxError):
        return None
    name = type(default).__name__
    return name if name in _TYPES else None


def _value_problem(name: str, value: Any, info: dict[str, str]) -> str | None:
    expected = _expected_type(info)
    if expected is None or (value is None and info.get("default") == "None"):
        return None
    ok = isinstance(value, _TYPES[expected]) and not (isinstance(value, bool) and expected in ("int", "float"))
    if ok:
        return None
    return (f"parameter {name!r} must be {expected} (default {info.get('default')}), "
            f"got {type(value).__name__} {value!r}")


def _read_yaml(path: Path) -> Any:
    """A YAML file's content; a parse error is one line naming the file, the line and the problem."""
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ParameterError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ParameterError(f"{path}: {where}not valid YAML ({problem})") from None


def _mapping(data: Any, origin: str, what: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParameterError(f"{origin}: expected {what}, got {type(data).__name__} {data!r}")
    return data


def _param_sections(params: str | os.PathLike, names: list[str], folder: Path) -> list[tuple[str, str | None, dict]]:
    """``(origin, stage or None for 'all', values)`` for each section of a parameter set or file."""
    text = str(params)
    mapping = "a mapping of parameter names to values"
    if text in PARAM_SETS or (folder / "params" / text).is_dir():
        files = [(folder / "params" / text / f"{n}.yaml", n) for n in names]
        return [(str(f), n, _mapping(_read_yaml(f), str(f), mapping)) for f, n in files if f.is_file()]
    path = Path(text)
    if not path.is_file():
        raise ParameterError(f"{text}: not a parameter set ({', '.join(PARAM_SETS)}) nor a YAML file")
    data = _mapping(_read_yaml(path), str(path), "a mapping {stage: {param: value}}")
    short = {n.split("_", 1)[-1]: n for n in names}
    unknown = set(data) - {"all"} - set(names) - set(short)
    if unknown:
        raise ParameterError(f"{path}: unknown stages {sorted(map(str, unknown))}; stages are {names}")
    sections = [(str(path), None, _mapping(data.get("all"), f"{path}: all", mapping))]
    for n in names:
        key = n if n in data else next((k for k, v in short.items() if v == n and k in data), None)
        if key is not None:
            sections.append((str(path), n, _mapping(data[key], f"{path}: {key}", mapping)))
    return sections


def _section_problems(origin: str, stage: str | None, values: dict, declared: dict[str, dict]) -> list[str]:
    """What is wrong with one section's values: unknown names, wrong types, a ``run_dir``."""
    problems = []
    targets = [stage] if stage else list(declared)
    for key, value in values.items():
        where = f"{origin}: {stage + '.ipynb: ' if stage else 'all: '}"
        if key == "run_dir":
            problems.append(f"{where}run_dir is set by nsfwkit run (the run folder); remove it")
            continue
        having = [n for n in targets if key in declared[n]]
        if not having:
            known = sorted({p for n in targets for p in declared[n]} - {"run_dir"})
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{where}unknown parameter {key!r}{hint}; the parameters are {', '.join(known)}")
        for n in having:
            problem = _value_problem(key, value, declared[n][key])
            if problem:
                problems.append(f"{origin}: {n}.ipynb: {problem}")
    return problems


def load_params(params: str | os.PathLike | None, names: Iterable[str],
                folder: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Resolve a parameter set name or YAML file into ``{stage: {param: value}}``, validated.

    Every value is checked against its notebook's parameters cell (papermill's own inspection,
    :func:`notebook_parameters`) before any kernel starts: a name the notebook does not declare
    and a value of another type than its default (``int``, ``float`` (an int is fine), ``str``,
    ``bool``, ``list``, ``dict``) are errors naming the file, the notebook and the parameter. A
    parameter under ``all:`` goes to the stages that declare it, and must be declared by one.

    Raises:
        ParameterError: a malformed YAML file (its line is named), an unknown stage or parameter,
            a wrong type, or a notebook whose parameters cell papermill cannot read.
    """
    names = list(names)
    folder = Path(folder) if folder else notebooks_dir()
    declared = {n: notebook_parameters(folder / f"{n}.ipynb") for n in names}
    problems = [f"{folder / n}.ipynb: no run_dir parameter (nsfwkit run tells each stage its run folder there)"
                for n in names if "run_dir" not in declared[n]]
    out: dict[str, dict[str, Any]] = {n: {} for n in names}
    sections = _param_sections(params, names, folder) if params is not None else []
    if any(stage is None and values for _, stage, values in sections):  # 'all' may name other stages' parameters
        every = {s.name: notebook_parameters(s.path) for s in stages(folder) if s.name not in declared}
        declared = {**declared, **every}
    for origin, stage, values in sections:
        problems += _section_problems(origin, stage, values, declared)
        for n in [stage] if stage else names:
            out[n].update({k: v for k, v in values.items() if k in declared[n]})
    if problems:
        raise ParameterError(problems[0] if len(problems) == 1 else f"{len(problems)} problems: " + "; ".join(problems))
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
        ParameterError: the parameters do not fit the notebooks (see :func:`load_params`);
            raised before a run folder or a kernel exists.
        StageFailed: a notebook raised; earlier stages' outputs are kept.
    """
    all_stages = stages(notebooks)
    if not all_stages:
        raise ValueError(f"no notebooks named NN_name.ipynb in {notebooks or notebooks_dir()}")
    chosen = _select(all_stages, select)
    resolved = load_params(params, [s.name for s in chosen], notebooks)
    name = name or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ValueError(f"run name {name!r}: use letters, digits, '.', '_' and '-'")
    run_dir = (Path(runs) if runs else paths.runs_dir()) / name
    with fileio.owned_folder(run_dir, "run", legacy=_legacy_run_folder):
        return _run_stages(chosen, resolved, run_dir.resolve(), name=name, params=params,
                           progress=progress, log_output=log_output, timeout=timeout)


def _legacy_run_folder(folder: Path) -> bool:
    """A run folder of an older kit (before ownership markers): its ``run.json`` lists stages."""
    try:
        record = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and isinstance(record.get("stages"), dict) and "name" in record


def _run_stages(chosen: list[Stage], resolved: dict[str, dict], run_dir: Path, *, name: str, params,
                progress: bool, log_output: bool, timeout: int | None) -> Path:
    """Execute ``chosen`` into the (claimed, locked) ``run_dir``, recording each in ``run.json``."""
    import papermill as pm
    import yaml

    (run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
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
