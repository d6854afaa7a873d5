"""Pretrained models, offline: nsfwjs's bundled NSFW classifiers imported into Keras 3.

The npm package ``nsfwjs@4.4.0`` (MIT) bundles GantMan's Keras 2.2.4 classifiers as TensorFlow.js
layers models wrapped in UMD JavaScript files. :func:`build` reads those files *as data* (see
:mod:`nsfwkit.jsliteral`; no JavaScript runs), rebuilds each topology in Keras 3, dequantises the
uint8 weights exactly as TF.js does (``q * scale + min`` in float64, stored as float32), and
saves a ``.keras`` file plus a :class:`~nsfwkit.spec.ModelSpec` JSON into the model cache.

Every model a user gets here takes **raw RGB 0-255** and carries its own scaling (a ``Rescaling``
layer right after the named input ``image``), so no caller can get the preprocessing wrong; the
graph stays flat, so CAMs and feature sub-models reach every layer.

``load_model`` also accepts a local ``.keras`` / ``.h5`` file (safe mode unless the caller opts
out) and ``keras:<Application>`` names for ``keras.applications`` backbones with ImageNet weights
(needs internet the first time; Keras caches the download).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import zipfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import paths
from .fileio import atomic_path
from .jsliteral import extract_exports_literal
from .spec import NSFWJS_CLASSES, ModelSpec, spec_path_for

__all__ = [
    "NSFWJS_VERSION",
    "PRETRAINED",
    "DEFAULT_MODEL",
    "find_nsfwjs",
    "import_nsfwjs",
    "build",
    "load",
    "load_model",
    "keras_application",
    "with_input_scale",
    "available",
]

#: The npm release whose bundled models we import (and which the parity test runs).
NSFWJS_VERSION = "4.4.0"
#: Importable nsfwjs models -> (input size, last conv layer). ``mobilenet_v2_mid`` is a graph
#: model (BN folded), not a Keras topology, so it is not importable into Keras.
PRETRAINED: dict[str, tuple[int, str]] = {
    "mobilenet_v2": (224, "out_relu"),
    "inception_v3": (299, "mixed10"),
}
DEFAULT_MODEL = "mobilenet_v2"
_BUILD_FORMAT = 1  # bump when the import changes, so caches rebuild


class ModelNotFoundError(FileNotFoundError):
    """A model name or file that cannot be found or built."""


# --------------------------------------------------------------------------------------------
# Finding the nsfwjs package
# --------------------------------------------------------------------------------------------
def _models_root(candidate: Path) -> Path | None:
    for sub in ("dist/models", "package/dist/models", "models", "."):
        root = candidate / sub
        if (root / "mobilenet_v2" / "model.min.js").is_file():
            return root.resolve()
    return None


def find_nsfwjs(source: str | os.PathLike | None = None) -> Path:
    """Locate nsfwjs's ``dist/models`` folder.

    Looks at, in order: ``source`` (a package folder, its ``dist/models``, or an ``npm pack``
    tarball), ``$NSFWKIT_NSFWJS``, ``node_modules/nsfwjs`` in the repository and the working
    directory; failing those, runs ``npm pack nsfwjs@NSFWJS_VERSION`` into the cache (the npm
    registry is the only network this needs).

    Raises:
        ModelNotFoundError: none of these worked; the message says how to fix it.
    """
    candidates: list[Path] = []
    if source is not None:
        candidates.append(Path(source))
    if os.environ.get("NSFWKIT_NSFWJS"):
        candidates.append(Path(os.environ["NSFWKIT_NSFWJS"]))
    candidates += [paths.repo_root() / "node_modules" / "nsfwjs", Path.cwd() / "node_modules" / "nsfwjs"]
    candidates.append(paths.cache_dir() / "npm" / f"nsfwjs-{NSFWJS_VERSION}")
    for cand in candidates:
        cand = cand.expanduser()
        if cand.is_file() and cand.name.endswith((".tgz", ".tar.gz")):
            cand = _unpack_tarball(cand)
        if cand.is_dir():
            root = _models_root(cand)
            if root:
                return root
        if source is not None and cand == Path(source):
            raise ModelNotFoundError(f"{source}: not an nsfwjs package, models folder or tarball")
    return _npm_pack()


def _unpack_tarball(tarball: Path) -> Path:
    dest = paths.cache_dir() / "npm" / tarball.name.replace(".tgz", "").replace(".tar.gz", "")
    if not _models_root(dest):
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=_ensure(dest.parent)))
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="data")  # 'data' refuses absolute paths and links out
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    return dest


def _npm_pack() -> Path:
    npm = shutil.which("npm")
    if not npm:
        raise ModelNotFoundError(
            "nsfwjs models not found and npm is not installed: run `npm install` in the "
            f"repository, or pass the path of `npm pack nsfwjs@{NSFWJS_VERSION}`'s tarball"
        )
    workdir = Path(tempfile.mkdtemp(prefix="nsfwjs-pack-"))
    try:
        proc = subprocess.run(
            [npm, "pack", f"nsfwjs@{NSFWJS_VERSION}", "--silent"],
            cwd=workdir, capture_output=True, text=True, timeout=600,
        )
        tarballs = list(workdir.glob("nsfwjs-*.tgz"))
        if proc.returncode != 0 or not tarballs:
            raise ModelNotFoundError(f"`npm pack nsfwjs@{NSFWJS_VERSION}` failed: {proc.stderr.strip()}")
        root = _models_root(_unpack_tarball(tarballs[0]))
        if root is None:
            raise ModelNotFoundError("the nsfwjs tarball holds no dist/models")
        return root
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------------------------
# Importing one model
# --------------------------------------------------------------------------------------------
def _read_bundle(models_root: Path, name: str) -> tuple[dict, list[dict], bytes]:
    folder = models_root / name
    model_file = folder / "model.min.js"
    if not model_file.is_file():
        raise ModelNotFoundError(f"{folder}: no model.min.js (is this nsfwjs {NSFWJS_VERSION}?)")
    bundle = extract_exports_literal(model_file.read_text(encoding="utf-8"), origin=str(model_file))
    topology = bundle["modelTopology"]
    manifest = bundle["weightsManifest"]
    data = bytearray()
    for group in manifest:
        for shard in group["paths"]:
            shard_file = folder / f"{shard}.min.js"
            encoded = extract_exports_literal(shard_file.read_text(encoding="ascii"), origin=str(shard_file))
            data += base64.b64decode(encoded, validate=True)
    specs = [w for group in manifest for w in group["weights"]]
    return topology, specs, bytes(data)


def _dequantize(specs: list[dict], data: bytes) -> dict[str, np.ndarray]:
    """Decode a TF.js weights buffer the way TF.js does (``io/io_utils.ts: decodeWeights``)."""
    sizes = {"uint8": 1, "uint16": 2, "float16": 2, "float32": 4, "int32": 4}
    out: dict[str, np.ndarray] = {}
    offset = 0
    for spec in specs:
        shape = tuple(spec["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        quant = spec.get("quantization")
        dtype = quant["dtype"] if quant else spec["dtype"]
        nbytes = count * sizes[dtype]
        raw = data[offset : offset + nbytes]
        if len(raw) != nbytes:
            raise ValueError(f"weights buffer too short for {spec['name']}")
        offset += nbytes
        if quant and dtype in ("uint8", "uint16"):
            q = np.frombuffer(raw, dtype="<u1" if dtype == "uint8" else "<u2").astype(np.float64)
            values = (q * float(quant["scale"]) + float(quant["min"])).astype(np.float32)
        elif quant and dtype == "float16":
            values = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        else:
            values = np.frombuffer(raw, dtype="<f4" if dtype == "float32" else "<i4").copy()
        out[spec["name"]] = values.reshape(shape)
    if offset != len(data):
        raise ValueError(f"weights buffer has {len(data) - offset} unused bytes")
    return out


def _with_raw_rgb_input(config: dict, input_name: str = "image") -> dict:
    """Rename the input layer and insert ``Rescaling(1/255)`` after it, keeping the graph flat."""
    config = copy.deepcopy(config)
    layers = config["layers"]
    inputs = [l for l in layers if l["class_name"] == "InputLayer"]
    if len(inputs) != 1:
        raise ValueError("expected exactly one input layer")
    old = inputs[0]["name"]
    inputs[0]["name"] = inputs[0]["config"]["name"] = input_name
    rescale = "rescale_0_255"

    def rewire(node: Any) -> Any:
        if isinstance(node, list):
            if len(node) >= 3 and node[0] == old and isinstance(node[1], int):
                return [rescale, *node[1:]]
            return [rewire(n) for n in node]
        return node

    for layer in layers:
        if layer is not inputs[0]:
            layer["inbound_nodes"] = rewire(layer["inbound_nodes"])
    position = layers.index(inputs[0]) + 1
    layers.insert(
        position,
        {
            "name": rescale,
            "class_name": "Rescaling",
            "config": {"name": rescale, "scale": 1.0 / 255.0, "offset": 0.0, "dtype": "float32"},
            "inbound_nodes": [[[input_name, 0, 0, {}]]],
        },
    )
    config["input_layers"] = [[input_name, 0, 0]]
    config["output_layers"] = rewire(config["output_layers"])
    return config


#: Layer classes an nsfwjs bundle may contain: plain built-in layers, nothing that carries code.
_ALLOWED_LAYERS = frozenset({
    "InputLayer", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "BatchNormalization", "ReLU",
    "Activation", "Add", "Concatenate", "ZeroPadding2D", "MaxPooling2D", "AveragePooling2D",
    "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Dense", "Dropout", "Flatten", "Reshape",
    "Rescaling",
})


def _check_layer_classes(config: dict, *, origin: str) -> None:
    """Refuse a topology with layers outside :data:`_ALLOWED_LAYERS` (e.g. ``Lambda``)."""
    found = {layer.get("class_name") for layer in config.get("layers", [])}
    odd = sorted(str(c) for c in found - _ALLOWED_LAYERS)
    if odd:
        raise ValueError(f"{origin}: unexpected layer classes {odd}; refusing to build this bundle")


def import_nsfwjs(name: str = DEFAULT_MODEL, *, source: str | os.PathLike | None = None):
    """Build one of nsfwjs's bundled classifiers as a Keras 3 model, in memory.

    Args:
        name: ``mobilenet_v2`` or ``inception_v3``.
        source: where nsfwjs is (see :func:`find_nsfwjs`).

    Returns:
        ``(model, spec)``: a functional ``keras.Model`` taking ``(N, S, S, 3)`` raw RGB 0-255 and
        returning ``(N, 5)`` softmax probabilities, and its :class:`ModelSpec`.
    """
    import keras

    if name not in PRETRAINED:
        raise ModelNotFoundError(f"unknown pretrained model {name!r}; choose from {sorted(PRETRAINED)}")
    root = find_nsfwjs(source)
    topology, weight_specs, data = _read_bundle(root, name)
    _check_layer_classes(topology["model_config"]["config"], origin=str(root / name))
    config = _with_raw_rgb_input(topology["model_config"]["config"])
    config["name"] = f"nsfwjs_{name}"
    model = keras.Model.from_config(config)

    weights = _dequantize(weight_specs, data)
    by_path = {}
    for var in model.weights:
        by_path[var.path] = var
    assigned = set()
    for js_name, value in weights.items():
        path = re.sub(r"/depthwise_kernel$", "/kernel", js_name)  # Keras 2 -> Keras 3 naming
        var = by_path.get(path)
        if var is None:
            raise ValueError(f"{name}: weight {js_name} has no matching Keras variable")
        if tuple(var.shape) != value.shape:
            raise ValueError(f"{name}: {js_name} shape {value.shape} != {tuple(var.shape)}")
        var.assign(value)
        assigned.add(path)
    missing = sorted(set(by_path) - assigned)
    if missing:
        raise ValueError(f"{name}: variables without weights in the bundle: {missing[:5]}")

    size, last_conv = PRETRAINED[name]
    digest = hashlib.sha256(data).hexdigest()
    spec = ModelSpec(
        name=name,
        class_names=NSFWJS_CLASSES,
        image_size=size,
        last_conv_layer=last_conv,
        source=f"npm:nsfwjs@{NSFWJS_VERSION}/dist/models/{name}",
        extra={
            "weights_sha256": digest,
            "keras_version": keras.__version__,
            "build_format": _BUILD_FORMAT,
            "license": "MIT (nsfwjs, GantMan/nsfw_model)",
        },
    )
    return model, spec


# --------------------------------------------------------------------------------------------
# The cache: build once at set-up, load many times
# --------------------------------------------------------------------------------------------
def _cached_paths(name: str, cache: Path | None = None) -> tuple[Path, Path]:
    model_path = (cache or paths.models_dir()) / f"{name}.keras"
    return model_path, spec_path_for(model_path)


def _is_current(name: str, cache: Path | None = None) -> bool:
    model_path, spec_path = _cached_paths(name, cache)
    if not (model_path.is_file() and spec_path.is_file()):
        return False
    try:
        spec = ModelSpec.load(spec_path)
    except (ValueError, OSError, TypeError):
        return False
    return spec.extra.get("build_format") == _BUILD_FORMAT and spec.source.startswith(
        f"npm:nsfwjs@{NSFWJS_VERSION}/"
    )


def build(
    names: tuple[str, ...] | list[str] = tuple(PRETRAINED),
    *,
    source: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    force: bool = False,
    verbose: bool = True,
) -> dict[str, Path]:
    """Import nsfwjs models into the cache (``.keras`` + spec JSON), skipping current ones.

    Writes are atomic (temporary file, then rename), so an interrupted build never leaves a
    half-written model that later loads.

    Returns:
        ``{name: path of the .keras file}``.
    """
    cache_path = Path(cache) if cache else paths.models_dir()
    out = {}
    for name in names:
        model_path, spec_path = _cached_paths(name, cache_path)
        if not force and _is_current(name, cache_path):
            if verbose:
                print(f"{name}: up to date ({model_path})")
            out[name] = model_path
            continue
        if verbose:
            print(f"{name}: importing from nsfwjs@{NSFWJS_VERSION} ...", flush=True)
        model, spec = import_nsfwjs(name, source=source)
        with atomic_path(model_path) as tmp:
            model.save(tmp)
        spec.save(spec_path)
        if verbose:
            print(f"{name}: wrote {model_path} ({model_path.stat().st_size / 1e6:.1f} MB)")
        out[name] = model_path
    return out


def available() -> dict[str, bool]:
    """Pretrained names and whether each is built in the cache."""
    return {name: _is_current(name) for name in PRETRAINED}


def _infer_spec(model, name: str) -> ModelSpec:
    shape = model.inputs[0].shape
    size = shape[1] if shape[1] is not None else 224
    classes = int(model.outputs[0].shape[-1])
    names = NSFWJS_CLASSES if classes == len(NSFWJS_CLASSES) else tuple(f"class_{i}" for i in range(classes))
    return ModelSpec(name=name, class_names=names, image_size=int(size), source="unknown",
                     input_name=model.inputs[0].name)


def with_input_scale(model, scale: float, *, name: str | None = None):
    """Wrap a model that expects scaled pixels (e.g. 0-1) so it takes raw RGB 0-255.

    The caller's model is not changed: a new functional model ``image -> Rescaling(scale) ->
    model`` is returned. Use it for foreign files such as GantMan's original ``.h5`` models,
    which expect ``pixels / 255``.
    """
    import keras

    shape = tuple(model.inputs[0].shape[1:])
    inputs = keras.Input(shape, name="image")
    x = keras.layers.Rescaling(scale, name="rescale_input")(inputs)
    return keras.Model(inputs, model(x), name=name or f"{model.name}_raw_rgb")


def load(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    *,
    safe_mode: bool = True,
    build_missing: bool = True,
    input_scale: float | None = None,
):
    """Load a classifier and its spec.

    Args:
        name_or_path: a pretrained name (``mobilenet_v2``, ``inception_v3``), a ``.keras`` /
            ``.h5`` file (its spec is read from ``<stem>.spec.json`` beside it when present,
            else inferred), or ``keras:<Application>`` (e.g. ``keras:MobileNetV2``) for an
            ImageNet ``keras.applications`` classifier (downloads weights; needs internet).
        safe_mode: load files in Keras safe mode (no arbitrary code from ``Lambda`` layers).
            Pass ``False`` only for files you trust.
        build_missing: import a pretrained model from nsfwjs if it is not in the cache yet.
        input_scale: for a foreign file that expects scaled pixels rather than raw 0-255 (e.g.
            ``1/255`` for GantMan's ``.h5`` models): wrap it with this scaling.

    Returns:
        ``(model, spec)``.

    Raises:
        ModelNotFoundError: the name or file is unknown; the message lists the choices.
    """
    import keras

    text = str(name_or_path)
    if text.startswith("keras:"):
        return keras_application(text.split(":", 1)[1])
    if text in PRETRAINED:
        model_path, spec_path = _cached_paths(text)
        if not _is_current(text):
            if not build_missing:
                raise ModelNotFoundError(f"{text} is not built yet: run `nsfwkit models build`")
            build([text])
        model = keras.saving.load_model(model_path, safe_mode=True)
        return model, ModelSpec.load(spec_path)
    path = Path(text).expanduser()
    if not path.exists():
        raise ModelNotFoundError(
            f"{text}: no such model; use one of {sorted(PRETRAINED)}, a .keras/.h5 file, "
            "or keras:<Application>"
        )
    if path.suffix not in (".keras", ".h5", ".hdf5"):
        raise ModelNotFoundError(f"{text}: expected a .keras or .h5 file")
    try:
        model = keras.saving.load_model(path, safe_mode=safe_mode, compile=False)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "Lambda" in str(exc):
            raise ValueError(
                f"{path}: refused in safe mode ({exc}). Only if you trust this file, load it "
                "with safe_mode=False (CLI: --unsafe-load)."
            ) from None
        raise ValueError(f"{path}: cannot load this model file ({exc})") from None
    except (OSError, TypeError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: cannot load this model file ({type(exc).__name__}: {exc})") from None
    spec_path = spec_path_for(path)
    if spec_path.is_file():
        spec = ModelSpec.load(spec_path)
    else:
        spec = _infer_spec(model, path.stem)
        if input_scale is None:
            import warnings

            warnings.warn(
                f"{path}: no spec file beside it ({spec_path.name}); assuming it takes raw RGB 0-255 "
                f"with {len(spec.class_names)} classes. If it expects 0-1 pixels (GantMan's .h5 "
                "models do), load it with input_scale=1/255 (CLI: --input-scale 0.00392156862745098).",
                stacklevel=2,
            )
    if input_scale is not None:
        model = with_input_scale(model, input_scale)
        spec = spec.replace(input_name="image", preprocessing=f"Rescaling({input_scale:g}) added by nsfwkit")
    return model, spec


def load_model(name_or_path: str | os.PathLike = DEFAULT_MODEL, *, safe_mode: bool = True):
    """Like :func:`load`, returning only the ``keras.Model``."""
    return load(name_or_path, safe_mode=safe_mode)[0]


# --------------------------------------------------------------------------------------------
# keras.applications with the preprocessing inside
# --------------------------------------------------------------------------------------------
#: Application -> (default input size, preprocessing mode, keras module name)
_APPLICATIONS: dict[str, tuple[int, str]] = {
    "MobileNetV2": (224, "tf"),
    "MobileNetV3Small": (224, "none"),
    "MobileNetV3Large": (224, "none"),
    "InceptionV3": (299, "tf"),
    "Xception": (299, "tf"),
    "VGG16": (224, "caffe"),
    "VGG19": (224, "caffe"),
    "ResNet50": (224, "caffe"),
    "ResNet50V2": (224, "tf"),
    "DenseNet121": (224, "torch"),
    "EfficientNetB0": (224, "none"),
    "EfficientNetV2B0": (224, "none"),
    "EfficientNetV2S": (384, "none"),
    "ConvNeXtTiny": (224, "none"),
}


#: keras.applications module (last part of the factory's ``__module__``) -> preprocessing mode.
_MODULE_MODES = {
    "vgg16": "caffe", "vgg19": "caffe", "resnet": "caffe",
    "resnet_v2": "tf", "inception_v3": "tf", "inception_resnet_v2": "tf", "xception": "tf",
    "mobilenet": "tf", "mobilenet_v2": "tf", "nasnet": "tf",
    "densenet": "torch",
    "efficientnet": "none", "efficientnet_v2": "none", "convnext": "none", "mobilenet_v3": "none",
    "regnet": "none",
}
_SIZES = {"NASNetLarge": 331, "EfficientNetB1": 240, "EfficientNetB2": 260, "EfficientNetB3": 300,
          "EfficientNetB4": 380, "EfficientNetB5": 456, "EfficientNetB6": 528, "EfficientNetB7": 600,
          "EfficientNetV2B1": 240, "EfficientNetV2B2": 260, "EfficientNetV2B3": 300,
          "EfficientNetV2M": 480, "EfficientNetV2L": 480, "InceptionResNetV2": 299}


def _application_mode(factory) -> str:
    module = getattr(factory, "__module__", "").rsplit(".", 1)[-1]
    if module not in _MODULE_MODES:
        raise ModelNotFoundError(
            f"don't know the preprocessing of keras.applications.{factory.__name__} (module {module!r})")
    return _MODULE_MODES[module]


def _default_size(name: str) -> int:
    return _SIZES.get(name, 224)


def preprocessing_layers(mode: str):
    """Built-in Keras layers mapping raw RGB 0-255 to an application's expected input.

    ``tf``: to [-1, 1]; ``torch``: /255 then ImageNet mean/std; ``caffe``: RGB->BGR and ImageNet
    mean subtraction (a fixed 1x1 convolution); ``none``: the backbone scales internally. Only
    built-in layers are used, so the model loads in safe mode and converts to TensorFlow.js.
    """
    import keras

    if mode == "tf":
        return [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess_tf")]
    if mode == "torch":
        mean = np.array([0.485, 0.456, 0.406]) * 255.0
        std = np.array([0.229, 0.224, 0.225]) * 255.0
        return [keras.layers.Normalization(mean=mean, variance=std**2, name="preprocess_torch")]
    if mode == "caffe":
        conv = keras.layers.Conv2D(3, 1, name="preprocess_caffe", trainable=False)
        conv.build((None, None, None, 3))
        kernel = np.zeros((1, 1, 3, 3), np.float32)
        for out_ch, in_ch in enumerate((2, 1, 0)):  # BGR output from RGB input
            kernel[0, 0, in_ch, out_ch] = 1.0
        conv.set_weights([kernel, -np.array([103.939, 116.779, 123.68], np.float32)])
        return [conv]
    if mode == "none":
        return []
    raise ValueError(f"unknown preprocessing mode {mode!r}")


def keras_application(
    name: str,
    *,
    weights: str | None = "imagenet",
    image_size: int | None = None,
    include_top: bool = True,
):
    """A ``keras.applications`` model taking raw RGB 0-255, with its preprocessing inside.

    With ``include_top=True`` it is the ImageNet classifier; with ``False`` a pooled feature
    extractor (a backbone for fine-tuning). ``weights="imagenet"`` downloads on first use (needs
    internet); pass ``None`` for random weights or a local weights file path.

    Returns:
        ``(model, spec)``.
    """
    import keras

    factory = getattr(keras.applications, name, None)
    if name.startswith("_") or not callable(factory):
        known = sorted(n for n in dir(keras.applications) if n[:1].isupper())
        raise ModelNotFoundError(f"unknown application {name!r}; choose from {known}")
    default_size, mode = _APPLICATIONS.get(name, (None, None))
    if mode is None:
        mode = _application_mode(factory)
        default_size = _default_size(name)
    size = int(image_size or default_size)
    kwargs: dict[str, Any] = {"weights": weights, "include_top": include_top,
                              "input_shape": (size, size, 3)}
    if not include_top:
        kwargs["pooling"] = "avg"
    try:
        base = factory(**kwargs)
    except Exception as exc:  # network errors surface as many types
        raise ModelNotFoundError(
            f"keras.applications.{name}(weights={weights!r}) failed: {exc}. ImageNet weights are "
            "downloaded on first use, which needs internet; pass a local weights file instead."
        ) from exc
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    for layer in preprocessing_layers(mode):
        x = layer(x)
    outputs = base(x)
    model = keras.Model(inputs, outputs, name=f"{name.lower()}_raw_rgb")
    classes = int(outputs.shape[-1])
    spec = ModelSpec(
        name=name,
        class_names=tuple(f"imagenet_{i}" for i in range(classes)) if include_top else (),
        image_size=size,
        nsfw_classes=(),
        source=f"keras.applications.{name}(weights={weights!r})",
        preprocessing=f"inside the model ({mode})",
    )
    return model, spec
