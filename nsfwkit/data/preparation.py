"""The whole preparation: scan -> validate -> de-duplicate -> split, as one call (:func:`prepare`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .. import images as _images
from .duplicates import find_duplicate_groups
from .manifest import PreparedDataset
from .scan import DatasetError, Record, scan_folder, validate_files
from .split import SPLITS, split_groups

__all__ = ["prepare"]


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
    engine: str = "local",
    address: str | None = None,
) -> PreparedDataset:
    """Scan, validate, de-duplicate and split a folder-per-class dataset.

    User files are only read: nothing is moved, changed or deleted.

    Args:
        root: dataset folder, one sub-folder per class.
        classes: class folders to use, in label order (default: all, sorted).
        fractions: target train/val/test shares.
        seed: split seed (the split is deterministic for a given seed and content).
        near_duplicates: perceptual-hash Hamming distance still counted as the same image;
            ``-1`` turns near-duplicate detection off. Groups are connected components (a chain
            of near copies is one group, kept in one split); a group larger than 5% of the files
            (and 10 files) is reported in ``warnings`` with advice to lower this distance.
        conflicts: ``"exclude"`` (default) keeps label-conflict groups out of every split
            (split ``excluded``); ``"keep"`` keeps them, all in one split.
        workers: decoding threads.
        max_bytes, max_pixels: larger files / images are quarantined.
        progress: a text progress bar while validating (:mod:`nsfwkit.progress`); False turns it off.
        keep_empty_classes: keep class folders with no usable image in ``class_names`` (a model
            trained on the manifest then has an output no image ever taught). Default: they
            are dropped from the class list, with a warning.
        engine: ``"ray"`` validates and hashes in Ray tasks (:mod:`nsfwkit.engines.ray_engine`,
            the same records), on the cluster at ``address`` or an embedded local Ray.

    Returns:
        A :class:`PreparedDataset`; call ``.write(run_folder)`` to save the manifest.

    Raises:
        DatasetError: the folder has no class folders, or no class has a usable image.
    """
    if conflicts not in ("exclude", "keep"):
        raise ValueError(f"conflicts must be 'exclude' or 'keep', got {conflicts!r}")
    files, info = scan_folder(root, classes=classes)
    if engine == "ray":
        from ..engines import ray_engine

        records = ray_engine.validate_files(files, address=address, max_bytes=max_bytes, max_pixels=max_pixels)
    elif engine == "local":
        records = validate_files(files, workers=workers, max_bytes=max_bytes, max_pixels=max_pixels,
                                 progress=progress)
    else:
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    warnings: list[str] = []
    for name in info["empty_classes"]:
        warnings.append(f"class folder {name!r} holds no image files")
    valid = [r for r in records if r.ok]
    if not valid:
        raise DatasetError(
            f"{root}: none of {len(records)} image files is usable "
            f"({len(records)} quarantined); see the reasons in quarantine.csv"
        )
    class_names, dropped = _usable_classes(info, valid, keep_empty_classes=keep_empty_classes)
    warnings.extend(dropped)
    dups = find_duplicate_groups([r.sha256 for r in valid], [r.phash for r in valid],
                                 max_distance=near_duplicates)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(dups.groups):
        members.setdefault(int(g), []).append(i)
        if dups.nearest[i] >= 0:
            valid[i].nearest, valid[i].distance = valid[dups.nearest[i]].path, int(dups.distance[i])
    warnings.extend(_huge_group_warnings(valid, members, near_duplicates))
    keys, labels, sizes, gids, excluded_groups = _label_groups(
        valid, members, class_names, exclude_conflicts=conflicts == "exclude")
    assigned = split_groups(keys, labels, sizes, fractions=fractions, seed=seed)
    _mark_splits(valid, members, dict(zip(gids, assigned)), excluded_groups)
    warnings.extend(_split_warnings(valid, class_names))
    params = {"fractions": list(fractions), "seed": seed, "near_duplicates": near_duplicates,
              "conflicts": conflicts, "max_bytes": max_bytes, "max_pixels": max_pixels,
              "keep_empty_classes": keep_empty_classes}
    return PreparedDataset(
        root=str(Path(root).resolve()), class_names=tuple(class_names), records=records,
        ignored=info["ignored"], empty_classes=info["empty_classes"], warnings=warnings,
        params=params, skipped=info["skipped"],
    )


def _usable_classes(info: dict, valid: list[Record], *,
                    keep_empty_classes: bool) -> tuple[list[str], list[str]]:
    """``(class_names, warnings)``: the scanned classes less those without a usable image
    (unless ``keep_empty_classes``), and a warning for each class without one."""
    class_names = list(info["classes"])
    warnings = []
    for name in info["classes"]:
        usable = sum(1 for r in valid if r.label == name)
        if usable == 0 and name not in info["empty_classes"]:
            warnings.append(f"class {name!r} has no usable image (all quarantined)")
        if usable == 0 and not keep_empty_classes:
            class_names.remove(name)
            warnings.append(f"class {name!r} dropped from the class list (no usable image; "
                            "keep_empty_classes=True keeps it)")
    return class_names, warnings


#: A duplicate group larger than this share of the usable files (and than ``_HUGE_MIN`` files)
#: is reported: near copies chained unrelated images together.
_HUGE_SHARE, _HUGE_MIN = 0.05, 10


def _huge_group_warnings(valid: list[Record], members: dict[int, list[int]],
                         near_duplicates: int) -> list[str]:
    """A warning when the largest duplicate group is implausibly large for copies of one image."""
    if not members:
        return []
    idx = max(members.values(), key=len)
    size = len(idx)
    if size <= max(_HUGE_MIN, _HUGE_SHARE * len(valid)):
        return []
    classes = sorted({valid[i].label for i in idx})
    return [f"the largest duplicate group holds {size} files ({size / len(valid):.0%} of the usable "
            f"files; classes {', '.join(classes)}): chains of near copies within "
            f"{near_duplicates} bits joined them, and a group always stays in one split. If they "
            f"are not copies of one image, tighten --near-duplicates (e.g. {max(0, near_duplicates - 2)})"]


def _label_groups(valid: list[Record], members: dict[int, list[int]], class_names: list[str], *,
                  exclude_conflicts: bool):
    """Set each record's group (and label-conflict note); one key, class and size per group.

    Returns ``(keys, labels, sizes, group_ids, excluded_group_ids)``: the groups to split, and
    the label-conflict groups kept out of every split when ``exclude_conflicts``.
    """
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
            if exclude_conflicts:
                excluded_groups.add(g)
                continue
        # the group's class: the most common label (ties: first in class order)
        label = max(classes_in, key=lambda c: (sum(valid[i].label == c for i in idx),
                                               -class_names.index(c)))
        keys.append(min(valid[i].sha256 for i in idx))
        labels.append(label)
        sizes.append(len(idx))
        gids.append(g)
    return keys, labels, sizes, gids, excluded_groups


def _mark_splits(valid: list[Record], members: dict[int, list[int]], split_of: dict[int, str],
                 excluded_groups: set[int]) -> None:
    """Give every record its group's split; extra exact copies within a class are ``excluded``."""
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


def _split_warnings(valid: list[Record], class_names: list[str]) -> list[str]:
    """Warnings about classes too small to train or to appear in every split."""
    warnings = []
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
    return warnings
