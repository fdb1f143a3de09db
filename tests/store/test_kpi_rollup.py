"""The KPI rollup (store/kpi_rollup.py): reports summed from counted batches equal reports counted record by
record, in every time zone and filter; a batch whose records are not all indexed is counted one by one until they
are; a batch is never counted twice. And the retention of verifications (MRL_VERIFICATION_RETENTION_DAYS)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from mrledger.node.background import Sealer
from mrledger.node.settings import Settings
from mrledger.store.decisions import VerificationRow
from mrledger.store.kpi_rollup import KpiRollup
from mrledger.store.models import Batch, Decision, KpiCount, KpiRolled, Verification
from tests.harness import Api
from tests.service.test_kpis import MAY, city, kpis  # noqa: F401 (the fixture)

QUERIES: list[dict[str, str]] = [
    MAY, {**MAY, "tz": "Asia/Shanghai"}, {**MAY, "tz": "Asia/Kathmandu"}, {**MAY, "tz": "America/St_Johns"},
    {**MAY, "hospital": "qd-002"}, {**MAY, "category": "ct"}, {**MAY, "category": "clinical-biochemistry"},
    {"from": "2024-04-01", "to": "2024-06-30", "tz": "Asia/Shanghai"},
]


def _figures(rep: dict[str, Any]) -> dict[str, Any]:
    """A report without the parts that say where its figures come from (those change when a batch is sealed)."""
    out = {k: v for k, v in rep.items() if k not in ("sources", "previous_sources")}
    out["by_hospital"] = [{k: v for k, v in h.items() if k != "batches"} for h in rep["by_hospital"]]
    return out


def _seal_all(api: Api) -> None:
    for stream in ("qd-002.events", "gz-001.events"):
        api.ledger.store.seal(stream, 10_000)


def _counts(api: Api) -> tuple[int, int]:
    with api.ledger.store.read() as s:
        return (int(s.scalar(select(func.count()).select_from(KpiRolled)) or 0),
                int(s.scalar(select(func.sum(KpiCount.n))) or 0))


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: "-".join(f"{k}={v}" for k, v in q.items()))
def test_counted_batches_give_the_reports_of_every_record(city: Api, query: dict[str, str]) -> None:  # noqa: F811
    before = kpis(city, **query)
    assert before["sources"]["batches"] == []  # nothing sealed: every record read one by one
    _seal_all(city)
    after = kpis(city, **query)
    assert _counts(city) == (2, 15)  # both batches counted, every decision and encounter in them
    assert _figures(after) == _figures(before)
    assert after["sources"]["records"] == before["sources"]["records"]
    assert after["sources"]["unsealed"] == 0


def test_a_batch_with_unindexed_records_is_counted_once_they_are_indexed(city: Api) -> None:  # noqa: F811
    whole = kpis(city, **MAY)
    store = city.ledger.store
    with store.read() as s:  # a crash between a decision's submission and its indexing leaves it unindexed
        row = s.scalars(select(Decision).where(Decision.hospital_id == "qd-002")
                        .order_by(Decision.decided_at.desc()).limit(1)).one()
        kept = {c.name: getattr(row, c.name) for c in Decision.__table__.columns}
    with store.unit_of_work() as s:
        s.execute(delete(Decision).where(Decision.verification_id == kept["verification_id"]))
    _seal_all(city)
    partial = kpis(city, **MAY)
    assert _counts(city)[0] == 1  # gz-001's batch only: qd-002's waits for its missing index row
    assert partial["totals"]["current"]["decisions"] == whole["totals"]["current"]["decisions"] - 1
    sealed = {"stream": "qd-002.events", "first_seq": 1, "last_seq": 1, "anchor_status": "sealed"}
    assert sealed in partial["sources"]["batches"]
    with store.unit_of_work() as s:  # the retried request indexes it
        s.add(Decision(**kept))
    assert _figures(kpis(city, **MAY)) == _figures(whole)
    assert _counts(city)[0] == 2


def test_a_batch_is_never_counted_twice(city: Api) -> None:  # noqa: F811
    _seal_all(city)
    rollup = KpiRollup(city.ledger.store)
    assert rollup.roll_up() == 2
    first = _counts(city)
    assert rollup.roll_up() == 0
    # Two processes racing for the same batch: the second's insert of the marker fails and writes nothing.
    with city.ledger.store.read() as s:
        size = int(s.scalar(select(Batch.size).where(Batch.hospital_id == "qd-002.events", Batch.seq == 1)) or 0)
    assert size > 0 and rollup._roll([("qd-002.events", 1, size)]) == 0
    assert _counts(city) == first


def test_the_sealer_counts_the_event_batches_it_seals(city: Api, tmp_path: Path) -> None:  # noqa: F811
    class Chain:  # what the sealer reads of the chain context when it has no admin key
        chain_id, contract, admin = 31337, "0x" + "11" * 20, None

    settings = Settings(data_dir=tmp_path / "data", batch_interval=0.001, sign_batches=False)
    Sealer(city.ledger.store, Chain(), settings).step()  # type: ignore[arg-type]
    assert city.ledger.store.pending_count() == 0
    assert _counts(city) == (2, 15)  # counted by the sealer, before any report asked


def test_the_audit_finds_counts_that_differ_from_the_index(city: Api) -> None:  # noqa: F811
    _seal_all(city)
    kpis(city, **MAY)
    audit = city.client.get("/v1/audit/decisions", headers=city.auth("auditor")).json()
    assert audit["ok"], audit["problems"]
    with city.ledger.store.unit_of_work() as s:  # one count edited in SQL
        row = s.scalars(select(KpiCount).where(KpiCount.stream == "qd-002.events", KpiCount.kind == "d")
                        .limit(1)).one()
        row.n += 1
    audit = city.client.get("/v1/audit/decisions", headers=city.auth("auditor")).json()
    assert [(p["kind"], p["stream"], p["seq"]) for p in audit["problems"]] == [
        ("rollup-mismatch", "qd-002.events", 1)]


def test_verifications_past_their_retention_are_deleted_unless_a_decision_names_them(
        city: Api, tmp_path: Path) -> None:  # noqa: F811
    index = city.ledger.events
    old, recent = datetime(2020, 1, 1, tzinfo=UTC), datetime.now(UTC)
    for vid, at in (("01OLDNODECISION00000000000", old), ("01RECENTNODECISION00000000", recent)):
        index.remember(VerificationRow(vid, at, None, None, "gz-001", "r" * 64, 1, "authentic", "recognise", (),
                                       None, ()))
    index.flush()
    with city.ledger.store.read() as s:
        total = int(s.scalar(select(func.count()).select_from(Verification)) or 0)
        named = int(s.scalar(select(func.count()).select_from(Decision)) or 0)
    assert total == named + 2  # the city's decided verifications are all from 2024, older than any retention

    class Chain:
        chain_id, contract, admin = 31337, "0x" + "11" * 20, None

    settings = Settings(data_dir=tmp_path / "data", sign_batches=False, verification_retention_days=30)
    Sealer(city.ledger.store, Chain(), settings).step()  # type: ignore[arg-type]
    with city.ledger.store.read() as s:
        left = set(s.scalars(select(Verification.id)))
        decided = set(s.scalars(select(Decision.verification_id)))
    assert left == decided | {"01RECENTNODECISION00000000"}
    assert index.verification("01OLDNODECISION00000000000") is None
    assert kpis(city, **MAY)["totals"]["current"]["decisions"] == 5  # the KPIs lose nothing


def test_signed_pieces_and_covers_count_exactly_what_a_period_holds() -> None:
    """Every period a report asks for, in any zone, is months ± days ± quarter-hours (kpi_levels.pieces), and
    disjoint pieces for its batches (cover): checked against counting times one by one."""
    import random
    from datetime import timedelta
    from itertools import pairwise

    from mrledger.store.kpi_levels import DAY, MONTH, cover, floor_day, floor_month, pieces

    rnd = random.Random(20)
    q = timedelta(minutes=15)
    base = datetime(2023, 11, 1, tzinfo=UTC)
    times = sorted(base + q * rnd.randrange(0, 4 * 24 * 500) + timedelta(seconds=rnd.randrange(900))
                   for _ in range(3000))

    def inside(level: str, a: datetime, b: datetime, t: datetime) -> bool:
        at = floor_month(t) if level == MONTH else floor_day(t) if level == DAY else t
        return a <= at < b

    for _ in range(300):
        lo = base + q * rnd.randrange(0, 4 * 24 * 400)
        hi = lo + q * rnd.randrange(1, 4 * 24 * 120)
        want = sum(lo <= t < hi for t in times)
        assert sum(sign * sum(inside(lv, a, b, t) for t in times) for lv, a, b, sign in pieces(lo, hi)) == want
        parts = cover(lo, hi)
        assert sum(sum(inside(lv, a, b, t) for t in times) for lv, a, b in parts) == want
        assert parts[0][1] == lo and parts[-1][2] == hi
        assert all(x[2] == y[1] for x, y in pairwise(parts))


def test_the_audit_finds_day_and_month_sums_or_runs_edited(city: Api) -> None:  # noqa: F811
    from mrledger.store.models import KpiRun, KpiSum

    _seal_all(city)
    kpis(city, **MAY)
    for model, edit in ((KpiSum, "n"), (KpiRun, "last_seq")):
        first = select(model).order_by(*model.__table__.primary_key.columns).limit(1)
        with city.ledger.store.unit_of_work() as s:
            row = s.scalars(first).one()
            setattr(row, edit, getattr(row, edit) + 1)
        audit = city.client.get("/v1/audit/decisions", headers=city.auth("auditor")).json()
        assert [p["kind"] for p in audit["problems"]] == ["rollup-mismatch"], audit["problems"]
        with city.ledger.store.unit_of_work() as s:
            row = s.scalars(first).one()
            setattr(row, edit, getattr(row, edit) - 1)


def test_a_rebuild_writes_the_sums_and_runs_counting_wrote_and_moves_every_revision(city: Api) -> None:  # noqa: F811
    """``kpi_levels.rebuild`` (a bulk load, migration 0015's backfill; one COPY per table on PostgreSQL) leaves the
    rows the sealer's counting left, and the revision of every month it rewrote has moved (a KPI cache would
    otherwise keep sums from before it)."""
    from mrledger.store import kpi_levels
    from mrledger.store.models import KpiRev, KpiRun, KpiSum

    store = city.ledger.store
    _seal_all(city)
    before = kpis(city, **MAY)

    def rows() -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]], dict[str, int]]:
        with store.read() as s:
            return ({tuple(r) for r in s.execute(select(*KpiSum.__table__.columns))},
                    {tuple(r) for r in s.execute(select(*KpiRun.__table__.columns))},
                    {m: r for m, r in s.execute(select(KpiRev.month, KpiRev.rev))})

    sums, runs, revs = rows()
    assert sums and runs
    with store.unit_of_work() as s:
        assert kpi_levels.rebuild(s) == (len(sums), len(runs))
    sums_after, runs_after, revs_after = rows()
    assert (sums_after, runs_after) == (sums, runs)
    assert set(revs_after) == set(revs) and all(revs_after[m] != revs[m] for m in revs)
    assert _figures(kpis(city, **MAY)) == _figures(before)
