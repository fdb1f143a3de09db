"""The store's public unit of work (store/unit.py): what each of its three contexts promises."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, delete, func, insert, select, text, update

from mrledger.store import ReadOnlyError, Store
from mrledger.store.kpi_read import REPORT_SETTINGS
from mrledger.store.models import Hospital

T = datetime(2026, 1, 1, tzinfo=UTC)


def _count(store: Store) -> int:
    with store.read() as s:
        return int(s.scalar(select(func.count()).select_from(Hospital)) or 0)


def test_a_unit_of_work_commits_whole_or_not_at_all(engine: Engine) -> None:
    store = Store(engine)  # no master key: hospitals need none
    with store.unit_of_work() as s:
        s.add(Hospital(id="h1", name="One", created_at=T))
    with pytest.raises(RuntimeError, match="midway"), store.unit_of_work() as s:
        s.add(Hospital(id="h2", name="Two", created_at=T))
        s.flush()  # written to the transaction, then rolled back with it
        raise RuntimeError("midway")
    assert store.hospitals() == [("h1", "One")]


@pytest.mark.parametrize("write", [
    lambda s: s.add(Hospital(id="h2", name="Two", created_at=T)),
    lambda s: s.execute(insert(Hospital).values(id="h2", name="Two", created_at=T)),
    lambda s: s.execute(update(Hospital).values(name="Renamed")),
    lambda s: s.execute(delete(Hospital)),
], ids=["orm-add", "insert", "update", "delete"])
def test_a_read_refuses_to_write(engine: Engine, write: object) -> None:
    store = Store(engine)
    store.register_hospital("h1", "One")
    with pytest.raises(ReadOnlyError), store.read() as s:
        write(s)  # type: ignore[operator]
        s.flush()
    assert store.hospitals() == [("h1", "One")] and _count(store) == 1


def test_a_single_read_answers_one_statement(engine: Engine) -> None:
    store = Store(engine)
    store.register_hospital("h1", "One")
    with store.single_read() as conn:
        assert conn.execute(select(Hospital.name).where(Hospital.id == "h1")).scalar_one() == "One"


def test_a_serial_read_starts_no_parallel_workers_and_only_for_itself(engine: Engine) -> None:
    """``serial_read`` (the KPI audit's ranges): on PostgreSQL its transaction plans without parallel workers
    or JIT, and the connection it returns to the pool plans as before (SET LOCAL). On SQLite a plain read."""
    store = Store(engine)
    store.register_hospital("h1", "One")
    settings = "SELECT current_setting('max_parallel_workers_per_gather'), current_setting('jit')"
    with store.serial_read() as s:
        assert _count(store) == 1 and s.scalar(select(func.count()).select_from(Hospital)) == 1
        if engine.dialect.name == "postgresql":
            assert tuple(s.execute(text(settings)).one()) == ("0", "off")
            with pytest.raises(ReadOnlyError):
                s.execute(delete(Hospital))
    if engine.dialect.name == "postgresql":
        with store.read() as s:
            assert s.execute(text(settings)).one()[0] != "0"  # the server's default, not the audit's


@pytest.mark.postgres
@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)  # SET LOCAL settings are PostgreSQL's
def test_the_kpi_reports_settings_hold_for_its_transaction_only(engine: Engine) -> None:
    """The KPI report's one statement (store/kpi_read.py, built by ``set_local`` from ``SERIAL_SETTINGS`` plus
    its ``work_mem``) sets all three for its snapshot, and the pooled connection keeps none of them after."""
    store = Store(engine)
    settings = text("SELECT current_setting('max_parallel_workers_per_gather'), current_setting('jit'), "
                    "current_setting('work_mem')")
    with store.snapshot() as s:
        s.execute(REPORT_SETTINGS)
        assert tuple(s.execute(settings).one()) == ("0", "off", "32MB")
    with store.read() as s:
        assert tuple(s.execute(settings).one()) != ("0", "off", "32MB")
