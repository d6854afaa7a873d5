"""Helpers for the ``classify --out`` / Ray engine tests (imported by name; fixtures are in the test modules).

* :func:`write_images` writes ``n`` small generated JPEGs (distinct textures) into a folder;
* :func:`write_animation` writes a small animated GIF whose frames differ;
* :func:`require_ray` returns the ``ray`` module, or skips locally / FAILS under ``$CI``;
* :func:`by_path` indexes results by path, checking that none repeats.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nsfwkit import demo_data

from convert_helpers import missing

KINDS = ("gradient", "stripes", "dots", "lineart", "flat_shapes")


def write_images(folder: Path, n: int, *, size: int = 24, prefix: str = "img") -> list[Path]:
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = demo_data.demo_image(KINDS[i % len(KINDS)], size=(size, size), seed=i)
        path = folder / f"{prefix}{i:05d}.jpg"
        Image.fromarray(img).save(path, quality=90)
        paths.append(path)
    return paths


def write_animation(path: Path, frames: int = 3, size: int = 24) -> Path:
    from PIL import Image

    images = [Image.fromarray(demo_data.demo_image(KINDS[k % len(KINDS)], size=(size, size), seed=k))
              for k in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    return Path(path)


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        missing("needs Ray Data (pip install 'nsfwkit[ray]')")
    return ray


def by_path(results) -> dict:
    results = list(results)
    paths = [r.path for r in results]
    assert len(paths) == len(set(paths)), "an input appears more than once"
    return {r.path: r for r in results}


def max_prob_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    diffs = [abs(a[p].probs[c] - b[p].probs[c]) for p in a if a[p].ok for c in a[p].probs]
    assert all(a[p].error == b[p].error for p in a)
    return float(np.max(diffs)) if diffs else 0.0
