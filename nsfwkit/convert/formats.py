"""One export, several runtimes: which format gets which precision, the TFLite and ONNX steps of
:func:`nsfwkit.convert.export`, and the size / parity table and chart across every format.

>>> from nsfwkit import convert, zoo
>>> model, spec = zoo.load("mobilenet_v2")
>>> result = convert.export(model, "exports/m", spec=spec, formats=("tfjs", "tflite", "onnx"),
...                         quantizations=("float32", "float16"))
>>> convert.runtime_table(result.out_dir)       # one row per format and precision
>>> convert.plot_size_vs_error(convert.runtime_table(result.out_dir))

Each format has its own precisions (:data:`PRECISIONS`); a list of precisions applies to every
chosen format that has them (``uint8`` is TF.js only, ``dynamic``/``int8`` TFLite only), and the
combinations that do not exist are listed in ``export.json`` (``not_made``), never dropped
silently. The TFLite and ONNX exports are :func:`nsfwkit.convert.tflite.export_tflite` and
:func:`nsfwkit.convert.onnx.export_onnx` (each builds its model with
:func:`nsfwkit.convert.inference_model`) written to ``tflite/<q>/`` and ``onnx/<q>/``; their
parity rows (measured in LiteRT and onnxruntime) join ``export.json``'s ``sizes`` rows.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..spec import ModelSpec
from . import runtimes
from .layout import QUANTIZATIONS as TFJS_QUANTIZATIONS
from .layout import TOLERANCES as TFJS_TOLERANCES
from .onnx import PRECISIONS as ONNX_PRECISIONS
from .tflite import QUANTIZATIONS as TFLITE_QUANTIZATIONS

__all__ = ["FORMATS", "PRECISIONS", "FormatError", "split_list", "resolve", "check_runtimes",
           "check_calibration", "export_runtimes", "tfjs_parity_rows", "runtime_table", "table_text",
           "plot_size_vs_error"]

#: Export formats, in the order they are made and shown.
FORMATS: tuple[str, ...] = ("tfjs", "tflite", "onnx")
#: format -> its precisions (``none`` is accepted everywhere for ``float32``).
PRECISIONS: dict[str, tuple[str, ...]] = {"tfjs": TFJS_QUANTIZATIONS, "tflite": TFLITE_QUANTIZATIONS,
                                          "onnx": ONNX_PRECISIONS}
#: ``export.json`` row format -> the format name used here.
_ROW_FORMATS = {"tfjs_graph": "tfjs", "nsfwjs_graph": "tfjs", "tflite": "tflite", "onnx": "onnx"}


class FormatError(ValueError):
    """A format or precision list that cannot be exported; ``option`` is the flag concerned."""

    def __init__(self, option: str, message: str):
        self.option = option
        super().__init__(message)


def split_list(values: str | Iterable[str] | None) -> list[str]:
    """``"a,b"`` or ``["a,b", "c"]`` -> ``["a", "b", "c"]`` (lower case, blanks dropped)."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    return [part.strip().lower() for item in items for part in str(item).split(",") if part.strip()]


def _precision(name: str) -> str:
    return "float32" if name == "none" else name


def resolve(formats: str | Iterable[str] = ("tfjs",),
            quantizations: str | Iterable[str] | Mapping[str, Any] | None = None
            ) -> tuple[dict[str, list[str]], list[dict[str, str]]]:
    """Which precisions each format makes.

    Args:
        formats: names of :data:`FORMATS` or ``all`` (comma lists accepted).
        quantizations: precisions (``none`` = ``float32``); each applies to the chosen formats
            that have it. Default (or ``all``): every precision of each format. Or a mapping
            ``{formats: precisions}`` (e.g. ``{"tfjs": [...], "tflite,onnx": [...]}``), each entry
            resolved this way for its chosen formats; a chosen format without an entry gets all.

    Returns:
        ``(targets, not_made)``: format -> its precisions in the order given, and one
        ``{format, precision, reason}`` per requested combination that does not exist.

    Raises:
        FormatError: an unknown format or precision, a precision no chosen format has, or a
            format none of the precisions applies to.
    """
    names = split_list(formats)
    fmts = list(FORMATS) if "all" in names else list(dict.fromkeys(names))
    unknown = [f for f in fmts if f not in PRECISIONS]
    if unknown or not fmts:
        raise FormatError("--format", f"unknown format {unknown[0]!r}; use {', '.join(FORMATS)} or all"
                          if unknown else "no format given")
    if isinstance(quantizations, Mapping):
        return _resolve_each(fmts, quantizations)
    quants = list(dict.fromkeys(_precision(q) for q in split_list(quantizations)))
    if quantizations is None or "all" in quants:
        return {f: list(PRECISIONS[f]) for f in fmts}, []
    if not quants:
        raise FormatError("--quantize", "quantizations is empty")
    have = "; ".join(f"{f}: {', '.join(PRECISIONS[f])}" for f in fmts)
    for q in quants:
        if not any(q in PRECISIONS[f] for f in fmts):
            raise FormatError("--quantize", f"{q!r} is not a precision of {', '.join(fmts)} ({have})")
    targets = {f: [q for q in quants if q in PRECISIONS[f]] for f in fmts}
    for f, qs in targets.items():
        if not qs:
            raise FormatError("--quantize", f"none of {', '.join(quants)} applies to {f} ({have})")
    not_made = [{"format": f, "precision": q, "reason": f"{f} has no {q} build"}
                for f in fmts for q in quants if q not in PRECISIONS[f]]
    return targets, not_made


def _resolve_each(fmts: list[str], quantizations: Mapping[str, Any]
                  ) -> tuple[dict[str, list[str]], list[dict[str, str]]]:
    found: dict[str, list[str]] = {}
    not_made: list[dict[str, str]] = []
    for key, quants in quantizations.items():
        chosen = [f for f in resolve(key)[0] if f in fmts]
        if chosen:
            targets, missing = resolve(chosen, quants)
            found.update(targets)
            not_made += missing
    return {f: found.get(f, list(PRECISIONS[f])) for f in fmts}, not_made


def check_runtimes(targets: Mapping[str, Sequence[str]]) -> None:
    """Import what the TFLite / ONNX exports need; :class:`runtimes.RuntimeMissingError` names
    the missing package (before any slow step)."""
    needs = {"tflite": [("ai_edge_litert.interpreter", "ai-edge-litert")],
             "onnx": [("onnx", "onnx"), ("onnxruntime", "onnxruntime"), ("tf2onnx", "tf2onnx")]}
    for fmt in targets:
        for module, package in needs.get(fmt, []):
            runtimes.require(module, package)


def _calibrated(targets: Mapping[str, Sequence[str]]) -> list[str]:
    """The ``format/precision`` exports a calibration set is used by (the quantised runtimes)."""
    return [f"{f}/{q}" for f in ("tflite", "onnx") for q in targets.get(f, []) if q != "float32"]


def check_calibration(targets: Mapping[str, Sequence[str]], calibration: str | os.PathLike | None, *,
                      image_size: int, limit: int | None = runtimes.CALIBRATION_LIMIT
                      ) -> tuple[np.ndarray, dict[str, Any]] | None:
    """Load the calibration set once up front, so an empty or unreadable folder fails before any
    export and every quantised build gets the same array.

    Returns:
        ``(images, report)`` (:func:`runtimes.calibration_images`: the folder's seeded sample of
        at most ``limit`` images, or the kit's set without a folder), or ``None`` when no
        requested build is calibrated.

    Raises:
        FormatError: ``calibration`` given but no requested export uses it (TF.js plans its mix
            on its own set; float32 builds need none).
        runtimes.CalibrationError: no image of the folder could be loaded.
    """
    if not _calibrated(targets):
        if calibration is not None:
            raise FormatError("--calibration", "used only by quantised tflite/onnx exports (e.g. --format "
                                               "tflite --quantize int8); none is requested")
        return None
    return runtimes.calibration_images(image_size, calibration, limit=limit)


def _exporter(fmt: str):
    if fmt == "tflite":
        from .tflite import export_tflite

        return lambda model, folder, q, **kw: export_tflite(model, folder, quantize=q, **kw)
    from .onnx import export_onnx

    return lambda model, folder, q, saved_model=None, **kw: export_onnx(model, folder, precision=q, **kw)


def _named(name: str, exc: Exception) -> Exception:
    """``exc`` re-made with the build's name in front (``tflite/int8: ...``), same type where it can be."""
    if isinstance(exc, runtimes.PlanError):
        return runtimes.PlanError(f"{name}: {exc}")
    return RuntimeError(f"{name}: {type(exc).__name__}: {exc}")


def export_runtimes(model, root: Path, targets: Mapping[str, Sequence[str]], *, spec: ModelSpec,
                    calibration_set: tuple[np.ndarray, dict[str, Any]] | None = None, plan: bool = True,
                    seconds: dict[str, float] | None = None, bar=None,
                    saved_model: Path | None = None) -> list[dict[str, Any]]:
    """Write ``root/tflite/<q>/`` and ``root/onnx/<q>/`` for the targets; return their rows.

    Each row is the exporter's parity row (size, max |Δp| against Keras in the runtime, top-1
    agreement, decision flips, runtime and version, plan, calibration set) with ``path``
    relative to ``root``. ``calibration_set`` (:func:`check_calibration`) is loaded once and
    given to every quantised build; ``saved_model`` (the inference model's, already written)
    is what every TFLite build converts. A failing build raises with its name in front
    (``tflite/int8: ...``): :class:`runtimes.PlanError` stays one, anything else becomes a
    ``RuntimeError``.
    """
    rows = []
    for fmt in ("tflite", "onnx"):
        export = _exporter(fmt) if targets.get(fmt) else None
        for q in targets.get(fmt, []):
            t0 = time.perf_counter()
            try:
                row = export(model, root / fmt / q, q, spec=spec, plan=plan, saved_model=saved_model,
                             calibration_set=calibration_set if q != "float32" else None)
            except runtimes.RuntimeMissingError:
                raise
            except Exception as exc:  # any build failure: named and re-raised
                raise _named(f"{fmt}/{q}", exc) from exc
            rows.append({**row, "path": Path(row["path"]).relative_to(root).as_posix()})
            if seconds is not None:
                seconds[f"{fmt}_{q}"] = time.perf_counter() - t0
            if bar is not None:
                bar.update()
    return rows


def tfjs_parity_rows(folders: Mapping[str, Path], *, reference: Path, levels: Mapping[str, Mapping[str, str]],
                     keras_model, spec: ModelSpec, planner=None) -> dict[str, dict[str, Any]]:
    """The parity of each TF.js graph model on the fixed images of the TFLite/ONNX rows
    (:func:`runtimes.parity_images`, resized the inference way, fed as model inputs).

    Measured in TF.js itself (Node, wasm backend) when Node and the npm packages are there; else
    the planner's emulation of TF.js (the float32 graph run in TensorFlow with each weight
    dequantised as TF.js does, ``levels``), with ``runtime: "emulated (planner)"`` and
    ``runtime_note`` saying why.

    Args:
        folders: precision -> graph model folder.
        reference: the float32 graph model folder (for the emulation).
        levels: precision -> weight -> storage dtype (the plans' ``levels``).
        keras_model: the inference model (the reference probabilities).
        planner: a live :class:`~nsfwkit.convert.precision._PrecisionPlanner` to reuse.

    Returns:
        precision -> ``{max_abs_diff, top1_agree, decision_flips, n_images, runtime, tolerance,
        passed}`` (plus ``runtime_note`` when emulated).
    """
    from . import node

    test = runtimes.resized(list(runtimes.parity_images(spec.image_size).values()), spec.image_size)
    expected = keras_model.predict(test, batch_size=32, verbose=0)
    try:
        node._node()
    except node.NodeMissingError as exc:
        probs = _emulated(folders, test, reference=reference, levels=levels, planner=planner)
        extra = {"runtime": "emulated (planner)", "runtime_note": f"TF.js not run: {exc}"}
    else:
        probs = {q: node.tfjs_probabilities(folder, test, preprocessed=True)["probs"] for q, folder in folders.items()}
        extra = {"runtime": f"TF.js {_tfjs_version()} (Node, wasm)"}
    rows = {}
    for q, p in probs.items():
        row = runtimes.compare(expected, p, spec)
        tolerance = TFJS_TOLERANCES[q]
        rows[q] = {**row, **extra, "tolerance": tolerance,
                   "passed": bool(row["max_abs_diff"] <= tolerance and row["top1_agree"] == 1.0)}
    return rows


def _tfjs_version() -> str:
    from .. import paths

    package = paths.node_modules_dir() / "@tensorflow" / "tfjs-core" / "package.json"
    try:
        return json.loads(package.read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError):
        return "(version unknown)"


def _emulated(folders: Mapping[str, Path], test: np.ndarray, *, reference: Path,
              levels: Mapping[str, Mapping[str, str]], planner=None) -> dict[str, np.ndarray]:
    from .precision import _dequantize_like_tfjs, _GraphEmulator

    emulator = planner.emulator if planner is not None else _GraphEmulator(reference)
    try:
        out = {}
        for q in folders:
            chosen = levels.get(q, {})
            overrides = {n: _dequantize_like_tfjs(w, chosen[n]) for n, w in emulator.weights.items()
                         if chosen.get(n, "float32") != "float32"}
            out[q] = emulator.run(test, overrides)[1]
        return out
    finally:
        if planner is None:
            emulator.close()


# --------------------------------------------------------------------------------------------
# The table and the chart
# --------------------------------------------------------------------------------------------
def _summary(source) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    folder = Path(getattr(source, "out_dir", source))
    return json.loads((folder / runtimes.EXPORT_FILE).read_text(encoding="utf-8"))


def _tfjs_parity(report, spec: ModelSpec | None) -> dict[str, Any]:
    """A TF.js row's parity from a :class:`nsfwkit.convert.ParityReport` (or its summary)."""
    if hasattr(report, "summary"):
        keys = runtimes.compare(report.keras, report.tfjs, spec) if spec is not None else {}
        report = {**report.summary(), **keys}
    return {"max_abs_diff": report["max_abs_diff"], "top1_agree": report["top1_agree"],
            "decision_flips": report.get("decision_flips"), "n_images": report.get("n_images", report.get("images")),
            "tolerance": report.get("tolerance"), "passed": report.get("passed"),
            "runtime": "TF.js (Node, wasm)"}


_COLUMNS = ("format", "precision", "mb", "bytes", "max_abs_diff", "top1_agree", "decision_flips",
            "n_images", "tolerance", "passed", "runtime", "calibration", "path")


def runtime_table(source, *, tfjs_parity: Mapping[str, Any] | None = None,
                  spec: ModelSpec | None = None) -> list[dict[str, Any]]:
    """Size and parity of every exported model, one row per format and precision.

    Args:
        source: an export folder, its :class:`~nsfwkit.convert.ExportResult`, or its
            ``export.json`` content.
        tfjs_parity: TF.js quantisation -> :class:`~nsfwkit.convert.ParityReport` (or its
            ``summary()``) measured in Node (the export itself does not run TF.js); without it
            the TF.js rows have ``max_abs_diff`` ``None``.
        spec: with ``ParityReport`` values, counts their decision flips at the spec's threshold.

    Returns:
        dicts with the keys of :data:`_COLUMNS` (``None`` where unknown; ``calibration`` is
        ``"<source> (<n> images)"`` for calibrated builds); the SavedModel (the reference
        itself) and the nsfwjs flavour are left out.
    """
    rows = []
    for row in _summary(source)["sizes"]:
        if row["format"] not in ("tfjs_graph", "tflite", "onnx"):
            continue
        out = dict.fromkeys(_COLUMNS)
        out.update({k: row.get(k) for k in _COLUMNS if k in row})
        out.update({"format": _ROW_FORMATS[row["format"]], "precision": row.get("precision", row["quantization"])})
        if row["format"] == "tfjs_graph":
            out["tolerance"] = TFJS_TOLERANCES.get(out["precision"])
            if tfjs_parity and out["precision"] in tfjs_parity:
                out.update(_tfjs_parity(tfjs_parity[out["precision"]], spec))
        calib = row.get("calibration")
        out["calibration"] = f"{calib['source']} ({calib['images']} images)" if calib else None
        rows.append(out)
    return rows


def _cell(value, digits: str) -> str:
    if value is None:
        return "-"
    return format(value, digits) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def table_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """:func:`runtime_table` rows as aligned text (``-`` where not measured)."""
    lines = [f"{'format':<7} {'precision':<9} {'MB':>7} {'max|dp|':>9} {'bar':>7} {'top-1':>6} {'flips':>5}  runtime"]
    for r in rows:
        lines.append(f"{r['format']:<7} {r['precision']:<9} {_cell(r.get('mb'), '.2f'):>7} "
                     f"{_cell(r.get('max_abs_diff'), '.1e'):>9} {_cell(r.get('tolerance'), '.0e'):>7} "
                     f"{_cell(r.get('top1_agree'), '.0%'):>6} {_cell(r.get('decision_flips'), 'd'):>5}  "
                     f"{r.get('runtime') or '-'}")
    return "\n".join(lines)


def plot_size_vs_error(rows: Sequence[Mapping[str, Any]]):
    """Bars per format/precision: size in MB (top) and max |Δp| against Keras on a log scale
    (bottom, with each row's bar as a black tick; unmeasured rows have no bar). Returns a Figure."""
    from matplotlib.figure import Figure

    colors = {"tfjs": "#4c72b0", "tflite": "#55a868", "onnx": "#c44e52"}
    fig = Figure(figsize=(max(6.0, 0.7 * len(rows) + 2), 5))
    size_ax, err_ax = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(rows))
    color = [colors.get(r["format"], "#8172b2") for r in rows]
    bars = size_ax.bar(x, [r.get("mb") or 0.0 for r in rows], color=color)
    size_ax.bar_label(bars, fmt="%.1f", fontsize=7)
    size_ax.set_ylabel("MB")
    size_ax.set_title("Export size and max |Δp| vs Keras, per format and precision")
    measured = [i for i, r in enumerate(rows) if r.get("max_abs_diff") is not None]
    # a zero difference cannot be drawn on a log axis: floor it at 1e-9
    err_ax.bar([x[i] for i in measured], [max(rows[i]["max_abs_diff"], 1e-9) for i in measured],
               color=[color[i] for i in measured])
    bars_at = [(i, r["tolerance"]) for i, r in enumerate(rows) if r.get("tolerance")]
    err_ax.scatter([x[i] for i, _ in bars_at], [t for _, t in bars_at], marker="_", s=300, color="black",
                   label="parity bar", zorder=3)
    heights = [max(rows[i]["max_abs_diff"], 1e-9) for i in measured] + [t for _, t in bars_at]
    if heights:   # a log axis with nothing on it cannot be drawn
        err_ax.set_yscale("log")
        err_ax.set_ylim(top=3 * max(heights))   # room above the highest bar tick
    else:
        err_ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=err_ax.transAxes)
    err_ax.set_ylabel("max |Δp|")
    if bars_at:
        err_ax.legend(fontsize=7, loc="upper left")
    err_ax.set_xticks(x, [f"{r['format']}\n{r['precision']}" for r in rows], fontsize=8)
    fig.tight_layout()
    return fig
