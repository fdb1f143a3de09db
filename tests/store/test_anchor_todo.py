"""The anchoring reads asked every few seconds do not grow with the ledger's age (issue 20, migration 0017).

The worker's queue (``anchor_todo``) is exactly the batches with no ``anchors`` row, whoever writes (sealing,
submission, a released transaction, anchors the chain lost), on both databases, and the outbox's reads from it
answer what the anti-join over every batch answered before. Reconciliation's two reads (each hospital's top anchor
on chain, the anchors mined above a block) answer what they answered, and PostgreSQL's planner runs them from the
top of an index, not over every anchor."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import Engine, text

from mrledger.store import Store
from mrledger.store.anchor_rows import Found, NewTx, aware
from mrledger.store.anchors import Outbox, above_query, tops_query
from mrledger.store.db import alembic_config
from tests.conftest import TEST_KEY
from tests.store.test_repository import Clock, rec

NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)


@pytest.fixture
def store(engine: Engine) -> Store:
    s = Store(engine, clock=Clock(), master_key=TEST_KEY)
    s.register_hospital("gz-001", "Guangzhou First People's Hospital")
    s.register_hospital("qd-002", "Qingdao Municipal Hospital")
    return s


def _rows(store: Store, sql: str) -> list[tuple[object, ...]]:
    with store.engine.connect() as c:
        return [tuple(r) for r in c.execute(text(sql))]


def queued(store: Store) -> list[tuple[object, ...]]:
    return _rows(store, "SELECT hospital_id, seq FROM anchor_todo ORDER BY hospital_id, seq")


def unanchored(store: Store) -> list[tuple[object, ...]]:
    """The definition, as the anti-join the worker used to run."""
    return _rows(store, "SELECT b.hospital_id, b.seq FROM batches b LEFT JOIN anchors a ON a.hospital_id = "
                        "b.hospital_id AND a.seq = b.seq WHERE a.seq IS NULL ORDER BY b.hospital_id, b.seq")


def unconfirmed(store: Store) -> tuple[int, object]:
    (n, oldest), = _rows(store, "SELECT count(*), min(b.sealed_at) FROM batches b LEFT JOIN anchors a ON "
                                "a.hospital_id = b.hospital_id AND a.seq = b.seq "
                                "WHERE a.status IS NULL OR a.status <> 'confirmed'")
    return int(n), oldest  # type: ignore[call-overload]


def check(store: Store, outbox: Outbox) -> list[tuple[str, int]]:
    expected = unanchored(store)
    assert queued(store) == expected
    assert [(h.hospital_id, h.seq) for h in outbox.sealed(100)] == expected
    n, oldest = unconfirmed(store)
    assert outbox.unconfirmed() == n
    assert outbox.oldest_unconfirmed() == aware(oldest)  # type: ignore[arg-type]
    return [(str(h), int(q)) for h, q in expected]  # type: ignore[call-overload]


def tx(nonce: int) -> NewTx:
    return NewTx(31337, "0x" + "ab" * 20, "0x" + "cd" * 20, nonce, "0x" + f"{nonce:064x}", b"raw", 2, 1)


def seal(store: Store, hospital: str, first: int, n: int) -> None:
    for i in range(first, first + n):
        store.submit(hospital, [rec(i, hospital)])
        assert store.seal(hospital, 10) is not None


def test_the_queue_follows_every_write_of_batches_and_anchors(store: Store) -> None:
    outbox = Outbox(store)
    seal(store, "gz-001", 0, 3)
    seal(store, "qd-002", 100, 2)
    assert check(store, outbox) == [("gz-001", 1), ("gz-001", 2), ("gz-001", 3), ("qd-002", 1), ("qd-002", 2)]
    assert outbox.sealed(2) == outbox.sealed(100)[:2]
    assert [h.seq for h in outbox.sealed(100, hospitals=["qd-002"])] == [1, 2]

    first = outbox.record_submission(tx(0), [("gz-001", 1), ("gz-001", 2)], NOW)
    assert check(store, outbox) == [("gz-001", 3), ("qd-002", 1), ("qd-002", 2)]
    outbox.mark_included_many([Found("gz-001", q, tx(0).tx_hash, 10, "0x" + "11" * 32) for q in (1, 2)],
                              chain_id=31337, contract=tx(0).contract, now=NOW)
    outbox.mark_confirmed("gz-001", 1, NOW)
    second = outbox.record_submission(tx(1), [("gz-001", 3), ("qd-002", 1)], NOW)
    assert check(store, outbox) == [("qd-002", 2)]
    assert outbox.unconfirmed() == 4  # gz-001 2 (included), 3 (submitted), qd-002 1 (submitted), 2 (sealed)

    assert sorted(outbox.release(second)) == [("gz-001", 3), ("qd-002", 1)]  # never mined: sealed again
    assert check(store, outbox) == [("gz-001", 3), ("qd-002", 1), ("qd-002", 2)]
    assert outbox.mark_lost("gz-001", 0, "a chain reset", NOW) == [1, 2]  # the chain lost both
    assert check(store, outbox) == [("gz-001", 1), ("gz-001", 2), ("gz-001", 3), ("qd-002", 1), ("qd-002", 2)]
    assert first != second

    for n, head in enumerate(outbox.sealed(100)):  # all sent and confirmed: nothing queued, nothing open
        h, q = head.hospital_id, head.seq
        outbox.record_submission(tx(10 + n), [(h, q)], NOW)
        outbox.mark_included(h, q, chain_id=31337, contract=tx(0).contract, tx_hash=tx(10 + n).tx_hash,
                             block_number=20, block_hash="0x" + "22" * 32, now=NOW)
        outbox.mark_confirmed(h, q, NOW)
    assert check(store, outbox) == []
    assert outbox.unconfirmed() == 0 and outbox.oldest_unconfirmed() is None


def test_the_migration_queues_the_batches_already_sealed(store: Store) -> None:
    outbox = Outbox(store)
    seal(store, "gz-001", 0, 3)
    outbox.record_submission(tx(0), [("gz-001", 1)], NOW)
    cfg = alembic_config(store.engine)
    command.downgrade(cfg, "0016")
    seal(store, "qd-002", 100, 2)  # sealed while no trigger kept the queue
    command.upgrade(cfg, "head")
    assert check(store, outbox) == [("gz-001", 2), ("gz-001", 3), ("qd-002", 1), ("qd-002", 2)]


def test_reconciliation_reads_each_hospitals_top_and_the_anchors_above_a_block(store: Store) -> None:
    outbox = Outbox(store)
    seal(store, "gz-001", 0, 3)
    seal(store, "qd-002", 100, 2)
    outbox.record_submission(tx(0), [("gz-001", 1), ("gz-001", 2), ("qd-002", 1)], NOW)
    outbox.record_submission(tx(1), [("gz-001", 3)], NOW)  # submitted, not on chain: not a top
    for q, h, block in ((1, "gz-001", 10), (2, "gz-001", 11), (1, "qd-002", 12)):
        outbox.mark_included(h, q, chain_id=31337, contract=tx(0).contract, tx_hash=tx(0).tx_hash,
                             block_number=block, block_hash="0x" + f"{block:064x}", now=NOW)
    outbox.mark_confirmed("gz-001", 1, NOW)
    assert [(a.head.hospital_id, a.head.seq, a.status) for a in outbox.anchored_tops()] == [
        ("gz-001", 2, "included"), ("qd-002", 1, "included")]
    assert [(a.head.hospital_id, a.head.seq) for a in outbox.anchored_tops(["qd-002"])] == [("qd-002", 1)]
    assert [(a.head.hospital_id, a.head.seq, a.block_number) for a in outbox.anchored_above(10)] == [
        ("gz-001", 2, 11), ("qd-002", 1, 12)]
    assert [(a.head.seq, a.block_number) for a in outbox.anchored_above(10, ["gz-001"])] == [(2, 11)]
    assert outbox.anchored_above(12) == []


@pytest.mark.postgres
def test_reconciliation_reads_start_from_an_index_on_postgresql(store: Store) -> None:
    if store.engine.dialect.name != "postgresql":
        pytest.skip("the planner asked is PostgreSQL's (SQLite is the embedded single node)")
    with store.engine.begin() as c:  # 20,000 confirmed anchors of one hospital, then the statistics
        c.execute(text("INSERT INTO batches (hospital_id, seq, size, root, sealed_at) SELECT 'gz-001', n, 1, "
                       "decode(repeat('00', 32), 'hex'), now() FROM generate_series(1, 20000) n"))
        c.execute(text("INSERT INTO anchors (hospital_id, seq, status, block_number, updated_at) SELECT 'gz-001', n, "
                       "'confirmed', n, now() FROM generate_series(1, 20000) n"))
        c.execute(text("ANALYZE batches; ANALYZE anchors"))
    with store.engine.connect() as c:
        tops = "\n".join(r[0] for r in c.execute(text("EXPLAIN " + literal(store, tops_query()))))
        mined = "\n".join(r[0] for r in c.execute(text("EXPLAIN " + literal(store, above_query(19_998)))))
    assert "Index Scan Backward using pk_anchors" in tops and "Aggregate" not in tops, tops  # not a GROUP BY
    assert "ix_anchors_block_number" in mined, mined
    assert [a.head.seq for a in Outbox(store).anchored_above(19_998)] == [19_999, 20_000]


def literal(store: Store, statement: object) -> str:
    return str(statement.compile(dialect=store.engine.dialect,  # type: ignore[attr-defined]
                                 compile_kwargs={"literal_binds": True}))
