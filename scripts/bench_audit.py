"""The KPI audit job at city size: how many records a second ``POST /v1/audit/decisions/jobs`` checks.

Usage:  python scripts/bench_audit.py [--events 200000] [--hospitals 8] [--db URL] [--batch 1000] [--profile]
        [--json]

Fills a fresh database (SQLite in a temp dir, or a fresh schema of ``--db`` PostgreSQL) exactly as
scripts/bench_kpis.py does (its ``fill``: decisions and encounters submitted to the hospitals' event streams,
indexed, sealed into batches of ``--batch``, counted into the KPI rollup), then runs the audit job the route runs
(``service.audit_jobs.AuditJobs``: a background thread, a range of batches at a time) and times it from start to
``done``. No chain (a chain adds one batched registry read per range: service/kpi_audit_chain.py). Prints the
records checked, the seconds, records/s and the projection to 2.5 million records at that rate (derived, not
measured). ``--profile``: the job once more under cProfile, in this thread, the top 25 functions by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_kpis import fill, fresh_store

from mrledger.service.audit_jobs import AuditJobs
from mrledger.service.kpi_audit import CHUNK_RECORDS, DecisionAudit, streams_of
from mrledger.service.ledger import build_services

CITY = 2_500_000


def run_job(jobs: AuditJobs, ledger: Any) -> tuple[dict[str, Any], float]:
    t = time.perf_counter()
    state = jobs.start(ledger, None)
    jobs.wait(state["id"])
    elapsed = time.perf_counter() - t
    done = jobs.get(state["id"])
    assert done is not None
    return done, elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--hospitals", type=int, default=8)
    ap.add_argument("--db", default=None, help="PostgreSQL URL (a fresh schema is made and dropped); default SQLite")
    ap.add_argument("--chunk", type=int, default=5000, help="records per submission while filling")
    ap.add_argument("--batch", type=int, default=1000, help="records per sealed batch")
    ap.add_argument("--audit-chunk", type=int, default=CHUNK_RECORDS, help="records per range of the audit")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    store, hospitals, label, cleanup = fresh_store(a.db, "mrl-bench-audit-", a.hospitals)
    try:
        filled = fill(store, hospitals, a.events, a.chunk, a.batch)
        ledger = build_services(store)
        jobs = AuditJobs(chunk=a.audit_chunk)
        state, elapsed = run_job(jobs, ledger)
        assert state["state"] == "done" and state["ok"], (state["state"], state["error"], state["problems"][:3])
        checked = state["progress"]["records_checked"]
        rate = checked / elapsed
        result: dict[str, Any] = {
            "db": label, "events": a.events, "hospitals": a.hospitals, "batch": a.batch, **filled,
            "audit_chunk": a.audit_chunk, "records_checked": checked, "batches_checked":
            state["progress"]["batches_checked"], "ok": state["ok"], "job_s": round(elapsed, 1),
            "records_per_s": round(rate), "projected_2_5M_min (derived)": round(CITY / rate / 60, 1)}
    finally:
        if a.profile and "ledger" in locals():
            profiler = cProfile.Profile()
            profiler.enable()
            DecisionAudit(ledger, chunk=a.audit_chunk).run(streams_of(ledger))
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
        if cleanup is not None:
            cleanup()
    print(json.dumps(result) if a.json else "\n".join(f"{k:>30}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
