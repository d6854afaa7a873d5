"""Writing the visualisation folders ``filters/`` and ``activation/`` with their JSON manifests.

A folder is the kit's ``viz`` folder (:func:`nsfwkit.fileio.replace_owned`): a run is staged inside
it and its entries moved into place when complete (the manifest with them), so a re-run replaces
the previous run's outputs cleanly (no stale PNGs from a run with more layers) and never touches
a file the user put there. A folder holding anything else is refused unless it is an older kit's
(an ``nsfwkit.`` schema ``manifest.json``: only the files that manifest names are replaced).

Manifest schema (version 1; also in ``nsfwkit/viz/MANIFESTS.md``). All file names are relative
to the manifest's folder; numbers are plain JSON floats; ``created`` is ISO-8601 UTC.

``filters/manifest.json``::

    {
      "schema": "nsfwkit.filters/1",
      "created": "2025-01-01T00:00:00Z",
      "model": "mobilenet_v2",             # model name (or file stem)
      "image_size": 224,                   # side of every filter image, pixels
      "recipe": "quality",                 # "classic" | "quality"
      "parameters": {"steps": 256, "seed": 0, ...},   # everything that shaped the run
      "layers": [
        {
          "layer": "block_7_depthwise_relu",          # layer path (nested: "backbone/layer")
          "channels": 384,                            # channels the layer has
          "grid": "block_7_depthwise_relu_grid.png",  # all this layer's filters tiled
          "seconds": 12.3,                            # optimisation time for the layer
          "filters": [
            {"layer": "block_7_depthwise_relu", "index": 0,
             "file": "block_7_depthwise_relu_0.png",
             "activation_start": 0.05,     # channel mean of the layer output, random start
             "activation_reached": 4.2,    # the same on the optimised image
             "objective_start": -0.3,      # what was ascended (pre-activation for ReLU layers)
             "objective_reached": 7.9,
             "gain": 84.0}                 # activation reached / start (null when start <= 0)
          ]
        }
      ]
    }

``activation/manifest.json``::

    {
      "schema": "nsfwkit.activation/1",
      "created": "...", "model": "mobilenet_v2", "image_size": 224,
      "image": {"source": "chelsea.jpg", "file": "input.png", "width": 451, "height": 300},
      "class_names": ["Drawing", "Hentai", "Neutral", "Porn", "Sexy"],
      "probabilities": [0.001, 0.001, 0.936, 0.06, 0.003],
      "top_class": {"index": 2, "name": "Neutral", "probability": 0.936},
      "parameters": {"channels": 8, "most_active": 8, ...},
      "layers": [
        {
          "layer": "out_relu", "shape": [7, 7, 1280],
          "grid": "out_relu_grid.png",           # first channels tiled
          "channels": [{"index": 0, "file": "out_relu_0.png", "mean": 0.1, "max": 2.3}],
          "most_active": [{"index": 511, "file": "out_relu_511.png", "mean": 1.7, "max": 6.0}]
        }
      ],
      "cams": [
        {"method": "grad_cam", "layer": "out_relu", "class_index": 2, "class_name": "Neutral",
         "probability": 0.936,
         "heatmap": "cam_grad_cam_Neutral.png",           # colour-mapped map at the image size
         "overlay": "cam_grad_cam_Neutral_overlay.png",   # map blended over the image
         "caption": "Neutral p=0.94, raw [0, 3.1]; evidence × probability",  # what the brightness means
         "scale": "weighted",          # "weighted" (raw x p / max_k p_k peak_k), "shared" (raw / one max), "per_map"
         "raw_min": 0.0, "raw_max": 3.1,   # the map before scaling (the method's own units)
         "empty": false,               # (next to) no positive evidence; the caption says why
         "completeness_error": 0.05,   # integrated_gradients only: sum(attributions) - score_difference
         "score_difference": 3.1,      # integrated_gradients only: logit_c(image) - logit_c(baseline)
         "relative_completeness_error": 0.016,  # IG only: |error| / |difference| (null if 0); above
                                       # 0.05 the CLI and notebook 06 warn: raise steps or use the blur baseline
         "deletion_auc": 0.12,         # only with --faithfulness: lower is better, in [0, 1]
         "insertion_auc": 0.71,        # only with --faithfulness: higher is better, in [0, 1]
         "rank_correlation": 0.08,     # only with --sanity: Spearman rho vs the top-layer-randomised model
         "flagged": false}             # only with --sanity: the method's maps survive randomisation
      ],
      "cam": "cam.png",                # the first CAM's overlay (the original's file name)
      "faithfulness": {                # only with --faithfulness or --sanity
        "baseline": "blur", "steps": 32,               # deletion / insertion settings
        "scores": {"grad_cam": [{"class_index": 2, "deletion_auc": 0.12, "insertion_auc": 0.71,
                                 "rank_correlation": 0.08, "flagged": false}]},
        "sanity": {"randomized_layers": ["predictions"], "threshold": 0.5,   # null without --sanity
                   "flagged": []}
      }
    }

Channel and filter PNGs are written at most once per (layer, index); entries in ``channels``
and ``most_active`` may point to the same file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import re
import shutil
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .. import fileio

__all__ = [
    "FILTERS_SCHEMA",
    "ACTIVATION_SCHEMA",
    "atomic_write_json",
    "staged_folder",
    "safe_name",
    "write_filters",
    "write_activation",
    "read_manifest",
]

FILTERS_SCHEMA = "nsfwkit.filters/1"
ACTIVATION_SCHEMA = "nsfwkit.activation/1"


def atomic_write_json(path, data: Any) -> Path:
    """Write ``data`` as indented JSON (numpy values converted, NaN/inf as null), atomically
    (:func:`nsfwkit.fileio.write_json` of :func:`nsfwkit.fileio.json_safe`)."""
    return fileio.write_json(path, fileio.json_safe(data))


def read_manifest(folder) -> dict:
    """Read ``<folder>/manifest.json``."""
    return json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))


def _legacy_viz(folder: Path) -> list[str] | None:
    """The entries an older kit's visualisation run (before ownership markers) wrote in ``folder``,
    exactly: its ``manifest.json`` (with an ``nsfwkit.`` schema) and the PNG files that manifest
    names. ``None``: not such a folder. Anything else there (``my_notes.md``) is the user's."""
    try:
        manifest = read_manifest(folder)
    except (OSError, ValueError):
        return None
    schema = manifest.get("schema", "") if isinstance(manifest, dict) else ""
    if not (isinstance(schema, str) and schema.startswith("nsfwkit.")):
        return None
    return ["manifest.json", *dict.fromkeys(_png_names(manifest))]


def _png_names(value: Any) -> Iterator[str]:
    """Every ``*.png`` file name a manifest records (not ``image.source``: the user's input's name)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key != "source":
                yield from _png_names(item)
    elif isinstance(value, list):
        for item in value:
            yield from _png_names(item)
    elif isinstance(value, str) and value.endswith(".png") and "/" not in value:
        yield value


@contextlib.contextmanager
def staged_folder(dest) -> Iterator[Path]:
    """Yield an empty staging folder; on success its entries replace the kit's entries of ``dest``.

    :func:`nsfwkit.fileio.replace_owned` (kind ``viz``, locked while written): the previous run's
    entries go (no stale PNGs from a run with more layers), the user's own files in ``dest`` stay.
    A folder an older kit wrote (an ``nsfwkit.`` ``manifest.json``, no marker) is recognised and
    only the names its manifest records are replaced.

    Raises:
        FileExistsError: ``dest`` exists and is not an nsfwkit output folder (or not a folder).
        nsfwkit.fileio.FolderBusyError: another process is writing into ``dest``.
    """
    dest = Path(dest)
    try:
        with fileio.replace_owned(dest, "viz", overwrite=True, legacy=_legacy_viz) as stage:
            yield stage
    except fileio.ForeignFolderError as exc:
        raise fileio.ForeignFolderError(f"{exc} (not an nsfwkit output folder); choose another --out") from None


def safe_name(text: str) -> str:
    """A file-name-safe version of a layer path (``/`` and odd characters become ``_``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text).replace("/", "__")).strip("._")
    return name or "layer"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------
# filters/
# --------------------------------------------------------------------------------------------
def write_filters(results, out_dir, *, model_name: str, parameters: dict | None = None) -> Path:
    """Write filter images and ``manifest.json`` into ``out_dir`` (replacing a previous run).

    Args:
        results: :class:`~nsfwkit.viz.filters.FilterResult` objects, one per layer.
        out_dir: the folder (e.g. ``dist/filters``).
        model_name: recorded in the manifest.
        parameters: run parameters recorded in the manifest.

    Returns:
        The manifest path.
    """
    from .pixels import grid, png_bytes

    results = list(results)
    out_dir = Path(out_dir)
    layers = []
    with staged_folder(out_dir) as stage:
        for result in results:
            stem = safe_name(result.layer)
            entries = []
            for j, index in enumerate(result.filters):
                file = f"{stem}_{int(index)}.png"
                (stage / file).write_bytes(png_bytes(result.images[j]))
                start, reached = float(result.activation_start[j]), float(result.activation_reached[j])
                entries.append({
                    "layer": result.layer, "index": int(index), "file": file,
                    "activation_start": start, "activation_reached": reached,
                    "objective_start": float(result.objective_start[j]),
                    "objective_reached": float(result.objective_reached[j]),
                    "gain": reached / start if start > 0 else None,
                })
            grid_file = f"{stem}_grid.png"
            (stage / grid_file).write_bytes(png_bytes(grid(list(result.images), columns=min(8, len(result.images)))))
            layers.append({"layer": result.layer, "channels": int(result.channels), "grid": grid_file,
                           "seconds": float(result.seconds), "filters": entries})
        first = results[0] if results else None
        manifest = {
            "schema": FILTERS_SCHEMA,
            "created": _now(),
            "model": model_name,
            "image_size": int(first.images.shape[1]) if first is not None else None,
            "recipe": first.recipe if first is not None else None,
            "parameters": parameters or {},
            "layers": layers,
        }
        atomic_write_json(stage / "manifest.json", manifest)
    return out_dir / "manifest.json"


# --------------------------------------------------------------------------------------------
# activation/
# --------------------------------------------------------------------------------------------
def write_activation(
    out_dir,
    *,
    model_name: str,
    image: np.ndarray,
    class_names: Sequence[str],
    probabilities: np.ndarray,
    image_size: int | None = None,
    source: str | None = None,
    activations=None,
    cams: Sequence = (),
    channels: int = 8,
    most_active: int = 8,
    parameters: dict | None = None,
    alpha: float = 0.6,
    faithfulness: dict | None = None,
) -> Path:
    """Write activation maps, CAMs and ``manifest.json`` for one image into ``out_dir``.

    Args:
        out_dir: the folder (e.g. ``dist/activation``), replaced as a whole.
        model_name: recorded in the manifest.
        image: the image as the user sees it, ``(H, W, 3)`` 0-255.
        class_names: the model's classes.
        probabilities: ``(classes,)`` the model's output for this image.
        source: the image's file name (recorded, not read).
        activations: an :class:`~nsfwkit.viz.activations.ActivationResult` for this one image
            (batch of 1), or None.
        cams: :class:`~nsfwkit.viz.cam.CamResult` or :class:`~nsfwkit.viz.classmaps.ClassMaps`
            objects for this image (batch of 1 or one per class); a ``ClassMaps`` adds its
            caption, scale, raw range and empty flag to each entry; an Integrated Gradients result
            (either kind) its ``completeness_error``, ``score_difference`` and
            ``relative_completeness_error``.
        faithfulness: the ``faithfulness`` block of :func:`nsfwkit.viz.report.faithfulness_scores`;
            its per-map scores are copied into the matching ``cams`` entries too.
        channels: per-channel PNGs for the first ``channels`` channels of each layer.
        most_active: also the ``most_active`` channels with the highest mean activation.

    Returns:
        The manifest path.
    """
    from .activations import activation_grid, channel_image, most_active_channels
    from .pixels import colorize, overlay, png_bytes

    out_dir = Path(out_dir)
    img = np.clip(np.rint(np.asarray(image, np.float32)), 0, 255).astype(np.uint8)
    probs = np.asarray(probabilities, np.float64).reshape(-1)
    names = list(class_names) or [f"class_{i}" for i in range(probs.size)]
    top = int(np.argmax(probs))
    with staged_folder(out_dir) as stage:
        (stage / "input.png").write_bytes(png_bytes(img))
        layer_entries = []
        if activations is not None:
            for layer, maps in activations.layers.items():
                maps = np.asarray(maps)[0]
                if maps.ndim != 3:
                    continue
                stem = safe_name(layer)
                written: dict[int, dict] = {}

                def entry(c: int, written=written, stem=stem, maps=maps) -> dict:
                    if c not in written:
                        file = f"{stem}_{c}.png"
                        (stage / file).write_bytes(png_bytes(channel_image(maps[..., c])))
                        written[c] = {"index": c, "file": file, "mean": float(maps[..., c].mean()),
                                      "max": float(maps[..., c].max())}
                    return written[c]

                first = [entry(c) for c in range(min(channels, maps.shape[-1]))]
                active = [entry(int(c)) for c in most_active_channels(maps, count=most_active)]
                grid_file = f"{stem}_grid.png"
                (stage / grid_file).write_bytes(png_bytes(activation_grid(maps, channels=16)))
                layer_entries.append({"layer": layer, "shape": list(maps.shape), "grid": grid_file,
                                      "channels": first, "most_active": active})
        cam_entries = []
        done = set()
        for result in cams:
            for i in range(result.maps.shape[0]):
                c = int(result.class_index[i])
                if (result.method, result.layer, c) in done:  # the same map twice: keep the first
                    continue
                done.add((result.method, result.layer, c))
                label = safe_name(names[c] if c < len(names) else f"class_{c}")
                heat_file = f"cam_{result.method}_{label}.png"
                over_file = f"cam_{result.method}_{label}_overlay.png"
                heat = result.maps[i]
                if heat.shape != img.shape[:2]:
                    import tensorflow as tf

                    heat = np.clip(tf.image.resize(heat[..., None], img.shape[:2]).numpy()[..., 0], 0, 1)
                (stage / heat_file).write_bytes(png_bytes(colorize(heat)))
                (stage / over_file).write_bytes(png_bytes(overlay(img, heat, alpha=alpha)))
                cam_entries.append({
                    "method": result.method, "layer": result.layer, "class_index": c,
                    "class_name": names[c] if c < len(names) else f"class_{c}",
                    "probability": float(probs[c]) if c < probs.size else None,
                    "heatmap": heat_file, "overlay": over_file,
                    **_map_details(result, i), **_map_scores(faithfulness, result.method, c),
                })
        if cam_entries:
            shutil.copyfile(stage / cam_entries[0]["overlay"], stage / "cam.png")
        manifest = {
            "schema": ACTIVATION_SCHEMA,
            "created": _now(),
            "model": model_name,
            "image_size": image_size,
            "image": {"source": Path(source).name if source else None, "file": "input.png",
                      "width": int(img.shape[1]), "height": int(img.shape[0])},
            "class_names": names,
            "probabilities": probs.tolist(),
            "top_class": {"index": top, "name": names[top] if top < len(names) else None,
                          "probability": float(probs[top])},
            "parameters": {"channels": channels, "most_active": most_active, **(parameters or {})},
            "layers": layer_entries,
            "cams": cam_entries,
            "cam": "cam.png" if cam_entries else None,
        }
        if faithfulness is not None:
            manifest["faithfulness"] = faithfulness
        atomic_write_json(stage / "manifest.json", manifest)
    return out_dir / "manifest.json"


def _map_details(result, i: int) -> dict:
    """Caption, scale, raw range and emptiness of map ``i`` of a ClassMaps (none for a CamResult),
    and Integrated Gradients' completeness check."""
    details = _completeness(result, i)
    captions = getattr(result, "captions", None)
    if captions is None:
        return details
    from .classmaps import SCALE_NAMES

    label = SCALE_NAMES[result.scale]
    raw = result.raw[i]
    return {"caption": f"{captions[i]}; {label}", "scale": result.scale, "raw_min": float(raw.min()),
            "raw_max": float(raw.max()), "empty": bool(result.empty[i]), **details}


def _completeness(result, i: int) -> dict:
    """``completeness_error``, ``score_difference`` and their ratio for map ``i`` of an IG result."""
    error = getattr(result, "completeness_error", None)
    if error is None:
        return {}
    from .attributions import relative_completeness_error

    difference = float(result.score_difference[i])
    return {"completeness_error": float(error[i]), "score_difference": difference,
            "relative_completeness_error": float(relative_completeness_error(error[i], difference))}


def _map_scores(faithfulness: dict | None, method: str, class_index: int) -> dict:
    """The faithfulness numbers of one map (``method``, ``class_index``), without its class index."""
    for entry in ((faithfulness or {}).get("scores") or {}).get(method, ()):
        if entry["class_index"] == class_index:
            return {k: v for k, v in entry.items() if k != "class_index"}
    return {}
