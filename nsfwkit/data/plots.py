"""Plots of a dataset: class balance per split, and sample thumbnails (**redacted by default**)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .. import images as _images
from .manifest import PreparedDataset, manifest_class_names, read_manifest
from .split import SPLITS

__all__ = ["redact", "plot_class_balance", "plot_samples"]


def redact(image: np.ndarray, *, strength: int = 12) -> np.ndarray:
    """Blur an RGB ``uint8`` image beyond recognition (pixelate to ~``strength`` cells + blur).

    Used for every thumbnail the kit shows by default, because user datasets may be explicit
    and notebooks get shared.
    """
    from PIL import Image, ImageFilter

    im = Image.fromarray(np.asarray(image, dtype=np.uint8))
    w, h = im.size
    cells = max(2, strength)
    small = im.resize((max(1, cells * w // max(w, h)), max(1, cells * h // max(w, h))), Image.BILINEAR)
    big = small.resize((w, h), Image.NEAREST).filter(ImageFilter.GaussianBlur(max(w, h) / cells / 2))
    return np.asarray(big, dtype=np.uint8)


def plot_class_balance(dataset: PreparedDataset | str | os.PathLike, *, title: str | None = None):
    """Stacked bars of images per class and split (plus excluded and quarantined files).

    Args:
        dataset: a :class:`PreparedDataset` or a manifest path (then without quarantine).

    Returns:
        A matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    if isinstance(dataset, PreparedDataset):
        counts = dataset.counts()
        names = list(dataset.class_names)
    else:
        names = list(manifest_class_names(dataset))
        counts = {c: {s: 0 for s in (*SPLITS, "excluded", "quarantined")} for c in names}
        for row in read_manifest(dataset):
            counts[row["class"]][row["split"]] += 1
    fig = Figure(figsize=(max(4.0, 1.2 * len(names) + 2), 3.2))
    ax = fig.subplots()
    bottom = np.zeros(len(names))
    colours = {"train": "#4c72b0", "val": "#55a868", "test": "#c44e52", "excluded": "#bbbbbb",
               "quarantined": "#222222"}
    for key, colour in colours.items():
        vals = np.array([counts[c][key] for c in names], dtype=float)
        if vals.sum() == 0:
            continue
        ax.bar(names, vals, bottom=bottom, color=colour, label=key)
        bottom += vals
    for x, total in enumerate(bottom):
        ax.text(x, total, f"{int(total)}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("files")
    ax.set_title(title or "Images per class and split")
    ax.legend(fontsize=7, ncols=5, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    return fig


def plot_samples(
    paths: Sequence[str],
    labels: Sequence[str],
    *,
    per_class: int = 4,
    redact_images: bool = True,
    seed: int = 0,
    thumb: int = 96,
    captions: Sequence[str] | None = None,
    title: str | None = None,
):
    """A grid of sample thumbnails, one row per class, **blurred by default**.

    Args:
        paths: image files.
        labels: class name per file (rows are the classes, in first-seen order).
        per_class: thumbnails per row.
        redact_images: blur thumbnails (default True; set False only for data you may show).
        seed: which samples are drawn.
        thumb: thumbnail side in pixels.
        captions: optional text under each image (same order as ``paths``).

    Returns:
        A matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    rng = np.random.default_rng(seed)
    classes = list(dict.fromkeys(labels))
    fig = Figure(figsize=(1.6 * per_class + 1.0, 1.7 * max(1, len(classes))))
    axes = np.atleast_2d(fig.subplots(max(1, len(classes)), per_class, squeeze=False))
    for row, name in enumerate(classes):
        idx = [i for i, l in enumerate(labels) if l == name]
        chosen = sorted(rng.choice(idx, size=min(per_class, len(idx)), replace=False)) if idx else []
        for col in range(per_class):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col >= len(chosen):
                continue
            i = int(chosen[col])
            try:
                img = _images.load_image(paths[i], image_size=thumb).astype(np.uint8)
            except _images.ImageError:
                ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=7)
                continue
            ax.imshow(redact(img) if redact_images else img)
            if captions is not None:
                ax.set_xlabel(captions[i], fontsize=6)
        axes[row, 0].set_ylabel(name, fontsize=9)
    fig.suptitle(title or ("Samples (redacted: blurred)" if redact_images else "Samples"),
                 fontsize=10)
    fig.tight_layout()
    return fig
