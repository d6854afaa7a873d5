"""Finding layers and building feature sub-models, without touching the caller's model.

Every visualisation needs the same thing: a model that maps the classifier's input to some inner
layers' outputs (and, for class maps, to the **pre-softmax** class scores). This module builds
such sub-models for any Keras functional model:

* flat graphs (the nsfwjs imports), branching graphs (InceptionV3's ``mixed`` blocks) and a
  backbone nested inside a classifier (``keras.applications.MobileNetV2`` used as a layer);
* layers are named by their name (searched through nested models, outermost first) or by a
  ``/``-separated path (``mobilenetv2_1.00_224/out_relu``);
* the softmax (or sigmoid) built into the last ``Dense`` is bypassed by a small wrapper layer
  computing ``x @ kernel + bias`` with the *same* variables, so the caller's model is never
  changed (no ``layer.activation = None`` trick) and the sub-model follows later weight updates.

Sub-models are cached per model (weakly), so repeated calls (a notebook, the layer browser) are
cheap.
"""

from __future__ import annotations

import difflib
import functools
from typing import Sequence

from ..kerasutil import cached, output_layer, to_dtype_policy

__all__ = [
    "LayerNotFoundError",
    "iter_layers",
    "find_layer",
    "layer_path",
    "is_conv_like",
    "conv_layers",
    "last_conv_layer",
    "default_filter_layers",
    "feature_model",
    "logits_model",
    "output_layer",
    "input_size",
    "as_model_input",
    "is_elementwise_activation",
    "forward_fn",
    "compiled",
    "mixed_precision_copy",
    "scores_to_probabilities",
]

# Layer classes whose 4-D outputs count as "conv-like" feature maps.
_ACTIVATION_TYPES = ("ReLU", "Activation", "LeakyReLU", "ELU", "PReLU")
_MERGE_TYPES = ("Concatenate", "Add")
_CONV_TYPES = ("Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Conv2DTranspose")
# 4-D layers that only move or rescale pixels: never listed as feature maps.
_PIXEL_TYPES = ("Rescaling", "Normalization", "ZeroPadding2D", "Cropping2D", "Resizing", "CenterCrop",
                "Dropout", "SpatialDropout2D", "GaussianNoise")


class LayerNotFoundError(ValueError):
    """A layer name that the model does not have; the message suggests close names."""


def _is_functional(layer) -> bool:
    import keras

    return isinstance(layer, keras.Model) and hasattr(layer, "inputs") and _has_graph(layer)


def _has_graph(model) -> bool:
    try:
        return bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):
        return False


def iter_layers(model, *, include_nested: bool = True) -> list[tuple[str, object]]:
    """All layers as ``(path, layer)`` in graph order, descending into nested models.

    Input layers are skipped; a nested model is listed itself (``backbone``) and then its
    layers (``backbone/conv1`` ...).
    """
    import keras

    out: list[tuple[str, object]] = []

    def walk(m, prefix: str) -> None:
        for layer in m.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            path = f"{prefix}{layer.name}"
            out.append((path, layer))
            if include_nested and isinstance(layer, keras.Model):
                walk(layer, path + "/")

    walk(model, "")
    return out


def layer_path(model, layer) -> str:
    """The path of ``layer`` (a name, path or layer object) inside ``model``."""
    target = find_layer(model, layer)
    for path, candidate in iter_layers(model):
        if candidate is target:
            return path
    raise LayerNotFoundError(f"{layer!r} is not a layer of model {model.name!r}")  # pragma: no cover


def find_layer(model, layer):
    """Resolve a layer name, ``/``-path or layer object to the layer object in ``model``.

    Raises:
        LayerNotFoundError: no such layer; the message lists the closest names.
    """
    import keras

    if isinstance(layer, keras.layers.Layer):
        if any(candidate is layer for _, candidate in iter_layers(model)):
            return layer
        raise LayerNotFoundError(f"layer object {layer.name!r} is not part of model {model.name!r}")
    if not isinstance(layer, str) or not layer:
        raise LayerNotFoundError(f"expected a layer name, got {layer!r}")
    layers = iter_layers(model)
    for path, candidate in layers:
        if path == layer:
            return candidate
    for _, candidate in layers:
        if candidate.name == layer:
            return candidate
    names = [p for p, _ in layers]
    close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise LayerNotFoundError(
        f"model {model.name!r} has no layer {layer!r}{hint} "
        f"(it has {len(names)} layers; list them with nsfwkit.viz.conv_layers(model))"
    )


def _output_shape(layer):
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):
        return None


def is_conv_like(layer) -> bool:
    """True when the layer outputs a 4-D ``(N, H, W, C)`` feature map with ``H, W > 1``."""
    import keras

    if isinstance(layer, keras.layers.InputLayer):
        return False
    shape = _output_shape(layer)
    if shape is None or len(shape) != 4:
        return False
    return all(d is None or d > 1 for d in shape[1:3])


def conv_layers(model) -> list[str]:
    """Paths of all conv-like layers (4-D feature maps), in graph order, nested models included.

    Layers that only rescale, pad or crop pixels (``Rescaling``, ``ZeroPadding2D``...) are left out.
    """
    import keras

    return [p for p, l in iter_layers(model)
            if is_conv_like(l) and not isinstance(l, keras.Model) and type(l).__name__ not in _PIXEL_TYPES]


def last_conv_layer(model, spec=None) -> str:
    """The layer CAMs use by default: ``spec.last_conv_layer`` if set, else the last conv-like layer.

    "Last" is in graph order over the flattened model, so for a classifier built on a nested
    backbone it is the backbone's last feature map.

    Raises:
        LayerNotFoundError: the model has no 4-D feature map at all.
    """
    if spec is not None and getattr(spec, "last_conv_layer", None):
        find_layer(model, spec.last_conv_layer)  # validate
        return layer_path(model, spec.last_conv_layer)
    candidates = conv_layers(model)
    if not candidates:
        raise LayerNotFoundError(f"model {model.name!r} has no convolutional (4-D) layer for a CAM")
    return candidates[-1]


def _is_feature_layer(layer) -> bool:
    """Post-activation feature maps worth maximising: activations, merges, activated convs."""
    name = type(layer).__name__
    if not is_conv_like(layer):
        return False
    if name in _ACTIVATION_TYPES or name in _MERGE_TYPES:
        return True
    if name in _CONV_TYPES:
        act = getattr(layer, "activation", None)
        return act is not None and getattr(act, "__name__", "linear") != "linear"
    return False


def default_filter_layers(model, *, count: int = 4) -> list[str]:
    """A spread of ``count`` feature layers from early to late (for filter visualisation).

    Picks among activation outputs, block merges (``Add``/``Concatenate``) and activated
    convolutions, evenly from about 1/8 of the way in to the last one (the very first layers
    show only colours and edges).
    """
    import keras

    candidates = [p for p, l in iter_layers(model) if _is_feature_layer(l) and not isinstance(l, keras.Model)]
    if not candidates:
        candidates = conv_layers(model)
    if not candidates:
        raise LayerNotFoundError(f"model {model.name!r} has no convolutional layers")
    if count >= len(candidates):
        return candidates
    if count == 1:
        return [candidates[-1]]
    start = len(candidates) // 8
    span = len(candidates) - 1 - start
    picks = sorted({start + round(i * span / (count - 1)) for i in range(count)})
    return [candidates[i] for i in picks]


def input_size(model) -> tuple[int, int] | None:
    """The model's fixed ``(height, width)`` input size, or None if it accepts any size."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        return None
    return int(shape[1]), int(shape[2])


# --------------------------------------------------------------------------------------------
# Sub-models
# --------------------------------------------------------------------------------------------
@functools.cache
def _head_layers():
    """``(PreActivation, LogOutput)``: the layer classes that bypass a squashing output (defined once)."""
    import keras

    class PreActivation(keras.layers.Layer):
        """The pre-activation output of a ``Dense``, computed with the *same* variables."""

        def __init__(self, dense, **kwargs):
            super().__init__(name=f"{dense.name}_pre_activation", **kwargs)
            self.dense = dense

        def call(self, inputs):
            out = keras.ops.matmul(inputs, self.dense.kernel)
            if self.dense.bias is not None:
                out = keras.ops.add(out, self.dense.bias)
            return out

        def compute_output_shape(self, input_shape):
            return tuple(input_shape[:-1]) + (self.dense.units,)

    class LogOutput(keras.layers.Layer):
        def call(self, inputs):
            return keras.ops.log(keras.ops.maximum(inputs, 1e-12))

    return PreActivation, LogOutput


def _activation_name(layer) -> str:
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", "linear") if act is not None else "linear"


def _linearize(layer, inputs, output):
    """Pre-softmax/sigmoid scores for the final layer's call (symbolic)."""
    pre, log_output = _head_layers()
    kind = type(layer).__name__
    if kind == "Dense" and _activation_name(layer) in ("softmax", "sigmoid"):
        return pre(layer)(inputs)
    if kind == "Softmax" or (kind == "Activation" and _activation_name(layer) in ("softmax", "sigmoid")):
        return inputs
    if _activation_name(layer) in ("softmax", "sigmoid"):
        # Unknown layer type with a squashing activation: log-probabilities have the same
        # argmax and, for softmax, differ from logits only by a per-image constant.
        return log_output(name=f"{layer.name}_log")(output)
    return output


class _Rebuilder:
    """Re-applies a functional graph (sharing every layer) while tapping chosen layers."""

    def __init__(self, targets: set[int], final: object | None, pre: set[int] = frozenset()):
        self.targets = targets
        self.pre = pre
        self.final = final
        self.taps: dict[int, object] = {}
        self.wrappers: dict[int, tuple[int, list[int]]] = {}
        self.clones: dict[int, object] = {}

    def contains(self, model) -> bool:
        import keras

        for layer in model.layers:
            if id(layer) in self.targets or layer is self.final:
                return True
            if isinstance(layer, keras.Model) and self.contains(layer):
                return True
        return False

    def rebuild(self, model):
        """Return ``(clone, tapped ids in order)`` where ``clone`` shares all layers."""
        import keras

        if not _has_graph(model):
            raise ValueError(f"model {model.name!r} is not a functional model")
        if isinstance(model, keras.Sequential):
            model = _sequential_as_functional(model)
        before = set(self.taps)
        clone = keras.models.clone_model(
            model, clone_function=self._clone, call_function=self._call
        )
        tapped = [i for i in self.taps if i not in before]
        return clone, tapped

    def _clone(self, layer):
        import keras

        if isinstance(layer, keras.Model) and self.contains(layer):
            key = id(layer)
            if key not in self.clones:
                inner, tapped = self.rebuild(layer)
                outputs = list(inner.outputs)
                wrapper = keras.Model(
                    inner.inputs[0] if len(inner.inputs) == 1 else inner.inputs,
                    outputs + [self.taps[i] for i in tapped], name=f"{layer.name}_tapped",
                )
                self.wrappers[id(wrapper)] = (len(outputs), tapped)
                self.clones[key] = wrapper
            return self.clones[key]
        return layer

    def _call(self, layer, *args, **kwargs):
        output = layer(*args, **kwargs)
        if id(layer) in self.wrappers:
            n_main, tapped = self.wrappers[id(layer)]
            outs = list(output)
            for i, tensor in zip(tapped, outs[n_main:]):
                self.taps[i] = tensor
            output = outs[0] if n_main == 1 else outs[:n_main]
        if id(layer) in self.targets:
            self.taps[id(layer)] = (args[0] if args else kwargs["inputs"]) if id(layer) in self.pre else output
        if layer is self.final:
            output = _linearize(layer, args[0] if args else kwargs.get("inputs"), output)
        return output


def _sequential_as_functional(model):
    import keras

    shape = tuple(model.inputs[0].shape)[1:]
    inputs = keras.Input(shape, name=model.inputs[0].name)
    x = inputs
    for layer in model.layers:
        x = layer(x)
    return keras.Model(inputs, x, name=model.name)


def is_elementwise_activation(layer) -> bool:
    """True for layers that only apply an activation (``ReLU``, ``Activation``, ...)."""
    return type(layer).__name__ in _ACTIVATION_TYPES


def feature_model(model, layers: Sequence | str | None = (), *, head: str | None = "logits",
                  pre_activation: bool = False):
    """A model returning the chosen layers' outputs, then (optionally) the class scores.

    Args:
        model: a functional (or Sequential) ``keras.Model`` with one input and one output.
        layers: layer names / paths / objects (a single one is accepted too).
        head: ``"logits"`` appends the pre-softmax scores (the final softmax/sigmoid bypassed,
            same variables), ``"output"`` appends the model's own output (probabilities), None
            appends nothing.
        pre_activation: for layers that only apply an activation (``ReLU``, ``Activation``),
            return their *input* instead (same channels, no ReLU/ReLU6 clipping: what filter
            optimisation ascends, so dead or saturated units still get a gradient).

    Returns:
        A ``keras.Model`` with the same input whose outputs are
        ``[layer_1, ..., layer_k, scores]`` (a list, even for one output). It shares every
        layer and variable with ``model``, which is left unchanged.

    Raises:
        LayerNotFoundError: a layer is not in the model.
    """
    import keras

    if head not in ("logits", "output", None):
        raise ValueError(f"head must be 'logits', 'output' or None, got {head!r}")
    if isinstance(layers, (str, keras.layers.Layer)):
        layers = [layers]
    layers = list(layers or [])
    if len(model.inputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs; expected one")
    if head is not None and len(model.outputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.outputs)} outputs; expected one")
    objects = [find_layer(model, name) for name in layers]
    for name, obj in zip(layers, objects):
        if isinstance(obj, keras.Model):
            raise LayerNotFoundError(
                f"{name!r} is a nested model; name one of its layers instead "
                f"(e.g. {obj.name}/{output_layer(obj).name})"
            )
    pre = {id(o) for o in objects if pre_activation and is_elementwise_activation(o)}
    key = ("feature_model", tuple(id(o) for o in objects), head, tuple(sorted(pre)))
    return cached(model, key, lambda: _build_feature_model(model, objects, head, pre))


def _build_feature_model(model, objects, head, pre):
    import keras

    final = output_layer(model) if head == "logits" else None
    needs_logits = final is not None and _linearize_needed(final)
    direct = {id(l) for l in model.layers}
    flat = all(id(o) in direct for o in objects) and (not needs_logits or id(final) in direct)
    if flat:
        outputs = [o.input if id(o) in pre else o.output for o in objects]
        if head == "output":
            outputs.append(model.outputs[0])
        elif head == "logits":
            if needs_logits:
                outputs.append(_linearize(final, final.input, final.output))
            else:
                outputs.append(model.outputs[0])
        sub = keras.Model(model.inputs[0], outputs, name=f"{model.name}_features")
    else:
        rebuilder = _Rebuilder({id(o) for o in objects}, final if needs_logits else None, pre)
        clone, _ = rebuilder.rebuild(model)
        outputs = [rebuilder.taps[id(o)] for o in objects]
        if head is not None:
            outputs.append(clone.outputs[0])
        sub = keras.Model(clone.inputs[0], outputs, name=f"{model.name}_features")
    return sub


def _linearize_needed(layer) -> bool:
    kind = type(layer).__name__
    return kind == "Softmax" or _activation_name(layer) in ("softmax", "sigmoid")


def logits_model(model):
    """A model returning the pre-softmax class scores ``(N, classes)`` of ``model`` (no copy of
    its weights: it shares them, so randomising a clone's weights shows through)."""
    import keras

    sub = feature_model(model, [], head="logits")
    return keras.Model(sub.inputs[0], sub.outputs[-1], name=f"{model.name}_logits")


def scores_to_probabilities(model, scores):
    """Class probabilities ``(N, classes)`` from the pre-activation scores of :func:`feature_model`.

    ``scores`` are what ``head="logits"`` returns. They become probabilities the way the model
    itself would make them: a softmax head (``Dense(..., softmax)``, ``Softmax`` layer) gets a
    softmax, a sigmoid head an element-wise sigmoid; a model whose output is already unnormalised
    logits (linear last layer) gets a softmax, or a sigmoid when it has a single output unit
    (a binary logit, where a softmax over one unit would always be 1).

    Args:
        model: the classifier the scores came from.
        scores: ``(N, classes)`` array.

    Returns:
        ``float32`` ``(N, classes)`` in ``[0, 1]``.
    """
    import numpy as np

    z = np.asarray(scores, np.float64)
    final = output_layer(model)
    kind, act = type(final).__name__, _activation_name(final)
    if act == "sigmoid" and kind not in ("Dense", "Activation"):
        p = np.exp(z)  # _linearize returned log-probabilities
    elif act == "sigmoid" or (kind != "Softmax" and act != "softmax" and z.shape[-1] == 1):
        p = 1.0 / (1.0 + np.exp(-z))
    else:
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        p = e / e.sum(axis=-1, keepdims=True)
    return p.astype(np.float32)


def as_model_input(model, images):
    """Bring ``images`` to the model's input: a float32 batch at its input size.

    Args:
        model: the classifier (its input size is read from ``model.inputs``).
        images: ``(H, W, C)`` or ``(N, H, W, C)``, any real dtype, raw 0-255.

    Returns:
        ``(batch, (H, W))``: ``float32`` ``(N, S, S, C)`` resized the nsfwjs way when the sizes
        differ, and the callers' original spatial size (CAMs are returned at that size).
    """
    import numpy as np

    from ..images import resize

    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"images must be (H, W, C) or (N, H, W, C), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("images is an empty batch")
    original = (int(arr.shape[1]), int(arr.shape[2]))
    size = input_size(model)
    if size is not None and original != size:
        arr = resize(arr, size)
    return np.ascontiguousarray(arr, dtype=np.float32), original


def compiled(**options):
    """``@tf.function(**options)`` for closures built once per model and layer.

    TensorFlow counts traces per Python *code object*, and the closures one factory builds for
    several layers share theirs: the fifth layer's first trace warned "5 out of the last 5 calls
    ... triggered tf.function retracing" although no function had been traced twice. Wrapped in a
    ``functools.partial`` (which has no code object) each function is counted on its own, so real
    retracing of one function still warns.
    """
    import tensorflow as tf

    def decorate(fn):
        return tf.function(functools.partial(fn), **options)

    return decorate


def forward_fn(model, layers=(), *, head: str | None = "output"):
    """A compiled forward pass ``x -> [layer outputs..., head]`` (float32), cached per model."""
    layers = tuple(layers)

    def build():
        import tensorflow as tf

        sub = feature_model(model, list(layers), head=head)

        @compiled(reduce_retracing=True, autograph=False)
        def fn(x):
            return [tf.cast(t, tf.float32) for t in tf.nest.flatten(sub(x, training=False))]

        return fn

    return cached(model, ("forward", layers, head), build)


def mixed_precision_copy(model, *, policy: str = "mixed_float16"):
    """A copy of ``model`` computing in ``policy`` (float16 math, float32 variables), for GPUs.

    :func:`nsfwkit.kerasutil.to_dtype_policy`: the output layer stays float32 so scores and softmax
    keep full precision; weights are copied, the caller's model is untouched. Visualisation
    functions cast what they read to float32.
    """
    return to_dtype_policy(model, policy)
