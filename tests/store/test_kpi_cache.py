"""The KPI cache (store/kpi_cache.py, migration 0016): a report served from what a process kept is the report
computed afresh, after every change that moves a figure — a late batch counted into a closed month, an anchor
confirmed and then reorged back, records still pending, a count edited by hand, and another store (another
process) counting while this one reads — for every filter and in time zones far from UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select, update

from mrledger.service.kpis import Period, report
from mrledger.store import Store
from mrledger.store.kpi_cache import cache_of, months
from mrledger.store.kpi_rollup import KpiRollup
from mrledger.store.models import Anchor, KpiRev, KpiSum
from tests.harness import TEST_KEY, Api
from tests.service.test_kpis import CT_HEAD, GLUCOSE, MAY, city, decide, kpis  # noqa: F401 (the fixture)

YEAR = {"from": "2024-01-01", "to": "2024-12-31"}
QUERIES: list[dict[str, str]] = [
    MAY, YEAR, {**YEAR, "tz": "Pacific/Kiritimati"}, {**MAY, "tz": "America/St_Johns"},
    {**MAY, "tz": "Asia/Shanghai", "hospital": "qd-002"}, {**YEAR, "category": "ct"},
    {**MAY, "category": "clinical-biochemistry", "tz": "Pacific/Pago_Pago"}, {**MAY, "anchored_only": "true"},
    {**YEAR, "anchored_only": "true", "tz": "Asia/Kathmandu"},
]


def _reports(api: Api) -> list[dict[str, Any]]:
    return [kpis(api, **q) for q in QUERIES]


def _fresh(api: Api) -> list[dict[str, Any]]:
    """The same reports with nothing kept: what a process that just started answers."""
    cache_of(api.ledger.store).clear()
    return _reports(api)


def _served_equals_fresh(api: Api) -> list[dict[str, Any]]:
    served = _reports(api)
    assert served == _fresh(api)
    return served


def _decisions(rep: dict[str, Any]) -> int:
    return int(rep["totals"]["current"]["decisions"] + rep["totals"]["previous"]["decisions"])


def test_a_late_batch_into_a_closed_month_is_counted(city: Api) -> None:  # noqa: F811
    for stream in ("qd-002.events", "gz-001.events"):
        city.ledger.store.seal(stream, 10_000)
    before = _served_equals_fresh(city)
    _reports(city)  # every report now served from what was kept
    # Decided in April (the previous period of May, a closed month of the year), sealed and counted late.
    decide(city, "2024-04-20T10:00:00", "qd-002", "recognise", (CT_HEAD,), "recognised")
    pending = _served_equals_fresh(city)  # pending: read one by one
    assert [_decisions(r) for r in pending] != [_decisions(r) for r in before]
    _reports(city)
    city.ledger.store.seal("qd-002.events", 10_000)
    counted = _served_equals_fresh(city)
    assert [_decisions(r) for r in counted] == [_decisions(r) for r in pending]
    may = counted[0]
    assert may["previous_sources"]["batches"] == [
        {"stream": "qd-002.events", "first_seq": 1, "last_seq": 2, "anchor_status": "sealed"}]


def test_anchor_status_changes_are_seen(city: Api) -> None:  # noqa: F811
    store = city.ledger.store
    store.seal("qd-002.events", 10_000)
    _served_equals_fresh(city)
    when = datetime(2024, 7, 1, tzinfo=UTC)
    with store.unit_of_work() as s:  # confirmed on chain
        s.execute(insert(Anchor).values(hospital_id="qd-002.events", seq=1, status="confirmed", updated_at=when,
                                        chain_id=31337, block_number=7))
    confirmed = _served_equals_fresh(city)
    assert confirmed[7]["totals"]["current"]["decisions"] == 4  # anchored_only: qd-002's May decisions
    _reports(city)
    for status in ("included", "sealed"):  # a reorg takes it back
        with store.unit_of_work() as s:
            s.execute(update(Anchor).where(Anchor.hospital_id == "qd-002.events").values(status=status))
        back = _served_equals_fresh(city)
        assert back[7]["totals"]["current"]["decisions"] == 0
        assert {b["anchor_status"] for b in back[0]["sources"]["batches"]} == {status}
        _reports(city)


def test_a_count_edited_in_sql_is_seen(city: Api) -> None:  # noqa: F811
    """The audit finds such an edit (test_kpi_rollup); a report must not hide it behind what it kept."""
    for stream in ("qd-002.events", "gz-001.events"):
        city.ledger.store.seal(stream, 10_000)
    before = _served_equals_fresh(city)
    with city.ledger.store.unit_of_work() as s:
        row = s.scalars(select(KpiSum).where(KpiSum.level == "m", KpiSum.kind == "d").limit(1)).one()
        row.n += 1
    assert _served_equals_fresh(city) != before


def test_another_store_counting_is_seen(city: Api) -> None:  # noqa: F811
    """Two processes over one database: B counts a late batch; A's own roll-up then finds nothing to count, and
    only the revisions in the database tell it that the month changed."""
    a = city.ledger.store
    b = Store(a.engine, master_key=TEST_KEY)
    for stream in ("qd-002.events", "gz-001.events"):
        a.seal(stream, 10_000)
    _served_equals_fresh(city)
    decide(city, "2024-05-04T10:00:00", "qd-002", "recognise", (GLUCOSE,), "recognised")
    b.seal("qd-002.events", 10_000)
    assert KpiRollup(b).roll_up() == 1
    served = _reports(city)
    assert served[0]["totals"]["current"]["decisions"] == 6
    assert served == _fresh(city)
    # And B's reports (its own cache, empty so far) agree with A's.
    may = Period(date(2024, 5, 1), date(2024, 5, 31), ZoneInfo("Asia/Shanghai"))
    assert report(SimpleNamespace(store=b, catalogue=city.ledger.catalogue), may) == report(  # type: ignore[arg-type]
        city.ledger, may)


def test_every_write_to_the_counts_changes_its_months_revision(city: Api) -> None:  # noqa: F811
    """Migration 0016's triggers: counting a batch moves the revision of each month it holds records of."""
    store = city.ledger.store

    def revs() -> dict[str, int]:
        with store.read() as s:
            return {m: r for m, r in s.execute(select(KpiRev.month, KpiRev.rev))}

    assert revs() == {}
    store.seal("qd-002.events", 10_000)
    KpiRollup(store).roll_up()
    first = revs()
    assert set(first) == {"2024-03", "2024-04", "2024-05"}  # qd-002's decisions and encounters
    store.seal("gz-001.events", 10_000)
    KpiRollup(store).roll_up()
    second = revs()
    assert set(second) == set(first) | {"2024-06"}  # gz-001: 05-31 and 06-01
    assert second["2024-05"] != first["2024-05"] and second["2024-04"] == first["2024-04"]
    assert months([(datetime(2024, 4, 30, 16, tzinfo=UTC), datetime(2024, 5, 31, 16, tzinfo=UTC))]) == [
        "2024-04", "2024-05"]
