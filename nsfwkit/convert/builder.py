"""The inference model: the ONE model builder every exporter uses (TF.js now; TFLite, ONNX...).

:func:`inference_model` turns a training-time Keras classifier into the model to export: no
random augmentation layers (TF.js cannot run them: ``Unknown layer: RandomFlip``,
AssignVariableOp), a named input (it becomes the graph model's input key), and the wanted input
range (0-255, or 0-1 for nsfwjs, which divides pixels by 255 before the model). The caller's
model is never modified.
"""

from __future__ import annotations

import numpy as np

__all__ = ["inference_model"]

#: Keras layers that only act in training (random augmentation): replaced by ``Identity`` on
#: export, because TF.js cannot run them (``Unknown layer: RandomFlip``, AssignVariableOp).
_AUGMENTATION_LAYERS = {"AugMix", "CutMix", "MixUp", "RandAugment", "Solarization"}


def _is_augmentation(layer) -> bool:
    name = type(layer).__name__
    return name.startswith("Random") or name in _AUGMENTATION_LAYERS


def _contains_augmentation(model) -> bool:
    for layer in model.layers:
        if _is_augmentation(layer):
            return True
        if hasattr(layer, "layers") and _contains_augmentation(layer):
            return True
    return False


def _copy_weights(source, target) -> None:
    """Copy weights layer by layer (matched by name, recursing into nested models)."""
    for layer in target.layers:
        if not layer.weights:
            continue
        try:
            original = source.get_layer(layer.name)
        except ValueError:
            continue  # a layer we added (e.g. a folded Rescaling): no weights to copy
        if hasattr(layer, "layers") and hasattr(original, "layers"):
            _copy_weights(original, layer)
        else:
            layer.set_weights(original.get_weights())


def inference_model(model, *, input_range: tuple[float, float] = (0.0, 255.0),
                    input_name: str = "image"):
    """The model to export: no augmentation layers, a named input, the wanted input range.

    The caller's model is never modified: when something must change, a clone with copied
    weights is returned; otherwise ``model`` itself.

    Args:
        model: a Keras classifier taking raw RGB 0-255 ``(N, S, S, 3)``.
        input_range: ``(0, 255)`` keeps the input as is. ``(0, 1)`` makes the input take
            pixels / 255 (nsfwjs's convention): the factor 255 is folded into the model's first
            layer when that is a ``Rescaling`` applied straight to the input (exactly), else a
            ``Rescaling(255)`` is prepended.
        input_name: name of the input layer (it becomes the graph model's input key).

    Returns:
        a ``keras.Model`` with one input named ``input_name``.
    """
    import keras

    lo, hi = (float(v) for v in input_range)
    if (lo, hi) not in ((0.0, 255.0), (0.0, 1.0)):
        raise ValueError(f"input_range must be (0, 255) or (0, 1), got {input_range}")
    if len(model.inputs) != 1:
        raise ValueError(f"expected a single-input classifier, got {len(model.inputs)} inputs")
    factor = 255.0 / hi  # 1 for 0-255 input, 255 for 0-1 input
    first_rescale = None
    if factor != 1.0:
        first = next((layer for layer in model.layers if type(layer).__name__ != "InputLayer"), None)
        try:
            fed_by_input = first is not None and first.input is model.inputs[0]
        except (AttributeError, ValueError):  # layer used several times, or not built
            fed_by_input = False
        if fed_by_input and type(first).__name__ == "Rescaling":
            first_rescale = first.name

    needs_clone = _contains_augmentation(model) or first_rescale is not None
    current = model
    if needs_clone:
        def clone_fn(layer):
            if _is_augmentation(layer):
                return keras.layers.Identity(name=layer.name)
            config = layer.get_config()
            if layer.name == first_rescale:
                scale = np.asarray(config["scale"], dtype=np.float64) * factor
                config["scale"] = scale.tolist() if scale.ndim else float(scale)
            return layer.__class__.from_config(config)

        current = keras.models.clone_model(model, clone_function=clone_fn, recursive=True)
        _copy_weights(model, current)
        if first_rescale is not None:
            factor = 1.0

    input_tensor = current.inputs[0]
    shape = tuple(input_tensor.shape[1:])
    current_name = getattr(input_tensor, "name", "")
    if factor != 1.0 or current_name != input_name:
        inputs = keras.Input(shape=shape, name=input_name)
        x = keras.layers.Rescaling(factor, name="from_unit_range")(inputs) if factor != 1.0 else inputs
        outputs = current(x)
        current = keras.Model(inputs, outputs, name=f"{model.name}_export")
    return current
