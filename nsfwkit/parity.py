"""Run the real nsfwjs (npm) in Node on the same pixels as Keras, and compare.

The pixels are decoded once in Python and handed to Node as raw RGB bytes, so decoders cannot
differ: what is compared is nsfwjs's own preprocessing (/255, bilinear resize with corners
aligned) and network against the imported Keras model with :func:`nsfwkit.images.resize`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

from . import paths

__all__ = ["NSFWJS_NAMES", "run_nsfwjs", "compare_with_nsfwjs"]

#: Our pretrained names -> nsfwjs's model names.
NSFWJS_NAMES = {"mobilenet_v2": "MobileNetV2", "inception_v3": "InceptionV3"}


def _script() -> Path:
    return paths.repo_root() / "js" / "nsfwjs_classify.mjs"


def run_nsfwjs(
    images: Mapping[str, np.ndarray],
    *,
    model: str = "mobilenet_v2",
    backend: str = "wasm",
    repeat: int = 0,
    timeout: float = 600,
) -> dict:
    """Classify ``uint8`` RGB arrays with nsfwjs in Node.

    Args:
        images: name -> ``(H, W, 3)`` uint8 array (any size; nsfwjs resizes).
        model: our pretrained name (``mobilenet_v2`` or ``inception_v3``).
        backend: TF.js backend, ``wasm`` (default) or ``cpu``.
        repeat: extra timed classifications per image (for benchmarks).

    Returns:
        The script's JSON: ``{"results": [{"name", "probs": {class: p}}], "ms_per_image", ...}``.
    """
    node = shutil.which("node")
    if not node:
        raise RuntimeError("Node.js is not installed (needed to run nsfwjs)")
    if not (paths.repo_root() / "node_modules" / "nsfwjs").is_dir():
        raise RuntimeError("node_modules/nsfwjs is missing: run `npm ci` in the repository")
    with tempfile.TemporaryDirectory(prefix="nsfwjs-") as tmp:
        request = {"model": NSFWJS_NAMES[model], "backend": backend, "repeat": repeat, "images": []}
        for i, (name, img) in enumerate(images.items()):
            img = np.ascontiguousarray(img, dtype=np.uint8)
            if img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"{name}: expected (H, W, 3) uint8 RGB, got {img.shape}")
            raw = Path(tmp) / f"{i}.rgb"
            img.tofile(raw)
            request["images"].append({"name": name, "width": img.shape[1], "height": img.shape[0], "rgb": str(raw)})
        (Path(tmp) / "request.json").write_text(json.dumps(request))
        proc = subprocess.run([node, str(_script()), str(Path(tmp) / "request.json")],
                              cwd=paths.repo_root(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"nsfwjs in Node failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare_with_nsfwjs(model, spec, images: Mapping[str, np.ndarray], *, nsfwjs_model: str | None = None) -> dict:
    """Max |Δp| and top-1 agreement between a Keras model and nsfwjs on the same images.

    Returns:
        ``{"max_abs_diff": float, "top1_agree": bool, "per_image": {name: max diff}, "keras": (N, C),
        "nsfwjs": (N, C)}``.
    """
    from .classify import predict
    from .images import resize

    js = run_nsfwjs(images, model=nsfwjs_model or spec.name)
    theirs = np.array([[r["probs"][c] for c in spec.class_names] for r in js["results"]])
    ours = predict(model, np.stack([resize(img, spec.image_size) for img in images.values()]))
    diff = np.abs(ours - theirs).max(axis=1)
    return {
        "max_abs_diff": float(diff.max()),
        "top1_agree": bool((ours.argmax(1) == theirs.argmax(1)).all()),
        "per_image": dict(zip(images, diff.tolist())),
        "keras": ours,
        "nsfwjs": theirs,
    }
