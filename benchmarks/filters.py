"""Benchmark: batched, compiled filter optimisation vs the original one-filter-at-a-time loop.

Same model, layer, filter count and steps, in one run:

* **ours** - :func:`nsfwkit.viz.filters.maximize_filters` (``classic`` recipe): all filters in one
  batch, one compiled ``tf.function`` step, batch norm in inference mode;
* **compiled, one filter at a time** - the same function called once per filter (``filters=[f]``):
  compiled but not batched, so ``original / one-at-a-time`` is the gain from compiling (and
  inference mode) and ``one-at-a-time / ours`` the gain from batching;
* **original** - a faithful eager re-implementation of tfjs-examples ``visualize-convnet``
  ``filters.js: inputGradientAscent``: for each filter separately, an auxiliary model from the
  input to the layer, ``apply(x, training=True)``, the loss is the mean of the filter's whole
  feature map, the gradient is normalised by ``sqrt(mean(g^2)) + eps`` and added, then clipped
  to [0, 255]; every op runs eagerly.

Prints the times and the speed-ups (target >= 5x overall). Usage::

    python benchmarks/filters.py [--model mobilenet_v2] [--layer block_7_depthwise_relu]
                                 [--filters 8] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def original_loop(model, layer, filters, steps, seed=0):
    """The original algorithm, one filter at a time, eager (as TF.js runs it)."""
    import keras
    import numpy as np
    import tensorflow as tf

    aux = keras.Model(model.inputs[0], model.get_layer(layer).output)
    size = model.inputs[0].shape[1:3]
    rng = np.random.default_rng(seed)
    images = []
    for f in range(filters):
        x = tf.constant((rng.uniform(0, 1, (1, *size, 3)) * 20 + 128).astype(np.float32))
        for _ in range(steps):
            with tf.GradientTape() as tape:
                tape.watch(x)
                act = aux(x, training=True)
                loss = tf.reduce_mean(tf.gather(act, [f], axis=3))
            g = tape.gradient(loss, x)
            g = g / (tf.sqrt(tf.reduce_mean(tf.square(g))) + 1e-5)
            x = tf.clip_by_value(x + g, 0.0, 255.0)
        images.append(x.numpy()[0])
    return np.stack(images)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--layer", default="block_7_depthwise_relu")
    parser.add_argument("--filters", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)

    from nsfwkit import zoo
    from nsfwkit.viz import filters

    model, _ = zoo.load(args.model)
    common = dict(filters=args.filters, recipe="classic", progress=False)
    # compile once (tracing is a one-off cost per model and layer, reported separately)
    t0 = time.perf_counter()
    filters.maximize_filters(model, args.layer, steps=1, **common)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = filters.maximize_filters(model, args.layer, steps=args.steps, **common)
    ours_s = time.perf_counter() - t0
    one = dict(common, filters=[0])
    filters.maximize_filters(model, args.layer, steps=1, **one)  # trace the batch-of-1 step
    t0 = time.perf_counter()
    for f in range(args.filters):
        filters.maximize_filters(model, args.layer, steps=args.steps, **dict(common, filters=[f]))
    single_s = time.perf_counter() - t0
    original_loop(model, args.layer, 1, 1)  # warm-up of the eager path
    t0 = time.perf_counter()
    original_loop(model, args.layer, args.filters, args.steps)
    original_s = time.perf_counter() - t0

    print(f"model {args.model}, layer {args.layer}, {args.filters} filters x {args.steps} steps")
    print(f"original (eager, one filter at a time): {original_s:8.2f} s")
    print(f"compiled, one filter at a time:         {single_s:8.2f} s")
    print(f"ours (batched, compiled):               {ours_s:8.2f} s   (+{compile_s:.2f} s one-off tracing)")
    print(f"speed-up: {original_s / ours_s:.1f}x (target >= 5x); including tracing: "
          f"{original_s / (ours_s + compile_s):.1f}x")
    print(f"  of which compiling: {original_s / single_s:.1f}x (original / one at a time), "
          f"batching: {single_s / ours_s:.1f}x (one at a time / batched)")
    print(f"ours: mean activation {ours.activation_start.mean():.3f} -> {ours.activation_reached.mean():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
