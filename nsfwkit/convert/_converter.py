"""The TensorFlow.js converter import (``tensorflowjs``, optional) and its import-time stand-ins.

The converter is imported lazily, only by the code that converts: see
``requirements/convert.txt`` for the install recipe that keeps TensorFlow 2.21, and
:func:`_import_converter` for why it needs two import-time stand-in modules.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types

__all__ = ["ConverterMissingError", "TFJS_CONVERTER_VERSION"]

#: The Python converter pinned by requirements/convert.txt.
TFJS_CONVERTER_VERSION = "4.22.0"


class ConverterMissingError(ImportError):
    """The ``tensorflowjs`` converter package is not installed."""


def _stand_in(name: str, doc: str) -> types.ModuleType:
    module = types.ModuleType(name, doc)
    module.__spec__ = importlib.util.spec_from_loader(name, loader=None)
    return module


def _import_converter():
    """Import ``tensorflowjs``'s SavedModel converter module without its unused heavy deps.

    ``tensorflowjs`` 4.22 (the newest release) imports every converter at package import:
    ``tf_saved_model_conversion_v2`` does ``import tensorflow_decision_forests`` (to list TF-DF
    ops), and ``converters/__init__`` imports ``jax_conversion`` (``from jax.experimental import
    jax2tf``). Neither is used when converting a SavedModel. The real TF-DF 1.12 does not load on
    TF 2.21 (undefined symbol in inference.so) and its pin would downgrade TensorFlow; real jax
    costs ~520 MB. So, *only when those packages are not installed*, and *only for the duration
    of this import*, empty stand-in modules sit in ``sys.modules``; they are removed right after,
    so nothing else in the process ever sees a fake ``jax``. Keras is imported first: Keras
    checks for an importable jax at its own import and would otherwise find the stand-in.

    Returns:
        the module ``tensorflowjs.converters.tf_saved_model_conversion_v2``.

    Raises:
        ConverterMissingError: ``tensorflowjs`` is not installed (message gives the recipe).
    """
    loaded = sys.modules.get("tensorflowjs.converters.tf_saved_model_conversion_v2")
    if loaded is not None:
        return loaded
    if importlib.util.find_spec("tensorflowjs") is None:
        raise ConverterMissingError(
            "the TensorFlow.js converter is not installed: run `pip install --no-deps "
            "-r requirements/convert.txt` (plain `pip install tensorflowjs` downgrades TensorFlow)"
        )
    import keras  # noqa: F401  (must precede any jax stand-in; see above)

    stand_ins: dict[str, types.ModuleType] = {}
    if importlib.util.find_spec("tensorflow_decision_forests") is None:
        stand_ins["tensorflow_decision_forests"] = _stand_in(
            "tensorflow_decision_forests", "nsfwkit stand-in: TF-DF is unused by SavedModel conversion")
    if importlib.util.find_spec("jax") is None:
        jax = _stand_in("jax", "nsfwkit stand-in: jax is unused by SavedModel conversion")
        jax.experimental = _stand_in("jax.experimental", "nsfwkit stand-in")
        jax.experimental.jax2tf = _stand_in("jax.experimental.jax2tf", "nsfwkit stand-in")
        stand_ins.update({"jax": jax, "jax.experimental": jax.experimental,
                          "jax.experimental.jax2tf": jax.experimental.jax2tf})
    try:
        sys.modules.update(stand_ins)
        from tensorflowjs.converters import tf_saved_model_conversion_v2 as conversion
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return conversion


@contextlib.contextmanager
def _quiet_tf():
    """Silence absl/TF INFO chatter from grappler during conversion."""
    import logging

    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
