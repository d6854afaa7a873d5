"""What the TFLite and ONNX exporters share: images, parity rows, the output folder, the planner.

* :func:`calibration_images`: what a quantised export is calibrated and planned on: the kit's
  safe samples plus a few generated images, or the user's own folder (``calibration=DIR``),
  loaded and resized exactly as inference does; a broken file is counted and reported.
* :func:`parity_images`: fixed safe images of several sizes, none of them in the default
  calibration set, on which every export's parity row is measured.
* :func:`parity_row`: one row per format and precision, ``{format, precision, path, bytes,
  max_abs_diff, top1_agree, decision_flips, n_images, runtime, ...}``, the keys shared with
  :func:`nsfwkit.convert.size_table`'s rows (``format``, ``quantization``, ``path``,
  ``bytes``, ``mb``, ``files``) spelled the same way.
* :func:`staged_folder`: build the output folder under a temporary name; an existing folder
  the kit did not write is never replaced.
* :func:`plan_mix`: the measured mixed-precision plan: which parts of the network to leave in
  float32 so that the quantised model stays within a target, measured in the real runtime.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from nsfwkit.spec import ModelSpec

from ._converter import _quiet_tf as quiet_tf  # one home: shared with the TF.js exporter

__all__ = [
    "PLAN_MARGIN",
    "RuntimeMissingError",
    "PlanError",
    "CalibrationError",
    "require",
    "CALIBRATION_LIMIT",
    "calibration_images",
    "calibration_line",
    "parity_images",
    "resized",
    "decisions",
    "compare",
    "parity_row",
    "staged_folder",
    "metadata",
    "write_sidecar",
    "read_sidecar",
    "finish",
    "plan_mix",
    "quiet_tf",
    "batches",
]

#: The planner's target as a fraction of the parity bar: the margin for images whose
#: probabilities move more than any calibration image's (the TF.js planner's value, measured
#: there; see ``nsfwkit.convert.PLAN_MARGIN``).
PLAN_MARGIN = 0.75
#: Name of the per-export summary file; its presence marks a folder the kit wrote.
EXPORT_FILE = "export.json"
SIDECAR_FILE = "spec.json"
METADATA_KEY = "nsfwkit"


class RuntimeMissingError(ImportError):
    """A runtime or converter package (ai-edge-litert, onnxruntime, tf2onnx, onnx) is missing."""


class PlanError(RuntimeError):
    """No mix of quantised and float parts keeps the model within the target."""


class CalibrationError(ValueError):
    """A calibration folder gave no usable image (``str()`` names the folder and why)."""


def require(module: str, package: str):
    """Import ``module`` or raise :class:`RuntimeMissingError` naming the pip package."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeMissingError(
            f"{package} is not installed ({exc}); install the runtimes extra: "
            "pip install -e .[runtimes] -c requirements/constraints.txt") from None


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------
def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    return np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img[..., :3]


def _default_calibration(image_size: int) -> list[np.ndarray]:
    """The kit's samples, mirrored crops of its photos, and generated images: blobs (the
    uncertain, drawing-like inputs where probabilities move most), noise, a gradient, and
    near-white and near-black frames (so int8 ranges cover bright scans and dark frames)."""
    from nsfwkit import samples

    photos = samples.sample_images()
    raw = list(photos.values())
    for name in samples.PHOTOS:
        img = photos[name]
        h, w = img.shape[:2]
        raw.append(img[h // 4:, : w - w // 4][:, ::-1])  # lower-left three quarters, mirrored
    raw += [samples.synthetic_image("blobs", image_size=size, seed=seed)
            for seed, size in zip(range(31, 39), (96, 300, 160, 224, 64, 400, 128, 256), strict=True)]
    noise = samples.synthetic_image("noise", image_size=64, seed=34)
    raw += [samples.synthetic_image("noise", image_size=40, seed=33), noise,
            samples.synthetic_image("gradient", image_size=image_size)[::-1],
            255 - noise // 8, noise // 8]
    return raw


#: At most this many images of a calibration folder are used (a seeded sample of them).
CALIBRATION_LIMIT = 200


def _non_images(folder: Path) -> list[dict[str, str]]:
    """Regular, non-hidden files under ``folder`` without an image extension (the walk skips them)."""
    from nsfwkit.images import IMAGE_EXTENSIONS

    if not folder.is_dir():
        return []
    return [{"file": str(p), "reason": f"not an image extension ({p.suffix or 'none'})"}
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
            and p.suffix.lower() not in IMAGE_EXTENSIONS]


def calibration_images(image_size: int, calibration: str | os.PathLike | None = None, *,
                       limit: int | None = CALIBRATION_LIMIT, seed: int = 0
                       ) -> tuple[np.ndarray, dict[str, Any]]:
    """Images that calibrate int8 activations and choose the mixed precision.

    Args:
        image_size: the model's input side.
        calibration: a folder (or file) of the user's own images, walked like ``classify``
            does; default: the kit's safe samples (:func:`nsfwkit.samples.sample_images`),
            mirrored crops of its photos and generated images (28 in all).
        limit: decode at most this many of the folder's image files, a sample drawn with
            ``seed`` (``None``: all); the cost of every quantised build grows with it.

    Returns:
        ``(images, report)``: ``float32`` ``(N, S, S, 3)`` 0-255 resized with
        :func:`nsfwkit.images.resize` (so pixels equal inference's), and ``{"source",
        "images" (used), "available" (image files found), "skipped": [{"file", "reason"}]}``;
        files without an image extension are skipped with that reason.

    Raises:
        CalibrationError: no image of ``calibration`` could be loaded.
    """
    from nsfwkit import images as imgs

    if calibration is None:
        raw = _default_calibration(image_size)
        batch = np.stack([imgs.resize(img, image_size) for img in raw])
        return batch, {"source": "samples", "images": int(len(batch)), "available": int(len(batch)),
                       "sampled": False, "skipped": []}
    errors: list[imgs.ImageError] = []
    files = list(imgs.iter_image_files([calibration], on_error=errors.append))
    chosen = files
    if limit is not None and len(files) > limit:
        picked = np.sort(np.random.default_rng(seed).choice(len(files), size=limit, replace=False))
        chosen = [files[i] for i in picked]
    batch, _, load_errors = imgs.load_images(chosen, image_size=image_size)
    errors += load_errors
    skipped = [{"file": str(e.path), "reason": e.reason} for e in errors] + _non_images(Path(calibration))
    report = {"source": str(calibration), "images": int(len(batch)), "available": int(len(files)),
              "sampled": len(chosen) < len(files), "skipped": skipped}
    if not len(batch):
        detail = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:3])
        read = ", ".join(sorted(imgs.IMAGE_EXTENSIONS))
        raise CalibrationError(f"{calibration}: no usable calibration image (files read: {read}; "
                               f"{len(skipped)} skipped{': ' + detail if detail else ''})")
    return batch, report


def calibration_line(report: dict[str, Any]) -> str:
    """``calibration DIR: N images used, M skipped (first: path — reason)`` for the CLI."""
    skipped = report.get("skipped") or []
    line = f"calibration {report['source']}: {report['images']} images used"
    if report.get("sampled"):
        line += f" (a seeded sample of {report['available']})"
    line += f", {len(skipped)} skipped"
    if skipped:
        line += f" (first: {skipped[0]['file']} — {skipped[0]['reason']})"
    return line


def parity_images(image_size: int) -> dict[str, np.ndarray]:
    """Fixed safe images of several sizes on which parity rows are measured, raw RGB ``uint8``.

    scikit-image photos and scans the default calibration set does not use (down-scaled,
    non-square, gray), a small crop that gets up-scaled, generated noise and blobs, one image
    exactly ``image_size`` (no resize).
    """
    import skimage.data

    from nsfwkit import samples

    out = {name: _rgb(getattr(skimage.data, name)())
           for name in ("immunohistochemistry", "colorwheel", "coins", "clock", "page", "text")}
    out["chelsea_crop_97x150"] = _rgb(skimage.data.chelsea())[60:157, 150:300]
    out["noise_37x61"] = samples.synthetic_image("noise", image_size=61, seed=21)[:37]
    out["checker_333x500"] = samples.synthetic_image("checkerboard", image_size=500)[:333]
    out[f"blobs_{image_size}"] = samples.synthetic_image("blobs", image_size=image_size, seed=22)
    return {k: np.ascontiguousarray(v, dtype=np.uint8) for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# Parity rows
# --------------------------------------------------------------------------------------------
def decisions(probs: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """The SFW/NSFW decision per image: the spec's NSFW classes' summed probability
    ``>= spec.threshold``; ``bool`` ``(N,)``."""
    probs = np.asarray(probs, np.float64)
    return probs[:, list(spec.nsfw_indices)].sum(-1) >= spec.threshold


def compare(reference: np.ndarray, probs: np.ndarray, spec: ModelSpec) -> dict[str, Any]:
    """``{max_abs_diff, top1_agree, decision_flips, n_images}`` of two ``(N, classes)`` arrays."""
    a, b = np.asarray(reference, np.float64), np.asarray(probs, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: reference {a.shape} vs runtime {b.shape}")
    return {
        "max_abs_diff": float(np.abs(a - b).max()) if a.size else 0.0,
        "top1_agree": float(np.mean(a.argmax(-1) == b.argmax(-1))) if len(a) else 1.0,
        "decision_flips": int(np.sum(decisions(a, spec) != decisions(b, spec))),
        "n_images": int(len(a)),
    }


def parity_row(*, fmt: str, precision: str, path: Path, reference: np.ndarray,
               probs: np.ndarray, spec: ModelSpec, tolerance: float, runtime: str,
               **extra: Any) -> dict[str, Any]:
    """One export's row: size, parity against Keras, the bar and whether it holds.

    ``quantization`` repeats ``precision`` and ``mb``/``files`` are there so the row joins
    :func:`nsfwkit.convert.size_table`'s rows (and :func:`nsfwkit.convert.plot_sizes`).
    """
    path = Path(path)
    nbytes = path.stat().st_size
    row = {"format": fmt, "precision": precision, "quantization": precision, "path": str(path),
           "bytes": int(nbytes), "mb": round(nbytes / 1e6, 2), "files": 1}
    row.update(compare(reference, probs, spec))
    row.update({"runtime": runtime, "tolerance": float(tolerance),
                "passed": bool(row["max_abs_diff"] <= tolerance and row["top1_agree"] == 1.0)})
    row.update(extra)
    return row


def export_inputs(model, spec: ModelSpec, precision: str, *, calibration=None, calibration_set=None):
    """What every runtime exporter starts from: the inference model (:func:`nsfwkit.convert.inference_model`),
    the calibration ``(images, report)`` (``(None, None)`` for float32; ``calibration_set`` when
    already loaded, else :func:`calibration_images`) and the fixed parity images, resized."""
    from nsfwkit.convert import inference_model

    export_model = inference_model(model, input_name=spec.input_name)
    calib, calib_report = (None, None) if precision == "float32" else (
        calibration_set or calibration_images(spec.image_size, calibration))
    test = resized(list(parity_images(spec.image_size).values()), spec.image_size)
    return export_model, calib, calib_report, test


# --------------------------------------------------------------------------------------------
# The output folder
# --------------------------------------------------------------------------------------------
def staged_folder(dest: str | os.PathLike, *, overwrite: bool):
    """Build the output folder under a temporary name; an existing non-empty ``dest`` is replaced
    only with ``overwrite`` and only when the kit wrote it: the TF.js exporter's rule
    (:func:`nsfwkit.convert.layout._atomic_dir`), shared."""
    from .layout import _atomic_dir

    return _atomic_dir(Path(dest), overwrite=overwrite)


def metadata(spec: ModelSpec, *, fmt: str, precision: str, model_input: dict[str, Any],
             output: dict[str, Any], versions: dict[str, str]) -> dict[str, Any]:
    """The sidecar's content: the spec plus what a runtime caller must know."""
    data = spec.to_dict()
    data.update({"format": fmt, "precision": precision, "input": model_input, "output": output,
                 "versions": versions})
    return data


def write_sidecar(folder: Path, data: dict[str, Any]) -> Path:
    """Write ``spec.json`` (loadable by :meth:`ModelSpec.load`, which ignores the extra keys)."""
    from nsfwkit.fileio import write_json

    return write_json(Path(folder) / SIDECAR_FILE, data)


def read_sidecar(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``spec.json`` of an export folder (or of the folder holding a model file)."""
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    return json.loads((folder / SIDECAR_FILE).read_text(encoding="utf-8"))


def finish(folder: Path, row: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Write the row as ``export.json`` (path relative); return it with the final path."""
    from nsfwkit.fileio import write_json

    name = Path(row["path"]).name
    write_json(folder / EXPORT_FILE, {**row, "path": name})
    return {**row, "path": str(Path(out_dir) / name)}


# --------------------------------------------------------------------------------------------
# The measured mixed-precision plan
# --------------------------------------------------------------------------------------------
def plan_mix(units: dict[str, int], *, build: Callable[[set[str]], bytes],
             measure: Callable[[bytes], np.ndarray], target: float, per_byte: bool = True,
             n_images: int = 0) -> tuple[bytes, dict[str, Any]]:
    """Choose which units (weight tensors, layers) to quantise, by measurement.

    1. All units quantised: if that meets ``target``, done (``method: plain``).
    2. Sensitivity of each unit: the mean error over the calibration images with only that
       unit quantised.
    3. Units sorted by sensitivity (per byte saved with ``per_byte``): the longest prefix whose
       max error meets the target, by bisection and then a scan of longer prefixes (errors of
       prefixes need not grow monotonically: int8 errors add up across neighbouring layers).
       Every candidate is measured, so the chosen mix met the target on the calibration images.

    Args:
        units: unit name -> bytes quantising it saves.
        build: the model bytes with exactly these units quantised (the rest float32).
        measure: per-image max |Δp| of model bytes against Keras on the calibration images.
        target: the max error allowed on the calibration images.

    Returns:
        ``(model_bytes, info)``: info holds the method, target, errors, counts and the
        names of the units left in float32.

    Raises:
        PlanError: no measured prefix meets the target.
    """
    t0 = time.perf_counter()
    names = list(units)
    evaluations = 0

    def error(chosen: Sequence[str]) -> tuple[bytes, float, float]:
        nonlocal evaluations
        evaluations += 1
        model = build(set(chosen))
        per_image = np.asarray(measure(model), np.float64)
        return model, float(per_image.max(initial=0.0)), float(per_image.mean()) if per_image.size else 0.0

    best, plain, _ = error(names)
    info: dict[str, Any] = {"target": float(target), "calibration_images": int(n_images),
                            "plain_max_abs_diff": round(plain, 7), "units": len(names)}
    if plain <= target:
        info.update({"method": "plain: every unit quantised", "calibration_max_abs_diff": round(plain, 7),
                     "quantized": len(names), "float": [], "evaluations": evaluations,
                     "seconds": round(time.perf_counter() - t0, 3)})
        return best, info
    sensitivity = {n: error([n])[2] for n in names}
    order = sorted(names, key=lambda n: sensitivity[n] / max(units[n], 1) if per_byte else sensitivity[n])
    found: dict[int, tuple[bytes, float]] = {}

    def meets(k: int) -> bool:
        model, value, _ = error(order[:k])
        if value <= target:
            found[k] = (model, value)
        return value <= target

    lo, hi = 0, len(names) - 1
    while lo < hi:  # bisection for the longest prefix within target
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if meets(mid) else (lo, mid - 1)
    step = max(1, len(names) // 12)
    for k in range(lo + step, len(names), step):  # longer prefixes may meet it too
        if meets(k):
            lo = k
    if lo not in found:
        raise PlanError(f"no mix meets max |dp| <= {target:g} on the calibration images (all "
                        f"quantised: {plain:.3g}; least sensitive unit alone, mean: "
                        f"{min(sensitivity.values()):.3g})")
    best, value = found[lo]
    info.update({
        "method": "mean error of each unit quantised alone" + (" per byte saved" if per_byte else "")
                  + "; longest measured prefix within target (bisection, then a scan)",
        "calibration_max_abs_diff": round(value, 7), "quantized": lo,
        "float": sorted(order[lo:]), "evaluations": evaluations,
        "seconds": round(time.perf_counter() - t0, 3),
    })
    if per_byte:
        info.update({"bytes_saved": int(sum(units[n] for n in order[:lo])),
                     "bytes_saved_all": int(sum(units.values()))})
    return best, info


def batches(x: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(x), batch_size):
        yield x[start: start + batch_size]


def resized(images: Sequence[np.ndarray] | np.ndarray, image_size: int) -> np.ndarray:
    """Raw images of any sizes -> ``float32`` ``(N, S, S, 3)`` the inference way."""
    from nsfwkit.images import resize

    if isinstance(images, np.ndarray) and images.ndim == 4:
        return resize(images, image_size)
    return np.stack([resize(np.asarray(img), image_size) for img in images])
