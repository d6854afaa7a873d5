"""Export a classifier for serving and the browser: SavedModel and TensorFlow.js graph models.

>>> from nsfwkit import convert, zoo
>>> model, spec = zoo.load("mobilenet_v2")
>>> result = convert.export(model, "exports/mobilenet_v2", spec=spec)
>>> result.tfjs["uint8"]          # folder with model.json + weight shards
>>> convert.check_parity(model, result.tfjs["float32"], images)   # runs TF.js in Node

What gets written under ``out_dir``::

    spec.json                 the ModelSpec
    saved_model/              TF SavedModel (``model.export``), float32, input ``image`` 0-255
    tfjs/<q>/model.json       TF.js graph model per quantisation q in float32/float16/uint8;
                              input ``image`` takes raw RGB 0-255 (the scaling is inside)
    nsfwjs/<q>/model.json     the same network with an input taking 0-1 pixels, the convention
                              of nsfwjs's own models: load it with
                              ``nsfwjs.load(url, {type: "graph", size: S})``
    tflite/<q>/model.tflite   with ``formats`` including ``tflite``: q in float32/float16/dynamic/int8
    onnx/<q>/model.onnx       with ``formats`` including ``onnx``: q in float32/float16 (each with
                              its spec.json sidecar; :mod:`.tflite`, :mod:`.onnx`)
    export.json               sizes, timings, the measured mixed-precision plan of each
                              quantised export (also returned as :class:`ExportResult`); the
                              TFLite/ONNX rows of ``sizes`` carry their parity in the runtime

Quantised exports are MIXED precision, chosen by measurement (:mod:`.precision`):
``uint8`` stores each weight tensor as uint8, float16 or float32 and ``float16`` as float16 or
float32, the cheapest mix whose emulated TF.js output stays within the bar
(:data:`TOLERANCES`) on calibration images. Plain per-tensor uint8 moves the default
MobileNetV2's probabilities by ~0.2 (TF.js has no per-channel scales, and batch-norm folding
gives kernel columns very different ranges), plain float16 by ~1e-2.

Why two TF.js flavours: nsfwjs's ``infer()`` divides pixels by 255 *before* the model, so a
model with a ``Rescaling(1/255)`` inside would see pixels/65025. The ``nsfwjs/`` export folds
the 255 into the model's first ``Rescaling`` (or prepends ``Rescaling(255)``), so nsfwjs feeds it
correctly; everything of ours (the web view, :func:`tfjs_probabilities`) reads ``input_range``
from the model's metadata and feeds either flavour correctly.

Every ``model.json`` carries ``userDefinedMetadata.nsfwkit``: class names, input size, input
range, resize method, NSFW classes and threshold, quantisation, and the graph node names of the
last conv features and pre-softmax logits (for Grad-CAM in TF.js).

The converter (Python package ``tensorflowjs``) is optional and imported lazily: see
``requirements/convert.txt`` for the install recipe that keeps TensorFlow 2.21, and
:func:`._converter._import_converter` for why it needs two import-time stand-in modules.

Where things are (every public name is importable from ``nsfwkit.convert`` itself)::

    exporter.py     export(): the whole export folder, step by step
    formats.py      which format gets which precision; the TFLite/ONNX step of export();
                    runtime_table(), table_text(), plot_size_vs_error(): size and parity per format
    tflite.py       export_tflite(): TFLite (LiteRT) models, parity measured in LiteRT
    onnx.py         export_onnx(): ONNX models, parity measured in onnxruntime
    runtimes.py     what the TFLite and ONNX exporters share (images, parity rows, sidecar, planner)
    builder.py      inference_model(): the ONE model builder every exporter uses
    saved_model.py  export_saved_model(): the SavedModel every converter reads
    tfjs.py         export_tfjs(), find_node(): TF.js graph models and their metadata
    precision.py    the mixed-precision planner and the TF.js graph emulator it measures with
    layout.py       quantisations and their bars (TOLERANCES), the folder layout, the
                    kit-folder check, atomic folders, read_metadata(), size_table(), ExportResult
    node.py         the ONE Node.js bridge: run_node(), tfjs_/nsfwjs_probabilities(), run_nsfwjs()
    parity.py       Keras vs TF.js / nsfwjs: compare(), check_parity(), ParityReport
    _converter.py   the ``tensorflowjs`` import and its stand-in modules

A new format is a module of its own beside ``tfjs.py`` (as ``tflite.py`` and ``onnx.py`` are):
it builds its model with :func:`inference_model`, writes its folder through
``layout._atomic_dir``, and adds its precisions and its step in ``formats.py``.
"""

from __future__ import annotations

# Names marked F401 are not in __all__ but stay importable as ``convert.<name>``: module
# constants, and private helpers that the tests and tools use today.
from ._converter import (
    TFJS_CONVERTER_VERSION,  # noqa: F401
    ConverterMissingError,
    _import_converter,  # noqa: F401
)
from .builder import inference_model
from .exporter import export
from .formats import FORMATS, PRECISIONS, FormatError, plot_size_vs_error, runtime_table, table_text
from .layout import (
    METADATA_FORMAT,  # noqa: F401
    METADATA_KEY,  # noqa: F401
    QUANTIZATIONS,
    TOLERANCES,
    ExportResult,
    _is_kit_folder,  # noqa: F401
    composition_label,
    plot_sizes,
    read_metadata,
    size_table,
    weight_composition,
)
from .node import (
    NodeMissingError,
    _node,  # noqa: F401
    nsfwjs_probabilities,
    run_node,
    tfjs_probabilities,
)
from .parity import ParityReport, check_parity, compare, keras_probabilities
from .precision import (
    _LEVELS,  # noqa: F401
    PLAN_MARGIN,  # noqa: F401
    _calibration_images,  # noqa: F401
    _dequantize_like_tfjs,  # noqa: F401
    _fnmatch_escape,  # noqa: F401
    _PrecisionPlanner,  # noqa: F401
)
from .runtimes import CalibrationError, RuntimeMissingError
from .saved_model import export_saved_model
from .tfjs import export_tfjs, find_node

__all__ = [
    "QUANTIZATIONS",
    "TOLERANCES",
    "ExportResult",
    "ParityReport",
    "ConverterMissingError",
    "NodeMissingError",
    "inference_model",
    "export_saved_model",
    "export_tfjs",
    "export",
    "read_metadata",
    "size_table",
    "weight_composition",
    "composition_label",
    "plot_sizes",
    "keras_probabilities",
    "tfjs_probabilities",
    "check_parity",
    "compare",
    "nsfwjs_probabilities",
    "run_node",
    "find_node",
    "FORMATS",
    "PRECISIONS",
    "FormatError",
    "CalibrationError",
    "RuntimeMissingError",
    "runtime_table",
    "table_text",
    "plot_size_vs_error",
]
