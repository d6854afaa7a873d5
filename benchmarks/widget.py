"""Benchmark: seconds per LayerBrowser interaction, through the widget's own API, beside the same
work called directly from ``nsfwkit.viz``.

Two copies of the model are loaded, one for the widget and one for the direct calls, so both start
with nothing traced. Each interaction is timed by setting a control's ``.value`` (the widget runs
inline outside a notebook, so the assignment returns when the picture is drawn) and by calling the
same ``nsfwkit.viz`` functions plus the picture helpers (``channel_image``/``overlay``, PNG) directly:

* **cold**: the first visit (compiled functions traced, nothing computed);
* **warm**: functions traced, a new result (another channel, class or image);
* **cached**: a revisit; the widget answers from its cache, the direct column recomputes (warm).

Interactions: layer change (activation mode), channel change, filter (``classic``, 32 steps, the
widget's default), Grad-CAM (new layer, new class), dataset examples over 200 generated images
(channel means of every image at the layer, then the top 6 with their maps, blurred tiles). The
ratio widget / direct is the widget's overhead (target <= 1.10 for cold and warm).

Usage::

    python benchmarks/widget.py [--model mobilenet_v2] [--examples 200] [--steps 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def seconds(fn, repeats: int = 1) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` (each call gets its index)."""
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:  # noqa: C901 - one straight script of measurements
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import numpy as np

    from nsfwkit import images as imaging
    from nsfwkit import samples, zoo
    from nsfwkit.data import redact
    from nsfwkit.viz import activations, cam, filters
    from nsfwkit.viz.activations import channel_image
    from nsfwkit.viz.pixels import grid, overlay, png_bytes
    from nsfwkit.widgets import LayerBrowser

    wmodel, spec = zoo.load(args.model)
    dmodel, _ = zoo.load(args.model)
    side = spec.image_size
    cat = imaging.load_image(samples.default_image())
    x = imaging.resize(cat, side)
    kinds = ("gradient", "checkerboard", "blobs", "noise")
    dataset = {f"{kinds[i % 4]}-{i}": samples.synthetic_image(kinds[i % 4], image_size=256, seed=i)
               for i in range(args.examples)}
    early, mid, last = "block_3_expand_relu", "block_13_expand_relu", spec.last_conv_layer or "out_relu"
    rows = []

    def row(name, widget, direct):
        rows.append((name, widget, direct))
        print(f"  {name:<44} widget {widget:8.3f} s   direct {direct:8.3f} s   ratio {widget / direct:5.2f}",
              flush=True)

    def direct_activation(layer, channel):
        maps = activations.activations(dmodel, x, layers=[layer]).layers[layer][0]
        png_bytes(channel_image(maps[..., channel], min_side=224))
        return maps

    def direct_filter(layer, channel):
        r = filters.maximize_filters(dmodel, layer, filters=[channel], recipe="classic", steps=args.steps,
                                     progress=False)
        png_bytes(r.images[0])

    def direct_cam(layer, class_index=None):
        r = cam.compute_cam(dmodel, x, layer=layer, class_index=class_index, max_channels=64)
        png_bytes(overlay(x, r.maps[0]))

    def direct_examples(arrays, layer, channel, means=None):
        means = activations.channel_means(dmodel, arrays, layer=layer) if means is None else means
        top = activations.top_activating_examples(dmodel, arrays, layer=layer, channel=channel, count=6, means=means)
        low, high = float(top.maps.min()), float(top.maps.max())
        scaled = (top.maps - low) / (high - low) if high > low else np.zeros_like(top.maps)
        tiles = [redact(overlay(imaging.resize(arrays[i], 112), imaging.resize(m[..., None], 112)[..., 0]))
                 for i, m in zip(top.indices, scaled, strict=True)]
        png_bytes(grid(tiles, columns=3))
        return means

    # TensorFlow's process-wide first-use costs (op kernels, resize, gradients), paid on a third copy
    # at a layer not measured, so the first row measured (the widget's) does not carry them
    spare, _ = zoo.load(args.model)
    activations.activations(spare, x, layers=[early])
    filters.maximize_filters(spare, "block_6_expand_relu", filters=[0], recipe="classic", steps=2, progress=False)
    cam.compute_cam(spare, x, layer="block_6_expand_relu")
    activations.channel_means(spare, np.zeros((2, side, side, 3), np.uint8), layer="block_6_expand_relu")
    png_bytes(redact(overlay(x, np.zeros((side, side), np.float32))))
    del spare
    print(f"model {args.model} ({side}px), widget inline (outside a notebook), median of {args.repeats} "
          f"where repeated; filter: classic, {args.steps} steps")
    # -- layer change and channel (activation mode, focus view only) ---------------------------
    t0 = time.perf_counter()
    b = LayerBrowser(wmodel, spec, images={"cat": cat}, layers=[early, mid, last], steps=args.steps, show=())
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    direct_activation(last, int(b.channel.value))
    row("open the browser (activation at the last layer)", build, time.perf_counter() - t0)

    def set_value(control, value):
        def run(_i):
            control.value = value
        return run

    row("layer change, cold", seconds(set_value(b.layer, mid)), seconds(lambda _i: direct_activation(mid, 0)))
    b.layer.value = early
    row("layer change, cached (revisit)", seconds(lambda i: (setattr(b.layer, "value", [mid, early][i % 2])),
                                                  args.repeats * 2),
        seconds(lambda i: direct_activation([mid, early][i % 2], 0), args.repeats * 2))
    b.layer.value = mid
    maps = direct_activation(mid, 0)
    row("channel change (activation)", seconds(lambda i: setattr(b.channel, "value", 10 + i), args.repeats),
        seconds(lambda i: (png_bytes(channel_image(maps[..., 10 + i], min_side=224)),
                           activations.most_active_channels(maps, count=5)), args.repeats))
    # -- filter ---------------------------------------------------------------------------------
    b.channel.value = 1
    row("filter, cold (first at the layer)", seconds(set_value(b.mode, "filter")),
        seconds(lambda _i: direct_filter(mid, 1)))
    row("filter, warm (another channel)", seconds(lambda i: setattr(b.channel, "value", 2 + i), args.repeats),
        seconds(lambda i: direct_filter(mid, 2 + i), args.repeats))
    row("filter, cached (revisit)", seconds(lambda i: setattr(b.channel, "value", 1 + (i % 2)), args.repeats),
        seconds(lambda i: direct_filter(mid, 1 + (i % 2)), args.repeats))
    # -- Grad-CAM -------------------------------------------------------------------------------
    b.mode.value = "activation"
    b.layer.value = last
    row("Grad-CAM, cold (first at the layer)", seconds(set_value(b.mode, "cam")),
        seconds(lambda _i: direct_cam(last)))
    row("Grad-CAM, warm (another class)", seconds(lambda i: setattr(b.cam_class, "value", i % 5), args.repeats),
        seconds(lambda i: direct_cam(last, i % 5), args.repeats))
    row("Grad-CAM, cached (revisit)", seconds(lambda i: setattr(b.cam_class, "value", [-1, 0][i % 2]),
                                              args.repeats),
        seconds(lambda i: direct_cam(last, [None, 0][i % 2]), args.repeats))
    b.close()
    # -- dataset examples -----------------------------------------------------------------------
    t0 = time.perf_counter()
    e = LayerBrowser(wmodel, spec, images={"cat": cat}, examples=dataset, layers=[mid, last], steps=args.steps,
                     show=("examples",), max_examples=args.examples)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    arrays = np.clip(np.rint(np.stack([imaging.resize(a, side) for a in dataset.values()])), 0, 255).astype(np.uint8)
    direct_examples(arrays, last, int(e.channel.value))
    direct_activation(last, int(e.channel.value))
    row(f"examples, open ({args.examples} images loaded, scored)", build, time.perf_counter() - t0)

    def direct_layer(_i):
        direct_examples(arrays, mid, int(e.channel.value))
        direct_activation(mid, int(e.channel.value))

    row(f"examples, new layer ({args.examples} images scored)", seconds(set_value(e.layer, mid)),
        seconds(direct_layer))
    means = activations.channel_means(dmodel, arrays, layer=mid)
    row("examples, another channel (top 6 + maps)", seconds(lambda i: setattr(e.channel, "value", 20 + i),
                                                            args.repeats),
        seconds(lambda i: (direct_examples(arrays, mid, 20 + i, means), direct_activation(mid, 20 + i)),
                args.repeats))
    row("examples, cached (revisit)", seconds(lambda i: setattr(e.channel, "value", 20 + (i % 2)), args.repeats),
        seconds(lambda i: (direct_examples(arrays, mid, 20 + (i % 2), means), direct_activation(mid, 20)),
                args.repeats))
    e.close()
    overhead = [w / d for name, w, d in rows if "cached" not in name]
    print(f"widget / direct over cold and warm interactions: median {statistics.median(overhead):.2f}, "
          f"max {max(overhead):.2f} (target <= 1.10)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
