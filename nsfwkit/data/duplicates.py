"""Duplicate search: exact copies by SHA-256, near copies by perceptual-hash Hamming distance.

Files are grouped into the **connected components** of "same bytes, or perceptual hashes within
``max_distance`` bits": a chain A~B~C puts A, B and C in one group even when A and C are further
apart, so no near copy of any image can land in another split than the image itself.
:func:`find_duplicate_groups` takes the hashes :func:`nsfwkit.data.validate_files` computed and
returns a :class:`DuplicateGroups`; the pair search is :func:`nsfwkit.data.nearpairs.unique_near_pairs`,
whose compact form keeps ``g`` files with one perceptual hash at ``g`` edges (not ``g (g - 1) / 2`` pairs).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from .nearpairs import unique_near_pairs

__all__ = ["DuplicateGroups", "find_duplicate_groups"]


@dataclasses.dataclass(frozen=True)
class DuplicateGroups:
    """The duplicate structure of N files.

    Attributes:
        groups: ``int64 (N,)`` a group id per file: the index of the group's first file (a file
            alone in its group has ``groups[i] == i``). Groups are connected components.
        nearest: ``int64 (N,)`` for a file with a copy, the index of its closest other member
            (an exact copy when it has one, else its nearest near copy); -1 when alone.
        distance: ``int64 (N,)`` Hamming bits to ``nearest`` (0: an exact copy; -1: alone).
    """

    groups: np.ndarray
    nearest: np.ndarray
    distance: np.ndarray

    def sizes(self) -> np.ndarray:
        """``int64 (N,)``: the size of each file's group."""
        return np.bincount(self.groups, minlength=len(self.groups))[self.groups]

    def largest(self) -> int:
        """Files in the largest group (0 for no files)."""
        return int(self.sizes().max()) if len(self.groups) else 0


def phash_words(phash: Sequence[str]) -> np.ndarray:
    """64-bit hex perceptual hashes -> ``uint64 (N,)`` (ValueError naming a bad hash)."""
    bad = next((h for h in phash if len(h) != 16), None)
    if bad is not None:
        raise ValueError(f"near-duplicate search needs 64-bit perceptual hashes (16 hex digits, "
                         f"hash_size=8); got {bad!r}")
    return np.array([int(h, 16) for h in phash], dtype=np.uint64)


def find_duplicate_groups(
    sha256: Sequence[str], phash: Sequence[str], *, max_distance: int = 4,
) -> DuplicateGroups:
    """Group files that are exact (same SHA-256) or near (phash within ``max_distance``) copies.

    The groups are the connected components of the graph whose edges are every exact copy and
    every near pair (all pairs within ``max_distance`` bits, not only those of a "leader"), so
    they do not depend on the order of the files, and a chain of images each a few bits from the
    next is one group however far its ends are apart.

    Args:
        sha256: hex content hashes, one per file.
        phash: 64-bit hex perceptual hashes, one per file; ``max_distance < 0`` turns
            near-duplicate detection off.
        max_distance: largest Hamming distance (bits) between two perceptual hashes that still
            counts as the same image.

    Returns:
        A :class:`DuplicateGroups`.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(sha256)
    if n == 0:
        empty = np.zeros(0, np.int64)
        return DuplicateGroups(groups=empty, nearest=empty, distance=empty)
    first: dict[str, int] = {}
    rep = np.empty(n, np.int64)  # the first file with the same bytes
    for i, h in enumerate(sha256):
        rep[i] = first.setdefault(h, i)
    reps = np.flatnonzero(rep == np.arange(n))
    # graph nodes: the n files, then one node per distinct perceptual hash among the byte-distinct files
    edges = [np.stack([np.arange(n), rep], axis=1)]
    nearest, distance = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    if max_distance >= 0 and len(reps) > 1:
        words = phash_words([phash[i] for i in reps])
        unique, inverse, pairs = unique_near_pairs(words, max_distance)
        edges += [np.stack([reps, n + inverse], axis=1), n + pairs]
        _nearest_near_copies(reps, unique, inverse, pairs, nearest, distance)
    edges = np.concatenate(edges)
    size = n + (len(unique) if max_distance >= 0 and len(reps) > 1 else 0)
    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(size, size))
    _, component = connected_components(graph, directed=False)
    component = component[:n]
    first_of = np.full(component.max() + 1, n, np.int64)
    np.minimum.at(first_of, component, np.arange(n))
    _exact_copies(rep, nearest, distance)
    return DuplicateGroups(groups=first_of[component], nearest=nearest, distance=distance)


def _nearest_near_copies(reps, unique, inverse, pairs, nearest, distance) -> None:
    """Fill ``nearest``/``distance`` of byte-distinct files from the compact near pairs.

    A file sharing its perceptual hash with another has a 0-bit near copy: the lowest-indexed
    other such file. A file alone with its hash takes the closest neighbouring hash (ties: the
    lowest file index), represented by that hash's lowest-indexed file.
    """
    m = len(unique)
    order = np.argsort(inverse, kind="stable")  # reps are ascending, so each hash's files stay ascending
    counts = np.bincount(inverse, minlength=m)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    lowest = reps[order[starts]]  # the lowest file of each hash
    second = np.where(counts > 1, reps[order[np.minimum(starts + 1, len(order) - 1)]], -1)
    shared = counts[inverse] > 1
    mine = reps[shared]
    h = inverse[shared]
    nearest[mine] = np.where(lowest[h] == mine, second[h], lowest[h])
    distance[mine] = 0
    if not len(pairs):
        return
    bits = np.bitwise_count(unique[pairs[:, 0]] ^ unique[pairs[:, 1]]).astype(np.int64)
    node = np.concatenate([pairs[:, 0], pairs[:, 1]])
    partner = lowest[np.concatenate([pairs[:, 1], pairs[:, 0]])]
    dist = np.concatenate([bits, bits])
    pick = np.lexsort((partner, dist, node))
    nodes, first = np.unique(node[pick], return_index=True)
    best_partner, best_dist = np.full(m, -1, np.int64), np.full(m, -1, np.int64)
    best_partner[nodes], best_dist[nodes] = partner[pick][first], dist[pick][first]
    alone = ~shared & (best_partner[inverse] >= 0)
    nearest[reps[alone]] = best_partner[inverse[alone]]
    distance[reps[alone]] = best_dist[inverse[alone]]


def _exact_copies(rep: np.ndarray, nearest: np.ndarray, distance: np.ndarray) -> None:
    """An exact copy (0 bits) wins over any near copy: files with the same bytes point at each other."""
    n = len(rep)
    copy = np.flatnonzero(rep != np.arange(n))  # files whose bytes an earlier file has
    nearest[copy], distance[copy] = rep[copy], 0
    originals, first_copy = np.unique(rep[copy], return_index=True)
    nearest[originals], distance[originals] = copy[first_copy], 0
