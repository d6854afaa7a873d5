"""Helpers for the export / TF.js / web view tests (tests/test_convert*.py, test_web.py): the tools
they need (``require_*``: skip locally, fail in CI), a tiny BN convnet and its spec, gallery
manifests. The fixtures (``default_model``, ``exported``, ``test_images``) are in conftest.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
#: Test artefacts (screenshots) go here; CI can upload the folder.
ARTIFACTS = Path(__file__).resolve().parent.parent / "dist" / "test-artifacts"


def missing(reason: str):
    """Skip a test whose tool is missing locally; FAIL it in CI (``$CI`` set), where a skip
    would let a browser/Node/converter test pass without running."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but this test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def require_node():
    from nsfwkit import convert

    try:
        convert._node()
    except convert.NodeMissingError as exc:
        missing(f"needs Node.js and node_modules: {exc}")


def require_chromium():
    require_node()
    if not Path(CHROMIUM).is_file():
        missing(f"needs Chromium at {CHROMIUM} (apt-get install -y chromium)")


def require_converter():
    import importlib.util

    if importlib.util.find_spec("tensorflowjs") is None:
        missing("needs the TF.js converter: pip install --no-deps -r requirements/convert.txt")


def build_tiny_model(*, augment: bool = False, input_name: str | None = "image"):
    """A small BN convnet taking raw 0-255 (5 classes), random but fixed weights.

    ``augment`` adds a RandomFlip + RandomRotation block (train-time only layers);
    ``input_name=None`` leaves Keras's automatic input name.
    """
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((32, 32, 3), name=input_name) if input_name else keras.Input((32, 32, 3))
    x = inputs
    if augment:
        x = keras.layers.RandomFlip("horizontal", name="flip")(x)
        x = keras.layers.RandomRotation(0.1, name="rotate")(x)
    x = keras.layers.Rescaling(1 / 255.0, name="rescale_0_255")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(5, activation="softmax", name="dense")(x)
    model = keras.Model(inputs, outputs, name="tiny")
    bn = model.get_layer("bn")
    rng = np.random.default_rng(1)
    bn.set_weights([rng.uniform(0.5, 2, 8), rng.normal(0, 0.3, 8), rng.normal(0, 0.1, 8),
                    rng.uniform(0.5, 2, 8)])
    return model


def tiny_spec():
    from nsfwkit.spec import NSFWJS_CLASSES, ModelSpec

    return ModelSpec(name="tiny", class_names=NSFWJS_CLASSES, image_size=32,
                     last_conv_layer="last_conv", source="tests")


def write_gallery_manifests(root: Path) -> dict[str, int]:
    """Write small ``filters/`` and ``activation/`` folders in the nsfwkit.viz schema (v1) under
    ``root``; returns the number of images each gallery should show in total."""
    from PIL import Image

    def png(path: Path, seed: int, size: int = 32):
        arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(arr).save(path)

    filters = root / "filters"
    filters.mkdir(parents=True)
    layers = []
    for li, layer in enumerate(("block_1_expand_relu", "out_relu")):
        entries = []
        for j in range(3):
            file = f"{layer}_{j}.png"
            png(filters / file, 10 * li + j)
            entries.append({"layer": layer, "index": j, "file": file, "activation_start": 0.1,
                            "activation_reached": 2.0, "gain": 20.0})
        png(filters / f"{layer}_grid.png", 99 + li)
        layers.append({"layer": layer, "channels": 16, "grid": f"{layer}_grid.png", "seconds": 1.0,
                       "filters": entries})
    (filters / "manifest.json").write_text(json.dumps({
        "schema": "nsfwkit.filters/1", "created": "2025-01-01T00:00:00Z", "model": "mobilenet_v2",
        "image_size": 32, "recipe": "quality", "parameters": {"steps": 8}, "layers": layers}))

    act = root / "activation"
    act.mkdir(parents=True)
    png(act / "input.png", 7, 64)
    alayers = []
    for li, layer in enumerate(("block_3_expand_relu", "out_relu")):
        chans = []
        for c in range(4):
            png(act / f"{layer}_{c}.png", 200 + 10 * li + c, 16)
            chans.append({"index": c, "file": f"{layer}_{c}.png", "mean": 0.5, "max": 2.0})
        png(act / f"{layer}_grid.png", 300 + li)
        alayers.append({"layer": layer, "shape": [7, 7, 1280], "grid": f"{layer}_grid.png",
                        "channels": chans, "most_active": chans[:2]})
    png(act / "cam_grad_cam_Neutral.png", 400, 64)
    png(act / "cam_grad_cam_Neutral_overlay.png", 401, 64)
    shutil.copyfile(act / "cam_grad_cam_Neutral_overlay.png", act / "cam.png")
    (act / "manifest.json").write_text(json.dumps({
        "schema": "nsfwkit.activation/1", "created": "2025-01-01T00:00:00Z", "model": "mobilenet_v2",
        "image_size": 224, "image": {"source": "chelsea.png", "file": "input.png", "width": 64, "height": 64},
        "class_names": ["Drawing", "Hentai", "Neutral", "Porn", "Sexy"],
        "probabilities": [0.01, 0.01, 0.95, 0.02, 0.01],
        "top_class": {"index": 2, "name": "Neutral", "probability": 0.95},
        "parameters": {"channels": 4}, "layers": alayers,
        "cams": [{"method": "grad_cam", "layer": "out_relu", "class_index": 2, "class_name": "Neutral",
                  "probability": 0.95, "heatmap": "cam_grad_cam_Neutral.png",
                  "overlay": "cam_grad_cam_Neutral_overlay.png"}],
        "cam": "cam.png"}))
    # filters: 3 per layer x 2 layers; activation: (input + 4 channels) x 2 layers; cam: 2
    return {"filters": 6, "activation": 10, "cam": 2}
