"""The ``tf.data`` input pipeline for training and evaluation.

It decodes with the same loader and resizes with the same op as inference
(``ResizeBilinear(align_corners=True)``), so a model sees identical pixels in training, in
``nsfwkit classify`` and in TensorFlow.js. :func:`decode_dataset` decodes and caches once per
run; :func:`make_dataset` turns that (or the files themselves) into one epoch of batches, in an
order and with an augmentation fixed by ``(seed, epoch)`` (:class:`PipelineOptions`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from .. import images as _images

__all__ = ["PipelineOptions", "DecodedImages", "decode_for_model", "epoch_order", "decode_dataset",
           "decode_in_epoch_order", "make_dataset"]


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """How :func:`make_dataset` batches, orders, augments and decodes; the defaults evaluate.

    Attributes:
        batch_size: images per batch.
        num_classes: targets are one-hot ``float32 (B, num_classes)`` when given, else the
            ``int64`` indices.
        training: shuffle and augment (augmentation is never part of the saved model).
        augment: augment when training (random flip, crop-zoom <= 20%, brightness/contrast).
        augment_strength: scales the augmentation ranges (0 disables them).
        seed: with ``epoch``, determines the shuffle order and the augmentation.
        epoch: the epoch these batches are for.
        cache: True (memory), a file path prefix, or False (used when the files are decoded
            here, i.e. without ``decoded``).
        shuffle_buffer: default: the whole dataset (exact, seeded permutation).
        parallel: decoding parallelism (default ``tf.data.AUTOTUNE``).
        drop_remainder: drop the last partial batch.
    """

    batch_size: int = 32
    num_classes: int | None = None
    training: bool = False
    augment: bool = True
    augment_strength: float = 1.0
    seed: int = 0
    epoch: int = 0
    cache: bool | str = True
    shuffle_buffer: int | None = None
    parallel: int | None = None
    drop_remainder: bool = False


_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(PipelineOptions))


@dataclasses.dataclass(frozen=True)
class DecodedImages:
    """Images decoded once per run (a :func:`decode_dataset`) and the order they were decoded in.

    Attributes:
        dataset: the :func:`decode_dataset` of the same ``paths`` :func:`make_dataset` gets;
            its cache then serves every epoch.
        order_seed: the seed when ``dataset`` was decoded in ``epoch_order(n, order_seed, 0)``
            (as :func:`decode_in_epoch_order` does): epoch 0 of that seed then streams in that
            order (training starts with the first decoded batch) instead of filling a
            whole-dataset shuffle buffer first. None: decoded in another order.
    """

    dataset: Any
    order_seed: int | None = None


def decode_for_model(path: str | bytes, frame: int = -1) -> tuple[np.ndarray, bool]:
    """Decode one file with the shared loader for ``tf.data``: ``(uint8 (H,W,3), ok)``.

    ``frame`` >= 0: the ``frame``-th frame of a video or an animation as
    :func:`nsfwkit.frames.load_frames` samples it by default (the pixels ``classify`` sees);
    -1: a still image (:func:`nsfwkit.images.load_image`).

    A file that fails (changed since validation) gives a 1x1 black image and ``ok=False``; the
    pipeline filters it out instead of failing the batch.
    """
    if isinstance(path, bytes):
        path = path.decode("utf-8", "surrogateescape")
    try:
        if int(frame) >= 0:
            return _clip_frame(path, int(frame))
        return _images.load_image(path), True
    except _images.ImageError:
        return np.zeros((1, 1, 3), np.uint8), False


def _clip_frame(path: str, frame: int) -> tuple[np.ndarray, bool]:
    from .. import frames as _frames

    for k, item in enumerate(_frames.load_frames(path)):
        if k == frame:
            return item.pixels, True
    return np.zeros((1, 1, 3), np.uint8), False


def _augment(image, seed, *, strength: float):
    """Random flip, crop-zoom, brightness and contrast with a stateless seed (float 0-255 in/out)."""
    import tensorflow as tf

    size = tf.shape(image)[0]
    s1, s2, s3, s4 = (tf.random.experimental.stateless_fold_in(seed, i) for i in range(4))
    image = tf.image.stateless_random_flip_left_right(image, s1)
    scale = tf.random.stateless_uniform([], s2, 1.0 - 0.2 * strength, 1.0)
    crop = tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32)
    image = tf.image.stateless_random_crop(image, tf.stack([crop, crop, 3]), s3)
    image = tf.raw_ops.ResizeBilinear(images=image[None], size=tf.stack([size, size]),
                                      align_corners=True, half_pixel_centers=False)[0]
    delta = tf.random.stateless_uniform([2], s4, -1.0, 1.0) * strength
    mean = tf.reduce_mean(image)
    image = (image - mean) * (1.0 + 0.2 * delta[0]) + mean + 20.0 * delta[1]
    return tf.clip_by_value(image, 0.0, 255.0)


def _is_ok(i, image, ok):
    return ok


def _drop_ok(i, image, ok):
    return i, image


def epoch_order(n: int, seed: int, epoch: int = 0) -> np.ndarray:
    """The training order of one epoch: a permutation of ``range(n)`` fixed by ``(seed, epoch)``."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(int(n))


def decode_dataset(
    paths: Sequence[str],
    *,
    image_size: int,
    cache: bool | str = True,
    parallel: int | None = None,
    order: Sequence[int] | None = None,
    frames: Sequence[int] | None = None,
):
    """``tf.data.Dataset`` of ``(index, float32 (S, S, 3) image)``: decoded, resized, cached.

    ``frames``: per path, which sampled frame of a clip to decode (-1 or None: a still image;
    see :func:`decode_for_model`); a clip may appear several times with different frames.

    Files that fail to decode are dropped (their index is missing). Iterating the same object
    again reads the cache instead of decoding again. ``order`` (a permutation of the indices)
    sets the order files are decoded and yielded in; by default the order of ``paths``.
    """
    import tensorflow as tf

    paths = [str(p) for p in paths]
    size = int(image_size)
    # file names as bytes (surrogateescape): a name that is not UTF-8 reaches decode_for_model intact
    table = tf.constant([os.fsencode(p) for p in paths], tf.string) if paths else tf.zeros([0], tf.string)
    frame_table = tf.constant(np.full(len(paths), -1, np.int64) if frames is None
                              else np.asarray(frames, np.int64).reshape(-1))

    def load(i):
        image, ok = tf.numpy_function(decode_for_model, [tf.gather(table, i), tf.gather(frame_table, i)],
                                      [tf.uint8, tf.bool], stateful=False)
        image = tf.ensure_shape(image, [None, None, 3])
        image = tf.raw_ops.ResizeBilinear(images=image[None], size=[size, size],
                                          align_corners=True, half_pixel_centers=False)[0]
        return i, tf.ensure_shape(image, [size, size, 3]), tf.ensure_shape(ok, [])

    if order is None:
        indices = tf.data.Dataset.range(len(paths))
    else:
        indices = tf.data.Dataset.from_tensor_slices(np.asarray(order, np.int64).reshape(-1))
    ds = indices.map(load, num_parallel_calls=parallel or tf.data.AUTOTUNE, deterministic=True)
    ds = ds.filter(_is_ok).map(_drop_ok)
    if cache:
        ds = ds.cache("" if cache is True else str(cache))
    return ds


def decode_in_epoch_order(
    paths: Sequence[str],
    *,
    image_size: int,
    seed: int,
    cache: bool | str = True,
    parallel: int | None = None,
    frames: Sequence[int] | None = None,
) -> DecodedImages:
    """A run's training images, decoded in epoch 0's order (:func:`epoch_order`) for ``seed``.

    Pass it as ``decoded`` to every epoch's :func:`make_dataset`: the first epoch trains while
    it decodes, later epochs shuffle the cached images. ``frames``: as :func:`decode_dataset`.
    """
    order = epoch_order(len(paths), seed, 0)
    dataset = decode_dataset(paths, image_size=image_size, cache=cache, parallel=parallel, order=order,
                             frames=frames)
    return DecodedImages(dataset, order_seed=int(seed))


def make_dataset(
    paths: Sequence[str],
    labels: Sequence[int] | None = None,
    *,
    image_size: int,
    sample_weights: Sequence[float] | None = None,
    options: PipelineOptions | None = None,
    decoded: DecodedImages | Any | None = None,
    **keywords,
):
    """A ``tf.data.Dataset`` of ``(images, targets[, weights])`` batches from image files.

    Decoding uses the shared loader (in parallel threads via ``tf.numpy_function``), resizing
    the inference op (``ResizeBilinear(align_corners=True)``), so pixels equal
    ``nsfwkit.images.load_image(path, image_size=image_size)`` exactly. Decoded, resized images
    are cached (memory, or a cache file when ``cache`` is a path) before augmentation, so each
    file is decoded once per run. Files that fail to decode are skipped, never fatal.

    Training order and augmentation are deterministic functions of ``(seed, epoch)``: the
    same epoch always yields the same batches, so a resumed run can skip exactly the batches
    it already did (``.skip(k)``).

    Args:
        paths: image files.
        labels: class indices ``(N,)`` (None: the dataset yields images only).
        image_size: square side the model takes.
        sample_weights: per-file weight ``(N,)``; adds a third element to each batch.
        options: a :class:`PipelineOptions` (default: evaluation, batches of 32).
        decoded: a :class:`DecodedImages` of the same ``paths`` to reuse (build one per run
            and pass it to each epoch's call), or a bare :func:`decode_dataset` (its order
            seed then in ``decoded_order_seed``).
        **keywords: any :class:`PipelineOptions` field (``batch_size=8, training=True, ...``),
            applied over ``options``; and ``decoded_order_seed`` with a bare ``decoded``.

    Without ``decoded``, files are decoded straight in the epoch's order
    (:func:`epoch_order`), so decoding overlaps training from the first batch. With it, epoch 0
    streams when ``decoded.order_seed == seed``; later epochs shuffle the cached stream.

    Returns:
        ``tf.data.Dataset``; images are ``float32 (B, S, S, 3)`` in 0-255.

    Raises:
        TypeError: an unknown keyword.
    """
    import tensorflow as tf

    opts, decoded = _resolve_options(options, decoded, keywords)
    paths = [str(p) for p in paths]
    auto = tf.data.AUTOTUNE
    parallel = opts.parallel or auto
    ds, streaming = _epoch_source(paths, image_size, opts, decoded, parallel)
    finish = _targets(labels, sample_weights, opts.num_classes)
    if opts.training and not streaming:
        ds = ds.shuffle(opts.shuffle_buffer or max(len(paths), 1),
                        seed=int(opts.seed) * 1000 + int(opts.epoch), reshuffle_each_iteration=False)
    if opts.training and opts.augment and opts.augment_strength > 0:
        ds = ds.map(_augmenter(opts), num_parallel_calls=parallel, deterministic=True)
    ds = ds.map(finish, num_parallel_calls=parallel, deterministic=True)
    ds = ds.batch(opts.batch_size, drop_remainder=opts.drop_remainder)
    return ds.prefetch(auto)


def _resolve_options(options: PipelineOptions | None, decoded, keywords: dict):
    """``(options, decoded)`` from :func:`make_dataset`'s arguments (keywords over options)."""
    keywords = dict(keywords)
    order_seed = keywords.pop("decoded_order_seed", None)
    unknown = sorted(set(keywords) - _OPTION_NAMES)
    if unknown:
        raise TypeError(f"make_dataset() got unexpected keyword arguments {unknown}; "
                        f"options are {sorted(_OPTION_NAMES)}")
    opts = dataclasses.replace(options if options is not None else PipelineOptions(), **keywords)
    if isinstance(decoded, DecodedImages):
        if order_seed is not None:
            raise TypeError("decoded_order_seed goes with a bare decode_dataset(); a DecodedImages "
                            "carries its own order_seed")
    elif decoded is not None:
        decoded = DecodedImages(decoded, order_seed=order_seed)
    return opts, decoded


def _epoch_source(paths: list[str], image_size: int, opts: PipelineOptions,
                  decoded: DecodedImages | None, parallel):
    """``(dataset, streaming)``: the epoch's decoded ``(index, image)`` elements; ``streaming``
    when they already come in the epoch's order (no shuffle needed)."""
    if decoded is None:
        # decode in this epoch's order: no whole-dataset shuffle buffer to fill before step 1
        order = epoch_order(len(paths), opts.seed, opts.epoch) if opts.training else None
        ds = decode_dataset(paths, image_size=image_size, cache=opts.cache, parallel=parallel,
                            order=order)
        return ds, opts.training
    streaming = (opts.training and opts.epoch == 0 and decoded.order_seed is not None
                 and int(decoded.order_seed) == int(opts.seed))
    return decoded.dataset, streaming


def _augmenter(opts: PipelineOptions):
    """The per-element augmentation map ``(i, image) -> (i, augmented)`` of one epoch."""
    import tensorflow as tf

    base_seed = tf.constant([int(opts.seed), int(opts.epoch)], tf.int64)
    strength = float(opts.augment_strength)

    def aug(i, image):
        elem_seed = tf.random.experimental.stateless_fold_in(base_seed, i)
        elem_seed = tf.cast(elem_seed, tf.int64)
        return i, _augment(image, elem_seed, strength=strength)

    return aug


def _targets(labels, sample_weights, num_classes: int | None):
    """The map ``(i, image) -> image | (image, target[, weight])`` that ends each element."""
    import tensorflow as tf

    columns: list[Any] = [None]
    if labels is not None:
        columns.append(tf.constant(np.asarray(labels, np.int64).reshape(-1)))
    if sample_weights is not None:
        columns.append(tf.constant(np.asarray(sample_weights, np.float32).reshape(-1)))

    def finish(i, image):
        out = [image]
        if labels is not None:
            y = tf.gather(columns[1], i)
            out.append(tf.one_hot(y, num_classes, dtype=tf.float32) if num_classes else y)
        if sample_weights is not None:
            out.append(tf.gather(columns[-1], i))
        return tuple(out) if len(out) > 1 else out[0]

    return finish
