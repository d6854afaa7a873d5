"""Benchmark: dataset preparation (validation + hashing + duplicates + split) throughput.

Generates a few thousand demo images (abstract textures, JPEG/PNG/WebP, 96-160 px), then times

* baseline: decoding every file once with ``nsfwkit.images.load_image`` in one thread;
* ``nsfwkit.data.prepare``: read, decode (thread pool), SHA-256, perceptual hash, duplicate
  groups, stratified split.

Prints images/s for both and the ratio prepare / plain decode (> 1 means the thread pool more
than pays for the hashing). Usage: ``python benchmarks/prepare.py [--per-class 600]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=600, help="images per class (5 classes)")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads")
    args = parser.parse_args()

    from nsfwkit import data, demo_data, images

    with tempfile.TemporaryDirectory(prefix="nsfwkit-bench-") as tmp:
        t0 = time.perf_counter()
        root = demo_data.make_demo_dataset(Path(tmp) / "ds", per_class=args.per_class)
        gen_s = time.perf_counter() - t0
        files, _ = data.scan_folder(root)
        n = len(files)
        print(f"generated {n} files in {gen_s:.1f} s ({n / gen_s:.0f} files/s)")

        t0 = time.perf_counter()
        for path, _ in files:
            try:
                images.load_image(path)
            except images.ImageError:
                pass
        base_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        prepared = data.prepare(root, workers=args.workers, progress=False)
        prep_s = time.perf_counter() - t0
        s = prepared.summary()
        print(f"baseline decode (1 thread): {n / base_s:8.0f} images/s ({base_s:.2f} s)")
        print(f"prepare ({args.workers or os.cpu_count()} threads): {n / prep_s:8.0f} images/s ({prep_s:.2f} s); "
              f"{s['quarantined']} quarantined, {s['duplicate_groups']} duplicate groups, "
              f"{s['label_conflicts']} label conflicts")
        print(f"ratio prepare / plain decode: {base_s / prep_s:.2f}")


if __name__ == "__main__":
    main()
