"""The TF SavedModel of the inference model: the export every converter reads (TF.js now).

The first step of :func:`~nsfwkit.convert.export`; also usable alone (TF Serving, ``tf.saved_model.load``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..spec import ModelSpec
from ._converter import _quiet_tf
from .builder import inference_model
from .layout import _atomic_dir

__all__ = ["export_saved_model"]


def export_saved_model(model, out_dir: str | os.PathLike, *, spec: ModelSpec | None = None,
                       overwrite: bool = False) -> Path:
    """Write a TF SavedModel (``model.export``) of the inference model, plus ``spec.json``.

    Args:
        model: a Keras classifier (see :func:`inference_model`; it is applied here).
        out_dir: the SavedModel folder to create.
        spec: written as ``out_dir/spec.json`` when given.
        overwrite: replace an existing non-empty folder (atomically).

    Returns:
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    export_model = inference_model(model, input_name=spec.input_name if spec else "image")
    with _atomic_dir(out_dir, overwrite=overwrite) as tmp:
        shutil.rmtree(tmp)  # model.export wants to create the folder itself
        with _quiet_tf():
            export_model.export(str(tmp), format="tf_saved_model", verbose=False)
        if spec is not None:
            spec.save(tmp / "spec.json")
    return out_dir
