"""Benchmark: end-to-end `classify` on JPEG files vs the same model on in-memory tensors.

Usage: python benchmarks/classify.py [--images 300] [--batch-size 32] [--size 320x240] [--nsfwjs 40]
                                    [--ray 1,2]

Both measurements run in this process on the same files, so the ratio is meaningful on any
machine (target >= 0.9 on 2 cores: decoding must hide behind inference). nsfwjs in Node (wasm
backend, one image at a time as its API works) on the same pixels is printed as the peer figure.

Also on the same files: ``classify --out`` (Parquet shards + progress record, :mod:`nsfwkit.results`)
vs the streaming path (target >= 0.9), and with ``--ray 1,2`` the Ray Data engine with 1 and 2 model
actors on an embedded local Ray vs the local engine (Ray start-up and model loading excluded: one
warm-up run first; per-actor throughput printed too).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image


def make_jpegs(folder: Path, count: int, width: int, height: int, seed: int = 0) -> list[Path]:
    """Generated photo-like JPEGs: crops of scikit-image's photos with noise, safe by design."""
    from nsfwkit import samples

    rng = np.random.default_rng(seed)
    photos = [v for k, v in samples.sample_images().items() if k in samples.PHOTOS]
    files = []
    for i in range(count):
        src = photos[i % len(photos)]
        big = np.asarray(Image.fromarray(src).resize((width * 2, height * 2)))
        y, x = rng.integers(0, height), rng.integers(0, width)
        crop = big[y : y + height, x : x + width].astype(np.int16) + rng.integers(-12, 13, (height, width, 3))
        path = folder / f"img_{i:04d}.jpg"
        Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).save(path, quality=88)
        files.append(path)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", default="320x240", help="JPEG size WxH")
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--nsfwjs", type=int, default=40, help="images for the nsfwjs peer run (0: skip)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions; the best is kept")
    parser.add_argument("--ray", default="", help="model actor counts for the Ray engine, e.g. 1,2 (default: skip)")
    args = parser.parse_args()
    width, height = map(int, args.size.lower().split("x"))

    from nsfwkit import zoo
    from nsfwkit.classify import classify, predict
    from nsfwkit.images import load_image

    model, spec = zoo.load(args.model)
    with tempfile.TemporaryDirectory(prefix="bench-classify-") as tmp:
        files = make_jpegs(Path(tmp), args.images, width, height)
        tensors = np.stack([load_image(f, image_size=spec.image_size) for f in files])

        predict(model, tensors[: args.batch_size], batch_size=args.batch_size)  # warm-up / trace
        list(classify(files[: args.batch_size], model=model, spec=spec, batch_size=args.batch_size))

        def best(fn):
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            return min(times)

        t_mem = best(lambda: predict(model, tensors, batch_size=args.batch_size))
        # streaming and --out alternate, so a shared machine's load changes hit both alike
        t_e2e, t_out = _interleaved(
            lambda: list(classify(files, model=model, spec=spec, batch_size=args.batch_size)),
            lambda: _to_folder(tmp, files, model, spec, args.batch_size), args.repeats)
        mem_ips, e2e_ips = len(files) / t_mem, len(files) / t_e2e
        print(f"model {spec.name}, {len(files)} JPEGs {width}x{height}, batch {args.batch_size}, "
              f"{os.cpu_count()} CPUs")
        print(f"in-memory tensors (model only):      {mem_ips:8.1f} img/s")
        print(f"classify() from files (end to end):  {e2e_ips:8.1f} img/s")
        print(f"ratio end-to-end / in-memory:        {e2e_ips / mem_ips:8.2f}   (target >= 0.9)")

        print(f"classify --out (Parquet shards):     {len(files) / t_out:8.1f} img/s")
        print(f"ratio --out / streaming:             {t_e2e / t_out:8.2f}   (target >= 0.9)")
        ray_actors = [int(a) for a in args.ray.split(",") if a]
        if ray_actors:
            from nsfwkit.engines import ray_engine

            ray_engine.start(num_cpus=max(os.cpu_count() or 1, max(ray_actors) + 1))  # room for decoding tasks
        for actors in ray_actors:
            t_ray = _ray_run(tmp, files, args.model, spec, args.batch_size, actors, args.repeats)
            ips = len(files) / t_ray
            print(f"ray engine, {actors} actor(s):            {ips:8.1f} img/s  ({ips / actors:.1f} per actor); "
                  f"ratio to local streaming {t_e2e / t_ray:.2f}")

        if args.nsfwjs:
            from nsfwkit import parity

            subset = {f.name: load_image(f) for f in files[: args.nsfwjs]}
            js = parity.run_nsfwjs(subset, model=spec.name, repeat=1)
            print(f"peer: nsfwjs {js['backend']} in Node: {1000 / js['ms_per_image']:8.1f} img/s "
                  f"({js['ms_per_image']:.1f} ms/img, one at a time; {len(subset)} images)")


def _interleaved(first, second, repeats: int) -> tuple[float, float]:
    """Best times of ``first`` and ``second``, run alternately ``repeats`` times each."""
    times: tuple[list, list] = ([], [])
    for _ in range(repeats):
        for fn, out in zip((first, second), times):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return min(times[0]), min(times[1])


def _to_folder(tmp, files, model, spec, batch_size, **kwargs) -> None:
    import shutil

    from nsfwkit.results import classify_to

    out = Path(tmp) / "out"
    shutil.rmtree(out, ignore_errors=True)  # the benchmark's own folder: every run starts from zero
    classify_to(out, files, model=model, spec=spec, batch_size=batch_size, **kwargs)


def _ray_run(tmp, files, model_name, spec, batch_size, actors, repeats) -> float:
    options = {"engine": "ray", "ray_options": {"actors": actors}}
    _to_folder(tmp, files[:batch_size], model_name, spec, batch_size, **options)  # start Ray, load the model
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        _to_folder(tmp, files, model_name, spec, batch_size, **options)
        times.append(time.perf_counter() - t)
    return min(times)


if __name__ == "__main__":
    main()
