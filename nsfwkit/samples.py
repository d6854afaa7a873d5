"""Safe sample images for demos and tests: scikit-image's bundled photos plus generated ones.

Nothing here is explicit: the photos are the public-domain / CC samples that scikit-image ships
(astronaut, cat, coffee, rocket, ...), the rest is drawn by code. Use them to exercise the
mechanics (loading, classifying, visualising); they say nothing about accuracy on NSFW data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import paths
from .fileio import atomic_path

__all__ = ["PHOTOS", "sample_images", "write_samples", "default_image", "synthetic_image"]

#: scikit-image sample photos used by the kit (all RGB or gray photos, safe).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field")


def synthetic_image(kind: str, *, image_size: int = 256, seed: int = 0) -> np.ndarray:
    """A generated RGB ``uint8`` image: ``gradient``, ``checkerboard``, ``blobs`` or ``noise``."""
    rng = np.random.default_rng(seed)
    s = image_size
    yy, xx = np.mgrid[0:s, 0:s] / max(s - 1, 1)
    if kind == "gradient":
        img = np.stack([xx, yy, 1 - xx * yy], -1)
    elif kind == "checkerboard":
        cells = ((np.floor(xx * 8) + np.floor(yy * 8)) % 2)[..., None]
        img = cells * np.array([0.9, 0.2, 0.2]) + (1 - cells) * np.array([0.1, 0.3, 0.9])
    elif kind == "blobs":
        img = np.zeros((s, s, 3))
        for _ in range(6):
            cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.25)
            mask = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))[..., None]
            img = img * (1 - mask) + mask * rng.uniform(0, 1, 3)
    elif kind == "noise":
        img = rng.uniform(0, 1, (s, s, 3))
    else:
        raise ValueError(f"unknown synthetic image kind {kind!r}")
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def sample_images() -> dict[str, np.ndarray]:
    """Name -> RGB ``uint8`` array for every sample (photos first, then generated)."""
    import skimage.data

    out: dict[str, np.ndarray] = {}
    for name in PHOTOS:
        img = np.asarray(getattr(skimage.data, name)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        out[name] = img[..., :3].astype(np.uint8)
    for kind in ("gradient", "checkerboard", "blobs"):
        out[kind] = synthetic_image(kind)
    return out


def write_samples(folder: str | os.PathLike | None = None, *, overwrite: bool = False) -> list[Path]:
    """Write the samples as JPEG (photos) / PNG (generated) files; return their paths.

    Defaults to ``data/samples`` in the repository. Existing files are kept unless
    ``overwrite`` is set.
    """
    from PIL import Image

    folder = Path(folder) if folder is not None else paths.repo_root() / "data" / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, img in sample_images().items():
        path = folder / (f"{name}.jpg" if name in PHOTOS else f"{name}.png")
        if overwrite or not path.exists():
            with atomic_path(path) as tmp:
                Image.fromarray(img).save(tmp, format="JPEG" if path.suffix == ".jpg" else "PNG", quality=92)
        written.append(path)
    return written


def default_image(folder: str | os.PathLike | None = None) -> Path:
    """The kit's default image for visualisations (scikit-image's cat photo, ``chelsea``)."""
    return next(p for p in write_samples(folder) if p.stem == "chelsea")
