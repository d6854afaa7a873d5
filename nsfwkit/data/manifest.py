"""The manifest: a prepared dataset in memory (:class:`PreparedDataset`), its files on disk
(``manifest.csv``, ``quarantine.csv``, ``duplicates.csv``, ``summary.json``), and reading them back
for training and evaluation (paths, label indices, class names, class weights).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..fileio import atomic_path
from ..fileio import write_text as _write_text
from .scan import DatasetError, Record
from .split import SPLITS

__all__ = [
    "MANIFEST_FIELDS",
    "NSFW_NAMES",
    "PreparedDataset",
    "read_manifest",
    "manifest_class_names",
    "manifest_arrays",
    "clip_frame_counts",
    "existing_files",
    "MissingFilesError",
    "class_key",
    "default_nsfw_classes",
    "class_weights",
]

MANIFEST_FIELDS = (
    "path", "class", "split", "sha256", "phash", "size", "width", "height", "format", "group",
    "note", "frames",
)
#: The columns of manifests written before clips had a ``frames`` column (still recognised; every row a still).
_LEGACY_MANIFEST_FIELDS = MANIFEST_FIELDS[:-1]
#: ``summary.json``'s ``path_base`` when ``manifest.csv``'s paths are relative to its own folder
#: (manifests of older kits: relative to the directory ``prepare`` ran in).
PATH_BASE = "manifest_folder"
#: Dataset class names (lower-case) counted as NSFW by default.
NSFW_NAMES = frozenset({"hentai", "porn", "sexy", "nsfw", "explicit", "nude", "nudity", "unsafe"})


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
    skipped: list = dataclasses.field(default_factory=list)  # nsfwkit.inputs.Skipped: entries left out

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
            "skipped": _reason_counts(self.skipped),
            "empty_classes": list(self.empty_classes),
            "duplicate_groups": len(dup),
            "files_in_duplicate_groups": sum(len(v) for v in dup.values()),
            "largest_duplicate_group": max((len(v) for v in dup.values()), default=1),
            "label_conflicts": len(self.conflicts()),
            "splits": {s: len(self.split(s)) for s in (*SPLITS, "excluded")},
            "counts": self.counts(),
            "warnings": list(self.warnings),
            "params": self.params,
        }

    def write(self, folder: str | os.PathLike) -> dict[str, Path]:
        """Write ``manifest.csv``, ``quarantine.csv``, ``duplicates.csv``, ``summary.json``.

        Every file is written atomically. ``manifest.csv``'s paths are relative to ``folder`` (or
        absolute when they cannot be), so the manifest works from any directory; the dataset's
        ``root`` is recorded in ``summary.json``. Returns ``{name: path}``.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = {}
        rows = [
            {"path": _relative_to(r.path, folder), "class": r.label, "split": r.split, "sha256": r.sha256,
             "phash": r.phash, "size": r.size, "width": r.width, "height": r.height,
             "format": r.format, "group": r.group, "note": r.note, "frames": r.frames}
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
                dup_rows.append({"group": g, "kind": kind, "size": len(rs), "path": r.path,
                                 "class": r.label, "split": r.split, "nearest": r.nearest,
                                 "distance": r.distance, "sha256": r.sha256, "phash": r.phash,
                                 "note": r.note})
        out["duplicates"] = _write_csv(
            folder / "duplicates.csv",
            ("group", "kind", "size", "path", "class", "split", "nearest", "distance", "sha256",
             "phash", "note"), dup_rows,
        )
        out["summary"] = _write_text(folder / "summary.json",
                                     json.dumps({**self.summary(), "path_base": PATH_BASE}, indent=2) + "\n")
        return out


#: What :meth:`PreparedDataset.write` writes into its folder.
PREPARED_FILES = frozenset({"manifest.csv", "quarantine.csv", "duplicates.csv", "summary.json"})


def is_prepared_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a prepared dataset's files and nothing else (``prepare --out`` of an
    older kit, before ownership markers): recognised by content, not only by the names."""
    folder = Path(folder)
    names = {p.name for p in folder.iterdir()} - {".nsfwkit.lock"}
    if not ({"manifest.csv", "summary.json"} <= names <= PREPARED_FILES):
        return False
    try:
        with open(folder / "manifest.csv", newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return tuple(header) in (MANIFEST_FIELDS, _LEGACY_MANIFEST_FIELDS) and isinstance(summary, dict) and {"class_names", "counts"} <= set(summary)


def _reason_counts(skipped) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in skipped:
        counts[entry.reason] = counts.get(entry.reason, 0) + 1
    return counts


#: CSV columns holding file names: a name that is not valid UTF-8 is written as its escaped form,
#: with its exact bytes in ``<column>_bytes`` (base64; the column exists only when needed).
_NAME_COLUMNS = ("path", "nearest")


def _name_rows(fields: Sequence[str], rows: list[dict]) -> tuple[list[str], list[dict]]:
    from ..inputs import name_fields

    fields, out = list(fields), []
    for row in rows:
        row = dict(row)
        for key in _NAME_COLUMNS:
            if row.get(key):
                row.update(name_fields(row[key], key))
        out.append(row)
    extra = [f"{k}_bytes" for k in _NAME_COLUMNS if k in fields and any(f"{k}_bytes" in r for r in out)]
    return fields + extra, out


def _exact_names(row: dict) -> dict:
    from ..inputs import name_from_fields

    for key in _NAME_COLUMNS:
        if row.get(f"{key}_bytes"):
            row[key] = name_from_fields(row, key)
    return row


def _write_csv(path: Path, fields: Sequence[str], rows: list[dict]) -> Path:
    fields, rows = _name_rows(fields, rows)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)
    return path

def _relative_to(path: str, folder: Path) -> str:
    try:
        return os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    except ValueError:  # another drive (Windows)
        return os.path.abspath(path)


def _path_resolver(folder: Path):
    """How a manifest's ``path`` becomes a path to open: relative to the manifest's folder (this
    kit's manifests); an older kit's (relative to where it ran): as written when that file
    exists from here, else relative to the manifest's folder."""
    try:
        base = json.loads((folder / "summary.json").read_text(encoding="utf-8")).get("path_base")
    except (OSError, ValueError, AttributeError):
        base = None

    def resolve(value: str) -> str:
        if os.path.isabs(value):
            return value
        if base == PATH_BASE or not os.path.exists(value):
            return os.path.abspath(os.path.join(folder, value))
        return value

    return resolve


def read_manifest(path: str | os.PathLike, *, split: str | Sequence[str] | None = None,
                  resolve: bool = True) -> list[dict]:
    """Rows of a ``manifest.csv`` (all, or those of one or more splits).

    ``resolve``: each row's ``path`` is made openable from anywhere (absolute: see
    :meth:`PreparedDataset.write`; an older kit's path that exists from the current directory is
    kept as written); ``False``: as stored in the file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.csv"
    if not path.is_file():
        raise DatasetError(f"{path}: manifest not found; run `nsfwkit prepare` (notebook 01) first")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [_exact_names(row) for row in csv.DictReader(fh)]
    missing = {"path", "class", "split"} - set(rows[0] if rows else MANIFEST_FIELDS)
    if missing:
        raise DatasetError(f"{path}: not a manifest (missing columns {sorted(missing)})")
    if split is not None:
        wanted = {split} if isinstance(split, str) else set(split)
        rows = [r for r in rows if r["split"] in wanted]
    if resolve:
        to_path = _path_resolver(path.parent)
        for r in rows:
            r["path"] = to_path(r["path"])
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


#: ``format`` values of video rows (:func:`nsfwkit.frames.load_frames`' container names, upper-case).
_VIDEO_FORMATS = frozenset({"MP4", "QUICKTIME", "WEBM", "MATROSKA", "AVI"})


def clip_frame_counts(path: str | os.PathLike, split: str) -> np.ndarray:
    """Per row of :func:`manifest_arrays` (same split, same order): 0 for a still image, else the
    frames ``prepare`` sampled from the clip (a video, or an animation of more than one frame).
    A manifest without the ``frames`` column (an older kit's) holds stills only."""
    rows = read_manifest(path, split=split, resolve=False)
    counts = [int(r.get("frames") or 1) for r in rows]
    return np.array([n if n > 1 or r.get("format", "").upper() in _VIDEO_FORMATS else 0
                     for n, r in zip(counts, rows)], np.int64)


class MissingFilesError(DatasetError):
    """Files a manifest lists are not there (moved, deleted, or a manifest of another machine)."""


def existing_files(manifest: str | os.PathLike, paths: Sequence[str], labels: np.ndarray, *,
                   skip_missing: bool = False, split: str = "") -> tuple[list[str], np.ndarray, list[str]]:
    """``(paths, labels, missing)``: the files of a manifest's split that exist, and those that do not.

    Raises :class:`MissingFilesError` (the count and the first few paths) when any is missing,
    unless ``skip_missing``: then they are left out and returned, to be counted and reported.
    """
    keep = np.array([os.path.isfile(p) for p in paths], bool)
    missing = [p for p, ok in zip(paths, keep) if not ok]
    if missing and not skip_missing:
        first = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise MissingFilesError(
            f"{manifest}: {len(missing)} of {len(paths)} {split + ' ' if split else ''}files are missing "
            f"({first}); move them back, prepare the dataset again, or skip them (--skip-missing)")
    return [p for p, ok in zip(paths, keep) if ok], np.asarray(labels)[keep], missing


def class_key(name: str) -> str:
    """The key class names are matched by: lower-case letters and digits, a plural ``s`` dropped.

    ``Drawing``, ``drawings`` and ``DRAWINGS`` share the key ``drawing``; used to align a model's
    classes with a dataset's and to recognise NSFW class names.
    """
    name = re.sub(r"[^a-z0-9]", "", name.lower())
    return name[:-1] if name.endswith("s") and len(name) > 3 else name


def default_nsfw_classes(class_names: Sequence[str]) -> tuple[str, ...]:
    """Dataset classes counted as NSFW by name (hentai, porn, sexy, nsfw, ...; matched by
    :func:`class_key`: case and a plural ``s`` do not matter)."""
    nsfw = {class_key(n) for n in NSFW_NAMES}
    return tuple(c for c in class_names if class_key(c) in nsfw)


def class_weights(labels: Sequence[int], num_classes: int) -> np.ndarray:
    """Balanced class weights ``n / (k * count_c)``, ``float32`` ``(num_classes,)``.

    Classes absent from ``labels`` get weight 0 (they have no samples to weight).
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)
