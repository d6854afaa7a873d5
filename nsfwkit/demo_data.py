"""A safe, offline demo dataset laid out like a real NSFW dataset (one folder per class).

The public NSFW scrapers produce ``drawings/ hentai/ neutral/ porn/ sexy/`` folders. This module
writes a folder with the **same layout and class names**, but every image is an abstract,
generated texture (line art, flat colour shapes, gradients, stripes, dots): nothing in it is
explicit, and the class names are only folder names. Each class has its own kind of texture, so a
classifier can learn to tell them apart in a few epochs on two CPU cores.

**It demonstrates the mechanics (scanning, validation, de-duplication, splitting, training,
evaluation, thresholds), not accuracy on real NSFW data.** Numbers measured on it say nothing
about how a model does on real images.

Like real scraped data it is a bit messy: nested sub-folders, mixed formats (JPEG, PNG, WebP),
varied sizes, a JPEG named ``.png``, an empty file, a truncated JPEG, an HTML error page saved
as ``.jpg``, exact duplicates, a near duplicate (re-encoded and resized), the same image under two
classes (a label conflict) and a stray text file. Generation is deterministic (same seed, same
bytes) and takes well under a second per hundred images.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np

from . import fileio
from .fileio import write_bytes

__all__ = ["DEMO_CLASSES", "BINARY_CLASSES", "make_demo_dataset", "demo_image", "near_copy_chain", "FAULTS"]

#: The five class folders of the public NSFW scrapers (names only; the content is abstract).
DEMO_CLASSES: tuple[str, ...] = ("drawings", "hentai", "neutral", "porn", "sexy")
#: The binary layout some datasets use.
BINARY_CLASSES: tuple[str, ...] = ("sfw", "nsfw")
#: Texture drawn for each class (the binary layout uses neutral -> sfw, stripes -> nsfw).
_TEXTURES = {
    "drawings": "lineart", "hentai": "flat_shapes", "neutral": "gradient", "porn": "stripes",
    "sexy": "dots", "sfw": "gradient", "nsfw": "stripes",
}
#: The deliberately broken / duplicated files, relative to the dataset root -> what they are.
FAULTS: dict[str, str] = {
    "neutral/broken/empty.jpg": "empty file (0 bytes)",
    "porn/broken/truncated.jpg": "JPEG cut in half",
    "sexy/broken/error_page.jpg": "HTML error page saved as .jpg",
    "drawings/set_b/mislabelled_extension.png": "a JPEG named .png (valid: the bytes decide)",
    "hentai/set_b/copy_of_0001.jpg": "exact duplicate within a class (of hentai_0001)",
    "neutral/set_b/resaved_0002.jpg": "near duplicate (neutral_0002 resized and re-encoded)",
    "sexy/set_b/also_neutral_0000.jpg": "the same image as neutral_0000 (label conflict)",
    "notes.txt": "not an image (ignored)",
}


def _rng_colour(rng: np.random.Generator, lo: float = 0.0, hi: float = 1.0) -> tuple[int, ...]:
    return tuple(int(v) for v in rng.uniform(lo, hi, 3) * 255)


def demo_image(kind: str, *, size: tuple[int, int] = (128, 128), seed: int = 0) -> np.ndarray:
    """One generated RGB ``uint8`` image ``(H, W, 3)`` of a texture kind.

    Kinds: ``lineart`` (strokes on white), ``flat_shapes`` (flat colour polygons with outlines),
    ``gradient`` (smooth two-colour gradients with a horizon), ``stripes`` (diagonal stripes),
    ``dots`` (polka dots). Textures are abstract and safe.
    """
    img = _texture(kind, size, np.random.default_rng(seed))
    # A smooth random light field: gives every image its own coarse layout, so perceptual
    # hashes tell different images apart (flat or periodic textures alone would collide).
    rng = np.random.default_rng([seed, 7])
    field = _smooth_field(rng, size, cells=4)
    return np.clip(np.rint(img * (0.45 + 0.55 * field[..., None])), 0, 255).astype(np.uint8)


def _smooth_field(rng: np.random.Generator, size: tuple[int, int], *, cells: int) -> np.ndarray:
    """Values in [0, 1], ``(H, W)``: a bilinearly upsampled ``cells x cells`` random grid."""
    from PIL import Image

    grid = (rng.uniform(0, 1, (cells, cells)) * 255).astype(np.uint8)
    big = Image.fromarray(grid).resize((size[1], size[0]), Image.BICUBIC)
    return np.asarray(big, dtype=np.float64) / 255.0


def _texture(kind: str, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageDraw

    height, width = size
    if kind == "gradient":
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
        angle = rng.uniform(0, np.pi)
        t = (np.cos(angle) * xx / width + np.sin(angle) * yy / height)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
        a, b = np.array(_rng_colour(rng, 0.2, 1.0)), np.array(_rng_colour(rng, 0.0, 0.8))
        img = a * t[..., None] + b * (1 - t[..., None])
        horizon = rng.uniform(0.3, 0.8) * height
        img[yy > horizon] = img[yy > horizon] * 0.6 + np.array(_rng_colour(rng, 0.1, 0.6)) * 0.4
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if kind == "stripes":
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
        angle = rng.uniform(0, np.pi)
        freq = rng.uniform(0.15, 0.45)
        phase = rng.uniform(0, 2 * np.pi)
        t = 0.5 + 0.5 * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
        a, b = np.array(_rng_colour(rng)), np.array(_rng_colour(rng))
        img = a * t[..., None] + b * (1 - t[..., None])
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)
    im = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    if kind == "lineart":
        for _ in range(int(rng.integers(6, 14))):
            pts = [tuple(int(v) for v in rng.uniform(0, 1, 2) * (width, height))
                   for _ in range(int(rng.integers(2, 5)))]
            draw.line(pts, fill=_rng_colour(rng, 0.0, 0.4), width=int(rng.integers(1, 4)))
        for _ in range(int(rng.integers(1, 4))):
            x, y = rng.uniform(0, 1, 2) * (width, height)
            r = rng.uniform(0.05, 0.25) * min(width, height)
            draw.ellipse([x - r, y - r, x + r, y + r], outline=_rng_colour(rng, 0.0, 0.4), width=2)
    elif kind == "flat_shapes":
        draw.rectangle([0, 0, width, height], fill=_rng_colour(rng, 0.6, 1.0))
        for _ in range(int(rng.integers(3, 7))):
            n = int(rng.integers(3, 7))
            cx, cy = rng.uniform(0, 1, 2) * (width, height)
            r = rng.uniform(0.15, 0.45) * min(width, height)
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            pts = [(float(cx + r * np.cos(a)), float(cy + r * np.sin(a))) for a in angles]
            draw.polygon(pts, fill=_rng_colour(rng, 0.4, 1.0), outline=(0, 0, 0), width=3)
    elif kind == "dots":
        draw.rectangle([0, 0, width, height], fill=_rng_colour(rng, 0.0, 0.5))
        step = int(rng.integers(12, 24))
        r = step * rng.uniform(0.2, 0.45)
        colour = _rng_colour(rng, 0.5, 1.0)
        ox, oy = rng.uniform(0, step, 2)
        for y in np.arange(-step, height + step, step) + oy:
            for x in np.arange(-step, width + step, step) + ox:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    else:
        raise ValueError(f"unknown demo texture {kind!r}")
    return np.asarray(im, dtype=np.uint8)


def _encode(img: np.ndarray, fmt: str, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    Image.fromarray(img).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _near_copy(img: np.ndarray, data: bytes, *, max_bits: int = 3) -> bytes:
    """A resized, re-encoded JPEG of ``img`` whose perceptual hash stays within ``max_bits`` of
    the original file's (smooth textures can drift further, and the planted near duplicate
    must be found at the default distance); the first of a fixed list of variants that does."""
    import imagehash
    from PIL import Image

    from . import images as _images

    def phash(blob: bytes):
        return imagehash.phash(Image.fromarray(_images.decode_image(blob)))

    reference = phash(data)
    best, best_bits = b"", 1 << 30
    for scale in (7 / 8, 0.9, 15 / 16, 0.95, 1.0):
        small = np.asarray(Image.fromarray(img).resize(
            (int(img.shape[1] * scale), int(img.shape[0] * scale)), Image.BILINEAR))
        for quality in (80, 90, 95):
            out = _encode(small, "JPEG", quality=quality)
            if out == data:  # the same bytes would be an exact copy
                continue
            bits = phash(out) - reference
            if bits <= max_bits:
                return out
            if bits < best_bits:
                best, best_bits = out, bits
    return best


def near_copy_chain(start: np.ndarray, end: np.ndarray, *, max_bits: int = 4,
                    max_length: int = 64) -> list[np.ndarray]:
    """A chain of images blended step by step from ``start`` towards ``end``.

    Each image's 64-bit perceptual hash (``imagehash.phash``, as :func:`nsfwkit.data.prepare`
    computes it on the decoded pixels; save them losslessly, e.g. PNG) is within ``max_bits``
    of the previous one's, and every step is as long as that allows (a bisection on the blend
    weight), so images a few steps apart are much further apart than ``max_bits``: the case
    where grouping near copies around a "leader" splits the chain.

    Args:
        start, end: ``uint8 (H, W, 3)`` images of the same shape.
        max_bits: largest hash distance between neighbours in the chain.
        max_length: at most this many images (the chain may stop before reaching ``end``).

    Returns:
        ``uint8 (H, W, 3)`` images, ``start`` first.
    """
    import imagehash
    from PIL import Image

    a, b = start.astype(np.float64), end.astype(np.float64)

    def blend(t: float) -> np.ndarray:
        return np.clip(np.rint((1 - t) * a + t * b), 0, 255).astype(np.uint8)

    def phash(img: np.ndarray):
        return imagehash.phash(Image.fromarray(img))

    chain, t = [start.astype(np.uint8)], 0.0
    while len(chain) < max_length and t < 1.0:
        current = phash(chain[-1])
        lo, hi = t, 1.0
        if phash(blend(hi)) - current > max_bits:
            for _ in range(12):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if phash(blend(mid)) - current <= max_bits else (lo, mid)
        else:
            lo = hi
        if lo <= t:  # no blend weight keeps the hash close enough: stop here
            break
        chain.append(blend(lo))
        t = lo
    return chain


def _write(path: Path, data: bytes) -> None:
    write_bytes(path, data)


_README = """\
nsfwkit demo dataset (generated by nsfwkit.demo_data.make_demo_dataset, seed {seed})

Every image here is an abstract generated texture; nothing is explicit. The folder names copy
the layout of the public NSFW scrapers so the kit's pipeline can be shown end to end. It
demonstrates the MECHANICS (validation, de-duplication, splitting, training, evaluation,
thresholds), NOT accuracy: a model scoring well here says nothing about real NSFW images.

Deliberate faults (the validation step should report them):
{faults}
"""


def make_demo_dataset(
    folder: str | os.PathLike,
    *,
    per_class: int = 40,
    classes: tuple[str, ...] | list[str] = DEMO_CLASSES,
    seed: int = 0,
    faults: bool = True,
    min_size: int = 96,
    max_size: int = 160,
    overwrite: bool = False,
) -> Path:
    """Write the demo dataset under ``folder`` and return the folder.

    Args:
        folder: where to write (created). If it already holds a complete dataset written with
            the same arguments it is kept as is (the call is then nearly free).
        per_class: clean images per class (before the deliberate faults and duplicates).
        classes: class folder names; ``DEMO_CLASSES`` (5) or ``BINARY_CLASSES`` (2) or any
            subset of their names.
        seed: everything derives from it; the same seed gives byte-identical files.
        faults: add the broken, mislabelled and duplicate files listed in :data:`FAULTS` (those
            whose class is present).
        min_size, max_size: image sides are drawn from this range (images are not square).
        overwrite: when ``folder`` holds a demo dataset written with other arguments, delete
            the files that earlier call generated (recorded in ``.nsfwkit-demo``) and write the new
            ones; files you added there (and the folders holding them) stay. Without it, that case
            raises ``FileExistsError``. The folder is the kit's (:data:`nsfwkit.fileio.OWNER_MARKER`,
            kind ``demo``; locked while written); a folder holding anything else is refused.

    Returns:
        The dataset root.

    Raises:
        FileExistsError: ``folder`` is not empty and is not a demo dataset, or is a demo
            dataset written with other arguments and ``overwrite`` is False.
    """
    root = Path(folder)
    classes = tuple(classes)
    unknown = [c for c in classes if c not in _TEXTURES]
    if unknown:
        raise ValueError(f"unknown demo classes {unknown}; choose from {sorted(_TEXTURES)}")
    signature = f"v1 per_class={per_class} classes={','.join(classes)} seed={seed} faults={faults} " \
                f"sizes={min_size}-{max_size}\n"
    old_signature, old_files = _recorded(root)
    if old_signature is None and root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root}: folder exists and is not an nsfwkit demo dataset")
    if old_signature == signature and not overwrite and fileio.folder_kind(root) == "demo":
        return root
    if old_signature is not None and old_signature != signature and not overwrite:
        raise FileExistsError(
            f"{root}: holds a demo dataset written with other arguments "
            f"({old_signature.strip()}); pass overwrite=True (--overwrite) to replace it, "
            "or choose another folder")
    options = dict(per_class=per_class, classes=classes, faults=faults)
    with fileio.owned_folder(root, "demo", legacy=lambda f: (f / _RECORD).is_file()):
        taken = sorted(set(_names(**options)) - set(old_files))
        taken = [rel for rel in taken if os.path.lexists(root / rel)]
        if taken:
            raise fileio.ForeignFolderError(
                f"{root}: {', '.join(taken[:3])} was not written by nsfwkit; refusing to replace it: "
                "move it away or choose another folder")
        _remove_generated(root, old_files)  # only what an earlier call generated: a file you added stays
        files: list[str] = []

        def write(path: Path, data: bytes) -> None:
            _write(path, data)
            files.append(path.relative_to(root).as_posix())

        _generate(root, seed=seed, min_size=min_size, max_size=max_size, write=write, **options)
        fileio.write_json(root / _RECORD, {"signature": signature, "files": files})
    return root


def _generate(  # noqa: C901 (one flat recipe of planted faults, read top to bottom)
        root: Path, *, per_class: int, classes: tuple[str, ...], seed: int, faults: bool, min_size: int,
        max_size: int, write) -> None:
    """Write the demo images, planted faults and README.txt under ``root`` through ``write(path, data)``."""
    formats = ("JPEG", "JPEG", "JPEG", "PNG", "WEBP")
    ext = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
    first: dict[str, tuple[np.ndarray, bytes]] = {}
    for ci, name in enumerate(classes):
        for i in range(per_class):
            item_seed = seed * 100_003 + ci * 10_007 + i
            rng = np.random.default_rng(item_seed)
            size = tuple(int(v) for v in rng.integers(min_size, max_size + 1, 2))
            img = demo_image(_TEXTURES[name], size=size, seed=item_seed)
            fmt = formats[i % len(formats)]
            data = _encode(img, fmt)
            sub = "set_a" if i % 2 == 0 else "set_b/nested"
            write(root / name / sub / f"{name}_{i:04d}{ext[fmt]}", data)
            if i < 4 and fmt == "JPEG":
                first.setdefault(f"{name}_{i:04d}", (img, data))
    # each fault copies a different source image, so the three kinds of duplicate (exact, near,
    # label conflict) stay three separate groups
    if faults:
        lines = []
        for rel, what in FAULTS.items():
            cls = rel.split("/")[0]
            if rel == "notes.txt":
                write(root / rel, b"Scraped 2024-01-01; see README.txt\n")
            elif cls not in classes:
                continue
            elif rel.endswith("empty.jpg"):
                write(root / rel, b"")
            elif rel.endswith("truncated.jpg"):
                data = first.get(f"{cls}_0000", next(iter(first.values())))[1]
                write(root / rel, data[: len(data) // 2])
            elif rel.endswith("error_page.jpg"):
                write(root / rel, b"<!DOCTYPE html><html><head><title>404 Not Found</title>"
                                   b"</head><body>Not Found</body></html>\n")
            elif "mislabelled" in rel:
                img = demo_image(_TEXTURES[cls], size=(120, 100), seed=seed + 991)
                write(root / rel, _encode(img, "JPEG"))
            elif "copy_of" in rel:
                if f"{cls}_0001" not in first:
                    continue
                write(root / rel, first[f"{cls}_0001"][1])
            elif "resaved" in rel:

                if f"{cls}_0002" not in first:
                    continue
                img, data = first[f"{cls}_0002"]
                write(root / rel, _near_copy(img, data))
            elif "also_neutral" in rel:
                if "neutral_0000" not in first:
                    continue
                write(root / rel, first["neutral_0000"][1])
            else:  # pragma: no cover - FAULTS and this function are kept in step
                continue
            lines.append(f"  {rel}: {what}")
        text = _README.format(seed=seed, faults="\n".join(lines) or "  (none)")
    else:
        text = _README.format(seed=seed, faults="  (none: faults=False)")
    write(root / "README.txt", text.encode())


#: The demo dataset's record (older kits: its only marker, holding the signature line): now
#: ``{"signature": ..., "files": [...]}``, the files a call generated (the ownership marker is
#: :data:`nsfwkit.fileio.OWNER_MARKER`, kind ``demo``).
_RECORD = ".nsfwkit-demo"


def _recorded(root: Path) -> tuple[str | None, list[str]]:
    """``(signature, generated files)`` of an earlier demo dataset in ``root``; ``(None, [])`` if none.

    An older kit's record is its signature line alone: the files it generated are worked out from
    the arguments that line records (the names do not depend on the seed or the sizes)."""
    try:
        text = (root / _RECORD).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None, []
    try:
        data = json.loads(text)
        return str(data["signature"]), [f for f in data["files"] if isinstance(f, str)]
    except (ValueError, KeyError, TypeError):
        fields = dict(part.split("=", 1) for part in text.split()[1:] if "=" in part)
        try:
            classes = tuple(c for c in fields["classes"].split(",") if c in _TEXTURES)
            return text, _names(per_class=int(fields["per_class"]), classes=classes,
                                faults=fields.get("faults") == "True")
        except (KeyError, ValueError):
            return text, []


def _names(*, per_class: int, classes: tuple[str, ...], faults: bool) -> list[str]:
    """The relative paths :func:`make_demo_dataset` writes for these arguments (a dry run on 8-pixel images)."""
    names: list[str] = []
    _generate(Path(), per_class=per_class, classes=classes, seed=0, faults=faults, min_size=8, max_size=8,
              write=lambda path, data: names.append(path.as_posix()))
    return names


def _remove_generated(root: Path, files: list[str]) -> None:
    """Delete the generated ``files`` (relative paths) of ``root`` and the folders they leave empty."""
    folders = set()
    for rel in files:
        parts = Path(rel).parts
        if not parts or Path(rel).is_absolute() or ".." in parts:
            continue
        path = root / rel
        if path.is_file() or path.is_symlink():
            path.unlink()
        folders.update(root.joinpath(*parts[:i]) for i in range(1, len(parts)))
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: a folder holding a file you added stays
