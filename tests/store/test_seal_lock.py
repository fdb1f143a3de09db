"""Sealing serialises the sealers of one stream, and nothing else: on PostgreSQL, a submission to a hospital whose
batch is being sealed (its row inserts refer to the hospital: a foreign-key check) goes through at once."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine

from mrledger.ledger import BatchHead, BatchSignature
from mrledger.store import Store
from tests.conftest import TEST_KEY
from tests.store.test_repository import Clock, rec
from tests.store.test_signatures import sign


@pytest.mark.postgres
def test_a_submission_is_not_held_up_by_a_seal_of_its_hospital(engine: Engine) -> None:
    """The seal's lock on the hospital row was ``FOR UPDATE``, which conflicts with the ``FOR KEY SHARE`` every
    foreign-key check takes: each submission, decision and encounter of the hospital waited for the whole seal —
    its signature and status map included — to commit (issue 20). ``FOR NO KEY UPDATE`` still serialises sealers."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer: a submission waits for a seal there by design")
    store = Store(engine, master_key=TEST_KEY, clock=Clock())
    store.register_hospital("gz-001", "Guangzhou First People's Hospital")
    store.submit("gz-001", [rec(i) for i in range(3)])
    inside, submitted = threading.Event(), threading.Event()

    def slow_sign(head: BatchHead) -> BatchSignature:  # runs inside the sealing transaction, lock held
        inside.set()
        submitted.wait(10)
        return sign(head)

    sealer = threading.Thread(target=lambda: store.seal("gz-001", 100, sign=slow_sign))
    sealer.start()
    try:
        assert inside.wait(10)
        done = threading.Thread(target=lambda: (store.submit("gz-001", [rec(10 + i) for i in range(2)]),
                                                submitted.set()))
        done.start()
        done.join(5)
        assert submitted.is_set(), "the submission waited for the seal of its hospital"
    finally:
        submitted.set()
        sealer.join(10)
    assert [b.size for b in store.batches("gz-001")] == [3] and store.pending_count("gz-001") == 2

    # Two sealers of one hospital still take turns: the second waits for the first, then seals what is left.
    first_inside, release = threading.Event(), threading.Event()

    def held_sign(head: BatchHead) -> BatchSignature:
        first_inside.set()
        release.wait(10)
        return sign(head)

    heads: list[BatchHead | None] = []
    first = threading.Thread(target=lambda: heads.append(store.seal("gz-001", 1, sign=held_sign)))
    first.start()
    assert first_inside.wait(10)
    second = threading.Thread(target=lambda: heads.append(store.seal("gz-001", 1, sign=sign)))
    second.start()
    second.join(1)
    assert second.is_alive(), "a second sealer of the hospital did not wait for the first"
    release.set()
    first.join(10)
    second.join(10)
    assert [h.seq for h in heads if h is not None] == [2, 3]
