"""The ONE bridge to Node.js: run the kit's scripts (``nsfwkit/js/*.mjs``) on pixels decoded in
Python, for TF.js parity (our exports), nsfwjs loading our exports, nsfwjs's own models
(:func:`run_nsfwjs`, the check of the Keras import) and the web view in Chromium.

The scripts are package data, so an installed kit (not a checkout) runs them too. They import
the npm packages (TF.js, nsfwjs, playwright-core) from :func:`nsfwkit.paths.node_modules_dir`
(the repository's ``node_modules``, or ``$NSFWKIT_NODE_MODULES``), which :func:`run_node`
passes to them as ``$NSFWKIT_NODE_MODULES``: ES modules ignore ``NODE_PATH``, and a script in
site-packages cannot find the repository's ``node_modules`` by walking up.

Every request and answer is one JSON object; the pixels travel as raw files, so decoders
cannot differ between the two sides.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .. import paths
from ..spec import NSFWJS_CLASSES
from .layout import read_metadata

__all__ = ["JS_DIR", "NSFWJS_NAMES", "NodeMissingError", "run_node", "tfjs_probabilities",
           "nsfwjs_probabilities", "run_nsfwjs"]

#: The kit's Node scripts (package data, shipped with the package: see pyproject.toml).
JS_DIR = Path(__file__).resolve().parent.parent / "js"
#: Our pretrained names -> nsfwjs's model names.
NSFWJS_NAMES = {"mobilenet_v2": "MobileNetV2", "inception_v3": "InceptionV3"}
#: npm packages every TF.js script needs (checked before running one).
_TFJS_PACKAGES = ("@tensorflow/tfjs-backend-wasm",)
#: ... and every nsfwjs one.
_NSFWJS_PACKAGES = _TFJS_PACKAGES + ("nsfwjs",)


class NodeMissingError(RuntimeError):
    """Node.js or the npm packages needed to run TF.js are missing."""


def _node(packages: Sequence[str] = _TFJS_PACKAGES) -> str:
    """The ``node`` executable, after checking that ``packages`` are in the node_modules folder.

    Raises:
        NodeMissingError: no ``node`` on PATH, or a package is missing (the message names the
            folder looked in).
    """
    node = shutil.which("node")
    if not node:
        raise NodeMissingError("Node.js (>= 20) is not installed; it runs TensorFlow.js")
    node_modules = paths.node_modules_dir()
    for package in packages:
        if not (node_modules / package).is_dir():
            raise NodeMissingError(f"{node_modules}: {package} missing; run `npm ci` in the repository "
                                   "or set $NSFWKIT_NODE_MODULES to a node_modules folder holding it")
    return node


def run_node(script: str | os.PathLike, request: dict[str, Any], *, timeout: float = 300,
             packages: Sequence[str] = _TFJS_PACKAGES) -> dict:
    """Run a Node script with a JSON request; return its JSON answer (its last stdout line).

    Args:
        script: the name of one of the kit's scripts in :data:`JS_DIR` (``"tfjs_predict.mjs"``,
            ``"nsfwjs_load.mjs"``, ``"nsfwjs_classify.mjs"``, ``"browser_check.mjs"``), or a path.
        request: JSON-able; the script reads it from the file named by its first argument.
        packages: npm packages that must be installed (:class:`NodeMissingError` otherwise).

    Raises:
        NodeMissingError: Node.js or a package is missing.
        RuntimeError: the script failed (the message ends with its stderr).
    """
    node = _node(packages)
    script = Path(script)
    if len(script.parts) == 1:
        script = JS_DIR / script
    env = dict(os.environ, NSFWKIT_NODE_MODULES=str(paths.node_modules_dir().resolve()))
    with tempfile.TemporaryDirectory(prefix="nsfwkit-node-") as tmp:
        req = Path(tmp) / "request.json"
        req.write_text(json.dumps(request), encoding="utf-8")
        proc = subprocess.run([node, str(script), str(req)], cwd=paths.repo_root(), env=env,
                              capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tfjs_probabilities(
    model_dir: str | os.PathLike,
    images: np.ndarray | Sequence[np.ndarray],
    *,
    preprocessed: bool = False,
    backend: str = "wasm",
    gradcam: bool = False,
    dump_inputs: str | os.PathLike | None = None,
    repeat: int = 0,
) -> dict[str, Any]:
    """Run a TF.js graph model in Node (``nsfwkit/js/tfjs_predict.mjs``) on images decoded in Python.

    Args:
        model_dir: a graph model folder from :func:`~nsfwkit.convert.export_tfjs`.
        images: raw RGB ``uint8`` ``(H, W, 3)`` arrays of any sizes (preprocessed in JavaScript
            by ``nsfwkit/web/classifier.js``, the web view's code), or with
            ``preprocessed=True`` float32 model inputs ``(N, S, S, 3)`` fed as they are.
        backend: ``wasm`` (default) or ``cpu`` (pure JS, slow).
        gradcam: also return the TF.js Grad-CAM of each image's top class.
        dump_inputs: folder where the script writes each preprocessed input as
            ``<i>.f32`` (float32 S*S*3), to compare preprocessing with Python.
        repeat: extra timed runs per image.

    Returns:
        ``{"probs": float32 (N, classes), "cams": list of (h, w) float32 arrays or None,
        "metadata": dict, "ms_per_image": float | None, "load_ms": float, "backend": str}``.
    """
    items = []
    with tempfile.TemporaryDirectory(prefix="nsfwkit-px-") as tmp:
        for i, img in enumerate(images):
            arr = np.asarray(img)
            if preprocessed:
                data, dtype = np.ascontiguousarray(arr, dtype="<f4"), "float32"
            else:
                if arr.dtype != np.uint8:
                    raise ValueError("raw images must be uint8 (H, W, 3); pass preprocessed=True "
                                     "for float model inputs")
                data, dtype = np.ascontiguousarray(arr), "uint8"
            if arr.ndim != 3 or arr.shape[-1] != 3:
                raise ValueError(f"image {i}: expected (H, W, 3), got {arr.shape}")
            file = Path(tmp) / f"{i}.px"
            data.tofile(file)
            items.append({"name": str(i), "width": int(arr.shape[1]), "height": int(arr.shape[0]),
                          "file": str(file), "dtype": dtype})
        answer = run_node("tfjs_predict.mjs", {
            "model_dir": str(Path(model_dir).resolve()), "backend": backend, "images": items,
            "gradcam": gradcam, "repeat": int(repeat),
            "dump_inputs": str(Path(dump_inputs).resolve()) if dump_inputs else None,
        })
    results = answer["results"]
    cams = None
    if gradcam:
        cams = [np.asarray(r["cam"]["heatmap"], np.float32).reshape(r["cam"]["height"], r["cam"]["width"])
                if "cam" in r else None for r in results]
    return {
        "probs": np.asarray([r["probs"] for r in results], np.float32).reshape(len(results), -1),
        "cams": cams, "metadata": answer["metadata"], "ms_per_image": answer["ms_per_image"],
        "load_ms": answer["load_ms"], "backend": answer["backend"],
    }


def nsfwjs_probabilities(model_dir: str | os.PathLike, images: Sequence[np.ndarray], *,
                         image_size: int | None = None, backend: str = "wasm") -> np.ndarray:
    """Classify raw RGB images with the real ``nsfwjs`` package loading ``model_dir``.

    ``model_dir`` is served on 127.0.0.1 for the duration and loaded the documented nsfwjs way,
    ``nsfwjs.load(url, {type: "graph", size})`` (``nsfwkit/js/nsfwjs_load.mjs``); nsfwjs does its own
    preprocessing. Use an ``nsfwjs/<q>/`` export (input 0-1).

    Returns:
        ``float32`` ``(N, 5)`` in nsfwjs's class order (:data:`~nsfwkit.spec.NSFWJS_CLASSES`).
    """
    from .. import serve

    size = int(image_size or read_metadata(model_dir).get("image_size", 224))
    with tempfile.TemporaryDirectory(prefix="nsfwkit-px-") as tmp:
        items = []
        for i, img in enumerate(images):
            arr = np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
            arr.tofile(Path(tmp) / f"{i}.rgb")
            items.append({"name": str(i), "width": int(arr.shape[1]), "height": int(arr.shape[0]),
                          "file": str(Path(tmp) / f"{i}.rgb")})
        server = serve.serve_in_thread(Path(model_dir))
        try:
            answer = run_node("nsfwjs_load.mjs",
                              {"url": server.url, "size": size, "images": items, "backend": backend},
                              packages=_NSFWJS_PACKAGES)
        finally:
            server.shutdown()
            server.server_close()
    return np.asarray([[r["probs"][c] for c in NSFWJS_CLASSES] for r in answer["results"]], np.float32)


def run_nsfwjs(
    images: Mapping[str, np.ndarray],
    *,
    model: str = "mobilenet_v2",
    backend: str = "wasm",
    repeat: int = 0,
    timeout: float = 600,
) -> dict:
    """Classify ``uint8`` RGB arrays with nsfwjs's own bundled models in Node
    (``nsfwkit/js/nsfwjs_classify.mjs``).

    Args:
        images: name -> ``(H, W, 3)`` uint8 array (any size; nsfwjs resizes).
        model: our pretrained name (``mobilenet_v2`` or ``inception_v3``).
        backend: TF.js backend, ``wasm`` (default) or ``cpu``.
        repeat: extra timed classifications per image (for benchmarks).

    Returns:
        The script's JSON: ``{"results": [{"name", "probs": {class: p}}], "ms_per_image", ...}``.

    Raises:
        NodeMissingError: Node.js, TF.js or nsfwjs is missing.
    """
    with tempfile.TemporaryDirectory(prefix="nsfwjs-") as tmp:
        request = {"model": NSFWJS_NAMES[model], "backend": backend, "repeat": repeat, "images": []}
        for i, (name, img) in enumerate(images.items()):
            img = np.ascontiguousarray(img, dtype=np.uint8)
            if img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"{name}: expected (H, W, 3) uint8 RGB, got {img.shape}")
            raw = Path(tmp) / f"{i}.rgb"
            img.tofile(raw)
            request["images"].append({"name": name, "width": img.shape[1], "height": img.shape[0], "rgb": str(raw)})
        return run_node("nsfwjs_classify.mjs", request, timeout=timeout, packages=_NSFWJS_PACKAGES)
