"""Scan and validate: list a folder-per-class dataset, read and decode every file once.

:func:`scan_folder` lists candidate files per class with :func:`nsfwkit.inputs.find_inputs` (the
discovery rule ``classify`` uses: regular files with an image extension, plus HEIC/SVG, which are
quarantined with the loader's message; every other entry, hidden, FIFO, device, broken link, other
extension, is skipped with its reason; empty class folders reported). :func:`validate_files` reads and
decodes each file **once** with :func:`nsfwkit.images.decode_image` (the loader every other path
uses) and hashes it; an unusable file becomes a quarantined :class:`Record` carrying the loader's
reason. Nothing is ever moved, changed or deleted.

Videos (:data:`nsfwkit.images.VIDEO_EXTENSIONS`) are listed beside images, and a video or an
animated GIF/WebP/APNG with more than one frame is **one** :class:`Record` (a *clip*): ``sha256``
of its bytes; ``phash`` the perceptual hash of the per-pixel **mean** of its frames as
:func:`nsfwkit.frames.load_frames` samples them by default (as ``classify`` does: one frame per
second plus the first and the last of a video, every frame of an animation, within the module's
``max_frames``/``max_seconds`` caps), each frame resized to one size (64x64, box filter) before
averaging. So the same clip under two names is an exact duplicate, and a re-encoded copy (another
codec, another palette) lands within a few bits, a near duplicate. ``frames`` counts the sampled
frames (1 for a still); ``format`` names the container (``MP4``, ``WEBM``, ``GIF``...); ``width``
and ``height`` are a frame's. A clip holds the pixel budget for two frames (the frame being decoded
and the running sum) while it is read. A broken clip is quarantined with the loader's reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .. import frames as _frames
from .. import images as _images
from ..inputs import REFUSED_EXTENSIONS, Skipped, find_inputs

__all__ = ["DatasetError", "Record", "scan_folder", "validate_files"]


class DatasetError(ValueError):
    """A dataset that cannot be used as asked; the message says what is wrong and what to do."""


@dataclasses.dataclass
class Record:
    """One file of a dataset after validation (``ok`` False: quarantined with ``reason``)."""

    path: str
    label: str
    ok: bool = False
    reason: str = ""
    sha256: str = ""
    phash: str = ""
    size: int = 0
    width: int = 0
    height: int = 0
    format: str = ""
    group: int = -1
    split: str = ""
    note: str = ""
    nearest: str = ""  # the closest other file of its duplicate group (path)
    distance: int = -1  # perceptual-hash bits to ``nearest`` (0: same bytes; -1: no copy)
    frames: int = 1  # frames sampled from a video or an animation (1: a still image)


def scan_folder(root: str | os.PathLike, *, classes: Sequence[str] | None = None):
    """List a folder-per-class dataset.

    Args:
        root: the dataset folder; each immediate sub-folder is a class (hidden ones skipped).
        classes: keep only these class folders (in this order); default: all, sorted.

    Returns:
        ``(files, info)``: ``files`` is a list of ``(path, class)`` in a stable order;
        ``info`` has ``classes`` (names in label order), ``empty_classes`` (folders with no
        image files), ``skipped`` (:class:`nsfwkit.inputs.Skipped` entries: the reason each
        entry was left out, a folder that could not be listed included) and ``ignored`` (their
        paths).

    Raises:
        DatasetError: ``root`` is missing or holds no class folders, or a requested class
            folder does not exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        names = found
    else:
        missing = [c for c in classes if c not in found]
        if missing:
            raise DatasetError(f"{root}: class folders {missing} not found (found {found})")
        names = list(classes)
    if not names:
        raise DatasetError(
            f"{root}: no class folders; expected one sub-folder per class, e.g. "
            f"{root}/neutral/*.jpg and {root}/porn/*.jpg"
        )
    files: list[tuple[str, str]] = []
    skipped: list[Skipped] = []
    empty: list[str] = []
    for name in names:
        found = find_inputs([root / name], extensions=_images.IMAGE_EXTENSIONS | _images.VIDEO_EXTENSIONS
                             | REFUSED_EXTENSIONS)
        skipped.extend(found.skipped)
        skipped.extend(Skipped(e.path, e.reason) for e in found.errors)
        files.extend((str(path), name) for path in found.files)
        if not found.files:
            empty.append(name)
    for path in sorted(root.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            skipped.append(Skipped(str(path), "not in a class folder"))
    return files, {"classes": names, "empty_classes": empty, "skipped": skipped,
                   "ignored": [entry.path for entry in skipped]}


def _validate_one(path: str, label: str, max_bytes: int, max_pixels: int, hash_size: int,
                  budget: _images.PixelBudget) -> Record:
    rec = Record(path=path, label=label)
    try:
        rec.size = os.stat(path).st_size
        data = _images.read_file(path, max_bytes=max_bytes)  # regular files only, at most max_bytes
        rec.size = len(data)
        if _is_clip(data, path, max_pixels):
            _describe_clip(rec, data, hash_size, max_pixels, budget)
            return rec
        with budget.hold(_images.header_pixels(data, path=path, max_pixels=max_pixels)):
            _describe(rec, data, _images.decode_image(data, path=path, max_pixels=max_pixels), hash_size)
    except _images.ImageError as exc:
        rec.reason = exc.reason
        return rec
    except FileNotFoundError:
        rec.reason = "no such file (removed while scanning?)"
        return rec
    except PermissionError:
        rec.reason = "permission denied"
        return rec
    except OSError as exc:
        rec.reason = f"cannot read file ({exc.strerror or exc})"
        return rec
    return rec


def _describe(rec: Record, data: bytes, image, hash_size: int) -> None:
    """Fill in a usable file's hashes, size and format."""
    import imagehash
    from PIL import Image

    rec.ok = True
    rec.sha256 = hashlib.sha256(data).hexdigest()
    rec.height, rec.width = int(image.shape[0]), int(image.shape[1])
    rec.format = _sniff_format(data[:16])
    rec.phash = str(imagehash.phash(Image.fromarray(image), hash_size=hash_size))


#: Side every sampled frame of a clip is resized to before the frames are averaged.
_CLIP_SIDE = 64


def _is_clip(data: bytes, path: str, max_pixels: int) -> bool:
    """A video, or an animation with more than one frame (read from the bytes, not the name)."""
    if _images._sniff_video(data[:64]):
        return True
    im = _images._open_image(data, path=path, max_pixels=max_pixels)
    with _images._PillowErrors(path):
        return im.format in ("GIF", "PNG", "WEBP") and bool(getattr(im, "is_animated", False)) and im.n_frames > 1


def _describe_clip(rec: Record, data: bytes, hash_size: int, max_pixels: int, budget: _images.PixelBudget) -> None:
    """Fill in a clip's hashes, size, format and frame count: pHash of the mean sampled frame."""
    import imagehash
    from PIL import Image

    clip = _frames.load_frames(data, max_pixels=max_pixels)
    total, count = np.zeros((_CLIP_SIDE, _CLIP_SIDE, 3), np.float64), 0
    with budget.hold(2 * clip.width * clip.height):
        for frame in clip:
            rec.height, rec.width = int(frame.pixels.shape[0]), int(frame.pixels.shape[1])
            small = Image.fromarray(frame.pixels).resize((_CLIP_SIDE, _CLIP_SIDE), Image.Resampling.BOX)
            total += np.asarray(small, np.float64)
            count += 1
    mean = np.round(total / count).astype(np.uint8)
    rec.ok, rec.frames = True, count
    rec.sha256 = hashlib.sha256(data).hexdigest()
    rec.format = clip.format.upper()
    rec.phash = str(imagehash.phash(Image.fromarray(mean), hash_size=hash_size))


def _sniff_format(head: bytes) -> str:
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return "other"


def validate_files(
    files: Iterable[tuple[str, str]],
    *,
    workers: int | None = None,
    max_bytes: int = _images.MAX_BYTES,
    max_pixels: int = _images.MAX_PIXELS,
    hash_size: int = 8,
    progress: bool = True,
    max_decode_pixels: int = _images.DECODE_PIXELS,
) -> list[Record]:
    """Read, decode (once) and hash every file; never raises for a bad file.

    Args:
        files: ``(path, class)`` pairs, e.g. from :func:`scan_folder`.
        workers: decoding threads (Pillow releases the GIL); default: CPU count.
        max_bytes: files larger than this are quarantined without being read.
        max_pixels: images with more pixels are quarantined before decoding.
        hash_size: perceptual hash side (8 -> 64-bit hash).
        max_decode_pixels: pixels decoded at once across the threads (one larger image alone).
        progress: show a text progress bar (:mod:`nsfwkit.progress`: stderr on a terminal,
            stdout in a notebook); False turns it off.

    Returns:
        One :class:`Record` per file, in input order; ``ok=False`` ones carry ``reason``.
    """
    files = list(files)
    workers = workers or os.cpu_count() or 1
    budget = _images.PixelBudget(max_decode_pixels)
    args = [(p, c, max_bytes, max_pixels, hash_size, budget) for p, c in files]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda a: _validate_one(*a), args)
        if progress:
            from ..progress import progress_bar

            results = progress_bar(results, total=len(args), desc="validate", unit="img")
        return list(results)
