"""Benchmark: near-duplicate search at scale, the multi-index search vs the all-pairs search.

Hashes: uniformly random 64-bit perceptual hashes, of which 5% are replaced by near copies of
others (1-6 random bits flipped) and 1% by exact copies -- the shape of a scraped collection.
Each measurement runs once, in its own process:

* ``near_pairs`` (``nsfwkit.data.nearpairs``, multi-index) at 50k, 200k and 1M hashes;
* ``near_pairs_bruteforce`` (the all-pairs search) at the sizes it can do (50k, 200k);
* with ``--grouping``: the public ``find_duplicate_groups`` (hex hashes in, group ids out: the
  whole grouping, whatever search it uses) at the sizes given.

Prints seconds, peak memory (``tracemalloc`` peak of the call: numpy arrays included; and the
process's peak RSS), the number of pairs, the growth exponent ``log(t2/t1) / log(n2/n1)``
between consecutive sizes, and whether both searches returned the same pairs.
Usage: ``python benchmarks/scale.py [--sizes 50000 200000 1000000] [--brute-sizes 50000 200000]
[--max-distance 4] [--grouping 50000]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

METHODS = ("index", "brute", "grouping")


def realistic_hashes(n: int, *, seed: int = 0, near: float = 0.05, exact: float = 0.01) -> np.ndarray:
    """``n`` random hashes; ``near * n`` of them near copies (1-6 bits) of others, ``exact * n``
    exact copies."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    n_near, n_exact = int(n * near), int(n * exact)
    targets = rng.choice(n, n_near + n_exact, replace=False)
    copies = hashes[rng.integers(0, n, len(targets))]
    flips = np.zeros(n_near, np.uint64)
    for k, count in enumerate(rng.integers(1, 7, n_near)):
        for bit in rng.choice(64, count, replace=False):
            flips[k] |= np.uint64(1) << np.uint64(bit)
    copies[:n_near] ^= flips
    hashes[targets] = copies
    return hashes


def _measure(method: str, n: int, max_distance: int, pairs_out: str | None) -> dict:
    from nsfwkit.data import find_duplicate_groups
    from nsfwkit.data.nearpairs import near_pairs, near_pairs_bruteforce

    hashes = realistic_hashes(n)
    if method == "grouping":
        phash = [f"{int(h):016x}" for h in hashes]
        sha = [f"{i:064x}" for i in range(n)]
        call = functools.partial(find_duplicate_groups, sha, phash, max_distance=max_distance)
    else:
        call = functools.partial(near_pairs if method == "index" else near_pairs_bruteforce, hashes, max_distance)
    tracemalloc.start()
    t0 = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if pairs_out and method != "grouping":
        np.save(pairs_out, result)
    count = len(np.unique(result)) if method == "grouping" else len(result)
    return {"method": method, "n": n, "seconds": seconds, "peak_mb": peak / 2**20,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "count": count}


def _run_child(method: str, n: int, max_distance: int, pairs_out: str | None) -> dict:
    cmd = [sys.executable, __file__, "--child", method, str(n), "--max-distance", str(max_distance)]
    if pairs_out:
        cmd += ["--pairs-out", pairs_out]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ))
    return json.loads(out.stdout.strip().splitlines()[-1])


def _report(rows: list[dict]) -> None:
    previous = None
    for row in rows:
        growth = ""
        if previous is not None:
            exponent = math.log(row["seconds"] / previous["seconds"]) / math.log(row["n"] / previous["n"])
            growth = f"  growth exponent {exponent:.2f}"
        what = "groups" if row["method"] == "grouping" else "pairs"
        print(f"{row['method']:>8} n={row['n']:>9,}: {row['seconds']:8.2f} s  peak {row['peak_mb']:7.1f} MB "
              f"(RSS {row['maxrss_mb']:6.0f} MB)  {row['count']:>8,} {what}{growth}", flush=True)
        previous = row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[50_000, 200_000, 1_000_000],
                        help="hash counts for the multi-index search")
    parser.add_argument("--brute-sizes", type=int, nargs="*", default=[50_000, 200_000],
                        help="hash counts for the all-pairs search")
    parser.add_argument("--grouping", type=int, nargs="*", default=[],
                        help="hash counts for the whole find_duplicate_groups")
    parser.add_argument("--max-distance", type=int, default=4, help="Hamming distance (bits)")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--pairs-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, n = args.child
        if method not in METHODS:
            parser.error(f"unknown method {method!r}")
        print(json.dumps(_measure(method, int(n), args.max_distance, args.pairs_out)))
        return
    print(f"max_distance {args.max_distance}; 5% near copies (1-6 bits), 1% exact copies; one run each")
    with tempfile.TemporaryDirectory(prefix="nsfwkit-scale-") as tmp:
        saved = {}
        for method, sizes in (("index", args.sizes), ("brute", args.brute_sizes), ("grouping", args.grouping)):
            rows = []
            for n in sorted(sizes):
                compared = method != "grouping" and n in args.sizes and n in args.brute_sizes
                out = str(Path(tmp) / f"{method}-{n}.npy") if compared else None
                rows.append(_run_child(method, n, args.max_distance, out))
                if out:
                    saved.setdefault(n, []).append(out)
            _report(rows)
        for n, files in sorted(saved.items()):
            if len(files) == 2:
                same = np.array_equal(np.load(files[0]), np.load(files[1]))
                print(f"n={n:,}: multi-index and all-pairs pairs identical: {same}")


if __name__ == "__main__":
    main()
