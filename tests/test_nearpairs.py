"""Near-pair search over 64-bit hashes: the index finds exactly the all-pairs search's pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nsfwkit.data import nearpairs
from nsfwkit.data.nearpairs import near_pairs, near_pairs_bruteforce, search_plan, unique_near_pairs

U64 = st.integers(min_value=0, max_value=2**64 - 1)


def _hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def _python_pairs(values: list[int], d: int) -> list[list[int]]:
    """The definition, written out: every (i, j), i < j, within d bits, in order."""
    return [[i, j] for i in range(len(values)) for j in range(i + 1, len(values))
            if _hamming(values[i], values[j]) <= d]


def test_a_hand_computed_example():
    hashes = np.array([0, 1, 3, 0xFF, 0], np.uint64)
    # 0-1: 1 bit, 0-4: equal, 1-2: 1 bit, 1-4: 1 bit; 0-2 and 2-4: 2 bits; 0xFF is 6+ bits from all
    expected = [[0, 1], [0, 4], [1, 2], [1, 4]]
    assert near_pairs(hashes, 1).tolist() == expected
    assert near_pairs_bruteforce(hashes, 1).tolist() == expected
    assert near_pairs(hashes, 0).tolist() == [[0, 4]]
    assert near_pairs(hashes, 2).tolist() == [[0, 1], [0, 2], [0, 4], [1, 2], [1, 4], [2, 4]]


@st.composite
def planted(draw):
    """Random hashes (uniform, or crowded into a few bits so key buckets are big), plus near
    copies of some of them at 0-12 bits and exact copies."""
    crowded = draw(st.booleans())
    base = draw(st.lists(st.integers(0, 2**12 - 1) if crowded else U64, min_size=0, max_size=120))
    values = list(base)
    if base:
        copies = draw(st.lists(st.tuples(st.integers(0, len(base) - 1),
                                         st.sets(st.integers(0, 63), max_size=12)), max_size=60))
        for src, bits in copies:
            flipped = values[src]
            for b in bits:
                flipped ^= 1 << b
            values.append(flipped)
    order = draw(st.permutations(range(len(values))))
    return [values[k] for k in order]


@settings(max_examples=150, deadline=None)
@given(planted(), st.integers(0, 10))
def test_the_index_finds_exactly_the_bruteforce_pairs(values, d):
    hashes = np.array(values, dtype=np.uint64)
    found = near_pairs(hashes, d)
    assert found.dtype == np.int64 and found.shape == (found.shape[0], 2)
    np.testing.assert_array_equal(found, near_pairs_bruteforce(hashes, d))
    if len(values) <= 60:
        assert found.tolist() == _python_pairs(values, d)


@settings(max_examples=40, deadline=None)
@given(planted(), st.integers(1, 10))
def test_the_compact_form_covers_the_same_pairs_once(values, d):
    hashes = np.array(values, dtype=np.uint64)
    unique, inverse, pairs = unique_near_pairs(hashes, d)
    np.testing.assert_array_equal(unique[inverse], hashes)
    assert len({tuple(p) for p in pairs.tolist()}) == len(pairs)  # each pair found once
    assert (pairs[:, 0] < pairs[:, 1]).all()
    expected = {(a, b) for a, b in _python_pairs(unique.tolist(), d)}
    assert {tuple(p) for p in pairs.tolist()} == expected


@pytest.mark.parametrize("n", [0, 1])
@pytest.mark.parametrize("d", [-1, 0, 4, 64])
def test_fewer_than_two_hashes_have_no_pairs(n, d):
    for search in (near_pairs, near_pairs_bruteforce):
        out = search(np.arange(n, dtype=np.uint64), d)
        assert out.shape == (0, 2) and out.dtype == np.int64


def test_all_identical_hashes_pair_with_each_other():
    hashes = np.full(7, 0xDEADBEEF, np.uint64)
    expected = [[i, j] for i in range(7) for j in range(i + 1, 7)]
    for d in (0, 3, 64):
        assert near_pairs(hashes, d).tolist() == expected
    unique, inverse, pairs = unique_near_pairs(hashes, 3)
    assert unique.tolist() == [0xDEADBEEF] and inverse.tolist() == [0] * 7 and pairs.shape == (0, 2)


def test_max_distance_zero_and_at_least_64():
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 2**64 - 1, 40, dtype=np.uint64, endpoint=True)
    hashes[[5, 17, 30]] = hashes[3]
    hashes[9] = ~hashes[8]  # 64 bits apart: a pair only at max_distance 64
    assert near_pairs(hashes, 0).tolist() == [[3, 5], [3, 17], [3, 30], [5, 17], [5, 30], [17, 30]]
    every = [[i, j] for i in range(40) for j in range(i + 1, 40)]
    assert near_pairs(hashes, 64).tolist() == every
    assert near_pairs(hashes, 100).tolist() == every
    assert [8, 9] not in near_pairs(hashes, 63).tolist()
    assert near_pairs(hashes, -1).shape == (0, 2)


def test_a_big_group_of_identical_hashes_is_collapsed_before_the_search(monkeypatch):
    rng = np.random.default_rng(2)
    others = rng.integers(0, 2**64 - 1, 50, dtype=np.uint64, endpoint=True)
    hashes = np.concatenate([np.zeros(2000, np.uint64), others, np.uint64([1, 3])])
    seen = []
    monkeypatch.setattr(nearpairs, "search_plan",
                        lambda n, d: seen.append(n) or search_plan(n, d))
    found = near_pairs(hashes, 2)
    assert seen == [len(np.unique(hashes))]  # the search saw 2000 zeros as one hash
    np.testing.assert_array_equal(found, near_pairs_bruteforce(hashes, 2))
    assert len(found) >= 2000 * 1999 // 2 + 2 * 2000 + 1  # zeros among themselves, with 1 and 3


def test_search_plans_follow_the_pigeonhole():
    for n in (10, 10_000, 1_000_000):
        for d in (0, 1, 4, 10, 63):
            plan = search_plan(n, d)
            assert plan.agree == plan.chunks - d >= 1
            assert plan.passes == math.comb(plan.chunks, plan.agree)
            masks = plan.chunk_masks()
            assert int(np.bitwise_or.reduce(masks)) == 2**64 - 1
            assert sum(bin(int(m)).count("1") for m in masks) == 64  # disjoint chunks
    # tiny inputs: classic multi-index hashing (d + 1 chunks, one pass each)
    assert (search_plan(100, 4).chunks, search_plan(100, 4).agree) == (5, 1)
    with pytest.raises(ValueError, match="max_distance"):
        search_plan(10, 64)


def test_bad_hash_arrays_are_refused_clearly():
    with pytest.raises(ValueError, match="1-D"):
        near_pairs(np.zeros((2, 2), np.uint64), 1)
    with pytest.raises(TypeError, match="unsigned 64-bit"):
        near_pairs(np.array([0.5, 1.5]), 1)
    with pytest.raises(ValueError, match="non-negative"):
        near_pairs(np.array([-1, 2]), 1)
    with pytest.raises(ValueError, match=r"\[0, 2\*\*64\)"):
        near_pairs([2**64 - 1, -1, 2**70], 1)
    assert near_pairs(np.array([1, 2, 3], np.int64), 1).tolist() == [[0, 2], [1, 2]]
    assert near_pairs([2**64 - 1, 1, 2**64 - 2], 1).tolist() == [[0, 2]]  # Python ints, any size
