"""The KPI rollup's queue (``kpi_todo``) is read by index probes on PostgreSQL whatever the statistics: the CI
machine's PostgreSQL runs with autovacuum off, so nothing is ever analysed, and a join planned without
statistics read every batch the ledger ever sealed on every call."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, and_, select, text

from mrledger.store import Store
from mrledger.store.kpi_rollup import todo_query
from mrledger.store.models import Batch, KpiTodo
from tests.conftest import TEST_KEY
from tests.store.test_anchor_todo import literal
from tests.store.test_repository import Clock


def _plan(store: Store, statement: object) -> str:
    with store.engine.connect() as c:
        return "\n".join(r[0] for r in c.execute(text("EXPLAIN " + literal(store, statement))))


@pytest.mark.postgres
def test_the_rollup_queue_is_read_by_index_probes_without_statistics(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("the planner asked is PostgreSQL's (SQLite's reads are ordered by kpi_todo's key)")
    store = Store(engine, master_key=TEST_KEY, clock=Clock())
    store.register_hospital("gz-001", "Guangzhou First People's Hospital")
    with store.engine.begin() as c:  # 20,000 sealed batches, three of them not counted yet; no ANALYZE
        c.execute(text("INSERT INTO batches (hospital_id, seq, size, root, sealed_at) SELECT 'gz-001', n, 3, "
                       "decode(repeat('00', 32), 'hex'), now() FROM generate_series(1, 20000) n"))
        c.execute(text("INSERT INTO kpi_todo (stream, seq) VALUES ('gz-001', 7), ('gz-001', 9), ('gz-001', 19999)"))
    joined = (select(KpiTodo.stream, KpiTodo.seq, Batch.size)
              .join(Batch, and_(Batch.hospital_id == KpiTodo.stream, Batch.seq == KpiTodo.seq))
              .order_by(KpiTodo.stream, KpiTodo.seq))
    assert "Seq Scan on batches" in _plan(store, joined)  # what the rollup asked before: every batch read
    plan = _plan(store, todo_query())
    assert "Seq Scan on batches" not in plan and "pk_batches" in plan, plan
    with store.engine.connect() as c:
        assert [tuple(r) for r in c.execute(todo_query())] == [("gz-001", 7, 3), ("gz-001", 9, 3), ("gz-001", 19999, 3)]
