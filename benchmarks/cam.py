"""Benchmark: the cost of a class activation map, relative to one forward + backward pass.

In one run, on the same model and image (batch of 1, warm compiled functions):

* **baseline** - one forward pass and the gradient of the top score w.r.t. the input
  (a compiled ``tf.function``);
* **baseline to the layer** - one forward pass and the gradient of the top logit w.r.t. the CAM
  layer only (what Grad-CAM itself needs: backpropagation stops at ``out_relu``/``mixed10``), a
  compiled ``tf.function`` over :func:`nsfwkit.viz.layers.feature_model`;
* **Grad-CAM** and **Grad-CAM++** - :func:`nsfwkit.viz.cam.compute_cam` end to end (input
  preparation, forward, backward to the conv layer, weights, upsampling); target <= 1.5x;
* **Score-CAM** - one forward pass per channel: reported for ``max_channels`` 256 and all.

Usage::

    python benchmarks/cam.py [--model mobilenet_v2] [--repeats 20] [--no-full-score-cam]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def best_of(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]  # median


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-full-score-cam", action="store_true", help="skip Score-CAM over all channels")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from nsfwkit import images, samples, zoo
    from nsfwkit.viz import cam

    model, spec = zoo.load(args.model)
    x = images.load_image(samples.default_image(), image_size=spec.image_size)[None]
    xt = tf.constant(x)

    @tf.function
    def forward_backward(inp):
        with tf.GradientTape() as tape:
            tape.watch(inp)
            probs = model(inp, training=False)
            top = tf.reduce_max(probs, axis=-1)
            score = tf.reduce_sum(top)
        return tape.gradient(score, inp)

    from nsfwkit.viz.layers import feature_model

    sub = feature_model(model, [spec.last_conv_layer], head="logits")

    @tf.function
    def forward_backward_to_layer(inp):
        with tf.GradientTape() as tape:
            acts, logits = sub(inp, training=False)
            score = tf.reduce_sum(tf.reduce_max(logits, axis=-1))
        return tape.gradient(score, acts)

    base = best_of(lambda: forward_backward(xt).numpy(), args.repeats)
    base_layer = best_of(lambda: forward_backward_to_layer(xt).numpy(), args.repeats)
    forward = tf.function(lambda inp: model(inp, training=False))
    fwd = best_of(lambda: forward(xt).numpy(), args.repeats)
    print(f"model {args.model} ({spec.image_size}px), batch of 1, median of {args.repeats}")
    print(f"forward only:              {fwd * 1e3:8.1f} ms")
    print(f"forward + backward (base): {base * 1e3:8.1f} ms")
    print(f"forward + backward to {spec.last_conv_layer}: {base_layer * 1e3:8.1f} ms")
    for method in ("grad_cam", "grad_cam_plus_plus"):
        t = best_of(lambda: cam.compute_cam(model, x, method=method, layer=spec.last_conv_layer), args.repeats)
        print(f"{method:<26} {t * 1e3:8.1f} ms = {t / base:.2f}x forward+backward (target <= 1.5x), "
              f"{t / base_layer:.2f}x forward+backward to the layer")
    layer_channels = int(model.get_layer(spec.last_conv_layer).output.shape[-1]) if spec.last_conv_layer else None
    settings = [256] + ([None] if not args.no_full_score_cam else [])
    for k in settings:
        t = best_of(lambda: cam.compute_cam(model, x, method="score_cam", layer=spec.last_conv_layer,
                                            max_channels=k, batch_size=32), 1)
        label = f"all {layer_channels}" if k is None else str(k)
        print(f"score_cam ({label} channels): {t:8.2f} s = {t / base:.0f}x forward+backward, "
              f"{t / fwd:.0f}x one forward pass")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
