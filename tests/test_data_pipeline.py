"""The tf.data input pipeline: same pixels as inference, deterministic per (seed, epoch), robust."""

from __future__ import annotations

import numpy as np

from nsfwkit import data, images

from data_helpers import tiny_dataset, write_image


def _files(tmp_path, n=6):
    root = tiny_dataset(tmp_path / "ds", per_class=n // 2, size=40)
    paths = sorted(str(p) for p in root.rglob("*.jpg"))
    labels = np.array([0 if "neutral" in p else 1 for p in paths])
    return paths, labels


def test_pipeline_pixels_equal_the_inference_loader(tmp_path):
    paths, labels = _files(tmp_path)
    # a non-square PNG with alpha and an image already at the target size
    from PIL import Image

    rgba = np.zeros((30, 50, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :25, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    exact = write_image(tmp_path / "exact.png", np.arange(24 * 24 * 3, dtype=np.uint8).reshape(24, 24, 3), "PNG")
    paths = paths + [str(tmp_path / "alpha.png"), str(exact)]
    labels = np.concatenate([labels, [0, 1]])
    ds = data.make_dataset(paths, labels, image_size=24, batch_size=4, num_classes=2)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    x, y = np.concatenate(xs), np.concatenate(ys)
    ref = np.stack([images.load_image(p, image_size=24) for p in paths])
    assert x.dtype == np.float32 and x.shape == (len(paths), 24, 24, 3)
    np.testing.assert_array_equal(x, ref)
    np.testing.assert_array_equal(y.argmax(1), labels)


def test_training_order_and_augmentation_depend_only_on_seed_and_epoch(tmp_path):
    paths, labels = _files(tmp_path, 8)
    decoded = data.decode_dataset(paths, image_size=32)

    def epoch(e, seed=0, skip=0):
        ds = data.make_dataset(paths, labels, image_size=32, batch_size=3, training=True,
                               seed=seed, epoch=e, decoded=decoded)
        return [b[0].numpy() for b in ds.skip(skip)]

    a, b = epoch(1), epoch(1)
    assert len(a) == 3
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    c = epoch(2)
    assert any(u.shape != v.shape or not np.array_equal(u, v) for u, v in zip(a, c))
    # resuming mid-epoch: skipping k batches yields exactly the remaining ones
    np.testing.assert_array_equal(epoch(1, skip=2)[0], a[2])
    # augmentation stays in 0-255 and differs from the clean image
    clean = data.make_dataset(paths, labels, image_size=32, batch_size=8, decoded=decoded)
    x_clean = next(iter(clean))[0].numpy()
    aug = np.concatenate(epoch(1))
    assert aug.min() >= 0 and aug.max() <= 255
    assert not any(np.array_equal(aug[0], x_clean[i]) for i in range(8))


def test_a_file_broken_after_validation_is_skipped_not_fatal(tmp_path):
    paths, labels = _files(tmp_path)
    broken = tmp_path / "was_fine.jpg"
    broken.write_bytes(b"\xff\xd8\xff" + b"\0" * 10)
    ds = data.make_dataset(paths + [str(broken)], np.append(labels, 1), image_size=16,
                           batch_size=4, sample_weights=np.arange(len(paths) + 1, dtype=float))
    batches = list(ds)
    n = sum(len(b[0]) for b in batches)
    assert n == len(paths)
    weights = np.concatenate([b[2].numpy() for b in batches])
    np.testing.assert_array_equal(weights, np.arange(len(paths)))


def test_images_only_dataset(tmp_path):
    paths, _ = _files(tmp_path)
    batch = next(iter(data.make_dataset(paths, image_size=20, batch_size=16)))
    assert batch.shape == (len(paths), 20, 20, 3)


def test_first_epoch_streams_in_a_seeded_order(tmp_path):
    """Epoch 0 decodes in epoch_order(n, seed, 0): no whole-dataset shuffle buffer to fill first."""
    paths, labels = _files(tmp_path, 8)
    order = data.epoch_order(len(paths), 3, 0)
    assert sorted(order) == list(range(8)) and list(order) != list(range(8))
    decoded = data.decode_dataset(paths, image_size=16, order=order)
    plain = data.make_dataset(paths, labels, image_size=16, batch_size=8, training=True, seed=3,
                              epoch=0, augment=False, decoded=decoded, decoded_order_seed=3)
    x = next(iter(plain))[0].numpy()
    ref = np.stack([images.load_image(paths[i], image_size=16) for i in order])
    np.testing.assert_array_equal(x, ref)
    # without a prepared decode, make_dataset itself decodes in the epoch's order
    own = data.make_dataset(paths, labels, image_size=16, batch_size=8, training=True, seed=3,
                            epoch=0, augment=False)
    np.testing.assert_array_equal(next(iter(own))[0].numpy(), ref)


def test_options_object_and_keywords_give_the_same_batches(tmp_path):
    """The way train() calls it (PipelineOptions + decode_in_epoch_order) equals the keyword form."""
    import pytest

    paths, labels = _files(tmp_path, 8)
    decoded = data.decode_in_epoch_order(paths, image_size=16, seed=3)
    assert decoded.order_seed == 3
    opts = data.PipelineOptions(batch_size=8, training=True, seed=3, epoch=0, augment=False)
    x = next(iter(data.make_dataset(paths, labels, image_size=16, options=opts, decoded=decoded)))[0]
    ref = np.stack([images.load_image(paths[i], image_size=16) for i in data.epoch_order(8, 3, 0)])
    np.testing.assert_array_equal(x.numpy(), ref)  # epoch 0 streams in the decoded order
    # epoch 1 with augmentation: keywords over options equal the options spelled out
    a = data.make_dataset(paths, labels, image_size=16, options=opts, decoded=decoded, epoch=1, augment=True)
    b = data.make_dataset(paths, labels, image_size=16, decoded=decoded.dataset, decoded_order_seed=3,
                          batch_size=8, training=True, seed=3, epoch=1)
    np.testing.assert_array_equal(next(iter(a))[0].numpy(), next(iter(b))[0].numpy())
    with pytest.raises(TypeError, match="batchsize"):
        data.make_dataset(paths, labels, image_size=16, batchsize=8)
