"""All three visualisations for one model and one image, written as the web view expects.

:func:`visualize` is what ``nsfwkit visualize`` runs: filters for a spread of layers into
``<out>/filters/``, then the chosen layers' activations and the CAMs for the image into
``<out>/activation/``, each folder with its ``manifest.json`` (schema in
:mod:`nsfwkit.viz.outputs`). Each folder is replaced as a whole when complete.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

__all__ = ["visualize", "display_image", "MAX_DISPLAY_SIDE"]

#: Images are shown (input.png, overlays) at most this many pixels on their long side.
MAX_DISPLAY_SIDE = 1024

PARTS = ("filters", "activations", "cam")


def display_image(image: np.ndarray, *, max_side: int = MAX_DISPLAY_SIDE) -> np.ndarray:
    """``image`` (``(H, W, 3)`` 0-255) downscaled so its long side is at most ``max_side``."""
    from ..images import resize

    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return np.asarray(image)
    f = max_side / max(h, w)
    return resize(image, (max(1, round(h * f)), max(1, round(w * f))))


def _class_indices(class_index, names: Sequence[str], count: int) -> list[int] | None:
    """None (top-1), "all", an index or a class name -> explicit indices or None."""
    if class_index is None:
        return None
    if isinstance(class_index, str):
        if class_index == "all":
            return list(range(count))
        if class_index in names:
            return [list(names).index(class_index)]
        if class_index.lstrip("-").isdigit():
            class_index = int(class_index)
        else:
            raise ValueError(f"unknown class {class_index!r}; choose from {list(names)}, an index or 'all'")
    index = int(class_index)
    if not 0 <= index < count:
        raise ValueError(f"class index {index} out of range for {count} classes")
    return [index]


def visualize(
    model,
    spec,
    image: str | os.PathLike | None = None,
    *,
    out: str | os.PathLike | None = None,
    parts: Sequence[str] = PARTS,
    layers: Sequence[str] | None = None,
    filters: int = 8,
    recipe: str = "quality",
    steps: int | None = None,
    seed: int = 0,
    cam_methods: Sequence[str] = ("grad_cam", "grad_cam_plus_plus", "score_cam"),
    cam_layer: str | None = None,
    class_index=None,
    score_cam_channels: int | None = 256,
    channels: int = 8,
    most_active: int = 8,
    jit_compile: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Compute and write filters, activations and CAMs.

    Args:
        model, spec: from :func:`nsfwkit.zoo.load`.
        image: the image to explain (default :func:`nsfwkit.samples.default_image`).
        out: parent folder of ``filters/`` and ``activation/`` (default ``dist/``).
        parts: any of ``filters``, ``activations``, ``cam``.
        layers: layers for filters and activations (default: a spread, early to late).
        filters: filters per layer.
        recipe, steps, seed: filter optimisation (see :mod:`nsfwkit.viz.filters`).
        cam_methods: CAM methods to run.
        cam_layer: CAM layer (default ``spec.last_conv_layer`` or the last conv-like layer).
        class_index: None (top-1), an index, a class name, or ``"all"`` (one CAM per class).
        score_cam_channels: Score-CAM keeps this many highest-variance channels (None = all).
        channels, most_active: per-channel PNGs written per layer.
        jit_compile: XLA-compile the optimisation and gradient steps.
        progress: text progress bars (:mod:`nsfwkit.progress`; default on, False = off).
        log: called with one line per finished piece of work (default: print to stderr).

    Returns:
        ``{"filters": manifest path, "activation": manifest path}`` for the parts written.

    Raises:
        ImageError: the image cannot be loaded (nothing is written).
        LayerNotFoundError: a layer is not in the model.
        ValueError: bad arguments.
    """
    from .. import images as imaging
    from .. import paths, samples
    from ..zoo import check_classifier
    from . import activations as act_mod
    from . import cam as cam_mod
    from . import filters as filt_mod
    from .layers import last_conv_layer, layer_path
    from .outputs import write_activation, write_filters

    check_classifier(model, spec)
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown parts {unknown}; choose from {list(PARTS)}")
    bad = [m for m in cam_methods if m not in cam_mod.METHODS]
    if bad:
        raise ValueError(f"unknown CAM methods {bad}; choose from {list(cam_mod.METHODS)}")
    out = Path(out) if out is not None else paths.dist_dir()
    layer_paths = filt_mod.default_filter_layers(model) if layers is None else [layer_path(model, l) for l in layers]
    cam_layer = layer_path(model, cam_layer) if cam_layer else last_conv_layer(model, spec)
    names = list(spec.class_names) or [f"class_{i}" for i in range(int(model.outputs[0].shape[-1]))]
    classes = _class_indices(class_index, names, len(names))
    written: dict[str, Path] = {}

    # Load the image first: a bad file fails before minutes of optimisation.
    source = Path(image) if image is not None else samples.default_image()
    picture = pixels = None
    if "activations" in parts or "cam" in parts:
        picture = imaging.load_image(source)
        pixels = imaging.resize(picture, spec.image_size)

    if "filters" in parts:
        results = []
        for path in layer_paths:
            result = filt_mod.maximize_filters(model, path, filters=filters, recipe=recipe, steps=steps,
                                               seed=seed, jit_compile=jit_compile, progress=progress)
            results.append(result)
            log(f"filters  {path}: {len(result.filters)} filters, {result.recipe} x{result.steps} steps, "
                f"{result.seconds:.1f} s; activation {float(np.mean(result.activation_start)):.3g} -> "
                f"{float(np.mean(result.activation_reached)):.3g} (mean over filters)")
        params = {"filters": filters, "recipe": recipe, "steps": results[0].steps if results else steps,
                  "seed": seed, "layers": layer_paths, "jit_compile": jit_compile}
        if results:
            params.update({k: v for k, v in results[0].parameters.items() if k not in ("filters",)})
        written["filters"] = write_filters(results, out / "filters", model_name=spec.name, parameters=params)
        log(f"filters  wrote {written['filters']}")

    if pixels is not None:
        started = time.perf_counter()
        acts = act_mod.activations(model, pixels, layers=layer_paths) if "activations" in parts else None
        probabilities = (acts.probabilities[0] if acts is not None
                         else cam_mod.compute_cam(model, pixels, layer=cam_layer).probabilities[0])
        cams = []
        if "cam" in parts:
            for method in cam_methods:
                t0 = time.perf_counter()
                if classes is None:
                    batch, cls = pixels[None], None
                else:
                    batch, cls = np.repeat(pixels[None], len(classes), axis=0), classes
                cams.append(cam_mod.compute_cam(model, batch, method=method, class_index=cls, layer=cam_layer,
                                                max_channels=score_cam_channels, jit_compile=jit_compile))
                log(f"cam      {method} on {cam_layer}: {time.perf_counter() - t0:.1f} s")
        written["activation"] = write_activation(
            out / "activation", model_name=spec.name, image=display_image(picture), class_names=names,
            probabilities=probabilities, image_size=spec.image_size, source=str(source),
            activations=acts, cams=cams, channels=channels, most_active=most_active,
            parameters={"layers": layer_paths if acts is not None else [], "cam_layer": cam_layer,
                        "cam_methods": list(cam_methods) if cams else [],
                        "class_index": class_index, "score_cam_channels": score_cam_channels},
        )
        log(f"activation wrote {written['activation']} ({time.perf_counter() - started:.1f} s)")
    return written
