"""Benchmark: the cost of a class activation map, relative to one forward + backward pass.

In one run, on the same model and image (batch of 1, warm compiled functions):

* **baseline** - one forward pass and the gradient of the top score w.r.t. the input
  (a compiled ``tf.function``);
* **baseline to the layer** - one forward pass and the gradient of the top logit w.r.t. the CAM
  layer only (what Grad-CAM itself needs: backpropagation stops at ``out_relu``/``mixed10``), a
  compiled ``tf.function`` over :func:`nsfwkit.viz.layers.feature_model`;
* **Grad-CAM** and **Grad-CAM++** - :func:`nsfwkit.viz.cam.compute_cam` end to end (input
  preparation, forward, backward to the conv layer, weights, upsampling); target <= 1.5x;
* **Score-CAM** - one forward pass per channel: reported for ``max_channels`` 256 and all;
* **attributions** - gradients, SmoothGrad (25 samples), Integrated Gradients (64 steps) and
  LayerCAM end to end, and one deletion + insertion score (2 x 32 images), against the same
  forward + backward pass;
* **faithfulness** - deletion / insertion AUC (blur baseline, 32 steps) of every method on the
  kit's sample photos (:data:`nsfwkit.samples.PHOTOS`), a table; Integrated Gradients'
  completeness error beside it;
* **sanity** - cascading model-parameter randomisation (top layers first, on a copy): the mean
  Spearman rank correlation of every method's maps with the trained model's, per cascade step,
  and which methods survive (are flagged).

Usage::

    python benchmarks/cam.py [--model mobilenet_v2] [--repeats 20] [--no-full-score-cam]
        [--no-attributions] [--no-faithfulness] [--no-sanity] [--sanity-images 2]
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
    parser.add_argument("--no-attributions", action="store_true", help="skip the attribution costs")
    parser.add_argument("--no-faithfulness", action="store_true", help="skip the deletion / insertion table")
    parser.add_argument("--no-sanity", action="store_true", help="skip the cascading randomisation table")
    parser.add_argument("--sanity-images", type=int, default=2, help="sample photos in the sanity check")
    parser.add_argument("--score-cam-channels", type=int, default=256, help="Score-CAM channels in the tables")
    args = parser.parse_args(argv)

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
        t = best_of(lambda method=method: cam.compute_cam(model, x, method=method, layer=spec.last_conv_layer),
                    args.repeats)
        print(f"{method:<26} {t * 1e3:8.1f} ms = {t / base:.2f}x forward+backward (target <= 1.5x), "
              f"{t / base_layer:.2f}x forward+backward to the layer")
    layer_channels = int(model.get_layer(spec.last_conv_layer).output.shape[-1]) if spec.last_conv_layer else None
    settings = [256] + ([None] if not args.no_full_score_cam else [])
    for k in settings:
        t = best_of(lambda k=k: cam.compute_cam(model, x, method="score_cam", layer=spec.last_conv_layer,
                                            max_channels=k, batch_size=32), 1)
        label = f"all {layer_channels}" if k is None else str(k)
        print(f"score_cam ({label} channels): {t:8.2f} s = {t / base:.0f}x forward+backward, "
              f"{t / fwd:.0f}x one forward pass")
    if not args.no_attributions:
        attribution_costs(model, x, base, args.repeats)
    photos = sample_photos(spec.image_size)
    options = {"score_cam": {"max_channels": args.score_cam_channels}}
    if not args.no_faithfulness:
        faithfulness_table(model, photos, options)
    if not args.no_sanity:
        sanity_table(model, {k: photos[k] for k in list(photos)[: args.sanity_images]}, options)
    return 0


def sample_photos(size):
    """The kit's sample photos (not the generated images), resized the nsfwjs way."""
    from nsfwkit import images, samples

    found = samples.sample_images()
    return {name: images.resize(found[name], size) for name in samples.PHOTOS}


def attribution_costs(model, x, base, repeats):
    from nsfwkit.viz import attributions, faithfulness

    print(f"\nattributions, batch of 1, median of {max(3, repeats // 4)} (base = forward+backward {base * 1e3:.1f} ms)")
    for method, opts in (("gradients", {}), ("smoothgrad", {"samples": 25}),
                         ("integrated_gradients", {"steps": 64}), ("layer_cam", {})):
        t = best_of(lambda m=method, o=opts: attributions.compute_attribution(model, x, method=m, **o),
                    max(3, repeats // 4))
        print(f"{method:<22} {str(opts):<16} {t * 1e3:9.1f} ms = {t / base:6.1f}x forward+backward")
    cam_map = attributions.explain(model, x, method="grad_cam").maps
    t = best_of(lambda: faithfulness.deletion_insertion(model, x, cam_map), max(3, repeats // 4))
    print(f"{'deletion+insertion':<22} {'2 x 32 images':<16} {t * 1e3:9.1f} ms = {t / base:6.1f}x forward+backward")


def faithfulness_table(model, photos, options):
    import numpy as np

    from nsfwkit.viz import attributions, faithfulness

    batch = np.stack(list(photos.values()))
    print(f"\nfaithfulness on {len(photos)} sample photos ({', '.join(photos)}), top-1 class, blur baseline, "
          "32 steps; mean (sd) over photos")
    print(f"{'method':<22} {'deletion AUC (low)':>19} {'insertion AUC (high)':>21} {'ins - del':>10} {'s/image':>8}")
    cls = faithfulness._fixed_classes(model, batch, None)
    rows = []
    for method in attributions.ALL_METHODS:
        t0 = time.perf_counter()
        result = attributions.explain(model, batch, method=method, class_index=cls, **options.get(method, {}))
        seconds = (time.perf_counter() - t0) / len(batch)
        score = faithfulness.deletion_insertion(model, batch, result.maps, class_index=cls)
        rows.append((method, score))
        print(f"{method:<22} {score.deletion_auc.mean():10.3f} ({score.deletion_auc.std():.3f}) "
              f"{score.insertion_auc.mean():12.3f} ({score.insertion_auc.std():.3f}) "
              f"{score.difference.mean():10.3f} {seconds:8.2f}")
        if method == "integrated_gradients":
            rel = np.abs(result.completeness_error) / np.maximum(np.abs(result.score_difference), 1e-12)
            print(f"{'':<22} completeness error |sum(attr) - (f(x) - f(0))| / |f(x) - f(0)|: "
                  f"mean {rel.mean():.3f}, max {rel.max():.3f}")
    noise = np.random.default_rng(0).uniform(size=batch.shape[:3]).astype(np.float32)
    chance = faithfulness.deletion_insertion(model, batch, noise, class_index=cls)
    print(f"{'random map (reference)':<22} {chance.deletion_auc.mean():10.3f} ({chance.deletion_auc.std():.3f}) "
          f"{chance.insertion_auc.mean():12.3f} ({chance.insertion_auc.std():.3f}) {chance.difference.mean():10.3f}")
    best = max(rows, key=lambda row: row[1].difference.mean())
    print(f"highest insertion - deletion: {best[0]} ({best[1].difference.mean():.3f}; a random map "
          f"{chance.difference.mean():.3f})")


def sanity_table(model, photos, options):
    import numpy as np

    from nsfwkit.viz import attributions, faithfulness

    batch = np.stack(list(photos.values()))
    t0 = time.perf_counter()
    result = faithfulness.sanity_check(model, batch, methods=attributions.ALL_METHODS, options=options)
    print(f"\ncascading randomisation on {len(photos)} photos ({', '.join(photos)}), "
          f"{time.perf_counter() - t0:.0f} s; mean Spearman rho of the maps with the trained model's "
          f"(flagged: > {result.threshold:g} after step {result.flag_step + 1})")
    header = " ".join(f"{f'top {k}':>9}" for k in result.steps)
    print("deepest layer randomised: " + ", ".join(f"top {k} = {label}"
                                                     for k, label in zip(result.steps, result.labels, strict=True)))
    print(f"{'method':<22} {header}  flagged")
    for name, row in zip(result.methods, result.mean_correlation, strict=True):
        cells = " ".join(f"{v:9.3f}" for v in row)
        print(f"{name:<22} {cells}  {'yes' if name in result.flagged else 'no'}")


if __name__ == "__main__":
    raise SystemExit(main())
