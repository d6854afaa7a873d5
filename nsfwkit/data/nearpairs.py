"""All pairs of 64-bit hashes within a Hamming distance: :func:`near_pairs`.

An exact, vectorised brute-force search in row blocks (memory-bounded, quadratic time).
"""

from __future__ import annotations

import numpy as np

__all__ = ["near_pairs"]

_BLOCK_BYTES = 32 * 2**20  # memory of one block of XOR distances


def near_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Every pair of hashes at most ``max_distance`` bits apart.

    Args:
        hashes: ``uint64 (N,)`` hashes (e.g. 64-bit perceptual hashes).
        max_distance: largest Hamming distance of a pair (``< 0``: no pairs).

    Returns:
        ``int64 (K, 2)``: index pairs ``(i, j)`` with ``i < j``, sorted lexicographically.
    """
    h = np.ascontiguousarray(hashes, dtype=np.uint64).reshape(-1)
    n = h.size
    if max_distance < 0 or n < 2:
        return np.zeros((0, 2), np.int64)
    rows = int(max(1, min(n, _BLOCK_BYTES // (8 * n))))
    found = []
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        dist = np.bitwise_count(h[start:stop, None] ^ h[None, :])  # (rows, N) uint8
        i, j = np.nonzero(dist <= max_distance)
        keep = j > i + start
        found.append(np.stack([i[keep] + start, j[keep]], axis=1))
    return np.concatenate(found).astype(np.int64, copy=False)
