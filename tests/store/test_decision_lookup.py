"""A decision's record is found by the record's unique key, not by its leaf: ``record_versions`` has no index on
the leaf, so a lookup by (stream, leaf) reads every record of the stream, and a hospital's event stream holds every
decision and encounter it ever made — each decision cost more than the one before it (issue 20). Asked of the
database's own planner, on both databases."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from mrledger.store.decisions import _INSERT_DECISION


def _plan(engine: Engine, extra: dict[str, Any]) -> str:
    inner: Any = _INSERT_DECISION.statement.select  # the SELECT of the INSERT … SELECT
    compiled = inner.compile(dialect=engine.dialect)
    params = {name: None for name in compiled.params} | extra  # NULLs only in the select list
    with engine.connect() as c:
        if engine.dialect.name == "postgresql":
            c.exec_driver_sql("SET enable_seqscan = off")  # on empty tables a scan is as cheap as anything
            rows = c.exec_driver_sql("EXPLAIN " + str(compiled), params).all()
            return "\n".join(r[0] for r in rows)
        rows = c.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled),
                                 tuple(params[n] for n in compiled.positiontup or ())).all()
        return "\n".join(str(r[-1]) for r in rows)


def test_a_decisions_record_is_looked_up_by_its_unique_key(engine: Engine) -> None:
    plan = _plan(engine, {"stream": "gz-001.events", "result_hmac": b"\1" * 32, "leaf": b"\2" * 32})
    if engine.dialect.name == "postgresql":
        cond = next(line for line in plan.splitlines() if "Index Cond" in line)
        assert "result_hmac" in cond and "version" in cond, plan
    else:
        assert "(hospital_id=? AND result_hmac=? AND version=?)" in plan, plan  # the unique key, all of it
