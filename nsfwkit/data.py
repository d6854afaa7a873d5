"""Dataset preparation: scan, validate, de-duplicate, split, manifest; ``tf.data`` pipelines.

A dataset is a folder with one sub-folder per class (files at any depth below it, any format the
shared loader accepts), e.g. the public scrapers' ``drawings/ hentai/ neutral/ porn/ sexy/`` or
``sfw/ nsfw/``. :func:`prepare` turns it into a :class:`PreparedDataset`:

1. **scan** -- list candidate files per class (image extensions; hidden files skipped; other
   files counted as ignored; empty class folders reported).
2. **validate** -- every file is read and decoded **once** with :func:`nsfwkit.images.decode_image`
   (the loader every other path uses). Unusable files go to the *quarantine* list with the
   loader's reason; nothing is ever moved, changed or deleted.
3. **de-duplicate** -- exact duplicates by SHA-256 of the bytes, near duplicates by a 64-bit
   perceptual hash (``imagehash.phash``) within a Hamming distance. Files that are duplicates of
   each other form a *group*; a group spanning several classes is a *label conflict*.
4. **split** -- a deterministic, stratified train/val/test split over groups, so no image (or
   its near copy) appears in two splits. Extra exact copies inside a class and (by default)
   label-conflict groups are kept in the manifest with split ``excluded`` and a note.

:meth:`PreparedDataset.write` writes ``manifest.csv`` (path, class, split, hash, size,
dimensions, ...), ``quarantine.csv``, ``duplicates.csv`` and ``summary.json`` into a run folder.

:func:`make_dataset` builds the ``tf.data`` input pipeline used for training and evaluation. It
decodes with the same loader and resizes with the same op as inference
(``ResizeBilinear(align_corners=True)``), so a model sees identical pixels in training, in
``nsfwkit classify`` and in TensorFlow.js.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from . import images as _images
from .fileio import atomic_path, write_text as _write_text

__all__ = [
    "DatasetError",
    "Record",
    "PreparedDataset",
    "scan_folder",
    "validate_files",
    "find_duplicate_groups",
    "split_groups",
    "prepare",
    "read_manifest",
    "manifest_arrays",
    "default_nsfw_classes",
    "class_weights",
    "plot_class_balance",
    "plot_samples",
    "redact",
    "make_dataset",
    "decode_for_model",
]

MANIFEST_FIELDS = (
    "path", "class", "split", "sha256", "phash", "size", "width", "height", "format", "group",
    "note",
)
SPLITS = ("train", "val", "test")
#: Dataset class names (lower-case) counted as NSFW by default.
NSFW_NAMES = frozenset({"hentai", "porn", "sexy", "nsfw", "explicit", "nude", "nudity", "unsafe"})


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


# ------------------------------------------------------------------------------------------
# Scanning
# ------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------
# Validation (each file read and decoded once)
# ------------------------------------------------------------------------------------------
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
        progress: show a progress bar (``tqdm.auto``: a text bar on a terminal, a widget in
            Jupyter); False turns it off.

    Returns:
        One :class:`Record` per file, in input order; ``ok=False`` ones carry ``reason``.
    """
    files = list(files)
    workers = workers or os.cpu_count() or 1
    args = [(p, c, max_bytes, max_pixels, hash_size) for p, c in files]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda a: _validate_one(*a), args)
        if progress:
            from tqdm.auto import tqdm

            results = tqdm(results, total=len(args), desc="validate", unit="img")
        return list(results)


# ------------------------------------------------------------------------------------------
# Duplicates
# ------------------------------------------------------------------------------------------
class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def find_duplicate_groups(
    sha256: Sequence[str], phash: Sequence[str], *, max_distance: int = 4,
    memory_mb: float = 64.0,
) -> np.ndarray:
    """Group files that are exact (same SHA-256) or near (phash within ``max_distance``) copies.

    Near copies are grouped around a *leader*: files are taken in order, and a file not yet in a
    group leads a new one that takes every later ungrouped file within ``max_distance`` bits of
    **the leader** (not of any member). So a chain of images each a few bits from the next never
    merges unrelated images: every member is within ``max_distance`` of its leader, any two
    members within ``2 * max_distance`` of each other. Exact copies always share a group.

    Args:
        sha256: hex content hashes, one per file.
        phash: hex perceptual hashes, one per file (all the same length); ``max_distance < 0``
            turns near-duplicate detection off.
        max_distance: largest Hamming distance (bits) between two perceptual hashes that still
            counts as the same image.
        memory_mb: memory budget of the pairwise distance blocks (rows are processed in chunks
            that fit it, so N = 200,000 files needs ~64 MB, not gigabytes).

    Returns:
        ``int64`` array ``(N,)``: a group id per file; ids are the index of the group's first
        file, so a file alone in its group has ``group == its index``.
    """
    n = len(sha256)
    uf = _UnionFind(n)
    first: dict[str, int] = {}
    reps: list[int] = []  # one file per distinct content, in order
    for i, h in enumerate(sha256):
        if h in first:
            uf.union(first[h], i)
        else:
            first[h] = i
            reps.append(i)
    m = len(reps)
    if max_distance >= 0 and m > 1:
        ph = [phash[i] for i in reps]
        bits = np.array([[int(c, 16) for c in h] for h in ph], dtype=np.uint8)  # (M, nibbles)
        bits = np.unpackbits(bits[..., None], axis=-1)[..., 4:].reshape(m, -1)  # (M, 64)
        packed = np.packbits(bits, axis=1)  # (M, 8) bytes
        words = packed.view(">u8").reshape(m, -1) if packed.shape[1] % 8 == 0 else None
        width = words.shape[1] * 8 if words is not None else bits.shape[1]
        chunk = int(max(1, min(m, memory_mb * 2**20 // max(1, m * width * 2))))
        neighbours: list[np.ndarray] = []
        for start in range(0, m, chunk):
            block = slice(start, min(m, start + chunk))
            if words is not None:
                dist = np.bitwise_count(words[block, None, :] ^ words[None, :, :]).sum(-1)
            else:
                dist = (bits[block, None, :] != bits[None, :, :]).sum(-1)
            for row in dist <= max_distance:
                neighbours.append(np.flatnonzero(row))
        leader = np.full(m, -1, np.int64)
        for i in range(m):
            if leader[i] >= 0:
                continue
            leader[i] = i
            near = neighbours[i]
            near = near[(near > i) & (leader[near] < 0)]
            leader[near] = i
        for i in range(m):
            if leader[i] != i:
                uf.union(reps[int(leader[i])], reps[i])
    return np.array([uf.find(i) for i in range(n)], dtype=np.int64)


# ------------------------------------------------------------------------------------------
# Split
# ------------------------------------------------------------------------------------------
def split_groups(
    group_keys: Sequence[str],
    group_labels: Sequence[str],
    group_sizes: Sequence[int],
    *,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> list[str]:
    """Assign whole groups to train/val/test, stratified by class, deterministically.

    Groups are ordered by a hash of ``(seed, key)`` -- so the split depends on the content,
    not on file names or listing order. Per class, when it has at least as many groups as
    splits, val and test are first seeded with one group each -- the first in hash order that is
    **no larger than the split's target share** (so a big duplicate group never lands in val or
    test just because it came first). Then the remaining groups, **largest first** (ties in hash
    order), each go to the split that is furthest below its target share of the class's images.

    Args:
        group_keys: a stable key per group (e.g. the smallest SHA-256 in it).
        group_labels: the class of each group.
        group_sizes: number of images in each group.
        fractions: target shares of train, val, test (normalised).
        seed: changes the assignment; same seed, same split.

    Returns:
        A split name per group.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or (fr < 0).any() or fr.sum() <= 0:
        raise ValueError(f"fractions must be three non-negative shares, got {fractions}")
    fr = fr / fr.sum()
    order = sorted(
        range(len(group_keys)),
        key=lambda g: hashlib.sha256(f"{seed}:{group_keys[g]}".encode()).hexdigest(),
    )
    out = [""] * len(group_keys)
    by_class: dict[str, list[int]] = {}
    for g in order:
        by_class.setdefault(group_labels[g], []).append(g)
    for groups in by_class.values():
        total = float(sum(group_sizes[g] for g in groups))
        target = fr * total
        filled = np.zeros(3)
        active = [i for i in range(3) if fr[i] > 0]
        todo = list(groups)
        if len(groups) >= len(active):
            for i in active:
                if i == 0:
                    continue  # train takes the largest groups below
                seed_group = next((g for g in todo if group_sizes[g] <= max(1.0, target[i])), None)
                if seed_group is not None:
                    out[seed_group] = SPLITS[i]
                    filled[i] += group_sizes[seed_group]
                    todo.remove(seed_group)
        rank = {g: k for k, g in enumerate(todo)}
        for g in sorted(todo, key=lambda g: (-group_sizes[g], rank[g])):
            deficit = target - filled
            deficit[fr == 0] = -np.inf
            choice = int(np.argmax(deficit))
            out[g] = SPLITS[choice]
            filled[choice] += group_sizes[g]
    return out


# ------------------------------------------------------------------------------------------
# The whole preparation
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class PreparedDataset:
    """The result of :func:`prepare`: records, class names, problems found."""

    root: str
    class_names: tuple[str, ...]
    records: list[Record]
    ignored: list[str]
    empty_classes: list[str]
    warnings: list[str]
    params: dict[str, Any]

    @property
    def valid(self) -> list[Record]:
        return [r for r in self.records if r.ok]

    @property
    def quarantine(self) -> list[Record]:
        return [r for r in self.records if not r.ok]

    def split(self, name: str) -> list[Record]:
        """Usable records of one split (``train``, ``val``, ``test`` or ``excluded``)."""
        return [r for r in self.records if r.ok and r.split == name]

    def duplicate_groups(self) -> dict[int, list[Record]]:
        """Groups with more than one file: group id -> records (sorted by path)."""
        groups: dict[int, list[Record]] = {}
        for r in sorted(self.valid, key=lambda r: r.path):
            groups.setdefault(r.group, []).append(r)
        return {g: rs for g, rs in groups.items() if len(rs) > 1}

    def conflicts(self) -> dict[int, list[Record]]:
        """Duplicate groups whose files carry different classes (label conflicts)."""
        return {g: rs for g, rs in self.duplicate_groups().items()
                if len({r.label for r in rs}) > 1}

    def counts(self) -> dict[str, dict[str, int]]:
        """``{class: {train, val, test, excluded, quarantined}}`` file counts."""
        zero = {s: 0 for s in (*SPLITS, "excluded", "quarantined")}
        out = {c: dict(zero) for c in self.class_names}
        for r in self.records:  # a dropped class (all quarantined) still shows its files
            out.setdefault(r.label, dict(zero))["quarantined" if not r.ok else r.split] += 1
        return out

    def summary(self) -> dict[str, Any]:
        dup = self.duplicate_groups()
        return {
            "root": self.root,
            "class_names": list(self.class_names),
            "files": len(self.records),
            "valid": len(self.valid),
            "quarantined": len(self.quarantine),
            "ignored": len(self.ignored),
            "empty_classes": list(self.empty_classes),
            "duplicate_groups": len(dup),
            "files_in_duplicate_groups": sum(len(v) for v in dup.values()),
            "label_conflicts": len(self.conflicts()),
            "splits": {s: len(self.split(s)) for s in (*SPLITS, "excluded")},
            "counts": self.counts(),
            "warnings": list(self.warnings),
            "params": self.params,
        }

    def write(self, folder: str | os.PathLike) -> dict[str, Path]:
        """Write ``manifest.csv``, ``quarantine.csv``, ``duplicates.csv``, ``summary.json``.

        Every file is written atomically. Returns ``{name: path}``.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = {}
        rows = [
            {"path": r.path, "class": r.label, "split": r.split, "sha256": r.sha256,
             "phash": r.phash, "size": r.size, "width": r.width, "height": r.height,
             "format": r.format, "group": r.group, "note": r.note}
            for r in self.valid
        ]
        out["manifest"] = _write_csv(folder / "manifest.csv", MANIFEST_FIELDS, rows)
        out["quarantine"] = _write_csv(
            folder / "quarantine.csv", ("path", "class", "size", "reason"),
            [{"path": r.path, "class": r.label, "size": r.size, "reason": r.reason}
             for r in self.quarantine],
        )
        dup_rows = []
        conflicts = self.conflicts()
        for g, rs in sorted(self.duplicate_groups().items()):
            kind = "label_conflict" if g in conflicts else (
                "exact" if len({r.sha256 for r in rs}) == 1 else "near")
            for r in rs:
                dup_rows.append({"group": g, "kind": kind, "path": r.path, "class": r.label,
                                 "sha256": r.sha256, "phash": r.phash, "split": r.split,
                                 "note": r.note})
        out["duplicates"] = _write_csv(
            folder / "duplicates.csv",
            ("group", "kind", "path", "class", "sha256", "phash", "split", "note"), dup_rows,
        )
        out["summary"] = _write_text(folder / "summary.json",
                                     json.dumps(self.summary(), indent=2) + "\n")
        return out


def _write_csv(path: Path, fields: Sequence[str], rows: list[dict]) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)
    return path


def prepare(
    root: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    near_duplicates: int = 5,
    conflicts: str = "exclude",
    workers: int | None = None,
    max_bytes: int = _images.MAX_BYTES,
    max_pixels: int = _images.MAX_PIXELS,
    progress: bool = True,
    keep_empty_classes: bool = False,
) -> PreparedDataset:
    """Scan, validate, de-duplicate and split a folder-per-class dataset.

    User files are only read: nothing is moved, changed or deleted.

    Args:
        root: dataset folder, one sub-folder per class.
        classes: class folders to use, in label order (default: all, sorted).
        fractions: target train/val/test shares.
        seed: split seed (the split is deterministic for a given seed and content).
        near_duplicates: perceptual-hash Hamming distance still counted as the same image;
            ``-1`` turns near-duplicate detection off.
        conflicts: ``"exclude"`` (default) keeps label-conflict groups out of every split
            (split ``excluded``); ``"keep"`` keeps them, all in one split.
        workers: decoding threads.
        max_bytes, max_pixels: larger files / images are quarantined.
        progress: progress bar while validating (``tqdm.auto``); False turns it off.
        keep_empty_classes: keep class folders with no usable image in ``class_names`` (a model
            trained on the manifest then has an output no image ever taught). Default: they
            are dropped from the class list, with a warning.

    Returns:
        A :class:`PreparedDataset`; call ``.write(run_folder)`` to save the manifest.

    Raises:
        DatasetError: the folder has no class folders, or no class has a usable image.
    """
    if conflicts not in ("exclude", "keep"):
        raise ValueError(f"conflicts must be 'exclude' or 'keep', got {conflicts!r}")
    files, info = scan_folder(root, classes=classes)
    records = validate_files(files, workers=workers, max_bytes=max_bytes, max_pixels=max_pixels,
                             progress=progress)
    warnings: list[str] = []
    for name in info["empty_classes"]:
        warnings.append(f"class folder {name!r} holds no image files")
    valid = [r for r in records if r.ok]
    if not valid:
        raise DatasetError(
            f"{root}: none of {len(records)} image files is usable "
            f"({len(records)} quarantined); see the reasons in quarantine.csv"
        )
    class_names = list(info["classes"])
    for name in info["classes"]:
        usable = sum(1 for r in valid if r.label == name)
        if usable == 0 and name not in info["empty_classes"]:
            warnings.append(f"class {name!r} has no usable image (all quarantined)")
        if usable == 0 and not keep_empty_classes:
            class_names.remove(name)
            warnings.append(f"class {name!r} dropped from the class list (no usable image; "
                            "keep_empty_classes=True keeps it)")
    groups = find_duplicate_groups([r.sha256 for r in valid], [r.phash for r in valid],
                                   max_distance=near_duplicates)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(int(g), []).append(i)
    keys, labels, sizes, gids = [], [], [], []
    excluded_groups = set()
    for g, idx in members.items():
        classes_in = sorted({valid[i].label for i in idx})
        for i in idx:
            valid[i].group = g
        if len(classes_in) > 1:
            note = "label conflict: same image under " + ", ".join(classes_in)
            for i in idx:
                valid[i].note = note
            if conflicts == "exclude":
                excluded_groups.add(g)
                continue
        # the group's class: the most common label (ties: first in class order)
        label = max(classes_in, key=lambda c: (sum(valid[i].label == c for i in idx),
                                               -class_names.index(c)))
        keys.append(min(valid[i].sha256 for i in idx))
        labels.append(label)
        sizes.append(len(idx))
        gids.append(g)
    assigned = split_groups(keys, labels, sizes, fractions=fractions, seed=seed)
    split_of = dict(zip(gids, assigned))
    for g, idx in members.items():
        seen: dict[tuple[str, str], str] = {}
        for i in sorted(idx, key=lambda i: valid[i].path):
            r = valid[i]
            if g in excluded_groups:
                r.split = "excluded"
                continue
            r.split = split_of[g]
            key = (r.sha256, r.label)
            if key in seen:
                r.split = "excluded"
                r.note = f"exact duplicate of {seen[key]}"
            else:
                seen[key] = r.path
                if len(idx) > 1 and not r.note:
                    r.note = "near duplicate group" if len({valid[j].sha256 for j in idx}) > 1 \
                        else ""
    used = {r.label for r in valid if r.split in SPLITS}
    if len(used) < 2:
        warnings.append(
            f"only {len(used)} class with usable images ({sorted(used)}): fine for inspection, "
            "but training a classifier needs at least two classes"
        )
    for name in class_names:
        n_train = sum(1 for r in valid if r.label == name and r.split == "train")
        if 0 < sum(1 for r in valid if r.label == name and r.split in SPLITS) < 3:
            warnings.append(f"class {name!r} has fewer than 3 usable images: val/test may lack it")
        elif n_train == 0 and name in used:
            warnings.append(f"class {name!r} has no training image")
    params = {"fractions": list(fractions), "seed": seed, "near_duplicates": near_duplicates,
              "conflicts": conflicts, "max_bytes": max_bytes, "max_pixels": max_pixels,
              "keep_empty_classes": keep_empty_classes}
    return PreparedDataset(
        root=str(Path(root).resolve()), class_names=tuple(class_names), records=records,
        ignored=info["ignored"], empty_classes=info["empty_classes"], warnings=warnings,
        params=params,
    )


# ------------------------------------------------------------------------------------------
# Reading a manifest back
# ------------------------------------------------------------------------------------------
def read_manifest(path: str | os.PathLike, *, split: str | Sequence[str] | None = None) -> list[dict]:
    """Rows of a ``manifest.csv`` (all, or those of one or more splits)."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.csv"
    if not path.is_file():
        raise DatasetError(f"{path}: manifest not found; run `nsfwkit prepare` (notebook 01) first")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"path", "class", "split"} - set(rows[0] if rows else MANIFEST_FIELDS)
    if missing:
        raise DatasetError(f"{path}: not a manifest (missing columns {sorted(missing)})")
    if split is not None:
        wanted = {split} if isinstance(split, str) else set(split)
        rows = [r for r in rows if r["split"] in wanted]
    return rows


def manifest_class_names(path: str | os.PathLike) -> tuple[str, ...]:
    """Class names in label order: from ``summary.json`` beside the manifest, else sorted."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    summary = folder / "summary.json"
    if summary.is_file():
        return tuple(json.loads(summary.read_text())["class_names"])
    return tuple(sorted({r["class"] for r in read_manifest(path)}))


def manifest_arrays(
    path: str | os.PathLike, split: str, *, class_names: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """``(paths, labels, class_names)`` of one split; labels are ``int64`` class indices."""
    names = tuple(class_names) if class_names else manifest_class_names(path)
    rows = read_manifest(path, split=split)
    index = {c: i for i, c in enumerate(names)}
    unknown = sorted({r["class"] for r in rows} - set(index))
    if unknown:
        raise DatasetError(f"{path}: classes {unknown} are not in {list(names)}")
    return [r["path"] for r in rows], np.array([index[r["class"]] for r in rows], np.int64), names


def default_nsfw_classes(class_names: Sequence[str]) -> tuple[str, ...]:
    """Dataset classes counted as NSFW by name (hentai, porn, sexy, nsfw, ...; case-insensitive)."""
    return tuple(c for c in class_names if c.lower().rstrip("s") in {n.rstrip("s") for n in NSFW_NAMES}
                 or c.lower() in NSFW_NAMES)


def class_weights(labels: Sequence[int], num_classes: int) -> np.ndarray:
    """Balanced class weights ``n / (k * count_c)``, ``float32`` ``(num_classes,)``.

    Classes absent from ``labels`` get weight 0 (they have no samples to weight).
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


# ------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------
# tf.data
# ------------------------------------------------------------------------------------------
def decode_for_model(path: str | bytes) -> tuple[np.ndarray, bool]:
    """Decode one file with the shared loader for ``tf.data``: ``(uint8 (H,W,3), ok)``.

    A file that fails (changed since validation) gives a 1x1 black image and ``ok=False``; the
    pipeline filters it out instead of failing the batch.
    """
    if isinstance(path, bytes):
        path = path.decode("utf-8", "surrogateescape")
    try:
        return _images.load_image(path), True
    except _images.ImageError:
        return np.zeros((1, 1, 3), np.uint8), False


def _augment(image, seed, *, strength: float):
    """Random flip, crop-zoom, brightness and contrast with a stateless seed (float 0-255 in/out)."""
    import tensorflow as tf

    size = tf.shape(image)[0]
    s1, s2, s3, s4 = (tf.random.experimental.stateless_fold_in(seed, i) for i in range(4))
    image = tf.image.stateless_random_flip_left_right(image, s1)
    scale = tf.random.stateless_uniform([], s2, 1.0 - 0.2 * strength, 1.0)
    crop = tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32)
    image = tf.image.stateless_random_crop(image, tf.stack([crop, crop, 3]), s3)
    image = tf.raw_ops.ResizeBilinear(images=image[None], size=tf.stack([size, size]),
                                      align_corners=True, half_pixel_centers=False)[0]
    delta = tf.random.stateless_uniform([2], s4, -1.0, 1.0) * strength
    mean = tf.reduce_mean(image)
    image = (image - mean) * (1.0 + 0.2 * delta[0]) + mean + 20.0 * delta[1]
    return tf.clip_by_value(image, 0.0, 255.0)


def _is_ok(i, image, ok):
    return ok


def _drop_ok(i, image, ok):
    return i, image


def epoch_order(n: int, seed: int, epoch: int = 0) -> np.ndarray:
    """The training order of one epoch: a permutation of ``range(n)`` fixed by ``(seed, epoch)``."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(int(n))


def decode_dataset(
    paths: Sequence[str],
    *,
    image_size: int,
    cache: bool | str = True,
    parallel: int | None = None,
    order: Sequence[int] | None = None,
):
    """``tf.data.Dataset`` of ``(index, float32 (S, S, 3) image)``: decoded, resized, cached.

    Files that fail to decode are dropped (their index is missing). Iterating the same object
    again reads the cache instead of decoding again. ``order`` (a permutation of the indices)
    sets the order files are decoded and yielded in; by default the order of ``paths``.
    """
    import tensorflow as tf

    paths = [str(p) for p in paths]
    size = int(image_size)
    table = tf.constant(paths, tf.string) if paths else tf.zeros([0], tf.string)

    def load(i):
        image, ok = tf.numpy_function(decode_for_model, [tf.gather(table, i)],
                                      [tf.uint8, tf.bool], stateful=False)
        image = tf.ensure_shape(image, [None, None, 3])
        image = tf.raw_ops.ResizeBilinear(images=image[None], size=[size, size],
                                          align_corners=True, half_pixel_centers=False)[0]
        return i, tf.ensure_shape(image, [size, size, 3]), tf.ensure_shape(ok, [])

    if order is None:
        indices = tf.data.Dataset.range(len(paths))
    else:
        indices = tf.data.Dataset.from_tensor_slices(np.asarray(order, np.int64).reshape(-1))
    ds = indices.map(load, num_parallel_calls=parallel or tf.data.AUTOTUNE, deterministic=True)
    ds = ds.filter(_is_ok).map(_drop_ok)
    if cache:
        ds = ds.cache("" if cache is True else str(cache))
    return ds


def make_dataset(
    paths: Sequence[str],
    labels: Sequence[int] | None = None,
    *,
    image_size: int,
    batch_size: int = 32,
    num_classes: int | None = None,
    training: bool = False,
    augment: bool = True,
    augment_strength: float = 1.0,
    seed: int = 0,
    epoch: int = 0,
    cache: bool | str = True,
    shuffle_buffer: int | None = None,
    sample_weights: Sequence[float] | None = None,
    parallel: int | None = None,
    drop_remainder: bool = False,
    decoded=None,
    decoded_order_seed: int | None = None,
):
    """A ``tf.data.Dataset`` of ``(images, targets[, weights])`` batches from image files.

    Decoding uses the shared loader (in parallel threads via ``tf.numpy_function``), resizing
    the inference op (``ResizeBilinear(align_corners=True)``), so pixels equal
    ``nsfwkit.images.load_image(path, image_size=image_size)`` exactly. Decoded, resized images
    are cached (memory, or a cache file when ``cache`` is a path) before augmentation, so each
    file is decoded once per run. Files that fail to decode are skipped, never fatal.

    Training order and augmentation are deterministic functions of ``(seed, epoch)``: the
    same epoch always yields the same batches, so a resumed run can skip exactly the batches
    it already did (``.skip(k)``).

    Args:
        paths: image files.
        labels: class indices ``(N,)`` (None: the dataset yields images only).
        image_size: square side the model takes.
        batch_size: images per batch.
        num_classes: targets are one-hot ``float32 (B, num_classes)`` when given, else the
            ``int64`` indices.
        training: shuffle and augment (augmentation is never part of the saved model).
        augment: augment when training (random flip, crop-zoom <= 20%, brightness/contrast).
        augment_strength: scales the augmentation ranges (0 disables them).
        seed, epoch: determine the shuffle order and the augmentation.
        cache: True (memory), a file path prefix, or False.
        shuffle_buffer: default: the whole dataset (exact, seeded permutation).
        sample_weights: per-file weight ``(N,)``; adds a third element to each batch.
        parallel: decoding parallelism (default ``tf.data.AUTOTUNE``).
        drop_remainder: drop the last partial batch.
        decoded: a :func:`decode_dataset` of the same ``paths`` to reuse (its cache then
            serves every epoch; build one per run and pass it to each epoch's call).
        decoded_order_seed: when ``decoded`` was built with ``order=epoch_order(n, seed, 0)``,
            pass that seed: epoch 0 then streams in that order (training starts with the first
            decoded batch) instead of filling a whole-dataset shuffle buffer first.

    Without ``decoded``, files are decoded straight in the epoch's order
    (:func:`epoch_order`), so decoding overlaps training from the first batch. With it, epoch 0
    streams when ``decoded_order_seed == seed``; later epochs shuffle the cached stream.

    Returns:
        ``tf.data.Dataset``; images are ``float32 (B, S, S, 3)`` in 0-255.
    """
    import tensorflow as tf

    paths = [str(p) for p in paths]
    n = len(paths)
    auto = tf.data.AUTOTUNE
    parallel = parallel or auto
    streaming = False
    if decoded is None:
        # decode in this epoch's order: no whole-dataset shuffle buffer to fill before step 1
        order = epoch_order(n, seed, epoch) if training else None
        decoded = decode_dataset(paths, image_size=image_size, cache=cache, parallel=parallel,
                                 order=order)
        streaming = training
    elif training and epoch == 0 and decoded_order_seed is not None and int(decoded_order_seed) == int(seed):
        streaming = True
    columns: list[Any] = [None]
    if labels is not None:
        columns.append(tf.constant(np.asarray(labels, np.int64).reshape(-1)))
    if sample_weights is not None:
        columns.append(tf.constant(np.asarray(sample_weights, np.float32).reshape(-1)))
    ds = decoded
    if training and not streaming:
        ds = ds.shuffle(shuffle_buffer or max(n, 1), seed=int(seed) * 1000 + int(epoch),
                        reshuffle_each_iteration=False)
    if training:
        if augment and augment_strength > 0:
            base_seed = tf.constant([int(seed), int(epoch)], tf.int64)

            def aug(i, image):
                elem_seed = tf.random.experimental.stateless_fold_in(base_seed, i)
                elem_seed = tf.cast(elem_seed, tf.int64)
                return i, _augment(image, elem_seed, strength=float(augment_strength))

            ds = ds.map(aug, num_parallel_calls=parallel, deterministic=True)

    def finish(i, image):
        out = [image]
        if labels is not None:
            y = tf.gather(columns[1], i)
            out.append(tf.one_hot(y, num_classes, dtype=tf.float32) if num_classes else y)
        if sample_weights is not None:
            out.append(tf.gather(columns[-1], i))
        return tuple(out) if len(out) > 1 else out[0]

    ds = ds.map(finish, num_parallel_calls=parallel, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(auto)
