"""Every pair of 64-bit perceptual hashes within a Hamming distance, through an index.

:func:`near_pairs` finds **exactly** the pairs an all-pairs comparison finds
(:func:`near_pairs_bruteforce`, kept for tests and benchmarks), in time close to linear in the
number of hashes for realistic duplicate rates, with memory bounded by a few arrays of the
input's size plus the pairs themselves.

How (multi-index hashing, generalised):

1. **Exact copies first.** Identical hashes (blank images, re-encodes) collapse to one unique
   hash; pairs among identical hashes are implied, so a huge group of them never reaches the
   search (:func:`unique_near_pairs` returns this compact form).
2. **Chunks and the pigeonhole.** The 64 bits are cut into ``m >= max_distance + 1`` contiguous
   chunks. Two hashes at most ``d = max_distance`` bits apart differ in at most ``d`` chunks, so
   they agree exactly on at least ``k = m - d`` of them -- on every bit of some ``k``-subset of
   the chunks. One pass per ``k``-subset sorts the hashes by their bits in that subset;
   hashes with equal keys are the candidates, verified with a popcount. ``m = d + 1, k = 1``
   is classic multi-index hashing (few passes, short keys, many chance candidates); larger
   ``m`` means more passes with longer keys (almost no chance candidates). The plan with the
   lowest estimated cost is chosen for the input's size (:func:`search_plan`).
3. **No duplicates, bounded blocks.** A pair is kept only in the pass of the first subset it
   agrees on, so each pair is found once. Candidates within a key bucket are generated one
   lag at a time (each element against the element ``lag`` places later in its bucket), so a
   huge bucket costs time, never more than one array of the input's size at once.

The cost model assumes uniformly random bits; pHashes of generated textures gave 2-7x its chance
candidates (correlated bits), still few. Measured on 2 cores (``benchmarks/scale.py``): 1M hashes
with 6% copies in ~1.2 s at distance 4 (all-pairs: 71 s at 200k). faiss-cpu 1.15's
``IndexBinaryMultiHash`` (classic multi-index hashing) returns the same pairs but took 0.35 s at
50k and 4.7 s at 200k (this module: 0.05 s and 0.2 s), so the kit keeps numpy only.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Iterator

import numpy as np

__all__ = ["near_pairs", "near_pairs_bruteforce", "unique_near_pairs", "search_plan", "SearchPlan"]

BITS = 64
# Relative costs of one pass per hash (mask, argsort, bucket bounds: ~40 ns) and of one candidate
# pair (gather, xor, popcount, filters: ~23 ns), measured with numpy 2.4 on one core at 1M hashes.
_PASS_COST = 1.0
_CANDIDATE_COST = 0.55
_MAX_PASSES = 5000
_EMPTY = np.zeros((0, 2), np.int64)


@dataclasses.dataclass(frozen=True)
class SearchPlan:
    """How :func:`unique_near_pairs` searches: ``chunks`` contiguous bit ranges, one pass per
    ``agree``-subset of them (``passes`` in all), ``expected_candidates`` chance collisions for
    uniformly random hashes."""

    chunks: int
    agree: int
    passes: int
    expected_candidates: float

    def masks(self) -> Iterator[tuple[int, int]]:
        """``(key_mask, forbidden)`` per pass, in pass order: the bits of the subset's chunks,
        and the chunk-agreement bits that mean an earlier pass already found the pair."""
        chunk_masks = [int(c) for c in self.chunk_masks()]
        for subset in itertools.combinations(range(self.chunks), self.agree):
            key = sum(chunk_masks[c] for c in subset)
            members = sum(1 << c for c in subset)
            forbidden = ((1 << subset[-1]) - 1) & ~members  # agreeing on a smaller chunk not in it
            yield key, forbidden

    def chunk_masks(self) -> np.ndarray:
        """``(chunks,) uint64``: the bits of each chunk (contiguous, widths differing by <= 1)."""
        bounds = np.linspace(0, BITS, self.chunks + 1).round().astype(int)
        return np.array([((1 << int(hi - lo)) - 1) << int(lo) for lo, hi in itertools.pairwise(bounds)],
                        dtype=np.uint64)


def search_plan(n: int, max_distance: int) -> SearchPlan:
    """The cheapest chunking for ``n`` unique hashes and ``max_distance`` (``0 <= d < 64``).

    Estimated cost: passes x ``n`` (sorting) + expected chance candidates (``n^2 / 2`` per pass
    times the probability that two random hashes share the pass's key).
    """
    if not 0 <= max_distance < BITS:
        raise ValueError(f"max_distance must be in [0, {BITS - 1}] for a search plan, got {max_distance}")
    d = int(max_distance)
    best = None
    for m in range(d + 1, BITS + 1):
        k = m - d
        passes = math.comb(m, k)
        if passes > _MAX_PASSES and best is not None:
            break
        narrow, wide = BITS // m, BITS // m + 1
        n_wide = BITS - narrow * m
        # sum over subsets of 2^-(bits of the subset), grouped by how many wide chunks it holds
        collide = sum(math.comb(n_wide, j) * math.comb(m - n_wide, k - j) * 2.0 ** -(j * wide + (k - j) * narrow)
                      for j in range(0, min(k, n_wide) + 1))
        candidates = n * (n - 1) / 2 * collide
        cost = passes * n * _PASS_COST + candidates * _CANDIDATE_COST
        plan = SearchPlan(chunks=m, agree=k, passes=passes, expected_candidates=candidates)
        if best is None or cost < best[0]:
            best = (cost, plan)
    return best[1]


def _as_hashes(hashes) -> np.ndarray:
    if not isinstance(hashes, np.ndarray):
        values = list(hashes)
        if all(isinstance(v, (int, np.integer)) for v in values):  # Python ints of any size
            try:
                return np.array(values, dtype=np.uint64)
            except OverflowError:
                raise ValueError("hashes must be integers in [0, 2**64)") from None
        hashes = np.asarray(values)
    arr = hashes
    if arr.ndim != 1:
        raise ValueError(f"hashes must be a 1-D array of uint64, got shape {arr.shape}")
    if arr.dtype != np.uint64:
        if arr.size and arr.dtype.kind not in "iu":
            raise TypeError(f"hashes must be unsigned 64-bit integers, got dtype {arr.dtype}")
        if arr.size and arr.dtype.kind == "i" and arr.min() < 0:
            raise ValueError("hashes must be non-negative (64-bit unsigned)")
        arr = arr.astype(np.uint64)
    return arr


def _lag_pairs(run_ids: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
    """For a sorted array's run ids, ``(positions, lag)``: every ``p`` whose run still holds
    position ``p + lag``, one lag at a time (each block at most the array's size)."""
    n = len(run_ids)
    if n < 2:
        return
    starts = np.flatnonzero(np.r_[True, run_ids[1:] != run_ids[:-1]])
    ends = np.r_[starts[1:], n]
    remaining = np.repeat(ends, ends - starts) - np.arange(n) - 1  # later members in the run
    active = np.flatnonzero(remaining > 0)
    lag = 1
    while active.size:
        yield active, lag
        lag += 1
        active = active[remaining[active] >= lag]


def unique_near_pairs(hashes, max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The near pairs in compact form: ``(unique, inverse, pairs)``.

    ``unique`` (sorted, ``uint64``) and ``inverse`` are ``np.unique(hashes, return_inverse=True)``;
    ``pairs`` ``(K, 2) int64`` are the pairs ``a < b`` of *unique* hashes at most
    ``max_distance`` bits apart. Every pair of files is near exactly when their unique hashes are
    equal or form a pair here: grouping needs only this form (union each file with its unique
    hash, then the pairs), which stays small when thousands of files share one hash.
    """
    h = _as_hashes(hashes)
    unique, inverse = np.unique(h, return_inverse=True)
    inverse = inverse.reshape(-1).astype(np.int64)
    m = len(unique)
    if max_distance < 1 or m < 2:
        return unique, inverse, _EMPTY.copy()
    if max_distance >= BITS:
        a, b = np.triu_indices(m, 1)
        return unique, inverse, np.stack([a, b], 1).astype(np.int64)
    plan = search_plan(m, int(max_distance))
    chunk_masks = plan.chunk_masks()
    found: list[np.ndarray] = []
    for key_mask, forbidden in plan.masks():
        keys = unique & np.uint64(key_mask)
        order = np.argsort(keys)  # bucket order does not matter
        for pos, lag in _lag_pairs(keys[order]):
            a, b = order[pos], order[pos + lag]
            x = unique[a] ^ unique[b]
            keep = np.bitwise_count(x) <= max_distance
            if not keep.any():
                continue
            a, b, x = a[keep], b[keep], x[keep]
            if forbidden:
                agree = np.zeros(len(x), np.int64)
                for c, cm in enumerate(chunk_masks):
                    agree |= ((x & cm) == 0).astype(np.int64) << c
                first = (agree & forbidden) == 0
                a, b = a[first], b[first]
            found.append(np.stack([np.minimum(a, b), np.maximum(a, b)], 1))
    pairs = np.concatenate(found).astype(np.int64) if found else _EMPTY.copy()
    return unique, inverse, pairs


def _sorted_pairs(keys: list[np.ndarray], n: int) -> np.ndarray:
    """Pair keys ``i * n + j`` (``i < j``) -> ``(K, 2)`` pairs sorted lexicographically.

    Consumes (empties) ``keys``: 8 bytes per pair while sorting, the output's 16 after.
    """
    if not keys:
        return _EMPTY.copy()
    flat = np.concatenate(keys)
    keys.clear()
    flat.sort()
    pairs = np.empty((len(flat), 2), np.int64)
    np.floor_divide(flat, n, out=pairs[:, 0])
    np.remainder(flat, n, out=pairs[:, 1])
    return pairs


def _expand(inverse: np.ndarray, pairs: np.ndarray, *, block: int = 1 << 22) -> list[np.ndarray]:
    """Pairs of unique hashes -> keys ``i * N + j`` (``i < j``) of pairs of files, plus the pairs
    among files with identical hashes; blocks of at most about ``block`` pairs (or ``N``)."""
    n = np.int64(len(inverse))
    order = np.argsort(inverse, kind="stable")  # files grouped by hash, ascending within one
    keys = [order[pos] * n + order[pos + lag] for pos, lag in _lag_pairs(inverse[order])]
    counts = np.bincount(inverse)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sizes = counts[pairs[:, 0]] * counts[pairs[:, 1]]
    cut = np.searchsorted(np.cumsum(sizes), np.arange(block, int(sizes.sum()), block))
    for part in np.split(np.arange(len(pairs)), np.unique(cut)):
        a, b, rep = pairs[part, 0], pairs[part, 1], sizes[part]
        which = np.repeat(np.arange(len(part)), rep)
        offset = np.arange(int(rep.sum())) - np.repeat(np.cumsum(rep) - rep, rep)
        width = counts[b][which]
        i = order[starts[a][which] + offset // width]
        j = order[starts[b][which] + offset % width]
        keys.append(np.minimum(i, j) * n + np.maximum(i, j))
    return keys


def near_pairs(hashes, max_distance: int) -> np.ndarray:
    """Every pair of hashes at most ``max_distance`` bits apart.

    Args:
        hashes: ``(N,)`` ``uint64`` perceptual hashes (or non-negative integers).
        max_distance: largest Hamming distance that counts; ``< 0``: none, ``>= 64``: all pairs.

    Returns:
        ``(K, 2) int64``: rows ``(i, j)`` with ``i < j``, sorted lexicographically -- exactly
        the rows :func:`near_pairs_bruteforce` returns. Pairs among identical hashes are
        included (``g`` copies give ``g (g - 1) / 2`` rows; :func:`unique_near_pairs` is the
        compact form).
    """
    if max_distance < 0:
        _as_hashes(hashes)
        return _EMPTY.copy()
    _, inverse, pairs = unique_near_pairs(hashes, max_distance)
    return _sorted_pairs(_expand(inverse, pairs), len(inverse))


def near_pairs_bruteforce(hashes, max_distance: int, *, memory_mb: float = 64.0) -> np.ndarray:
    """:func:`near_pairs` by comparing every pair (``O(N^2)``), in row blocks of ``memory_mb``.

    The reference for tests and benchmarks: the all-pairs search the kit used before.
    """
    h = _as_hashes(hashes)
    n = len(h)
    if max_distance < 0 or n < 2:
        return _EMPTY.copy()
    rows = int(max(1, memory_mb * 2**20 // (n * 10)))  # xor (8 bytes) + count (1) + mask (1)
    blocks = []
    for start in range(0, n - 1, rows):
        stop = min(n, start + rows)
        near = np.bitwise_count(h[start:stop, None] ^ h[None, start:]) <= max_distance
        near &= np.arange(start, n)[None, :] > np.arange(start, stop)[:, None]
        i, j = np.nonzero(near)
        blocks.append((i + start).astype(np.int64) * n + (j + start))
    return _sorted_pairs(blocks, n)
