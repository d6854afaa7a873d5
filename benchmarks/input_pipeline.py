"""Benchmark: training throughput from JPEG files through the real ``tf.data`` pipeline vs the
same steps on in-memory tensors.

Both runs do identical training steps (the kit's default backbone, nsfwjs MobileNetV2, with a
new head; backbone frozen = the head phase, or ``--finetune`` for the top layers unfrozen) on
the same images and batch size. The file pipeline decodes with the shared loader in parallel
threads, resizes like nsfwjs, augments, batches and prefetches -- without its cache, i.e. the
first, slowest epoch; a cached epoch is timed too. The ratio is in-memory time / pipeline time
(1.0 = the input pipeline costs nothing; target >= 0.9 on 2 cores).

Usage: ``python benchmarks/input_pipeline.py [--images 128 --batch-size 16 --epochs 2]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--size", type=int, default=400, help="side of the generated JPEGs")
    parser.add_argument("--finetune", action="store_true", help="unfreeze the top 20 layers")
    args = parser.parse_args()

    import keras
    import tensorflow as tf
    from PIL import Image

    from nsfwkit import data, demo_data, images, train

    config = train.TrainConfig(batch_size=args.batch_size)
    model, spec, base_layers = train.build_classifier(config, demo_data.DEMO_CLASSES)
    train.set_trainable(model, base_layers, "finetune" if args.finetune else "head", unfreeze=20)
    size = int(model.inputs[0].shape[1])
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.CategoricalCrossentropy()

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    with tempfile.TemporaryDirectory(prefix="nsfwkit-bench-") as tmp:
        kinds = ["lineart", "flat_shapes", "gradient", "stripes", "dots"]
        paths, labels = [], []
        for i in range(args.images):
            img = demo_data.demo_image(kinds[i % 5], size=(args.size, args.size * 4 // 3), seed=i)
            path = Path(tmp) / f"img_{i:05d}.jpg"
            Image.fromarray(img).save(path, quality=90)
            paths.append(str(path))
            labels.append(i % 5)
        labels = np.array(labels)
        steps = int(np.ceil(len(paths) / args.batch_size))

        # in-memory: decoded and resized beforehand (the same pixels), no augmentation cost
        arrays = np.stack([images.load_image(p, image_size=size) for p in paths])
        onehot = np.eye(5, dtype=np.float32)[labels]
        memory = tf.data.Dataset.from_tensor_slices((arrays, onehot)).batch(args.batch_size).prefetch(2)
        for x, y in memory.take(1):  # trace once
            step(x, y)

        def timed(make):
            t0 = time.perf_counter()
            n = 0
            for epoch in range(args.epochs):
                for batch in make(epoch):
                    float(step(batch[0], batch[1]))
                    n += 1
            return time.perf_counter() - t0, n

        mem_s, mem_n = timed(lambda e: memory)
        pipe_s, pipe_n = timed(lambda e: data.make_dataset(
            paths, labels, image_size=size, batch_size=args.batch_size, num_classes=5,
            training=True, seed=0, epoch=e, cache=False))
        decoded = data.decode_dataset(paths, image_size=size, cache=True)
        for _ in decoded:  # fill the cache
            pass
        cached_s, cached_n = timed(lambda e: data.make_dataset(
            paths, labels, image_size=size, batch_size=args.batch_size, num_classes=5,
            training=True, seed=0, epoch=e, decoded=decoded))
    assert mem_n == pipe_n == cached_n == steps * args.epochs
    phase = "finetune" if args.finetune else "head"
    print(f"{args.images} JPEGs {args.size}x{args.size * 4 // 3} -> {size}x{size}, batch {args.batch_size}, "
          f"{mem_n} steps ({phase} phase)")
    print(f"in-memory tensors:          {mem_s:7.2f} s  {args.images * args.epochs / mem_s:6.1f} img/s")
    print(f"tf.data from JPEG (no cache): {pipe_s:5.2f} s  {args.images * args.epochs / pipe_s:6.1f} img/s")
    print(f"tf.data, cached decode:     {cached_s:7.2f} s  {args.images * args.epochs / cached_s:6.1f} img/s")
    print(f"ratio in-memory / tf.data (no cache): {mem_s / pipe_s:.2f}  (target >= 0.9)")
    print(f"ratio in-memory / tf.data (cached):   {mem_s / cached_s:.2f}")


if __name__ == "__main__":
    main()
