"""Benchmark ``mrledger.ledger.merkle.MerkleTree`` against a bare hashlib floor and against pymerkle.

Why: ledger/merkle.py claims that writing our own RFC 9162 tree is worth it because a plain hashlib loop
is far faster than pymerkle. This script keeps that claim honest, and checks on every run that both
implementations agree on the root (pymerkle is the test oracle).

What each timing includes (all wall-clock ``time.perf_counter``, best of ``--repeat`` runs unless noted):

* ``leaf_hash_s`` — ``mrledger.ledger.merkle.leaf_hash(data)`` for every leaf: SHA-256(0x00 || data). Reported
  separately because ``build_s`` starts from precomputed leaf hashes while pymerkle hashes the data.
* ``build_s`` — ``MerkleTree(leaf_hashes)`` from precomputed leaf hashes: the per-leaf 32-byte checks,
  every interior node hash, and keeping all levels for proof generation. Excludes leaf hashing.
* ``hashlib_floor_s`` — the same interior hashing as a bare level-by-level loop over the same leaf
  hashes: no checks, no object, only the current level kept. Nothing correct can be much cheaper in
  pure Python, so ``build_vs_floor = build_s / hashlib_floor_s`` is our overhead.
* ``pymerkle_s`` — ``pymerkle.InmemoryTree(algorithm="sha256")``, one ``append_entry(data)`` per leaf,
  then ``get_root()``. This *includes* leaf hashing (pymerkle hashes the data itself), so
  ``pymerkle_vs_build = pymerkle_s / build_s`` flatters us by the leaf-hash cost;
  ``pymerkle_vs_build_with_leaves = pymerkle_s / (leaf_hash_s + build_s)`` is the like-for-like ratio.
  Best of ``--pymerkle-repeat`` runs (default 1: it is slow and its variance is small relative to
  the gap being measured).
* ``proof_us_p50`` / ``proof_us_p99`` — per call of ``tree.inclusion_proof(i)`` over ``--samples``
  random indices (fixed seed), in µs, one ``perf_counter_ns`` pair per call (so ~0.1 µs timer cost).
* ``verify_us_p50`` — per call of ``verify_inclusion(i, n, leaf, path, root)`` for those proofs.

Leaf data are synthetic byte strings shaped like ``mrl-leaf/1`` leaf data (JCS object, ~250 bytes), so
leaf hashing costs what it costs in production; building real records would only time pydantic.

Run:  .venv/bin/python scripts/bench_tree.py [--leaves 100000] [--json]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mrledger.ledger.merkle import MerkleTree, leaf_hash, verify_inclusion

T = TypeVar("T")

#: Targets at 100,000 leaves (see docs and the ledger/merkle.py docstring).
TARGET_BUILD_VS_FLOOR = 1.5
TARGET_PYMERKLE_VS_BUILD = 8.0
TARGET_PROOF_P99_US = 1000.0


def make_leaf_data(n: int) -> list[bytes]:
    """Distinct leaf data with the size and shape of real ``mrl-leaf/1`` JCS bytes."""
    return [
        (
            f'{{"content_digest":"{i * 2654435761:064x}","format":"mrl-leaf/1","hospital_id":"qd-municipal-01",'
            f'"result_id":"LAB-2024-{i:09d}","salt":"{i * 40503:032x}","version":1}}'
        ).encode()
        for i in range(n)
    ]


def best_of(repeat: int, fn: Callable[[], T]) -> tuple[float, T]:
    """Minimum wall time over ``repeat`` runs (the least-disturbed run), with GC off while timing so a
    collection triggered by the previous run's garbage is not charged to this one."""
    best = float("inf")
    result: T | None = None
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            result = fn()
            elapsed = time.perf_counter() - t0
        finally:
            gc.enable()
        best = min(best, elapsed)
    assert result is not None
    return best, result


def hashlib_floor(leaf_hashes: Sequence[bytes]) -> bytes:
    """The floor: RFC 9162 interior hashing with nothing else — no checks, no stored levels."""
    sha = hashlib.sha256
    level = list(leaf_hashes)
    while len(level) > 1:
        n = len(level)
        nxt = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, n - 1, 2)]
        if n & 1:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def pymerkle_root(data: Sequence[bytes]) -> bytes:
    import pymerkle

    tree = pymerkle.InmemoryTree(algorithm="sha256")
    for d in data:
        tree.append_entry(d)
    root: bytes = tree.get_root()
    return root


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the value below which ``q`` of the samples fall (no interpolation, so
    p99 is an actually observed latency)."""
    k = max(0, min(len(sorted_values) - 1, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def proof_latencies(tree: MerkleTree, samples: int, seed: int) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    indices = [rng.randrange(tree.size) for _ in range(samples)]
    root, size = tree.root, tree.size
    proofs: list[tuple[int, list[bytes]]] = []
    gen: list[float] = []
    clock = time.perf_counter_ns
    for i in indices:
        t0 = clock()
        path = tree.inclusion_proof(i)
        gen.append((clock() - t0) / 1000)
        proofs.append((i, path))
    ver: list[float] = []
    for i, path in proofs:
        leaf = tree.leaf(i)
        t0 = clock()
        verify_inclusion(i, size, leaf, path, root)
        ver.append((clock() - t0) / 1000)
    return sorted(gen), sorted(ver)


def run(leaves: int, repeat: int, pymerkle_repeat: int, samples: int, seed: int, skip_pymerkle: bool) -> dict[str, Any]:
    data = make_leaf_data(leaves)
    leaf_hash_s, hashes = best_of(repeat, lambda: [leaf_hash(d) for d in data])
    build_s, tree = best_of(repeat, lambda: MerkleTree(hashes))
    floor_s, floor_root = best_of(repeat, lambda: hashlib_floor(hashes))
    if floor_root != tree.root:
        raise SystemExit("hashlib floor and MerkleTree disagree on the root")
    pym_s: float | None = None
    matches: bool | None = None
    if not skip_pymerkle:
        pym_s, pym_root = best_of(pymerkle_repeat, lambda: pymerkle_root(data))
        matches = pym_root == tree.root
    gen, ver = proof_latencies(tree, samples, seed)
    return {
        "leaves": leaves,
        "leaf_hash_s": round(leaf_hash_s, 6),
        "build_s": round(build_s, 6),
        "hashlib_floor_s": round(floor_s, 6),
        "pymerkle_s": None if pym_s is None else round(pym_s, 6),
        "root_matches_pymerkle": matches,
        "proof_us_p50": round(percentile(gen, 0.50), 3),
        "proof_us_p99": round(percentile(gen, 0.99), 3),
        "verify_us_p50": round(percentile(ver, 0.50), 3),
        "build_vs_floor": round(build_s / floor_s, 3),
        "pymerkle_vs_build": None if pym_s is None else round(pym_s / build_s, 2),
        "pymerkle_vs_build_with_leaves": None if pym_s is None else round(pym_s / (leaf_hash_s + build_s), 2),
        "root": tree.root.hex(),
        "python": sys.version.split()[0],
        "samples": samples,
        "mean_proof_us": round(statistics.fmean(gen), 3),
    }


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def verdict(ok: bool | None) -> str:
        return "" if ok is None else ("[green]ok[/green]" if ok else "[red]MISSED[/red]")

    table = Table(title=f"RFC 9162 tree, {result['leaves']:,} leaves (Python {result['python']})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("")
    r = result
    pym = r["pymerkle_vs_build"]
    table.add_row("leaf hashing (ours)", f"{r['leaf_hash_s'] * 1000:.1f} ms", "", "")
    table.add_row("MerkleTree build", f"{r['build_s'] * 1000:.1f} ms", "", "")
    table.add_row("hashlib floor", f"{r['hashlib_floor_s'] * 1000:.1f} ms", "", "")
    table.add_row("build / floor", f"{r['build_vs_floor']:.2f}x", f"<= {TARGET_BUILD_VS_FLOOR}x",
                  verdict(r["build_vs_floor"] <= TARGET_BUILD_VS_FLOOR))
    if pym is not None:
        table.add_row("pymerkle (append_entry + get_root)", f"{r['pymerkle_s'] * 1000:.1f} ms", "", "")
        table.add_row("pymerkle / build", f"{pym:.1f}x", f">= {TARGET_PYMERKLE_VS_BUILD}x",
                      verdict(pym >= TARGET_PYMERKLE_VS_BUILD))
        table.add_row("pymerkle / (leaf hashing + build)", f"{r['pymerkle_vs_build_with_leaves']:.1f}x", "", "")
        table.add_row("root matches pymerkle", str(r["root_matches_pymerkle"]), "True",
                      verdict(r["root_matches_pymerkle"]))
    table.add_row("inclusion proof p50", f"{r['proof_us_p50']:.1f} µs", "", "")
    table.add_row("inclusion proof p99", f"{r['proof_us_p99']:.1f} µs", f"< {TARGET_PROOF_P99_US:.0f} µs",
                  verdict(r["proof_us_p99"] < TARGET_PROOF_P99_US))
    table.add_row("verify_inclusion p50", f"{r['verify_us_p50']:.1f} µs", "", "")
    Console().print(table)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--leaves", type=int, default=100_000)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing of ours/floor (best is kept)")
    ap.add_argument("--pymerkle-repeat", type=int, default=1)
    ap.add_argument("--samples", type=int, default=10_000, help="random indices for proof latencies")
    ap.add_argument("--seed", type=int, default=9162)
    ap.add_argument("--skip-pymerkle", action="store_true")
    args = ap.parse_args(argv)
    if args.leaves < 1:
        ap.error("--leaves must be >= 1")
    result = run(args.leaves, args.repeat, args.pymerkle_repeat, args.samples, args.seed, args.skip_pymerkle)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
