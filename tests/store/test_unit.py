"""The store's public unit of work (store/unit.py): what each of its three contexts promises."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, delete, func, insert, select, update

from mrledger.store import ReadOnlyError, Store
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
