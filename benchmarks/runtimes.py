"""Benchmark: the default model in Keras, LiteRT and onnxruntime on the same images, one run.

Usage: python benchmarks/runtimes.py [--tflite float32,float16,dynamic,int8] [--onnx float32,float16]
                                     [--images 64] [--repeats 3] [--json out.json]

Exports the default model (``zoo.load("mobilenet_v2")``) to each format and precision in a
temporary folder, then measures on the same images: per-image latency at batch 1 (median) and
throughput at batch 32 (best of ``--repeats``), every runtime and Keras (TensorFlow) limited to
2 threads; printed with the export's size and parity row, and as ratios to Keras measured in
this run (latency: Keras ms / runtime ms, throughput: runtime img/s / Keras img/s; > 1 is
faster than Keras).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

THREADS = 2


def bench_images(count: int, image_size: int) -> np.ndarray:
    """Safe photo crops and generated images, resized the inference way, whole-number pixels
    (so the uint8-input int8 build sees exactly what the others see)."""
    from nsfwkit import samples
    from nsfwkit.convert import runtimes as common

    rng = np.random.default_rng(0)
    pool = list(samples.sample_images().values()) + list(common.parity_images(image_size).values())
    raw = []
    for i in range(count):
        img = pool[i % len(pool)]
        h, w = img.shape[:2]
        y, x = rng.integers(0, h // 4 + 1), rng.integers(0, w // 4 + 1)
        raw.append(img[y: y + 3 * h // 4 + 1, x: x + 3 * w // 4 + 1])
    return np.rint(common.resized(raw, image_size))


def timings(run_batch, images: np.ndarray, *, batch_size: int, repeats: int, singles: int) -> tuple[float, float]:
    """``(ms per image at batch 1 (median), images/s at batch_size (best))`` of ``run_batch``."""
    run_batch(images[:1])
    run_batch(images[:batch_size])  # warm-up, tracing, allocation
    single = []
    for i in range(singles):
        t = time.perf_counter()
        run_batch(images[i % len(images): i % len(images) + 1])
        single.append(time.perf_counter() - t)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for start in range(0, len(images) - batch_size + 1, batch_size):
            run_batch(images[start: start + batch_size])
        best = min(best, time.perf_counter() - t)
    n = (len(images) // batch_size) * batch_size
    return 1000 * statistics.median(single), n / best


def keras_runner(model):
    def run(batch):
        return model.predict_on_batch(batch)
    return run


def litert_runner(path: str):
    from ai_edge_litert.interpreter import Interpreter

    interpreters = {}

    def run(batch):
        key = len(batch)
        if key not in interpreters:
            it = Interpreter(model_path=path, num_threads=THREADS)
            it.resize_tensor_input(it.get_input_details()[0]["index"], list(batch.shape))
            it.allocate_tensors()
            interpreters[key] = it
        it = interpreters[key]
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        it.set_tensor(inp["index"], batch.astype(inp["dtype"]))
        it.invoke()
        return it.get_tensor(out["index"])
    return run


def onnx_runner(path: str):
    from nsfwkit.convert import onnx as convert_onnx

    sess = convert_onnx.session(path, num_threads=THREADS)

    def run(batch):
        return sess.run(None, {"image": batch.astype(np.float32)})[0]
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tflite", default="float32,float16,dynamic,int8")
    parser.add_argument("--onnx", default="float32,float16")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--singles", type=int, default=40, help="batch-1 runs (median kept)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    from nsfwkit import zoo
    from nsfwkit.convert import onnx as convert_onnx
    from nsfwkit.convert import tflite as convert_tflite

    model, spec = zoo.load("mobilenet_v2")
    images = bench_images(args.images, spec.image_size)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-runtimes-") as tmp:
        exports = []
        for q in filter(None, args.tflite.split(",")):
            exports.append((convert_tflite.export_tflite(model, Path(tmp) / "tflite" / q, spec=spec, quantize=q),
                            litert_runner))
        for p in filter(None, args.onnx.split(",")):
            exports.append((convert_onnx.export_onnx(model, Path(tmp) / "onnx" / p, spec=spec, precision=p),
                            onnx_runner))
        keras_ms, keras_ips = timings(keras_runner(model), images, batch_size=args.batch_size,
                                      repeats=args.repeats, singles=args.singles)
        rows.append({"format": "keras", "precision": "float32", "mb": None, "ms_batch1": keras_ms,
                     "ips_batch32": keras_ips})
        for row, runner in exports:
            ms, ips = timings(runner(row["path"]), images, batch_size=args.batch_size,
                              repeats=args.repeats, singles=args.singles)
            rows.append({**{k: row[k] for k in ("format", "precision", "mb", "max_abs_diff", "top1_agree",
                                                "decision_flips", "n_images")},
                         "ms_batch1": ms, "ips_batch32": ips,
                         "float_units": len(row["plan"]["float"]) if row.get("plan") else 0,
                         "units": row["plan"]["units"] if row.get("plan") else 0})
    print(f"model {spec.name}, {len(images)} images {spec.image_size}x{spec.image_size}, {THREADS} threads, "
          f"{os.cpu_count()} CPUs; ratios to Keras measured in this run")
    print(f"{'format':8} {'precision':9} {'MB':>6} {'max|dp|':>9} {'top1':>5} {'flips':>5} {'mix':>7} "
          f"{'ms/img b1':>9} {'x Keras':>7} {'img/s b32':>9} {'x Keras':>7}")
    for r in rows:
        mix = f"{r['units'] - r['float_units']}/{r['units']}" if r.get("units") else "-"
        mb = f"{r['mb']:6.2f}" if r["mb"] is not None else "     -"
        diff = f"{r['max_abs_diff']:9.2e}" if "max_abs_diff" in r else "        -"
        top1 = f"{r['top1_agree']:5.2f}" if "top1_agree" in r else "    -"
        flips = f"{r['decision_flips']:5d}" if "decision_flips" in r else "    -"
        print(f"{r['format']:8} {r['precision']:9} {mb} {diff} {top1} {flips} {mix:>7} "
              f"{r['ms_batch1']:9.1f} {keras_ms / r['ms_batch1']:7.2f} {r['ips_batch32']:9.1f} "
              f"{r['ips_batch32'] / keras_ips:7.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
