"""KPIs at city size: how long ``GET /v1/kpis``'s report takes over millions of decisions and encounters.

Usage:  python scripts/bench_kpis.py [--events 2500000] [--hospitals 32] [--db URL] [--runs 5] [--json]
        python scripts/bench_kpis.py --bulk --events 2500000 --hospitals 68 --batch 1 [--db URL]

How much the rollup saves depends on how many events of one batch share a 15-minute bucket and a combination of
dimensions: a city replayed in an hour (simulate_city) puts thousands in each; a real node's 5-second batches at a
hundred events per hospital and day put about one. ``rollup_rows`` against ``events`` says which this run was.

Fills a fresh database (SQLite in a temp dir, or a fresh schema of ``--db`` PostgreSQL) the way the node does,
minus HTTP: per hospital, decisions (each with the verification it names) and encounters spread over the year
2024, submitted to the hospital's event stream with ``Store.submit`` (canonical records, salts, leaves), indexed
with ``EventIndex``, sealed into batches of ``--batch`` and counted into the KPI rollup
(``mrledger.store.kpi_rollup``) — timed as ``rollup_s``, which the sealer pays as it goes. Then, ``--runs`` times
each: the report (``service.kpis.report``, what the route returns) for the whole year, for May, and for May of one
hospital; and, as the floor the old design could not go under, only *reading* May's rows one by one (a SELECT of
the period's decisions and encounters turned into their facts, no aggregation). Figures are min / median / max ms.

A process keeps what it summed of closed months (``mrledger.store.kpi_cache``), so each report is timed three
ways: ``report_*_ms`` **cold** (the process's KPI cache emptied before each run: the first report after a start),
``*_warm_ms`` (the same report again, nothing counted meanwhile) and, for the year, ``report_year_counted_ms``
(before each run one more batch is counted into December 2024, untimed, as a live node's counter does between two
reports: the current month is read again, the closed ones are not).

The floor of a cold year, measured in the same process: ``floor_year_month_rows_ms``, fetching the year's UTC month
sums as stored (no edges, no sums, no fold), and ``ratio_report_year_to_floor``. On PostgreSQL the reports follow a
``VACUUM ANALYZE`` (``vacuum_analyze_s``): autovacuum's work after a bulk load, which a benchmark cannot wait for.

``--bulk`` (2.5 M events in minutes instead of hours): writes, per hospital, only what a report reads, as the
node's sealer and counter would leave it — the event batches (``--batch`` events each; ``--batch 1`` is a real
node's 5-second batches at ~100 events per hospital and day), their anchors (confirmed, except the last
``--open`` batches of each stream, left sealed so the report's open-batch path runs), each batch's rollup rows and
marker computed from its facts by the counter's own code (``kpi_rollup._sums``/``_rows``), then the day and month
sums and runs by ``kpi_levels.rebuild`` (what migration 0015 runs on existing data). Not written: the records,
leaves and index rows (the audit's input, not the report's), so the ``read_may_rows`` floor is not measured.

``--keep NAME`` (with ``--bulk``): the 2.5 M fill takes minutes, the reports seconds, so keep the database between
runs — NAME is a SQLite file (default database) or a PostgreSQL schema (``--db``); the first run migrates and fills
it, a later one migrates it (a new migration runs on the filled data, as on a node) and only reports.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_store import open_database
from sqlalchemy import bindparam, create_engine, delete, func, insert, select, text

from mrledger.node.heap import tune_gc
from mrledger.service.kpis import Period, report
from mrledger.service.recognition import default_catalogue
from mrledger.store import Store, kpi_levels, make_engine, migrate
from mrledger.store.crypto import MasterKey
from mrledger.store.decisions import EventIndex, _items_json
from mrledger.store.event_audit import decision_facts, encounter_facts
from mrledger.store.events import DecisionFacts, EncounterFacts, ItemRef, events_stream
from mrledger.store.fastread import Prepared
from mrledger.store.kpi_cache import cache_of
from mrledger.store.kpi_rollup import KpiRollup, _rows, _sums
from mrledger.store.models import (
    Anchor,
    Batch,
    Decision,
    Encounter,
    KpiCount,
    KpiRolled,
    KpiRun,
    KpiSum,
    KpiTodo,
    Verification,
)

CATS = ["clinical-biochemistry", "haematology", "immunology", "ct", "mri", "ultrasound"]
ITEMS = [ItemRef("http://loinc.org", "2345-7", "clinical-biochemistry", 500),
         ItemRef("http://loinc.org", "718-7", "haematology", 800),
         ItemRef("urn:mrledger:catalogue:imaging", "ct-head", "ct", 20000)]
REASONS = ["emergency", "patient-request", "clinical-change", None]
YEAR = datetime(2024, 1, 1, tzinfo=UTC)


def _facts(hospital: str, i: int, per: int) -> DecisionFacts | EncounterFacts:
    at = YEAR + timedelta(seconds=i * 366 * 86400 / per)  # in time order, as a node records them
    if i % 2:
        cats = tuple(sorted({CATS[i % 6], CATS[(i // 7) % 6]}))
        return EncounterFacts(hospital, f"{i:064x}", at, f"{i % 50_000:064x}", i % 5 != 0, cats)
    item = ITEMS[i % 3]
    recognised = i % 4 != 0
    return DecisionFacts(f"{hospital[-2:]}{i:024d}", hospital, None, at, at, "gz-001", f"{i:064x}", 1, "authentic",
                         "recognise" if i % 10 else "reorder", (), item.category, (item,), "CNY",
                         "recognised" if recognised else "reordered",
                         None if recognised else REASONS[i % 4], None)


def fill(store: Store, hospitals: list[str], events: int, chunk: int, batch: int) -> dict[str, Any]:
    index = EventIndex(store)
    per = events // len(hospitals)
    t0 = time.perf_counter()
    for h in hospitals:
        store.register_hospital(h, h)
        store.register_hospital(events_stream(h), f"{h} events")
        for start in range(0, per, chunk):
            facts = [_facts(h, i, per) for i in range(start, min(per, start + chunk))]
            decisions = [f for f in facts if isinstance(f, DecisionFacts)]
            with store.unit_of_work() as s:
                s.execute(insert(Verification), [
                    {"id": d.verification_id, "at": d.verified_at, "token_id": None, "role": None,
                     "hospital_id": d.result_hospital_id, "result_ref": d.result_ref, "version": 1,
                     "verdict": "authentic", "recognition": d.recognition, "reasons": "",
                     "category": d.category, "items": "[]"} for d in decisions])
            accepted = store.submit(events_stream(h), [f.record() for f in facts])
            placed = list(zip(facts, (a.leaf_hash for a in accepted), strict=True))
            # Decisions in bulk (the node indexes one per request; here only the rows matter).
            with store.unit_of_work() as s:
                ids = index._record_versions(s, events_stream(h), [(f.result_key, leaf) for f, leaf in placed])
                s.execute(insert(Decision), [
                    {"verification_id": f.verification_id, "hospital_id": f.hospital_id, "stream": f.stream,
                     "record_version_id": ids[leaf], "token_id": None, "verified_at": f.verified_at,
                     "decided_at": f.decided_at, "result_hospital_id": f.result_hospital_id,
                     "result_ref": f.result_ref, "result_version": 1, "verdict": f.verdict,
                     "recognition": f.recognition, "rule_reasons": "", "category": f.category,
                     "items": _items_json(f.items), "currency": f.currency, "decision": f.decision,
                     "reason": f.reason, "detail": None} for f, leaf in placed if isinstance(f, DecisionFacts)])
            index.index_encounters([(f, leaf) for f, leaf in placed if isinstance(f, EncounterFacts)])
        print(f"filled {h}: {per} events, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    fill_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    batches = 0
    for h in hospitals:
        while store.seal(events_stream(h), batch) is not None:
            batches += 1
    seal_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    rolled = KpiRollup(store).roll_up()
    rollup_s = time.perf_counter() - t2
    with store.read() as s:
        rows = int(s.scalar(select(func.count()).select_from(KpiCount)) or 0)
    return {"fill_s": round(fill_s, 1), "seal_s": round(seal_s, 1), "batches": batches, "rolled": rolled,
            "rollup_s": round(rollup_s, 1), "rollup_rows": rows}


def fill_bulk(store: Store, hospitals: list[str], events: int, batch: int, keep_open: int) -> dict[str, Any]:
    """The rows a node's sealer and KPI counter leave for these events (module docstring, ``--bulk``)."""
    per = events // len(hospitals)
    t0 = time.perf_counter()
    batches = 0
    for h in hospitals:
        store.register_hospital(h, h)
        stream = events_stream(h)
        store.register_hospital(stream, f"{h} events")
        seqs = (per + batch - 1) // batch
        for lo in range(0, seqs, 5000):
            heads, anchors, marks, rows = [], [], [], []
            for seq in range(lo + 1, min(seqs, lo + 5000) + 1):
                facts = [_facts(h, i, per) for i in range((seq - 1) * batch, min(per, seq * batch))]
                when = max(f.decided_at if isinstance(f, DecisionFacts) else f.seen_at for f in facts)
                heads.append({"hospital_id": stream, "seq": seq, "size": len(facts), "root": b"\0" * 32,
                              "sealed_at": when})
                if seq <= seqs - keep_open:
                    anchors.append({"hospital_id": stream, "seq": seq, "status": "confirmed", "updated_at": when,
                                    "chain_id": 31337, "block_number": seq, "confirmed_at": when})
                marks.append({"stream": stream, "seq": seq})
                rows += _rows(_sums(facts), stream, seq)
            with store.unit_of_work() as s:
                s.execute(insert(Batch), heads)
                if anchors:
                    s.execute(insert(Anchor), anchors)
                s.execute(insert(KpiRolled), marks)
                s.execute(insert(KpiCount), rows)
                s.execute(KpiTodo.__table__.delete().where(KpiTodo.stream == stream))
            batches += len(heads)
        print(f"filled {h}: {per} events, {batches} batches, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    fill_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    with store.unit_of_work() as s:
        sums, runs = kpi_levels.rebuild(s, [events_stream(h) for h in hospitals])
    rebuild_s = time.perf_counter() - t1
    with store.read() as s:
        rows_n = int(s.scalar(select(func.count()).select_from(KpiCount)) or 0)
        days = int(s.scalar(select(func.count()).select_from(KpiSum).where(KpiSum.level == "d")) or 0)
        months = int(s.scalar(select(func.count()).select_from(KpiSum).where(KpiSum.level == "m")) or 0)
        run_rows = int(s.scalar(select(func.count()).select_from(KpiRun)) or 0)
    return {"fill_s": round(fill_s, 1), "rebuild_s": round(rebuild_s, 1), "batches": batches,
            "rollup_rows": rows_n, "day_rows": days, "month_rows": months, "run_rows": run_rows,
            "rebuilt": [sums, runs]}


def fresh_store(db: str | None, prefix: str, hospitals: int) -> tuple[Store, list[str], str, Callable[[], None] | None]:
    """A migrated, empty store on a fresh database (``bench_store.open_database``: SQLite in a temp dir, or a new
    PostgreSQL schema), the ids of ``hospitals`` hospitals, the database's label and its cleanup."""
    engine, label, cleanup = open_database(db, prefix=prefix)
    try:
        migrate(engine)
    except BaseException:
        if cleanup is not None:
            cleanup()
        raise
    return (Store(engine, master_key=MasterKey.generate()), [f"qd-{k:03d}" for k in range(1, hospitals + 1)], label,
            cleanup)


def kept_store(db: str | None, keep: str, hospitals: int) -> tuple[Store, list[str], str, bool]:
    """A migrated store on the database kept as ``keep`` (``--keep``), its hospitals' ids, its label and whether
    it is filled already (then the fill is skipped)."""
    if db is None or db.startswith("sqlite"):
        engine, label = make_engine(f"sqlite:///{Path(keep).resolve()}"), "sqlite"
    else:
        with create_engine(db, isolation_level="AUTOCOMMIT").connect() as c:
            c.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{keep}"'))
        engine, label = make_engine(db, connect_args={"options": f"-csearch_path={keep}"}), "postgresql"
    migrate(engine)
    store = Store(engine, master_key=MasterKey.generate())  # --bulk writes nothing encrypted: any key reads it
    with store.read() as s:
        filled = s.scalar(select(KpiSum.level).limit(1)) is not None
    return store, [f"qd-{k:03d}" for k in range(1, hospitals + 1)], label, filled


def count_one(store: Store, hospital: str, at: datetime) -> None:
    """One more batch of one decision at ``at`` in ``hospital``'s stream, anchored and counted as the node's
    counter counts (``kpi_levels.add`` in the transaction that writes its rollup rows and marker)."""
    stream = events_stream(hospital)
    with store.unit_of_work() as s:
        seq = int(s.scalar(select(func.max(Batch.seq)).where(Batch.hospital_id == stream)) or 0) + 1
        made = _facts(hospital, 2, 1)  # even: a decision (its time replaced below)
        assert isinstance(made, DecisionFacts)
        fact = dataclasses.replace(made, verified_at=at, decided_at=at)
        rows = _rows(_sums([fact]), stream, seq)
        s.execute(insert(Batch).values(hospital_id=stream, seq=seq, size=1, root=b"\0" * 32, sealed_at=at))
        s.execute(insert(Anchor).values(hospital_id=stream, seq=seq, status="confirmed", updated_at=at,
                                        chain_id=31337, block_number=seq, confirmed_at=at))
        s.execute(insert(KpiRolled).values(stream=stream, seq=seq))
        s.execute(insert(KpiCount), rows)
        s.execute(delete(KpiTodo).where(KpiTodo.stream == stream, KpiTodo.seq == seq))
        kpi_levels.add(s, [(stream, seq, rows)])


def read_rows(store: Store, lo: datetime, hi: datetime) -> int:
    """The floor of any report that reads its period record by record: only reading them."""
    with store.read() as s:
        return (len([decision_facts(d) for d in s.scalars(select(Decision).where(Decision.decided_at >= lo,
                                                                          Decision.decided_at < hi))])
                + len([encounter_facts(e) for e in s.scalars(select(Encounter).where(Encounter.seen_at >= lo,
                                                                             Encounter.seen_at < hi))]))


def analyze(store: Store) -> float | None:
    """``VACUUM ANALYZE`` on PostgreSQL, in seconds (None on SQLite): what autovacuum does some minutes after a
    bulk load, done now so that the reports are planned with the statistics a node would have. Without it the
    planner costs the freshly filled tables as empty (warm May 59 ms against 8 ms after, 2.5 M events)."""
    engine = store.engine
    if engine.dialect.name != "postgresql":
        return None
    t = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE"))
    return round(time.perf_counter() - t, 1)


def month_rows(store: Store, lo: datetime, hi: datetime) -> int:
    """The floor of a cold report over the month level: fetching ``[lo, hi)``'s month sums as stored, on the
    DB-API cursor as the report fetches its sums (compiled once: ``fastread.Prepared``), nothing summed or folded
    (a report reads these, its quarter-hour edges and day corrections, then adds and folds them)."""
    with store.read() as s:
        return len(_MONTH_ROWS.rows(s.connection(), {"level": kpi_levels.MONTH, "lo": lo, "hi": hi}))


_MONTH_ROWS = Prepared(select(KpiSum.bucket, *(getattr(KpiSum, c) for c in (
    "hospital_id", "kind", "categories", "decision", "recognition", "reason", "n", "retrieved", "tests",
    "amount_minor"))).where(KpiSum.level == bindparam("level"), KpiSum.bucket >= bindparam("lo"),
                            KpiSum.bucket < bindparam("hi")))


def timed(fn: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    out, value = [], None
    for _ in range(runs):
        t = time.perf_counter()
        value = fn()
        out.append((time.perf_counter() - t) * 1000)
    return out, value


def spread(ms: list[float]) -> dict[str, float]:
    return {"min": round(min(ms), 1), "median": round(statistics.median(ms), 1), "max": round(max(ms), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=2_500_000)
    ap.add_argument("--hospitals", type=int, default=32)
    ap.add_argument("--db", default=None, help="PostgreSQL URL (a fresh schema is made and dropped); default SQLite")
    ap.add_argument("--chunk", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--bulk", action="store_true", help="write the rows a report reads directly (docstring)")
    ap.add_argument("--open", type=int, default=5, help="--bulk: batches per stream left unanchored")
    ap.add_argument("--keep", metavar="NAME", help="--bulk: SQLite file or PostgreSQL schema kept between runs")
    a = ap.parse_args()
    if a.keep and not a.bulk:
        ap.error("--keep needs --bulk (a kept --bulk database holds nothing encrypted)")
    reused = False
    if a.keep:
        store, hospitals, label, reused = kept_store(a.db, a.keep, a.hospitals)
        cleanup = None
    else:
        store, hospitals, label, cleanup = fresh_store(a.db, "mrl-bench-kpis-", a.hospitals)
    try:
        if reused:
            filled: dict[str, Any] = {"reused": a.keep}
        else:
            filled = (fill_bulk(store, hospitals, a.events, a.batch, a.open) if a.bulk
                      else fill(store, hospitals, a.events, a.chunk, a.batch))
        vacuum_s = analyze(store)
        tz = ZoneInfo("Asia/Shanghai")
        year, may = Period(date(2024, 1, 1), date(2024, 12, 31), tz), Period(date(2024, 5, 1), date(2024, 5, 31), tz)
        node: Any = SimpleNamespace(store=store, catalogue=default_catalogue())
        tune_gc()  # the collector as a node's API process runs it (node/heap.py), not the interpreter's defaults

        def cold(fn: Callable[[], Any]) -> Callable[[], Any]:
            def run() -> Any:
                cache_of(store).clear()  # what a process that just started has kept: nothing
                return fn()
            return run

        late = iter(datetime(2024, 12, 20, tzinfo=UTC) + timedelta(minutes=7 * k) for k in range(10 ** 6))
        year_ms, rep = timed(cold(lambda: report(node, year)), a.runs)
        year_warm_ms, _ = timed(lambda: report(node, year), a.runs)
        counted_ms = []
        for _ in range(a.runs):
            count_one(store, hospitals[0], next(late))
            counted_ms += timed(lambda: report(node, year), 1)[0]
        may_ms, _ = timed(cold(lambda: report(node, may)), a.runs)
        may_warm_ms, _ = timed(lambda: report(node, may), a.runs)
        one_ms, _ = timed(cold(lambda: report(node, may, hospital=hospitals[0])), a.runs)
        one_warm_ms, _ = timed(lambda: report(node, may, hospital=hospitals[0]), a.runs)
        floor_ms, floor_rows = timed(lambda: month_rows(store, datetime(2024, 1, 1, tzinfo=UTC),
                                                        datetime(2025, 1, 1, tzinfo=UTC)), a.runs)
        lo, hi = may.bounds()
        scan_ms, rows = timed(lambda: read_rows(store, lo, hi), 0 if a.bulk else a.runs)
        totals = rep["totals"]["current"]
        result = {"db": label, "events": a.events, "hospitals": a.hospitals, **filled,
                  "counted": totals["decisions"] + totals["encounters"],
                  "vacuum_analyze_s": vacuum_s, "report_year_ms": spread(year_ms),
                  "floor_year_month_rows_ms": spread(floor_ms), "floor_year_month_rows": floor_rows,
                  "ratio_report_year_to_floor": round(statistics.median(year_ms) / statistics.median(floor_ms), 1),
                  "report_year_warm_ms": spread(year_warm_ms),
                  "report_year_counted_ms": spread(counted_ms), "report_may_ms": spread(may_ms),
                  "report_may_warm_ms": spread(may_warm_ms), "report_may_one_hospital_ms": spread(one_ms),
                  "report_may_one_hospital_warm_ms": spread(one_warm_ms), "may_rows": rows,
                  "sources_batch_count": rep["sources"]["batch_count"],
                  "sources_runs": len(rep["sources"]["batches"])}
        if scan_ms:
            result |= {"read_may_rows_ms": spread(scan_ms),
                       "ratio_read_rows_to_report_may": round(statistics.median(scan_ms) / statistics.median(may_ms),
                                                              1)}
    finally:
        if cleanup is not None:
            cleanup()
    print(json.dumps(result) if a.json else "\n".join(f"{k:>30}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
