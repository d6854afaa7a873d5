"""nsfwkit: a notebook-centred research kit for NSFW image classification on Keras 3.

Importing ``nsfwkit`` is cheap and has no side effects: submodules (and TensorFlow) load on
first use, e.g. ``nsfwkit.zoo.load("mobilenet_v2")`` or ``from nsfwkit import classify``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "cli", "classify", "frames", "images", "jsliteral", "paths", "pipeline", "samples", "spec", "zoo",
    "data", "download", "demo_data", "train", "evaluate", "convert", "viz", "widgets", "web",
    "parity", "serve", "webview", "jupyter", "progress",
}

__all__ = sorted(_SUBMODULES) + ["__version__"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
