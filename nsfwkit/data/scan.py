"""Scan and validate: list a folder-per-class dataset, read and decode every file once.

:func:`scan_folder` lists candidate files per class (image extensions; hidden files skipped;
other files counted as ignored; empty class folders reported). :func:`validate_files` reads and
decodes each file **once** with :func:`nsfwkit.images.decode_image` (the loader every other path
uses) and hashes it; an unusable file becomes a quarantined :class:`Record` carrying the loader's
reason. Nothing is ever moved, changed or deleted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

from .. import images as _images

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


def scan_folder(root: str | os.PathLike, *, classes: Sequence[str] | None = None):
    """List a folder-per-class dataset.

    Args:
        root: the dataset folder; each immediate sub-folder is a class (hidden ones skipped).
        classes: keep only these class folders (in this order); default: all, sorted.

    Returns:
        ``(files, info)``: ``files`` is a list of ``(path, class)`` in a stable order;
        ``info`` has ``classes`` (names in label order), ``empty_classes`` (folders with no
        image files) and ``ignored`` (files without an image extension).

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
    ignored: list[str] = []
    empty: list[str] = []
    for name in names:
        count = 0
        for dirpath, dirs, fnames in os.walk(root / name):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for fname in sorted(fnames):
                if fname.startswith("."):
                    continue
                path = Path(dirpath) / fname
                if path.suffix.lower() in _images.IMAGE_EXTENSIONS:
                    files.append((str(path), name))
                    count += 1
                else:
                    ignored.append(str(path))
        if count == 0:
            empty.append(name)
    for path in sorted(root.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            ignored.append(str(path))
    return files, {"classes": names, "empty_classes": empty, "ignored": ignored}


def _validate_one(path: str, label: str, max_bytes: int, max_pixels: int, hash_size: int) -> Record:
    import imagehash
    from PIL import Image

    rec = Record(path=path, label=label)
    try:
        size = os.stat(path).st_size
        rec.size = size
        if size > max_bytes:
            raise _images.ImageError(path, f"file is {size:,} bytes, over the {max_bytes:,}-byte limit")
        with open(path, "rb") as fh:
            data = fh.read()
        image = _images.decode_image(data, path=path, max_pixels=max_pixels)
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
    rec.ok = True
    rec.sha256 = hashlib.sha256(data).hexdigest()
    rec.height, rec.width = int(image.shape[0]), int(image.shape[1])
    rec.format = _sniff_format(data[:16])
    rec.phash = str(imagehash.phash(Image.fromarray(image), hash_size=hash_size))
    return rec


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
) -> list[Record]:
    """Read, decode (once) and hash every file; never raises for a bad file.

    Args:
        files: ``(path, class)`` pairs, e.g. from :func:`scan_folder`.
        workers: decoding threads (Pillow releases the GIL); default: CPU count.
        max_bytes: files larger than this are quarantined without being read.
        max_pixels: images with more pixels are quarantined before decoding.
        hash_size: perceptual hash side (8 -> 64-bit hash).
        progress: show a text progress bar (:mod:`nsfwkit.progress`: stderr on a terminal,
            stdout in a notebook); False turns it off.

    Returns:
        One :class:`Record` per file, in input order; ``ok=False`` ones carry ``reason``.
    """
    files = list(files)
    workers = workers or os.cpu_count() or 1
    args = [(p, c, max_bytes, max_pixels, hash_size) for p, c in files]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda a: _validate_one(*a), args)
        if progress:
            from ..progress import progress_bar

            results = progress_bar(results, total=len(args), desc="validate", unit="img")
        return list(results)
