"""Leak-free splits: near pairs, connected duplicate groups, chains, conflicts, file order."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nsfwkit import data, demo_data
from nsfwkit.data import nearpairs

from data_helpers import write_image


def _brute_force(hashes, d):
    h = [int(x) for x in hashes]
    return [(i, j) for i in range(len(h)) for j in range(i + 1, len(h)) if bin(h[i] ^ h[j]).count("1") <= d]


def test_near_pairs_match_a_plain_loop():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 6, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, (60, 3)).astype(np.uint64)
    hashes = base[rng.integers(0, 6, 60)] ^ flips[:, 0] ^ (flips[:, 1] * (rng.random(60) < 0.5))
    expected = _brute_force(hashes, 3)
    assert len(expected) > 20  # the test data has pairs to find
    got = nearpairs.near_pairs(hashes, 3)
    assert got.dtype == np.int64 and got.shape == (len(expected), 2)
    assert [tuple(p) for p in got.tolist()] == expected  # i < j, lexicographic order
    assert nearpairs.near_pairs(hashes, -1).shape == (0, 2)
    assert nearpairs.near_pairs(hashes[:1], 64).shape == (0, 2)
    assert nearpairs.near_pairs(np.array([0, 2**64 - 1], np.uint64), 64).tolist() == [[0, 1]]


def test_groups_exact_and_near_with_nearest_member():
    sha = ["a", "b", "a", "c", "d"]
    ph = ["0000000000000000", "ffffffffffffffff", "0000000000000000", "0000000000000003",
          "00000000000000ff"]
    dups = data.find_duplicate_groups(sha, ph, max_distance=2)
    assert list(dups.groups) == [0, 1, 0, 0, 4]  # c is 2 bits from a; d is 8 bits away
    assert list(dups.nearest) == [2, -1, 0, 0, -1]  # a's exact copy first; c's nearest is a
    assert list(dups.distance) == [0, -1, 0, 2, -1]
    assert list(dups.sizes()) == [3, 1, 3, 3, 1] and dups.largest() == 3
    assert list(data.find_duplicate_groups(sha, ph, max_distance=-1).groups) == [0, 1, 0, 3, 4]
    assert list(data.find_duplicate_groups(sha, ph, max_distance=8).groups) == [0, 1, 0, 0, 0]
    assert data.find_duplicate_groups([], [], max_distance=4).largest() == 0
    with pytest.raises(ValueError, match="64-bit"):
        data.find_duplicate_groups(["a", "b"], ["00", "01"], max_distance=1)


def test_a_chain_is_one_group_whatever_the_file_order():
    # each hash 3 bits from the previous: 0 and 0x1ff are 9 bits apart, yet one chain
    ph = ["0000000000000000", "0000000000000007", "000000000000003f", "00000000000001ff",
          "ffff000000000000"]
    sha = ["a", "b", "c", "d", "e"]
    dups = data.find_duplicate_groups(sha, ph, max_distance=3)
    assert list(dups.groups) == [0, 0, 0, 0, 4]  # a leader around "a" would have split it
    assert list(dups.distance) == [3, 3, 3, 3, -1]
    rng = np.random.default_rng(1)
    for _ in range(5):
        perm = rng.permutation(5)
        again = data.find_duplicate_groups([sha[i] for i in perm], [ph[i] for i in perm],
                                           max_distance=3)
        partition = {frozenset(sha[perm[j]] for j in np.flatnonzero(again.groups == g))
                     for g in set(again.groups.tolist())}
        assert partition == {frozenset("abcd"), frozenset("e")}


def _chain_dataset(root: Path, *, max_bits: int = 4) -> dict[str, list[str]]:
    """Three classes of 48x48 PNGs: unrelated images, a same-class chain in ``neutral`` (blended
    step by step between two of its images) and a chain from ``porn`` into ``sexy``."""
    kinds = {"neutral": "gradient", "porn": "stripes", "sexy": "dots"}
    files: dict[str, list[str]] = {}
    for ci, (name, kind) in enumerate(kinds.items()):
        for i in range(8):
            img = demo_data.demo_image(kind, size=(48, 48), seed=500 + ci * 50 + i)
            files.setdefault(name, []).append(str(write_image(root / name / f"{name}_{i}.png", img, "PNG")))
    a, b = (demo_data.demo_image("gradient", size=(48, 48), seed=s) for s in (1, 2))
    chain = demo_data.near_copy_chain(a, b, max_bits=max_bits, max_length=9)
    files["neutral_chain"] = [str(write_image(root / "neutral" / "chain" / f"c{k}.png", img, "PNG"))
                              for k, img in enumerate(chain)]
    a, b = demo_data.demo_image("stripes", size=(48, 48), seed=3), demo_data.demo_image("dots", size=(48, 48), seed=4)
    cross = demo_data.near_copy_chain(a, b, max_bits=max_bits, max_length=6)
    half = len(cross) // 2
    files["cross_chain"] = [str(write_image(root / ("porn" if k < half else "sexy") / "cross" / f"x{k}.png",
                                            img, "PNG")) for k, img in enumerate(cross)]
    return files


def _bits(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def test_no_near_pair_straddles_splits_and_a_cross_class_chain_is_a_conflict(tmp_path):
    files = _chain_dataset(tmp_path / "ds")
    ds = data.prepare(tmp_path / "ds", near_duplicates=4, progress=False)
    rec = {r.path: r for r in ds.valid}
    chain = [rec[p] for p in files["neutral_chain"]]
    assert len(chain) >= 5 and _bits(chain[0].phash, chain[-1].phash) > 2 * 4  # ends far apart
    assert len({r.group for r in chain}) == 1 and chain[0].split in data.SPLITS
    # every near pair in the whole dataset ends up in one split
    valid = ds.valid
    for i, r in enumerate(valid):
        for s in valid[i + 1:]:
            if _bits(r.phash, s.phash) <= 4:
                assert r.group == s.group and r.split == s.split, (r.path, s.path)
    cross = [rec[p] for p in files["cross_chain"]]
    assert len({r.group for r in cross}) == 1
    assert {r.label for r in cross} == {"porn", "sexy"}
    assert all(r.split == "excluded" and "label conflict" in r.note for r in cross)
    assert cross[0].group in ds.conflicts()
    # the report names each member's nearest copy and its distance
    out = ds.write(tmp_path / "01")
    with open(out["duplicates"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_path = {r["path"]: r for r in rows}
    row = by_path[files["neutral_chain"][1]]
    assert row["kind"] == "near" and int(row["size"]) == len(chain)
    assert row["nearest"] in files["neutral_chain"] and 0 < int(row["distance"]) <= 4
    assert by_path[files["cross_chain"][0]]["kind"] == "label_conflict"
    summary = json.loads(out["summary"].read_text())
    assert summary["largest_duplicate_group"] == len(chain)


def test_split_does_not_depend_on_file_names_or_order(tmp_path):
    files = _chain_dataset(tmp_path / "ds")
    first = data.prepare(tmp_path / "ds", near_duplicates=4, progress=False)
    # the same images under other names: the listing order is reversed
    renamed = tmp_path / "renamed"
    order = sorted(p for ps in files.values() for p in ps)
    for k, path in enumerate(order):
        rel = Path(path).relative_to(tmp_path / "ds")
        target = renamed / rel.parts[0] / f"{len(order) - k:03d}_{rel.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    second = data.prepare(renamed, near_duplicates=4, progress=False)
    split_of = {r.sha256: r.split for r in first.valid}
    assert {r.sha256: r.split for r in second.valid} == split_of
    assert sorted(map(len, first.duplicate_groups().values())) == \
        sorted(map(len, second.duplicate_groups().values()))


def test_a_huge_group_is_reported_with_advice(tmp_path):
    root = tmp_path / "ds"
    for i in range(4):
        write_image(root / "porn" / f"p{i}.png", demo_data.demo_image("stripes", size=(48, 48), seed=i), "PNG")
    a, b = (demo_data.demo_image("gradient", size=(48, 48), seed=s) for s in (1, 2))
    chain = demo_data.near_copy_chain(a, b, max_bits=4, max_length=12)
    assert len(chain) == 12
    for k, img in enumerate(chain):
        write_image(root / "neutral" / f"c{k:02d}.png", img, "PNG")
    ds = data.prepare(root, near_duplicates=4, progress=False)
    warning = next(w for w in ds.warnings if "largest duplicate group" in w)
    assert "holds 12 files" in warning and "tighten --near-duplicates" in warning
    assert ds.summary()["largest_duplicate_group"] == 12
    # a tighter distance breaks the chain: no warning
    tight = data.prepare(root, near_duplicates=1, progress=False)
    assert not any("largest duplicate group" in w for w in tight.warnings)


def _plain_groups(sha256, phash, d):
    """find_duplicate_groups by definition: O(N^2) distances, union-find, nearest by (bits, index)."""
    n = len(sha256)
    words = [int(h, 16) for h in phash]
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    bits = [[0 if sha256[i] == sha256[j] else (bin(words[i] ^ words[j]).count("1") if d >= 0 else 99)
             for j in range(n)] for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if bits[i][j] <= max(d, 0) and (sha256[i] == sha256[j] or d >= 0):
                parent[root(j)] = root(i)
    groups = [min(k for k in range(n) if root(k) == root(i)) for i in range(n)]
    nearest, distance = [], []
    for i in range(n):
        same = [j for j in range(n) if j != i and sha256[j] == sha256[i]]
        near = [(bits[i][j], j) for j in range(n) if j != i and bits[i][j] <= d and sha256[j] != sha256[i]]
        best = (0, same[0]) if same else min(near, default=(-1, -1))
        nearest.append(best[1])
        distance.append(best[0])
    return groups, nearest, distance


def test_groups_equal_the_definition_with_many_shared_hashes():
    rng = np.random.default_rng(1)
    for _ in range(40):
        n = int(rng.integers(2, 30))
        base = rng.integers(0, 2**63, size=max(1, n // 4), dtype=np.uint64)
        flips = (np.uint64(1) << rng.integers(0, 64, n).astype(np.uint64)) * (rng.random(n) < 0.4).astype(np.uint64)
        content = rng.integers(0, n, n)  # same bytes -> same hashes, as in real data
        words = (base[rng.integers(0, len(base), n)] ^ flips)[content]
        phash = [f"{int(w):016x}" for w in words]
        sha = [f"s{int(x)}" for x in content]
        for d in (-1, 0, 1, 4):
            got = data.find_duplicate_groups(sha, phash, max_distance=d)
            assert [got.groups.tolist(), got.nearest.tolist(), got.distance.tolist()] == \
                list(_plain_groups(sha, phash, d))


def test_thousands_of_files_with_one_hash_stay_small():
    """20,000 byte-distinct files sharing a perceptual hash: 20,000 edges, not 200 million pairs (3.2 GB)."""
    import tracemalloc

    n = 20_000
    tracemalloc.start()
    try:
        got = data.find_duplicate_groups([f"s{i}" for i in range(n)], ["00ff00ff00ff00ff"] * n, max_distance=4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got.largest() == n and (got.groups == 0).all()
    assert got.nearest[0] == 1 and (got.nearest[1:] == 0).all() and (got.distance == 0).all()
    assert peak < 64 * 2**20
