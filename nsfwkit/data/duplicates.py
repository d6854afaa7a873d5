"""Duplicate search: exact copies by SHA-256, near copies by perceptual-hash Hamming distance.

Self-contained (numpy only): :func:`find_duplicate_groups` takes the hashes
:func:`nsfwkit.data.validate_files` computed and returns a group id per file.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["find_duplicate_groups"]


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
