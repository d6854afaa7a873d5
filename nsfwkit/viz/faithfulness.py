"""Checking explanations: deletion / insertion scores and the sanity checks of Adebayo et al.

**Deletion and insertion** (Petsiuk et al. 2018, RISE). The pixels of the model-size input are
ordered by the map (upsampled bilinearly to the model's input size; ties broken in a seeded
random order, so a flat map gives a random order rather than a raster scan). *Deletion* replaces
the most-attributed pixels by a baseline, a growing fraction at a time, and records the
probability of the explained class; *insertion* starts from the baseline and reveals the
most-attributed pixels first. ``steps`` points (default 32) from 0 % to 100 % of the pixels make
a curve, so one curve is one forward pass of 32 images. The area under each curve (trapezoid
rule over the fraction of pixels, so in ``[0, 1]``) is the score: a faithful map has a **low**
deletion AUC (the score falls as soon as its hot pixels go) and a **high** insertion AUC. The
baseline is ``"blur"`` (default; a Gaussian blur of the image, sigma
:data:`~nsfwkit.viz.attributions.BLUR_SIGMA` of the side, so removing pixels adds no sharp
edges), ``"grey"`` (127.5), ``"black"``, a number or an array. Any ``(N, H, W)`` map works.

**Model-parameter randomisation** (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").
The weighted layers are grouped top first (:func:`cascade_groups`: each layer with a kernel
together with the normalisation layers above it), and on a **copy** of the model (the caller's
model is never touched) the top 1, 2, 4, ... groups are re-initialised, cumulatively, each
variable by its layer's own initializer re-seeded from ``seed`` and the layer's path
(:func:`randomized_copy`; Glorot-uniform kernels, zero biases, identity batch norms for the
usual Keras defaults). Each method's maps on the randomised copies are compared with its maps on
the trained model by Spearman's rank correlation (average ranks for ties; NaN when either map
is constant), explaining the same class (the trained model's top-1 unless ``class_index`` is
given). A map that explains the model must change: a method whose mean rank correlation is
still above ``threshold`` (default :data:`SURVIVAL_THRESHOLD` = 0.5) after the first cascade
step (only the top layer randomised: the class weights are noise) is **flagged**.

**Data randomisation** (the same paper, for a tiny model one can train in seconds): two copies
of an (untrained) model are trained from the same starting weights, one on the true labels,
one on a random permutation of them; a method whose maps for the two models still correlate
above ``threshold`` is flagged, since one of the models has learnt nothing about the images'
content.

``plot_faithfulness`` draws the curves, ``plot_sanity`` Adebayo's figure (one row per method,
one column per cascade step).
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .attributions import ALL_METHODS, BLUR_SIGMA, LAYER_METHODS, baseline_images, explain
from .cam import _class_vector, _upsample
from .layers import as_model_input, forward_fn, iter_layers, last_conv_layer, layer_path, scores_to_probabilities

__all__ = [
    "SURVIVAL_THRESHOLD",
    "FaithfulnessResult",
    "SanityResult",
    "DataRandomizationResult",
    "area_under_curve",
    "cascade_groups",
    "data_randomization_check",
    "deletion_insertion",
    "faithfulness",
    "pixel_ranks",
    "plot_data_randomization",
    "plot_faithfulness",
    "plot_sanity",
    "randomized_copy",
    "sanity_check",
    "spearman",
]

#: Mean rank correlation above which a method "survives" randomisation and is flagged.
SURVIVAL_THRESHOLD = 0.5

# Variables that make a layer a cascade boundary; normalisation layers join the group below.
_KERNELS = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings")
_NORMALIZATIONS = ("BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization")


# --------------------------------------------------------------------------------------------
# Deletion / insertion
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FaithfulnessResult:
    """Deletion and insertion curves of one batch of maps.

    Attributes:
        fractions: ``(K,)`` fraction of pixels removed / revealed at each point, 0 to 1.
        deletion: ``float32`` ``(N, K)`` probability of the explained class, deleting.
        insertion: ``float32`` ``(N, K)`` the same, inserting.
        deletion_auc: ``float64`` ``(N,)`` area under ``deletion`` (lower is better).
        insertion_auc: ``float64`` ``(N,)`` area under ``insertion`` (higher is better).
        class_index: ``int`` ``(N,)`` the class scored.
        baseline: the baseline's name (``"custom"`` for a number or an array).
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray
    class_index: np.ndarray
    baseline: str

    @property
    def difference(self) -> np.ndarray:
        """``insertion_auc - deletion_auc`` per image (higher is better)."""
        return self.insertion_auc - self.deletion_auc


def area_under_curve(fractions: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Trapezoid-rule area under ``curves`` ``(..., K)`` over ``fractions`` ``(K,)``."""
    f = np.asarray(fractions, np.float64)
    y = np.asarray(curves, np.float64)
    return ((y[..., 1:] + y[..., :-1]) * 0.5 * np.diff(f)).sum(axis=-1)


def pixel_ranks(maps: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Rank of every pixel, 0 = most attributed: ``int64`` ``(N, H, W)`` from maps ``(N, H, W)``.

    Equal values are ordered by a random permutation drawn from ``default_rng([seed, i])``.
    """
    maps = np.asarray(maps, np.float64)
    ranks = np.empty(maps.shape, np.int64)
    for i, m in enumerate(maps):
        flat = m.reshape(-1)
        jitter = np.random.default_rng([int(seed), i]).permutation(flat.size)
        order = np.lexsort((jitter, -flat))
        r = np.empty(flat.size, np.int64)
        r[order] = np.arange(flat.size)
        ranks[i] = r.reshape(m.shape)
    return ranks


def _probabilities(model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities of ``x`` in batches of exactly ``batch_size`` (the last one padded)."""
    fn = forward_fn(model, [], head="logits")
    out = []
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start : start + batch_size]
        used = chunk.shape[0]
        if used < batch_size and x.shape[0] > batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - used, axis=0)])
        out.append(scores_to_probabilities(model, fn(chunk)[-1].numpy())[:used])
    return np.concatenate(out)


def deletion_insertion(
    model,
    images,
    maps,
    *,
    class_index=None,
    steps: int = 32,
    baseline: Any = "blur",
    blur_sigma: float = BLUR_SIGMA,
    batch_size: int = 32,
    seed: int = 0,
) -> FaithfulnessResult:
    """Deletion and insertion curves and AUCs (RISE) of ``maps`` for ``images``.

    Args:
        model: the classifier the maps explain (raw 0-255 input).
        images: ``(N, H, W, C)`` or ``(H, W, C)`` raw 0-255.
        maps: ``(N, h, w)`` (or ``(h, w)``) any non-negative importance, higher = more important;
            resized to the model's input size.
        class_index: None (each image's top-1), an int, or one int per image.
        steps: points per curve (>= 2), from no pixel to all pixels.
        baseline: what removed / not yet revealed pixels become: ``"blur"``, ``"grey"``,
            ``"black"``, a number or an array.
        blur_sigma: the blur baseline's sigma, a fraction of the input side.
        batch_size: images per forward pass.
        seed: tie-breaking order of equal map values.

    Returns:
        A :class:`FaithfulnessResult`.
    """
    if int(steps) < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    x, _ = as_model_input(model, images)
    n = x.shape[0]
    m = np.asarray(maps, np.float32)
    m = m[None] if m.ndim == 2 else m
    if m.ndim != 3 or m.shape[0] != n:
        raise ValueError(f"maps must be (N, H, W) with N = {n} images, got shape {m.shape}")
    ranks = pixel_ranks(_upsample(m, tuple(x.shape[1:3])), seed=seed)
    base = baseline_images(x, baseline, blur_sigma=blur_sigma)
    cls = _class_vector(class_index, n, int(model.outputs[0].shape[-1]))
    chosen = np.where(cls < 0, np.argmax(_probabilities(model, x, batch_size), axis=-1), cls)
    fractions = np.linspace(0.0, 1.0, int(steps))
    counts = np.rint(fractions * ranks[0].size).astype(np.int64)
    deletion = np.empty((n, fractions.size), np.float32)
    insertion = np.empty((n, fractions.size), np.float32)
    for i in range(n):
        hit = (ranks[i][None] < counts[:, None, None])[..., None]  # (K, S, S, 1): pixels moved
        batch = np.concatenate([np.where(hit, base[i], x[i]), np.where(hit, x[i], base[i])]).astype(np.float32)
        probs = _probabilities(model, batch, batch_size)[:, chosen[i]]
        deletion[i], insertion[i] = probs[: fractions.size], probs[fractions.size :]
    return FaithfulnessResult(
        fractions=fractions,
        deletion=deletion,
        insertion=insertion,
        deletion_auc=area_under_curve(fractions, deletion),
        insertion_auc=area_under_curve(fractions, insertion),
        class_index=chosen.astype(np.int64),
        baseline=baseline if isinstance(baseline, str) else "custom",
    )


def faithfulness(
    model,
    images,
    *,
    methods: Sequence[str] | Mapping[str, Callable] = ALL_METHODS,
    class_index=None,
    layer=None,
    options: Mapping[str, dict] | None = None,
    **kwargs,
) -> dict[str, FaithfulnessResult]:
    """Deletion / insertion scores of several methods on the same images and classes.

    Args:
        methods: names from :data:`~nsfwkit.viz.attributions.ALL_METHODS`, or name -> function
            ``fn(model, images, *, class_index, layer) -> (N, H, W)``.
        class_index: None (top-1 per image, fixed once for every method), an int, or one per image.
        layer: the layer of the CAM methods and ``layer_cam`` (default the last conv-like layer).
        options: per-method keyword arguments, e.g. ``{"score_cam": {"max_channels": 256}}``.
        **kwargs: passed to :func:`deletion_insertion` (``steps``, ``baseline``, ``seed`` ...).

    Returns:
        ``{method: FaithfulnessResult}`` in the order of ``methods``.
    """
    images = _batch(images)
    cls = _fixed_classes(model, images, class_index)
    explainers = _explainers(model, methods, layer, options)
    return {name: deletion_insertion(model, images, fn(model, images, cls), class_index=cls, **kwargs)
            for name, fn in explainers.items()}


# --------------------------------------------------------------------------------------------
# Shared by the checks
# --------------------------------------------------------------------------------------------
def _batch(images) -> np.ndarray:
    """``(H, W, C)`` or ``(N, H, W, C)`` -> ``(N, H, W, C)`` (what every method is handed)."""
    arr = np.asarray(images)
    return arr[None] if arr.ndim == 3 else arr


def _fixed_classes(model, images, class_index) -> np.ndarray:
    """One explicit class per image: ``class_index`` or the model's top-1."""
    x, _ = as_model_input(model, images)
    cls = _class_vector(class_index, x.shape[0], int(model.outputs[0].shape[-1]))
    if (cls < 0).any():
        cls = np.where(cls < 0, np.argmax(_probabilities(model, x, 32), axis=-1), cls)
    return cls.astype(np.int32)


def _explainers(model, methods, layer, options) -> dict[str, Callable]:
    """name -> ``fn(model, images, cls) -> maps`` (layer and options bound)."""
    options = dict(options or {})
    if isinstance(methods, Mapping):
        return {str(name): _custom(fn, layer) for name, fn in methods.items()}
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {', '.join(ALL_METHODS)}")
    needs_layer = any(m in LAYER_METHODS for m in methods)
    layer = (last_conv_layer(model) if layer is None else layer_path(model, layer)) if needs_layer else None
    return {m: _named(m, layer if m in LAYER_METHODS else None, options.get(m, {})) for m in methods}


def _named(method: str, layer, opts: dict) -> Callable:
    def fn(model, images, cls):
        return explain(model, images, method=method, class_index=cls, layer=layer, **opts).maps

    return fn


def _custom(function: Callable, layer) -> Callable:
    def fn(model, images, cls):
        return np.asarray(function(model, images, class_index=cls, layer=layer), np.float32)

    return fn


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions) of a 1-D array."""
    order = np.argsort(values, kind="stable")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    ranks = np.empty(values.size, np.float64)
    ranks[order] = np.repeat(first + (counts - 1) / 2.0, counts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each pair of maps: ``(N,)`` from two ``(N, ...)`` arrays.

    NaN where either map is constant (no ranking to compare).
    """
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"maps of shapes {a.shape} and {b.shape} cannot be compared")
    out = np.full(a.shape[0], np.nan)
    for i in range(a.shape[0]):
        ra, rb = _ranks(a[i]) - (a.shape[1] - 1) / 2.0, _ranks(b[i]) - (a.shape[1] - 1) / 2.0
        denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
        if denom > 0:
            out[i] = float((ra * rb).sum() / denom)
    return out


def _mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """nan-mean that stays NaN (without a warning) where every value is NaN."""
    values = np.asarray(values, np.float64)
    count = np.isfinite(values).sum(axis=axis)
    total = np.where(np.isfinite(values), values, 0.0).sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _flags(names: Sequence[str], correlations: np.ndarray, threshold: float) -> tuple[str, ...]:
    return tuple(name for name, rho in zip(names, correlations, strict=True) if np.isfinite(rho) and rho > threshold)


def _copy(model):
    """A new model with the same architecture and weights (nothing shared with ``model``)."""
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


# --------------------------------------------------------------------------------------------
# Model-parameter randomisation
# --------------------------------------------------------------------------------------------
def _has_kernel(layer) -> bool:
    return any(v.name in _KERNELS for v in layer.weights)


def cascade_groups(model) -> list[tuple[str, ...]]:
    """The randomisable layers in groups, top (output side) first.

    A group is one layer with a kernel (``Dense``, ``Conv2D``, ``DepthwiseConv2D``...) plus the
    normalisation layers that follow it in graph order; normalisation layers before the first
    kernel join the last group. Other weighted layers (preprocessing ``Normalization``...) are
    never randomised. Paths as :func:`nsfwkit.viz.layers.iter_layers` gives them, top first
    within a group too.
    """
    import keras

    groups: list[tuple[str, ...]] = []
    pending: list[str] = []
    for path, layer in reversed(iter_layers(model)):
        if isinstance(layer, keras.Model) or not layer.weights:
            continue
        if _has_kernel(layer):
            groups.append(tuple(pending + [path]))
            pending = []
        elif type(layer).__name__ in _NORMALIZATIONS:
            pending.append(path)
    if pending and groups:
        groups[-1] = groups[-1] + tuple(pending)
    return groups


def _initializer(layer, variable):
    """The layer's own initializer of ``variable`` (None when the layer does not say)."""
    name = variable.name
    candidates = [f"{name}_initializer", f"{name.replace('_kernel', '')}_initializer"]
    if name == "kernel":
        candidates.append("depthwise_initializer")  # DepthwiseConv2D keeps its kernel as "kernel"
    for attr in candidates:
        init = getattr(layer, attr, None)
        if init is not None:
            return init
    return None


def _reinitialize(model, paths: Sequence[str], seed: int) -> None:
    """Re-initialise every variable of the layers at ``paths`` of ``model`` in place."""
    import keras

    from .layers import find_layer

    for path in paths:
        layer = find_layer(model, path)
        key = zlib.crc32(path.encode("utf-8"))
        for j, variable in enumerate(layer.weights):
            init = _initializer(layer, variable)
            if init is None:
                init = "glorot_uniform" if len(variable.shape) >= 2 else "zeros"
            init = keras.initializers.get(init)
            config = init.get_config()
            if "seed" in config:
                state = int(np.random.SeedSequence([int(seed), key, j]).generate_state(1)[0] % (2**31 - 1))
                init = init.__class__.from_config({**config, "seed": state})
            variable.assign(keras.ops.convert_to_numpy(init(tuple(variable.shape), dtype=variable.dtype)))


def randomized_copy(model, layers: Sequence[str], *, seed: int = 0):
    """A copy of ``model`` with the layers at ``layers`` (paths) re-initialised, seeded.

    Each variable is drawn from its layer's own initializer with a seed made of ``seed``, the
    layer's path and the variable's index (so a layer gets the same values whatever else is
    randomised). ``model`` is not modified.
    """
    clone = _copy(model)
    _reinitialize(clone, [layer_path(model, name) for name in layers], seed)
    return clone


def _cascade_counts(steps: Sequence[int] | None, available: int) -> list[int]:
    if available == 0:
        raise ValueError("the model has no layer with weights to randomise")
    if steps is None:
        counts, k = [], 1
        while k < available:
            counts.append(k)
            k *= 2
        return counts + [available]
    counts = sorted({min(int(s), available) for s in steps})
    if not counts or counts[0] < 1:
        raise ValueError(f"cascade steps must be >= 1, got {list(steps)}")
    return counts


@dataclasses.dataclass(frozen=True)
class SanityResult:
    """Cascading model-parameter randomisation of several methods.

    Attributes:
        methods: the methods, in order (rows).
        steps: ``(K,)`` how many top groups of :func:`cascade_groups` are randomised at each step.
        labels: ``(K,)`` the deepest layer randomised at each step (a column title).
        layers: the paths randomised at each step (cumulative).
        class_index: ``int`` ``(N,)`` the class explained throughout.
        original: ``float32`` ``(M, N, H, W)`` the trained model's maps.
        maps: ``float32`` ``(M, K, N, H, W)`` the maps at each step.
        rank_correlation: ``float64`` ``(M, K, N)`` Spearman's rho, original vs randomised.
        threshold: the survival threshold.
        flag_step: the step (index into ``steps``) the flags are read at.
        flagged: methods whose mean rho at ``flag_step`` is above ``threshold``.
    """

    methods: tuple[str, ...]
    steps: tuple[int, ...]
    labels: tuple[str, ...]
    layers: tuple[tuple[str, ...], ...]
    class_index: np.ndarray
    original: np.ndarray
    maps: np.ndarray
    rank_correlation: np.ndarray
    threshold: float
    flag_step: int
    flagged: tuple[str, ...]

    @property
    def mean_correlation(self) -> np.ndarray:
        """``(M, K)`` rank correlation averaged over the images (NaN-aware)."""
        return _mean(self.rank_correlation, axis=-1)


def sanity_check(
    model,
    images,
    *,
    methods: Sequence[str] | Mapping[str, Callable] = ALL_METHODS,
    class_index=None,
    layer=None,
    steps: Sequence[int] | None = None,
    seed: int = 0,
    threshold: float = SURVIVAL_THRESHOLD,
    flag_step: int = 0,
    options: Mapping[str, dict] | None = None,
) -> SanityResult:
    """Cascading model-parameter randomisation (Adebayo et al. 2018) on a copy of ``model``.

    Args:
        model: the trained classifier (never modified: the cascade runs on a copy).
        images: ``(N, H, W, C)`` or ``(H, W, C)`` raw 0-255.
        methods: names from :data:`~nsfwkit.viz.attributions.ALL_METHODS`, or name -> function
            ``fn(model, images, *, class_index, layer) -> (N, H, W)`` (e.g. a model-independent
            edge detector, which must survive).
        class_index: None (the trained model's top-1, kept for every step), an int, or one per image.
        layer: the CAM methods' and ``layer_cam``'s layer (default the last conv-like layer).
        steps: cumulative numbers of top groups to randomise (default 1, 2, 4, ... and all).
        seed: seeds the re-initialisation.
        threshold: mean rank correlation above which a method is flagged.
        flag_step: index into the steps at which the flag is read (0: only the top group).
        options: per-method keyword arguments, e.g. ``{"score_cam": {"max_channels": 64}}``.

    Returns:
        A :class:`SanityResult`.
    """
    images = _batch(images)
    cls = _fixed_classes(model, images, class_index)
    explainers = _explainers(model, methods, layer, options)
    groups = cascade_groups(model)
    counts = _cascade_counts(steps, len(groups))
    if not 0 <= flag_step < len(counts):
        raise ValueError(f"flag_step {flag_step} out of range for {len(counts)} cascade steps")
    original = np.stack([fn(model, images, cls) for fn in explainers.values()])
    clone = _copy(model)
    maps = np.empty((len(explainers), len(counts)) + original.shape[1:], np.float32)
    done, layers = 0, []
    for k, count in enumerate(counts):
        _reinitialize(clone, [p for group in groups[done:count] for p in group], seed)
        done = count
        layers.append(tuple(p for group in groups[:count] for p in group))
        for row, fn in enumerate(explainers.values()):
            maps[row, k] = fn(clone, images, cls)
    rho = np.stack([np.stack([spearman(original[row], maps[row, k]) for k in range(len(counts))])
                    for row in range(len(explainers))])
    names = tuple(explainers)
    return SanityResult(
        methods=names, steps=tuple(counts), labels=tuple(groups[c - 1][-1] for c in counts),
        layers=tuple(layers), class_index=cls.astype(np.int64), original=original, maps=maps,
        rank_correlation=rho, threshold=float(threshold), flag_step=int(flag_step),
        flagged=_flags(names, _mean(rho[:, flag_step], axis=-1), threshold),
    )


# --------------------------------------------------------------------------------------------
# Data randomisation
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DataRandomizationResult:
    """Maps of a model trained on true labels vs the same model trained on permuted labels.

    Attributes:
        methods: the methods compared.
        accuracy_true: training accuracy of the true-label model.
        accuracy_random: training accuracy of the random-label model (on its own labels).
        maps_true: ``float32`` ``(M, N, H, W)``.
        maps_random: ``float32`` ``(M, N, H, W)``.
        rank_correlation: ``float64`` ``(M, N)``.
        threshold: the survival threshold.
        flagged: methods whose mean rank correlation is above ``threshold``.
    """

    methods: tuple[str, ...]
    accuracy_true: float
    accuracy_random: float
    maps_true: np.ndarray
    maps_random: np.ndarray
    rank_correlation: np.ndarray
    threshold: float
    flagged: tuple[str, ...]

    @property
    def mean_correlation(self) -> np.ndarray:
        """``(M,)`` rank correlation averaged over the images."""
        return _mean(self.rank_correlation, axis=-1)


def _train_copy(model, x, labels, *, epochs: int, batch_size: int, learning_rate: float):
    """A copy of ``model`` trained on ``labels``; returns ``(copy, training accuracy)``."""
    import keras

    from .layers import logits_model

    clone = _copy(model)
    scores = logits_model(clone)  # shares the copy's variables; cross-entropy on the logits
    scores.compile(optimizer=keras.optimizers.Adam(learning_rate),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    scores.fit(x, labels, epochs=int(epochs), batch_size=int(batch_size), shuffle=False, verbose=0)
    predicted = np.argmax(_probabilities(clone, x, batch_size), axis=-1)
    return clone, float(np.mean(predicted == labels))


def data_randomization_check(
    model,
    images,
    labels,
    *,
    methods: Sequence[str] | Mapping[str, Callable] = ("gradients", "grad_cam"),
    layer=None,
    epochs: int = 40,
    batch_size: int = 32,
    learning_rate: float = 0.01,
    seed: int = 0,
    threshold: float = SURVIVAL_THRESHOLD,
    options: Mapping[str, dict] | None = None,
) -> DataRandomizationResult:
    """Train two copies of a tiny ``model``, on ``labels`` and on a permutation; compare maps.

    Meant for models that train in seconds. ``model`` itself is not trained or modified; both
    copies start from its weights. The maps explain the true label of each image in both models.

    Args:
        model: an (untrained) classifier with at least two classes, raw 0-255 input.
        images: ``(N, H, W, C)`` training images, also the images explained.
        labels: ``(N,)`` int class labels.
        methods: as for :func:`sanity_check`.
        layer: the CAM methods' layer (default the last conv-like layer).
        epochs, batch_size, learning_rate: training (Adam, cross-entropy on the logits, no shuffling).
        seed: the label permutation.
        threshold: mean rank correlation above which a method is flagged.
        options: per-method keyword arguments.

    Returns:
        A :class:`DataRandomizationResult`.
    """
    if int(model.outputs[0].shape[-1]) < 2:
        raise ValueError("the data randomisation check needs a model with at least two classes")
    images = _batch(images)
    x, _ = as_model_input(model, images)
    labels = np.asarray(labels, np.int32).reshape(-1)
    if labels.shape[0] != x.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {x.shape[0]} images")
    permuted = np.random.default_rng(int(seed)).permutation(labels)
    fit = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate}
    trained, accuracy_true = _train_copy(model, x, labels, **fit)
    shuffled, accuracy_random = _train_copy(model, x, permuted, **fit)
    explainers = _explainers(model, methods, layer, options)
    maps_true = np.stack([fn(trained, images, labels) for fn in explainers.values()])
    maps_random = np.stack([fn(shuffled, images, labels) for fn in explainers.values()])
    rho = np.stack([spearman(a, b) for a, b in zip(maps_true, maps_random, strict=True)])
    names = tuple(explainers)
    return DataRandomizationResult(
        methods=names, accuracy_true=accuracy_true, accuracy_random=accuracy_random, maps_true=maps_true,
        maps_random=maps_random, rank_correlation=rho, threshold=float(threshold),
        flagged=_flags(names, _mean(rho, axis=-1), threshold),
    )


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def plot_faithfulness(results: Mapping[str, FaithfulnessResult], *, index: int | None = None):
    """Deletion (left) and insertion (right) curves, one line per method, AUC in the legend.

    Args:
        results: ``{method: FaithfulnessResult}`` as :func:`faithfulness` returns.
        index: one image's curves; None (default) the mean over the images.
    """
    from .plot import _figure

    fig = _figure(10, 3.8)
    axes = fig.subplots(1, 2, sharey=True)
    for name, result in results.items():
        for ax, curves, aucs in ((axes[0], result.deletion, result.deletion_auc),
                                 (axes[1], result.insertion, result.insertion_auc)):
            curve = curves.mean(axis=0) if index is None else curves[index]
            auc = aucs.mean() if index is None else aucs[index]
            ax.plot(result.fractions, curve, label=f"{name} (AUC {auc:.3f})")
    baseline = next(iter(results.values())).baseline if results else ""
    for ax, title in zip(axes, ("deletion (lower AUC is better)", "insertion (higher AUC is better)"), strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"fraction of pixels {'removed' if ax is axes[0] else 'revealed'} ({baseline} baseline)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("probability of the explained class" + ("" if index is not None else " (mean)"))
    return fig


def plot_sanity(result: SanityResult, *, index: int = 0, image: np.ndarray | None = None):
    """Adebayo's figure: rows = methods, columns = the trained model then each cascade step.

    Each randomised map is titled with its rank correlation to the original; a flagged method's
    row label says so.

    Args:
        result: from :func:`sanity_check`.
        index: which image's maps to show.
        image: that image ``(H, W, 3)`` 0-255, drawn as an extra first column.
    """
    from .plot import DEFAULT_COLORMAP, _figure

    extra = 1 if image is not None else 0
    cols = extra + 1 + len(result.steps)
    rows = len(result.methods)
    fig = _figure(1.5 * cols + 0.8, 1.6 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, name in enumerate(result.methods):
        if image is not None:
            axes[r, 0].imshow(np.clip(np.rint(np.asarray(image, np.float32)), 0, 255).astype(np.uint8))
        axes[r, extra].imshow(result.original[r, index], cmap=DEFAULT_COLORMAP, vmin=0, vmax=1)
        for k in range(len(result.steps)):
            ax = axes[r, extra + 1 + k]
            ax.imshow(result.maps[r, k, index], cmap=DEFAULT_COLORMAP, vmin=0, vmax=1)
            ax.set_title(f"rho {result.rank_correlation[r, k, index]:.2f}", fontsize=7)
        label = name + ("\n(flagged: survives)" if name in result.flagged else "")
        axes[r, 0].text(-0.1, 0.5, label, transform=axes[r, 0].transAxes, rotation=90, ha="right",
                        va="center", fontsize=8, color="firebrick" if name in result.flagged else "black")
    axes[0, extra].set_title("trained", fontsize=8)
    for k, (count, label) in enumerate(zip(result.steps, result.labels, strict=True)):
        axes[0, extra + 1 + k].set_title(f"top {count}: {label}\nrho {result.rank_correlation[0, k, index]:.2f}",
                                         fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"cascading randomisation (top layers first); flagged if mean rho > {result.threshold:g} "
                 f"after step {result.flag_step + 1}", fontsize=9)
    return fig


def plot_data_randomization(result: DataRandomizationResult, *, index: int = 0, image: np.ndarray | None = None):
    """Adebayo's data-randomisation figure: rows = methods, columns = the map of the model trained
    on the true labels, then of the one trained on permuted labels (titled with their rank
    correlation); both training accuracies in the title; a flagged method's row label says so.

    Args:
        result: from :func:`data_randomization_check`.
        index: which image's maps to show.
        image: that image ``(H, W, 3)`` 0-255, drawn as an extra first column.
    """
    from .plot import DEFAULT_COLORMAP, _figure

    extra = 1 if image is not None else 0
    rows = len(result.methods)
    fig = _figure(1.6 * (extra + 2) + 0.8, 1.6 * rows + 0.8)
    axes = fig.subplots(rows, extra + 2, squeeze=False)
    for r, name in enumerate(result.methods):
        if image is not None:
            axes[r, 0].imshow(np.clip(np.rint(np.asarray(image, np.float32)), 0, 255).astype(np.uint8))
        axes[r, extra].imshow(result.maps_true[r, index], cmap=DEFAULT_COLORMAP, vmin=0, vmax=1)
        axes[r, extra].set_title("true labels", fontsize=7)
        axes[r, extra + 1].imshow(result.maps_random[r, index], cmap=DEFAULT_COLORMAP, vmin=0, vmax=1)
        axes[r, extra + 1].set_title(f"random labels, rho {result.rank_correlation[r, index]:.2f}", fontsize=7)
        flagged = name in result.flagged
        label = name + ("\n(flagged: survives)" if flagged else "")
        axes[r, 0].text(-0.1, 0.5, label, transform=axes[r, 0].transAxes, rotation=90, ha="right",
                        va="center", fontsize=8, color="firebrick" if flagged else "black")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"data randomisation: training accuracy {result.accuracy_true:.2f} (true labels), "
                 f"{result.accuracy_random:.2f} (random labels); flagged if mean rho > {result.threshold:g}",
                 fontsize=9)
    return fig
