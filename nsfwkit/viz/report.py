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

from .attributions import ALL_METHODS, PIXEL_METHODS
from .classmaps import SCALES

__all__ = ["visualize", "display_image", "faithfulness_scores", "faithfulness_table", "MAX_DISPLAY_SIDE"]

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
    scale: str = "weighted",
    faithfulness: bool = False,
    sanity: bool = False,
    faithfulness_steps: int = 32,
    baseline: str = "blur",
    ig_steps: int | None = None,
    ig_baseline: str | None = None,
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
        cam_methods: explanation methods to run: any of
            :data:`nsfwkit.viz.attributions.ALL_METHODS` (CAMs and pixel attributions).
        cam_layer: CAM layer (default ``spec.last_conv_layer`` or the last conv-like layer); the
            pixel methods (gradients, SmoothGrad, Integrated Gradients) ignore it.
        class_index: None (top-1), an index, a class name, or ``"all"`` (one CAM per class).
        score_cam_channels: Score-CAM keeps this many highest-variance channels (None = all).
        channels, most_active: per-channel PNGs written per layer.
        jit_compile: XLA-compile the optimisation and gradient steps.
        progress: text progress bars (:mod:`nsfwkit.progress`; default on, False = off).
        log: called with one line per finished piece of work (default: print to stderr).
        scale: ``"weighted"`` (default, evidence × probability: each class's raw map times its
            probability over the largest such peak), ``"shared"`` (raw shared scale: one common
            maximum per method) or ``"per_map"``; see :func:`nsfwkit.viz.classmaps.class_maps`. The
            manifest's captions say which.
        faithfulness: score every map by deletion / insertion AUC
            (:func:`nsfwkit.viz.faithfulness.deletion_insertion`: ``faithfulness_steps`` points per
            curve, ``baseline`` for the removed pixels; 2 forward passes of ``faithfulness_steps``
            images per map) into the manifest.
        sanity: also run the model-parameter randomisation check at its flag step only (the top
            weighted layer re-initialised on a copy, :func:`nsfwkit.viz.faithfulness.sanity_check`
            with ``steps=[1]``): each map's rank correlation with the map of the randomised model
            and a ``flagged`` bool per method. It costs twice the maps again (the trained model's
            and the copy's) plus one model copy: seconds on small models; on the default
            MobileNetV2 with all seven methods (2 busy CPU cores) the maps took 62 s, the scores
            23 s and the sanity check 100 s. The full cascade is notebook 06's.
        ig_steps, ig_baseline: Integrated Gradients' ``steps`` and ``baseline`` (None = the
            defaults of :func:`nsfwkit.viz.attributions.compute_attribution`); each IG entry of the
            manifest records its completeness error (``relative_completeness_error``).

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
    bad = [m for m in cam_methods if m not in ALL_METHODS]
    if bad:
        raise ValueError(f"unknown explanation methods {bad}; choose from {list(ALL_METHODS)}")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
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
        cams, scores = [], None
        if "cam" in parts:
            explained = classes if classes is not None else [int(np.argmax(probabilities))]
            options = _method_options(score_cam_channels, jit_compile, ig_steps=ig_steps, ig_baseline=ig_baseline)
            cams = _class_maps(model, pixels, cam_methods, explained, layer=cam_layer, scale=scale, names=names,
                               options=options, log=log)
            if faithfulness or sanity:
                scores = faithfulness_scores(
                    model, pixels, cams, layer=cam_layer, steps=faithfulness_steps, baseline=baseline, seed=seed,
                    sanity=sanity, options=options, log=log)
        written["activation"] = write_activation(
            out / "activation", model_name=spec.name, image=display_image(picture), class_names=names,
            probabilities=probabilities, image_size=spec.image_size, source=str(source),
            activations=acts, cams=cams, channels=channels, most_active=most_active, faithfulness=scores,
            parameters={"layers": layer_paths if acts is not None else [], "cam_layer": cam_layer,
                        "cam_methods": list(cam_methods) if cams else [],
                        "class_index": class_index, "score_cam_channels": score_cam_channels, "scale": scale},
        )
        log(f"activation wrote {written['activation']} ({time.perf_counter() - started:.1f} s)")
    return written


def _method_options(score_cam_channels: int | None, jit_compile: bool, *, ig_steps: int | None = None,
                    ig_baseline: str | None = None) -> dict[str, dict]:
    """Per-method keyword arguments of :func:`nsfwkit.viz.attributions.explain`."""
    options = {m: {"jit_compile": jit_compile} for m in ALL_METHODS}
    options["score_cam"]["max_channels"] = score_cam_channels
    ig = {"steps": ig_steps, "baseline": ig_baseline}
    options["integrated_gradients"].update({k: v for k, v in ig.items() if v is not None})
    return options


def _class_maps(model, pixels, methods, classes, *, layer, scale, names, options, log) -> list:
    """One :class:`~nsfwkit.viz.classmaps.ClassMaps` per method (``classes`` explained, on ``scale``)."""
    from .classmaps import class_maps

    results = []
    for method in methods:
        t0 = time.perf_counter()
        where = None if method in PIXEL_METHODS else layer
        results.append(class_maps(model, pixels, method=method, layer=where, classes=classes, scale=scale,
                                  class_names=names, **options[method]))
        log(f"cam      {method} on {where or 'input'}: {time.perf_counter() - t0:.1f} s")
    return results


def faithfulness_scores(model, pixels, cams, *, layer=None, steps: int = 32, baseline: str = "blur",
                        seed: int = 0, sanity: bool = False, options=None, log=None) -> dict:
    """Deletion / insertion AUC of each map in ``cams`` (and the flag-step sanity check).

    Args:
        model: the classifier.
        pixels: the explained image at the model's size, ``(S, S, 3)`` 0-255.
        cams: :class:`~nsfwkit.viz.classmaps.ClassMaps` of that image, one per method.
        layer: the layer the CAMs and ``layer_cam`` used (for the sanity check's maps).
        steps, baseline, seed: :func:`nsfwkit.viz.faithfulness.deletion_insertion`.
        sanity: run :func:`nsfwkit.viz.faithfulness.sanity_check` with only its first cascade step
            (the top weighted layer re-initialised on a copy of the model).
        options: per-method keyword arguments for the sanity check's maps.

    Returns:
        The manifest's ``faithfulness`` block: ``{"baseline", "steps", "sanity", "scores"}`` with
        ``scores[method]`` a list of ``{"class_index", "deletion_auc", "insertion_auc"}`` (plus
        ``"rank_correlation"`` and ``"flagged"`` with ``sanity``), one per map.
    """
    from . import faithfulness as fa

    log = log or (lambda line: None)
    scores: dict[str, list[dict]] = {}
    for result in cams:
        t0 = time.perf_counter()
        batch = np.repeat(np.asarray(pixels)[None], len(result.class_index), axis=0)
        curves = fa.deletion_insertion(model, batch, result.maps, class_index=result.class_index, steps=steps,
                                       baseline=baseline, seed=seed)
        scores[result.method] = [
            {"class_index": int(c), "deletion_auc": float(d), "insertion_auc": float(i)}
            for c, d, i in zip(result.class_index, curves.deletion_auc, curves.insertion_auc, strict=True)]
        log(f"faithful {result.method}: deletion AUC {curves.deletion_auc.mean():.3f}, insertion AUC "
            f"{curves.insertion_auc.mean():.3f} ({time.perf_counter() - t0:.1f} s)")
    block = {"baseline": baseline, "steps": int(steps), "sanity": None, "scores": scores}
    if sanity and cams:
        block["sanity"] = _sanity(model, pixels, cams, scores, layer=layer, seed=seed, options=options, log=log)
    return block


def _sanity(model, pixels, cams, scores, *, layer, seed, options, log) -> dict:
    """Run the flag step of the sanity check; add each map's rho and its method's flag to ``scores``."""
    from . import faithfulness as fa

    t0 = time.perf_counter()
    classes = cams[0].class_index
    batch = np.repeat(np.asarray(pixels)[None], len(classes), axis=0)
    result = fa.sanity_check(model, batch, methods=[r.method for r in cams], class_index=classes,
                             layer=layer, steps=[1], seed=seed, options=options)
    for row, method in enumerate(result.methods):
        for entry, rho in zip(scores[method], result.rank_correlation[row, 0], strict=True):
            entry["rank_correlation"] = float(rho) if np.isfinite(rho) else None
            entry["flagged"] = method in result.flagged
    log(f"sanity   randomised {', '.join(result.layers[0])}: flagged {list(result.flagged) or 'none'} "
        f"({time.perf_counter() - t0:.1f} s)")
    return {"randomized_layers": list(result.layers[0]), "threshold": result.threshold,
            "flagged": list(result.flagged)}


def faithfulness_table(manifest: dict) -> str:
    """The per-method table of an activation manifest's ``faithfulness`` block (mean over its maps).

    Columns: method, maps, deletion AUC (lower is better), insertion AUC (higher is better),
    insertion - deletion, and with the sanity check the rank correlation after randomising the top
    layer and whether the method is flagged. Empty string when the manifest has no scores.
    """
    block = manifest.get("faithfulness") or {}
    if not block.get("scores"):
        return ""
    sanity = block.get("sanity") is not None
    head = f"{'method':<22}{'maps':>5}{'deletion':>10}{'insertion':>11}{'ins-del':>9}"
    lines = [f"faithfulness ({block['baseline']} baseline, {block['steps']} steps per curve)",
             head + (f"{'rho':>7}  flagged" if sanity else "")]
    for method, entries in block["scores"].items():
        d = float(np.mean([e["deletion_auc"] for e in entries]))
        i = float(np.mean([e["insertion_auc"] for e in entries]))
        line = f"{method:<22}{len(entries):>5}{d:>10.3f}{i:>11.3f}{i - d:>9.3f}"
        if sanity:
            rhos = [e["rank_correlation"] for e in entries if e.get("rank_correlation") is not None]
            rho = f"{np.mean(rhos):>7.2f}" if rhos else f"{'n/a':>7}"
            line += f"{rho}  {'yes' if entries[0].get('flagged') else 'no'}"
        lines.append(line)
    return "\n".join(lines)
