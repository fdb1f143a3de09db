"""The access log, direct and buffered (as `mrledger serve` runs it): nothing is lost on a clean close, and
readers see entries written before they asked."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine

from mrledger.store import Store
from mrledger.store.access import Access
from tests.conftest import TEST_KEY

T = datetime(2024, 5, 1, tzinfo=UTC)


def test_direct_and_buffered_entries(engine: Engine) -> None:
    store = Store(engine, master_key=TEST_KEY)
    access = Access(store)
    doctor = access.authenticate(access.create_token("doctor", "test", T))
    assert doctor is not None
    access.log(doctor, "verify", T, hospital_id="gz-001", result_id="R1", version=1, verdict="authentic")
    assert [(e.action, e.verdict) for e in access.entries()] == [("verify", "authentic")]

    access.start_buffering(interval=60)  # long interval: only flush() and close() write
    for i in range(250):
        access.log(doctor, "verify", T, hospital_id="gz-001", result_id=f"R{i}", verdict="authentic")
    assert len(access.entries(limit=1000)) == 251  # entries() flushes first
    for i in range(5):
        access.log(doctor, "lookup", T, hospital_id="qd-002", result_id=f"Q{i}")
    access.close()
    fresh = Access(store)
    assert len(fresh.entries(limit=1000)) == 256
    assert [e.result_id for e in fresh.entries(hospital_id="qd-002")] == [f"Q{i}" for i in reversed(range(5))]
