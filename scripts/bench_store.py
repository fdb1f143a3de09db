"""Store throughput: records accepted per second and time to seal them into 10k-leaf batches.

Usage:  python scripts/bench_store.py --records 100000 [--db URL] [--json]

Timed: ``Store.submit`` in requests of ``--chunk`` records (already-validated ResultRecords: canonical
encoding, salting, leaf hashing, duplicate check and the inserts, each request one transaction), then
``Store.seal`` until nothing is pending. Not timed: building the records (the API's JSON validation is
measured by the API benchmark). The default database is a fresh SQLite file in a temp dir; for
PostgreSQL pass ``--db postgresql+psycopg://postgres@127.0.0.1:5432/test`` — a fresh schema is created
and dropped.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, create_engine, text

from mrledger.ledger import ResultRecord
from mrledger.store import Store, make_engine, migrate
from mrledger.store.crypto import MasterKey


def make_records(n: int, hospital: str) -> list[ResultRecord]:
    template: dict[str, Any] = {
        "hospital_id": hospital, "version": 1, "kind": "lab",
        "code": {"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"},
        "effective": "2024-05-01T07:00:00Z", "issued": "2024-05-01T07:30:00Z", "status": "final",
    }
    return [
        ResultRecord.from_obj({
            **template, "result_id": f"LAB-{i:08d}", "subject": {"system": "urn:mrn", "value": f"P{i % 9973}"},
            "content": {"type": "observations", "observations": [
                {"code": {"system": "http://loinc.org", "code": "2345-7"}, "value": 3.9 + (i % 50) / 10,
                 "unit": "mmol/L", "reference_range": {"low": 3.9, "high": 6.1}}]},
        })
        for i in range(n)
    ]


def open_database(db: str | None, prefix: str = "mrl-bench-") -> tuple[Engine, str, Callable[[], None] | None]:
    """(engine, "sqlite" | "postgresql", cleanup): a fresh SQLite file in a temp dir, or a fresh schema of the
    PostgreSQL at ``db`` that ``cleanup`` drops."""
    if db is None or db.startswith("sqlite"):
        return make_engine(db or f"sqlite:///{tempfile.mkdtemp(prefix=prefix)}/bench.db"), "sqlite", None
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(db, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(db, connect_args={"options": f"-csearch_path={schema}"})

    def cleanup() -> None:
        engine.dispose()
        with admin.connect() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))

    return engine, "postgresql", cleanup


def _stored_bytes(engine: Engine, label: str) -> int:
    """What the ledger's tables take on disk, indexes and TOAST included (docs/scaling.md sizes PostgreSQL from
    it): PostgreSQL's relation sizes of this schema; for SQLite, the file after a checkpoint."""
    with engine.connect() as c:
        if label == "postgresql":
            return int(c.execute(text(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind = 'r'")).scalar_one())
        c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(c.exec_driver_sql("PRAGMA page_count").scalar_one()) * int(
            c.exec_driver_sql("PRAGMA page_size").scalar_one())


def run(records: int, db: str | None, chunk: int, batch: int) -> dict[str, Any]:
    engine, label, cleanup = open_database(db)
    try:
        migrate(engine)
        store = Store(engine, master_key=MasterKey.generate())  # encrypted as a node writes; a throwaway key
        store.register_hospital("bench-01", "Benchmark Hospital")
        recs = make_records(records, "bench-01")
        t0 = time.perf_counter()
        for i in range(0, records, chunk):
            store.submit("bench-01", recs[i:i + chunk])
        insert_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        batches = 0
        while store.seal("bench-01", batch) is not None:
            batches += 1
        seal_s = time.perf_counter() - t1
        stored = _stored_bytes(engine, label)
        return {
            "records": records, "db": label, "chunk": chunk, "batch_size": batch, "batches": batches,
            "insert_s": round(insert_s, 3), "insert_per_s": round(records / insert_s),
            "seal_s": round(seal_s, 3), "insert_and_seal_per_s": round(records / (insert_s + seal_s)),
            "stored_bytes": stored, "bytes_per_result": round(stored / records),
        }
    finally:
        if cleanup:
            cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--db", default=None, help="database URL (default: a temporary SQLite file)")
    p.add_argument("--chunk", type=int, default=1000, help="records per submission")
    p.add_argument("--batch", type=int, default=10_000, help="leaves per sealed batch")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    result = run(a.records, a.db, a.chunk, a.batch)
    if a.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>24}: {v}")


if __name__ == "__main__":
    main()
