"""``export()``: one model to its whole export folder (SavedModel, TF.js, nsfwjs-ready TF.js).

The orchestration only: each format's converter lives in its own module (``saved_model.py``,
``tfjs.py``; a new format adds its module and one step here), the folder layout and
:class:`~nsfwkit.convert.ExportResult` in ``layout.py``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from .. import fileio
from ..fileio import write_json
from ..spec import NSFWJS_CLASSES, ModelSpec
from ._converter import _import_converter, _quiet_tf
from .builder import inference_model
from .layout import QUANTIZATIONS, ExportResult, _legacy_export, _quant, size_table
from .precision import _PrecisionPlanner
from .saved_model import export_saved_model
from .tfjs import _export_tfjs

__all__ = ["export"]


def export(
    model,
    out_dir: str | os.PathLike,
    *,
    spec: ModelSpec,
    quantizations: Sequence[str] = QUANTIZATIONS,
    nsfwjs: bool | None = None,
    nsfwjs_quantizations: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    precision_plan: bool = True,
) -> ExportResult:
    """Export a classifier: SavedModel, TF.js graph models, nsfwjs-ready graph models.

    Args:
        model: a Keras classifier taking raw RGB 0-255 (not modified).
        out_dir: the export folder (layout in :mod:`nsfwkit.convert`'s docstring); each entry is built
            under a temporary name and moved into place when complete.
        spec: the model's :class:`~nsfwkit.spec.ModelSpec`.
        quantizations: any of ``float32``/``none``, ``float16``, ``uint8``.
        nsfwjs: also write ``nsfwjs/<q>/`` (input 0-1). Default: only when the classes are
            nsfwjs's five, in its order (nsfwjs hard-codes their names).
        nsfwjs_quantizations: quantisations of the nsfwjs flavour (default: ``quantizations``).
        overwrite: replace the kit's entries of an earlier export in ``out_dir`` (one by one; the
            user's own files there stay). ``out_dir`` must be new, empty, or an nsfwkit export
            folder (its ``.nsfwkit.json`` marker, or an older kit's export holding nothing else);
            anything else is refused, even with ``overwrite``. Locked while written.
        progress: show a progress bar (default: when stderr is a terminal).
        precision_plan: ``True`` (default): quantised exports are the measured mixed-precision
            plan (within :data:`TOLERANCES`, larger files). ``False``: pure quantisation, every
            weight tensor in the export's dtype (smallest files, larger error; recorded).

    Returns:
        an :class:`ExportResult`; the same summary is in ``out_dir/export.json``.
    """
    from ..progress import progress_bar
    from ..zoo import check_classifier

    check_classifier(model, spec)
    quants = list(dict.fromkeys(_quant(q) for q in quantizations))
    if not quants:
        raise ValueError("quantizations is empty")
    if nsfwjs is None:
        nsfwjs = tuple(spec.class_names) == NSFWJS_CLASSES
    nsfwjs_quants = list(dict.fromkeys(_quant(q) for q in (nsfwjs_quantizations or quants)))
    _import_converter()  # fail early, before the slow SavedModel export
    out_dir = Path(out_dir)
    seconds: dict[str, float] = {}
    steps = 1 + len(set(quants) | {"float32"}) + (1 + len(nsfwjs_quants) if nsfwjs else 0)
    bar = progress_bar(total=steps, desc=f"export {spec.name}", unit="step",
                       disable=not (progress if progress is not None else sys.stderr.isatty()))
    with fileio.replace_owned(out_dir, "export", overwrite=overwrite, legacy=_legacy_export) as tmp:
        t0 = time.perf_counter()
        export_saved_model(model, tmp / "saved_model", spec=spec)
        seconds["saved_model"] = time.perf_counter() - t0
        bar.update()
        precision = {"tfjs": _convert_all(tmp / "saved_model", tmp / "tfjs", quants, spec=spec,
                                          input_range=(0.0, 255.0), seconds=seconds,
                                          prefix="tfjs", bar=bar, plan=precision_plan)}
        if nsfwjs:
            with tempfile.TemporaryDirectory(prefix="nsfwjs-sm-") as scratch:
                t0 = time.perf_counter()
                unit = inference_model(model, input_range=(0.0, 1.0), input_name=spec.input_name)
                with _quiet_tf():
                    unit.export(str(Path(scratch) / "sm"), format="tf_saved_model", verbose=False)
                seconds["nsfwjs_saved_model"] = time.perf_counter() - t0
                bar.update()
                precision["nsfwjs"] = _convert_all(
                    Path(scratch) / "sm", tmp / "nsfwjs", nsfwjs_quants, spec=spec,
                    input_range=(0.0, 1.0), seconds=seconds, prefix="nsfwjs", bar=bar,
                    plan=precision_plan)
        spec.save(tmp / "spec.json")
        staged = ExportResult(
            out_dir=tmp, saved_model=tmp / "saved_model",
            tfjs={q: tmp / "tfjs" / q for q in quants},
            nsfwjs={q: tmp / "nsfwjs" / q for q in nsfwjs_quants} if nsfwjs else {},
            sizes=[], seconds=seconds,
        )
        staged.sizes = size_table(staged)
        summary = staged.to_dict()
        summary.update({"model": spec.name, "image_size": spec.image_size,
                        "class_names": list(spec.class_names),
                        "precision_plan": "measured" if precision_plan else "none",
                        "precision": {k: v for k, v in precision.items() if v}})
        write_json(tmp / "export.json", summary)
    bar.close()
    return ExportResult(
        out_dir=out_dir, saved_model=out_dir / "saved_model",
        tfjs={q: out_dir / "tfjs" / q for q in quants},
        nsfwjs={q: out_dir / "nsfwjs" / q for q in nsfwjs_quants} if nsfwjs else {},
        sizes=staged.sizes, seconds=seconds, precision={k: v for k, v in precision.items() if v},
    )


def _convert_all(saved_model: Path, dest: Path, quants: Sequence[str], *, spec: ModelSpec,
                 input_range: tuple[float, float], seconds: dict[str, float], prefix: str,
                 bar, plan: bool = True) -> dict[str, Any]:
    """Convert one SavedModel to ``dest/<q>`` for each quantisation, float32 first (its graph
    and weights choose the storage of the others; it is made in scratch space if not wanted).

    Returns:
        quantisation -> the precision plan's summary (with ``levels``: weight -> dtype).
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
        finally:
            if planner is not None:
                planner.close()
    return plans
