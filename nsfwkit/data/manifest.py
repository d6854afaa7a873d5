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

from ..fileio import atomic_path, write_text as _write_text
from .scan import DatasetError, Record
from .split import SPLITS

__all__ = [
    "MANIFEST_FIELDS",
    "NSFW_NAMES",
    "PreparedDataset",
    "read_manifest",
    "manifest_class_names",
    "manifest_arrays",
    "class_key",
    "default_nsfw_classes",
    "class_weights",
]

MANIFEST_FIELDS = (
    "path", "class", "split", "sha256", "phash", "size", "width", "height", "format", "group",
    "note",
)
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
                                     json.dumps(self.summary(), indent=2) + "\n")
        return out


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

def read_manifest(path: str | os.PathLike, *, split: str | Sequence[str] | None = None) -> list[dict]:
    """Rows of a ``manifest.csv`` (all, or those of one or more splits)."""
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
