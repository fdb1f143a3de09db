"""The access log, direct and buffered (as `mrledger serve` runs it): nothing is lost on a clean close, and
readers see entries written before they asked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from mrledger.node.background import Sealer
from mrledger.node.settings import Settings
from mrledger.store import Store
from mrledger.store.access import Access
from tests.conftest import TEST_KEY
from tests.harness import Api

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


def test_entries_past_their_retention_are_deleted_by_the_sealer(api: Api, tmp_path: Path) -> None:
    """MRL_ACCESS_LOG_RETENTION_DAYS: the sealer's hourly job deletes older entries in chunks (and ``prune`` writes
    its own buffered entries first); 0 (the default) keeps every entry."""
    access = api.ledger.access
    doctor = access.authenticate(access.create_token("doctor", "test", T))
    assert doctor is not None
    now = datetime.now(UTC)
    access.start_buffering(interval=60)
    for i in range(25):
        access.log(doctor, "verify", T, hospital_id="gz-001", result_id=f"OLD{i}")  # 2024: long past
    access.log(doctor, "verify", now - timedelta(days=2), hospital_id="gz-001", result_id="RECENT")

    class Chain:  # what the sealer reads of the chain context when it has no admin key
        chain_id, contract, admin = 31337, "0x" + "11" * 20, None

    keep = Sealer(api.ledger.store, Chain(), Settings(data_dir=tmp_path / "a", sign_batches=False))  # type: ignore[arg-type]
    assert keep.prune(now) == (0, 0) and len(access.entries(limit=100)) == 26
    sealer = Sealer(api.ledger.store, Chain(),  # type: ignore[arg-type]
                    Settings(data_dir=tmp_path / "b", sign_batches=False, access_log_retention_days=30))
    assert access.prune(now - timedelta(days=30), chunk=10) == 25  # three transactions of at most 10
    assert [e.result_id for e in access.entries(limit=100)] == ["RECENT"]
    access.log(doctor, "verify", T, hospital_id="gz-001", result_id="LATE")  # buffered, already past
    access.flush()  # the API process's buffer reaches the table within its interval; the sealer's job runs hourly
    assert sealer.prune(now)[1] == 1
    assert [e.result_id for e in access.entries(limit=100)] == ["RECENT"]
    access.close()
