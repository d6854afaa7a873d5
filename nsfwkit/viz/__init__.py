"""See inside a classifier: filters, activations and class activation maps.

* :mod:`~nsfwkit.viz.layers` finds layers and builds feature sub-models (never mutating the
  caller's model);
* :mod:`~nsfwkit.viz.cam`: ``grad_cam``, ``grad_cam_plus_plus``, ``score_cam``;
* :mod:`~nsfwkit.viz.activations`: one pass returning inner layers' outputs and the prediction;
  the dataset images that activate a channel most;
* :mod:`~nsfwkit.viz.filters`: maximally-activating inputs of conv filters (``classic`` and
  ``quality`` recipes);
* :mod:`~nsfwkit.viz.transforms`: the quality recipe's random jitter/scale/rotate, as affine
  matrices composed into one warp (lucid's ``optvis/transform.py``);
* :mod:`~nsfwkit.viz.pixels`: colormaps, overlays, grids and PNG bytes (uint8 arrays);
* :mod:`~nsfwkit.viz.plot`: matplotlib figures;
* :mod:`~nsfwkit.viz.outputs`: the ``dist/filters`` and ``dist/activation`` folders and their
  JSON manifests (schema in ``MANIFESTS.md``);
* :mod:`~nsfwkit.viz.report`: :func:`visualize`, all three for one image (``nsfwkit visualize``).

Importing this package does not import TensorFlow; the functions do, when called.
"""

from .activations import (
    ActivationResult,
    TopExamples,
    activation_grid,
    channel_image,
    channel_means,
    most_active_channels,
    top_activating_examples,
)
from .cam import METHODS as CAM_METHODS
from .cam import CamResult, cam_coverage, cam_per_class, compute_cam, grad_cam, grad_cam_plus_plus, score_cam
from .filters import RECIPES, FilterResult, maximize_filters, visualize_filters
from .layers import (
    LayerNotFoundError,
    conv_layers,
    default_filter_layers,
    feature_model,
    find_layer,
    last_conv_layer,
)
from .outputs import read_manifest, write_activation, write_filters
from .report import visualize

__all__ = [
    "ActivationResult",
    "FilterResult",
    "TopExamples",
    "RECIPES",
    "activation_grid",
    "channel_image",
    "channel_means",
    "maximize_filters",
    "most_active_channels",
    "read_manifest",
    "top_activating_examples",
    "visualize",
    "visualize_filters",
    "write_activation",
    "write_filters",
    "CAM_METHODS",
    "CamResult",
    "LayerNotFoundError",
    "cam_coverage",
    "cam_per_class",
    "compute_cam",
    "conv_layers",
    "default_filter_layers",
    "feature_model",
    "find_layer",
    "grad_cam",
    "grad_cam_plus_plus",
    "last_conv_layer",
    "score_cam",
]
