"""The anchoring worker's queue (``anchor_todo``, migration 0017) is exactly the batches with no ``anchors`` row,
whoever writes (sealing, submission, a released transaction, anchors the chain lost), on both databases; and the
outbox's reads from it answer what the anti-join over every batch answered before (issue 20: that anti-join grew
with the ledger's age and the worker asks it several times a second)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import Engine, text

from mrledger.store import Store
from mrledger.store.anchors import Found, NewTx, Outbox
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
    assert (outbox.oldest_unconfirmed() is None) == (oldest is None)
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
