"""Shared by tests/test_convert_tflite.py and tests/test_convert_onnx.py: a tiny classifier with
every layer kind the runtimes must get right, its spec, and the runtime-package guard."""

from __future__ import annotations

import importlib.util

import numpy as np

from convert_helpers import missing


def require(*modules: str) -> None:
    """Skip when a runtime package is missing locally; FAIL under CI."""
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if absent:
        missing(f"needs {', '.join(absent)}: pip install -e .[runtimes] -c requirements/constraints.txt")


def build_runtime_model():
    """Raw 0-255 in, 5-class softmax out: Rescaling, conv, depthwise conv, batch norms with
    non-trivial statistics, a 1x1 conv and a dense layer of >= 1024 weights (so float16,
    dynamic-range and int8 builds really quantise something), dense softmax. Fixed weights."""
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(6.0, name="relu1")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(6.0, name="relu2")(x)
    x = keras.layers.Conv2D(64, 1, name="project")(x)
    x = keras.layers.ReLU(name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(32, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(5, activation="softmax", name="probs")(x)
    model = keras.Model(inputs, outputs, name="tiny_runtime")
    rng = np.random.default_rng(2)
    for name, channels in (("bn1", 16), ("bn2", 16)):
        model.get_layer(name).set_weights([
            rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.2, channels),
            rng.normal(0, 0.1, channels), rng.uniform(0.5, 2.0, channels)])
    return model


def runtime_spec():
    from nsfwkit.spec import NSFWJS_CLASSES, ModelSpec

    return ModelSpec(name="tiny_runtime", class_names=NSFWJS_CLASSES, image_size=32,
                     last_conv_layer="last_conv", source="tests")


def check_images():
    """Raw uint8 images of several sizes, none of them the exporters' own parity images."""
    from nsfwkit import samples

    imgs = samples.sample_images()
    rng = np.random.default_rng(11)
    return [imgs["astronaut"], imgs["coffee"][:200, :300], imgs["camera"], imgs["blobs"][:32, :32],
            rng.integers(0, 256, (45, 20, 3), dtype=np.uint8)]
