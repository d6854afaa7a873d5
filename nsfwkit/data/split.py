"""The split: whole duplicate groups to train/val/test, stratified by class, deterministic.

Self-contained (numpy only): :func:`split_groups` takes one key, class and size per group (as
:func:`nsfwkit.data.prepare` builds them) and returns a split name per group.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

__all__ = ["SPLITS", "split_groups"]

SPLITS = ("train", "val", "test")


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
