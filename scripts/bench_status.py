"""What the status map (issue 18, docs/receipt.md §15/§17) costs: in memory, at sealing, and per status proof.

Usage:  python scripts/bench_status.py [--results 50000] [--batch 1000] [--runs 3] [--db URL] [--json]

Printed (one JSON line with --json):
* ``map``: per map size (10k, 100k, 300k entries), building it from scratch (what a node does once per hospital
  after a start, and a proof for an old batch), one proof (median of 1,000), applying one 500-change batch, the
  proof's size in bytes, and ``bytes_per_entry``: what the built map holds in memory per entry (``tracemalloc``,
  keys and values included, in a separate build: tracing slows the timed one);
  ``--maps-only`` prints this part alone (seconds, not minutes);
* ``seal``: sealing ``--results`` results of one hospital in batches of ``--batch``, with the map (the node as it
  is) against the same seal with the map switched off (the floor, run in the same script, alternated): seconds
  min / median / max over ``--runs`` and the ratio of the medians;
* ``proof``: ``Store.status_proof`` for that hospital, the first call (rebuilding the map from the sealed rows)
  and warm calls (median of 200).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_store import make_records, open_database

from mrledger.ledger.statusmap import StatusMap, StatusValue
from mrledger.store import Store, migrate
from mrledger.store.crypto import MasterKey

HOSPITAL = "bench-01"


def bench_map(sizes: list[int]) -> list[dict[str, Any]]:
    out = []
    for n in sizes:
        entries = {os.urandom(32): StatusValue(1, "current", os.urandom(32)) for _ in range(n)}
        t = time.perf_counter()
        m = StatusMap(entries)
        build = time.perf_counter() - t
        keys = list(entries)[:1000]
        times = []
        for k in keys:
            t = time.perf_counter()
            proof = m.prove(k)
            times.append(time.perf_counter() - t)
        changes = {os.urandom(32): StatusValue(1, "current", os.urandom(32)) for _ in range(500)}
        t = time.perf_counter()
        m.apply(changes)
        apply = time.perf_counter() - t
        out.append({"entries": n, "build_s": round(build, 3), "prove_us": round(statistics.median(times) * 1e6, 1),
                    "apply_500_ms": round(apply * 1e3, 2), "proof_bytes": len(proof.to_bytes()),
                    "bytes_per_entry": round(map_memory(n) / n)})
    return out


def map_memory(n: int) -> int:
    """Bytes a map of ``n`` random entries holds once built, its input gone (what a node's cache keeps)."""
    gc.collect()
    tracemalloc.start()
    try:
        entries = {os.urandom(32): StatusValue(1, "current", os.urandom(32)) for _ in range(n)}
        m = StatusMap(entries)
        m.prove(next(iter(entries)))
        del entries
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(m) == n
    return held


@contextlib.contextmanager
def no_map_hashing() -> Iterator[None]:
    """The floor: sealing as it is but for the map's work (``StatusMap.apply`` returns the root it has), so the
    difference is what the map costs; the rows' status columns are still read."""
    apply = StatusMap.apply
    StatusMap.apply = lambda self, changes: self.root  # type: ignore[method-assign]
    try:
        yield
    finally:
        StatusMap.apply = apply  # type: ignore[method-assign]


def seal_once(db: str | None, results: int, batch: int, with_map: bool) -> tuple[float, Store]:
    """Seconds to seal ``results`` results of one hospital in batches of ``batch`` on a fresh database."""
    engine, _, cleanup = open_database(db, prefix="mrl-bench-status-")
    migrate(engine)
    store = Store(engine, master_key=MasterKey.generate())
    store.register_hospital(HOSPITAL, "Bench")
    records = make_records(results, HOSPITAL)
    for i in range(0, results, 1000):
        store.submit(HOSPITAL, records[i:i + 1000])
    t = time.perf_counter()
    with contextlib.nullcontext() if with_map else no_map_hashing():
        while store.seal(HOSPITAL, batch) is not None:
            pass
    elapsed = time.perf_counter() - t
    drop(engine, cleanup)
    return elapsed, store


def drop(engine: Engine, cleanup: Callable[[], None] | None) -> None:
    """Remove the benchmark's database: the PostgreSQL schema, or the SQLite file's temp directory."""
    engine.dispose()
    if cleanup is not None:
        cleanup()
    elif engine.url.database:
        shutil.rmtree(Path(engine.url.database).parent, ignore_errors=True)


def spread(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--db", default=None, help="database URL (default: a temporary SQLite file)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--maps-only", action="store_true", help="only the in-memory map figures")
    a = p.parse_args()
    maps = bench_map([10_000, 100_000, 300_000])
    if a.maps_only:
        print(json.dumps({"map": maps}) if a.json else maps)
        return
    with_map, floor = [], []
    for _ in range(a.runs):  # alternated, so a noisy minute hits both
        with_map.append(seal_once(a.db, a.results, a.batch, True)[0])
        floor.append(seal_once(a.db, a.results, a.batch, False)[0])
    # Proofs on a store that keeps its database (SQLite: the temp file stays until the process ends).
    engine, _, cleanup = open_database(None, prefix="mrl-bench-status-")
    migrate(engine)
    key_material = MasterKey.generate()
    store = Store(engine, master_key=key_material)
    store.register_hospital(HOSPITAL, "Bench")
    records = make_records(a.results, HOSPITAL)
    for i in range(0, a.results, 1000):
        store.submit(HOSPITAL, records[i:i + 1000])
    last = 0
    while (head := store.seal(HOSPITAL, a.batch)) is not None:
        last = head.seq
    key = store.status_key_of(HOSPITAL, records[0].result_id)
    assert key is not None
    cold = Store(engine, master_key=key_material)
    t = time.perf_counter()
    assert cold.status_proof(HOSPITAL, key, last) is not None
    first = time.perf_counter() - t
    warm = []
    for r in records[:200]:
        k = cold.status_key_of(HOSPITAL, r.result_id)
        assert k is not None
        t = time.perf_counter()
        cold.status_proof(HOSPITAL, k, last)
        warm.append(time.perf_counter() - t)
    drop(engine, cleanup)
    out: dict[str, Any] = {"map": maps, "seal": {"results": a.results, "batch": a.batch, "with_map_s": spread(with_map),
                                 "floor_s": spread(floor),
                                 "ratio": round(statistics.median(with_map) / statistics.median(floor), 3)},
           "proof": {"results": a.results, "first_ms": round(first * 1e3, 1),
                     "warm_ms": round(statistics.median(warm) * 1e3, 2)}}
    if a.json:
        print(json.dumps(out))
    else:
        for row in maps:
            print(f"map of {row['entries']:>7,} entries: build {row['build_s']} s, proof {row['prove_us']} µs "
                  f"({row['proof_bytes']} B), a 500-change batch {row['apply_500_ms']} ms")
        s = out["seal"]
        print(f"sealing {a.results:,} results in batches of {a.batch}: {s['with_map_s']} s with the map, "
              f"{s['floor_s']} s without (ratio {s['ratio']})")
        print(f"status proof over {a.results:,} results: first {out['proof']['first_ms']} ms, warm "
              f"{out['proof']['warm_ms']} ms")


if __name__ == "__main__":
    main()
