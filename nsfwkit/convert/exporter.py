"""``export()``: one model to its whole export folder (SavedModel, TF.js, nsfwjs-ready TF.js,
TFLite, ONNX).

The orchestration only: each format's converter lives in its own module (``saved_model.py``,
``tfjs.py``, ``tflite.py``, ``onnx.py``; which format gets which precision, and the TFLite/ONNX
step, in ``formats.py``), the folder layout and :class:`~nsfwkit.convert.ExportResult` in
``layout.py``.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from .. import fileio
from ..fileio import write_json
from ..spec import NSFWJS_CLASSES, ModelSpec
from . import formats as _formats
from ._converter import _import_converter, _quiet_tf
from .builder import inference_model
from .layout import ExportResult, _legacy_export, _quant, size_table
from .precision import _PrecisionPlanner
from .runtimes import CALIBRATION_LIMIT as _CALIBRATION_LIMIT
from .saved_model import export_saved_model
from .tfjs import _export_tfjs

__all__ = ["export"]


def export(
    model,
    out_dir: str | os.PathLike,
    *,
    spec: ModelSpec,
    quantizations: Sequence[str] | None = None,
    nsfwjs: bool | None = None,
    nsfwjs_quantizations: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    precision_plan: bool = True,
    formats: str | Sequence[str] = ("tfjs",),
    calibration: str | os.PathLike | None = None,
    calibration_limit: int | None = _CALIBRATION_LIMIT,
    measure_tfjs: bool = True,
) -> ExportResult:
    """Export a classifier: SavedModel, TF.js graph models, nsfwjs-ready graph models, and on
    request TFLite (``tflite/<q>/``) and ONNX (``onnx/<q>/``) models with parity rows.

    Args:
        model: a Keras classifier taking raw RGB 0-255 (not modified).
        out_dir: the export folder (layout in :mod:`nsfwkit.convert`'s docstring); each entry is built
            under a temporary name and moved into place when complete.
        spec: the model's :class:`~nsfwkit.spec.ModelSpec`.
        quantizations: precisions, each made in every chosen format that has it
            (:data:`~nsfwkit.convert.formats.PRECISIONS`: TF.js ``float32``/``none``, ``float16``,
            ``uint8``; TFLite also ``dynamic``, ``int8``; ONNX ``float32``, ``float16``); the
            combinations that do not exist are listed in ``export.json``'s ``not_made``.
            Default: every precision of each format.
        nsfwjs: also write ``nsfwjs/<q>/`` (input 0-1; only with the ``tfjs`` format). Default:
            only when the classes are nsfwjs's five, in its order (nsfwjs hard-codes their names).
        nsfwjs_quantizations: quantisations of the nsfwjs flavour (default: ``quantizations``).
        overwrite: replace the kit's entries of an earlier export in ``out_dir`` (one by one; the
            user's own files there stay). ``out_dir`` must be new, empty, or an nsfwkit export
            folder (its ``.nsfwkit.json`` marker, or an older kit's export holding nothing else);
            anything else is refused, even with ``overwrite``. Locked while written.
        progress: show a progress bar (default: when stderr is a terminal).
        precision_plan: ``True`` (default): quantised exports are the measured mixed-precision
            plan (within :data:`TOLERANCES`, larger files). ``False``: pure quantisation, every
            weight tensor in the export's dtype (smallest files, larger error; recorded).
        formats: any of ``tfjs``, ``tflite``, ``onnx`` (or ``all``; comma lists accepted). The
            SavedModel is always written.
        calibration: a folder of the user's own images that calibrates the quantised TFLite and
            ONNX builds (int8 ranges, the measured mixes), loaded by :mod:`nsfwkit.images`;
            default: the kit's representative set (each row's ``calibration`` says which, and
            how many images). The TF.js mix keeps its own calibration set. Loaded once for
            every quantised build.
        calibration_limit: use a seeded sample of at most this many of the folder's images
            (``None``: all); each row's ``calibration`` records ``images`` used and ``available``.
        measure_tfjs: give each TF.js row in ``export.json`` its parity on the TFLite/ONNX rows'
            fixed images, measured in TF.js (Node, wasm) or, without Node, emulated by the
            planner (``runtime: "emulated (planner)"``): :func:`formats.tfjs_parity_rows`.

    Raises:
        FormatError: an unknown format/precision, or ``calibration`` that no export uses.
        CalibrationError: ``calibration`` holds no usable image (raised before anything is written).
        RuntimeMissingError: LiteRT / onnxruntime / tf2onnx missing for a requested format.

    Returns:
        an :class:`ExportResult`; the same summary is in ``out_dir/export.json``.
    """
    from ..progress import progress_bar
    from ..zoo import check_classifier

    check_classifier(model, spec)
    targets, not_made = _formats.resolve(formats, quantizations)
    quants = targets.get("tfjs", [])
    if nsfwjs is None:
        nsfwjs = tuple(spec.class_names) == NSFWJS_CLASSES
    nsfwjs = bool(nsfwjs and quants)
    nsfwjs_quants = list(dict.fromkeys(_quant(q) for q in (nsfwjs_quantizations or quants))) if nsfwjs else []
    # fail early, before the slow SavedModel export
    if quants:
        _import_converter()
    _formats.check_runtimes(targets)
    calibration_set = _formats.check_calibration(targets, calibration, image_size=spec.image_size,
                                                 limit=calibration_limit)
    out_dir = Path(out_dir)
    seconds: dict[str, float] = {}
    runtime_steps = len(targets.get("tflite", [])) + len(targets.get("onnx", []))
    steps = (1 + (len(set(quants) | {"float32"}) if quants else 0) + (1 + len(nsfwjs_quants) if nsfwjs else 0)
             + runtime_steps)
    bar = progress_bar(total=steps, desc=f"export {spec.name}", unit="step",
                       disable=not (progress if progress is not None else sys.stderr.isatty()))
    with fileio.replace_owned(out_dir, "export", overwrite=overwrite, legacy=_legacy_export) as tmp:
        t0 = time.perf_counter()
        export_saved_model(model, tmp / "saved_model", spec=spec)
        seconds["saved_model"] = time.perf_counter() - t0
        bar.update()
        parity = functools.partial(_formats.tfjs_parity_rows, spec=spec,
                                   keras_model=inference_model(model, input_name=spec.input_name))
        plans, tfjs_rows = _convert_all(tmp / "saved_model", tmp / "tfjs", quants, spec=spec,
                                        input_range=(0.0, 255.0), seconds=seconds, prefix="tfjs", bar=bar,
                                        plan=precision_plan, parity=parity if measure_tfjs else None
                                        ) if quants else ({}, {})
        precision = {"tfjs": plans} if quants else {}
        if nsfwjs:
            with tempfile.TemporaryDirectory(prefix="nsfwjs-sm-") as scratch:
                t0 = time.perf_counter()
                unit = inference_model(model, input_range=(0.0, 1.0), input_name=spec.input_name)
                with _quiet_tf():
                    unit.export(str(Path(scratch) / "sm"), format="tf_saved_model", verbose=False)
                seconds["nsfwjs_saved_model"] = time.perf_counter() - t0
                bar.update()
                precision["nsfwjs"], _ = _convert_all(
                    Path(scratch) / "sm", tmp / "nsfwjs", nsfwjs_quants, spec=spec,
                    input_range=(0.0, 1.0), seconds=seconds, prefix="nsfwjs", bar=bar,
                    plan=precision_plan)
        runtime_rows = _formats.export_runtimes(model, tmp, targets, spec=spec, calibration_set=calibration_set,
                                                plan=precision_plan, seconds=seconds, bar=bar,
                                                saved_model=tmp / "saved_model")
        spec.save(tmp / "spec.json")
        staged = ExportResult(
            out_dir=tmp, saved_model=tmp / "saved_model",
            tfjs={q: tmp / "tfjs" / q for q in quants},
            nsfwjs={q: tmp / "nsfwjs" / q for q in nsfwjs_quants} if nsfwjs else {},
            sizes=[], seconds=seconds,
            tflite={q: tmp / "tflite" / q for q in targets.get("tflite", [])},
            onnx={q: tmp / "onnx" / q for q in targets.get("onnx", [])},
        )
        staged.sizes = size_table(staged) + runtime_rows
        for row in staged.sizes:
            if row["format"] == "tfjs_graph" and row["quantization"] in tfjs_rows:
                row.update(tfjs_rows[row["quantization"]])
        summary = staged.to_dict()
        summary.update({"model": spec.name, "image_size": spec.image_size,
                        "class_names": list(spec.class_names), "formats": list(targets),
                        "not_made": not_made,
                        "precision_plan": "measured" if precision_plan else "none",
                        "precision": {k: v for k, v in precision.items() if v}})
        write_json(tmp / "export.json", summary)
    bar.close()
    return ExportResult(
        out_dir=out_dir, saved_model=out_dir / "saved_model",
        tfjs={q: out_dir / "tfjs" / q for q in quants},
        nsfwjs={q: out_dir / "nsfwjs" / q for q in nsfwjs_quants} if nsfwjs else {},
        sizes=staged.sizes, seconds=seconds, precision={k: v for k, v in precision.items() if v},
        tflite={q: out_dir / "tflite" / q for q in targets.get("tflite", [])},
        onnx={q: out_dir / "onnx" / q for q in targets.get("onnx", [])}, not_made=not_made,
    )


def _convert_all(saved_model: Path, dest: Path, quants: Sequence[str], *, spec: ModelSpec,
                 input_range: tuple[float, float], seconds: dict[str, float], prefix: str,
                 bar, plan: bool = True, parity=None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Convert one SavedModel to ``dest/<q>`` for each quantisation, float32 first (its graph
    and weights choose the storage of the others; it is made in scratch space if not wanted).

    Returns:
        ``(plans, parity_rows)``: quantisation -> the precision plan's summary (with ``levels``:
        weight -> dtype), and quantisation -> ``parity(folders, reference=..., levels=...,
        planner=...)``'s row (empty without ``parity``).
    """
    reference = None
    planner = None
    plans: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="f32-ref-", dir=dest.parent) as scratch:
        try:
            for q in ["float32"] + [q for q in quants if q != "float32"]:
                t0 = time.perf_counter()
                folder = dest / q if q in quants else Path(scratch) / "float32"
                if q != "float32" and planner is None:
                    with _quiet_tf():
                        planner = _PrecisionPlanner(reference, input_range=input_range)
                    seconds[f"{prefix}_calibration"] = time.perf_counter() - t0
                    t0 = time.perf_counter()
                info = _export_tfjs(saved_model, folder, spec=spec, quantization=q,
                                    input_range=input_range, target=None,
                                    float32_reference=reference, planner=planner, plan=plan,
                                    overwrite=False)
                if q == "float32":
                    reference = folder
                else:
                    plans[q] = info
                seconds[f"{prefix}_{q}"] = time.perf_counter() - t0
                bar.update()
            t0 = time.perf_counter()
            rows = {} if parity is None else parity(
                {q: dest / q for q in quants}, reference=reference, planner=planner,
                levels={q: info.get("levels", {}) for q, info in plans.items()})
            if rows:
                seconds[f"{prefix}_parity"] = time.perf_counter() - t0
        finally:
            if planner is not None:
                planner.close()
    return plans, rows
