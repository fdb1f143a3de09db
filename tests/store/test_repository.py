"""The store on SQLite and PostgreSQL: all-or-nothing submission, idempotency, gap-free sealing, receipts."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from mrledger.ledger import ResultRecord, verify_receipt
from mrledger.store import (
    ConflictError,
    LineageError,
    NotFoundError,
    Store,
    SubmissionError,
    UnknownHospitalError,
)
from mrledger.store.models import Batch, BatchLeaf, PendingLeaf, RecordVersion
from tests.conftest import TEST_KEY

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def rec(i: int, hospital: str = "gz-001", version: int = 1, value: float = 5.0, **kw: Any) -> ResultRecord:
    obj: dict[str, Any] = {
        "hospital_id": hospital, "result_id": f"R{i}", "version": version, "kind": "lab",
        "code": {"system": "http://loinc.org", "code": "2345-7"}, "subject": {"value": f"P{i % 50}"},
        "effective": "2024-05-01T07:00:00Z", "issued": "2024-05-01T07:30:00Z", "status": "final",
        "content": {"type": "observations", "observations": [
            {"code": {"system": "http://loinc.org", "code": "2345-7"}, "value": value + i / 100, "unit": "mmol/L"}]},
    }
    if version > 1:
        obj["supersedes"] = version - 1
        obj["status"] = "corrected"
    obj.update(kw)
    return ResultRecord.from_obj(obj)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(engine: Engine, clock: Clock) -> Store:
    s = Store(engine, clock=clock, master_key=TEST_KEY)
    s.register_hospital("gz-001", "Guangzhou First People's Hospital")
    s.register_hospital("qd-002", "Qingdao Municipal Hospital")
    return s


def count(store: Store, model: Any) -> int:
    with store.engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(model)).scalar_one())


def test_register_hospital_is_idempotent_and_checked(store: Store) -> None:
    store.register_hospital("gz-001", "Guangzhou First People's Hospital")
    with pytest.raises(ConflictError):
        store.register_hospital("gz-001", "Another name")
    with pytest.raises(SubmissionError):
        store.register_hospital("bad id", "x")
    assert [h for h, _ in store.hospitals()] == ["gz-001", "qd-002"]


def test_thousand_records_land_seal_and_verify(store: Store) -> None:
    records = [rec(i) for i in range(1000)]
    accepted = store.submit("gz-001", records)
    assert [a.status for a in accepted] == ["accepted"] * 1000
    assert len({a.leaf_hash for a in accepted}) == 1000
    assert store.pending_count("gz-001") == 1000
    assert store.receipt("gz-001", "R5") is None  # not sealed yet

    head = store.seal("gz-001", max_size=10_000)
    assert head is not None and (head.seq, head.size) == (1, 1000)
    assert store.pending_count() == 0
    for i in (0, 1, 499, 999):
        receipt = store.receipt("gz-001", f"R{i}")
        assert receipt is not None and receipt.leaf_index == i and receipt.leaf_hash == accepted[i].leaf_hash
        verdict = verify_receipt(receipt.to_json())
        assert verdict.status == "unanchored", verdict.to_obj()
    assert store.batch_leaves("gz-001", 1) == [a.leaf_hash for a in accepted]


def test_submission_is_all_or_nothing_on_conflict(store: Store) -> None:
    store.submit("gz-001", [rec(999, value=1.0)])
    batch = [rec(i) for i in range(1000)]  # R999 now differs from what was submitted before
    with pytest.raises(ConflictError) as info:
        store.submit("gz-001", batch)
    assert info.value.keys == [("gz-001", "R999", 1)]
    assert count(store, RecordVersion) == 1 and count(store, PendingLeaf) == 1


def test_submission_is_all_or_nothing_on_failure_midway(engine: Engine, clock: Clock) -> None:
    calls = {"n": 0}

    def flaky_salts(n: int) -> bytes:
        calls["n"] += 1
        if calls["n"] == 700:
            raise OSError("entropy source failed")
        return bytes([calls["n"] % 256]) * n

    store = Store(engine, clock=clock, salts=flaky_salts, master_key=TEST_KEY)
    store.register_hospital("gz-001", "x")
    with pytest.raises(OSError):
        store.submit("gz-001", [rec(i) for i in range(1000)])
    assert count(store, RecordVersion) == 0 and count(store, PendingLeaf) == 0


def test_idempotent_resubmission_returns_the_same_leaf(store: Store) -> None:
    first = store.submit("gz-001", [rec(1), rec(2)])
    again = store.submit("gz-001", [rec(2), rec(1), rec(3)])
    assert [a.status for a in again] == ["duplicate", "duplicate", "accepted"]
    assert again[0].leaf_hash == first[1].leaf_hash and again[1].leaf_hash == first[0].leaf_hash
    assert count(store, RecordVersion) == 3
    # the same record twice in one request is one row
    dup = store.submit("gz-001", [rec(4), rec(4)])
    assert [a.status for a in dup] == ["accepted", "duplicate"] and dup[0].leaf_hash == dup[1].leaf_hash
    with pytest.raises(ConflictError):
        store.submit("gz-001", [rec(5), rec(5, value=9.0)])
    assert count(store, RecordVersion) == 4


def test_resubmission_after_sealing_returns_the_sealed_leaf(store: Store) -> None:
    [a] = store.submit("gz-001", [rec(1)])
    store.seal("gz-001", 10)
    [b] = store.submit("gz-001", [rec(1)])
    assert b.status == "duplicate" and b.leaf_hash == a.leaf_hash
    assert store.pending_count() == 0


def test_bad_submissions_write_nothing(store: Store) -> None:
    with pytest.raises(UnknownHospitalError):
        store.submit("nope", [rec(1, hospital="nope")])
    with pytest.raises(SubmissionError):
        store.submit("gz-001", [rec(1), rec(2, hospital="qd-002")])
    with pytest.raises(SubmissionError):
        store.submit("gz-001", [])
    assert count(store, RecordVersion) == 0


def test_lineage_requires_the_superseded_version(store: Store) -> None:
    with pytest.raises(LineageError):
        store.submit("gz-001", [rec(1, version=2)])
    store.submit("gz-001", [rec(1), rec(1, version=2, value=6.0)])  # both in one request
    store.submit("gz-001", [rec(1, version=3, value=7.0)])
    versions = store.versions("gz-001", "R1")
    assert [(v.version, v.status, v.supersedes) for v in versions] == [
        (1, "final", None), (2, "corrected", 1), (3, "corrected", 2)]
    assert store.record("gz-001", "R1").version == 3
    assert store.record("gz-001", "R1", 1).status == "final"
    with pytest.raises(NotFoundError):
        store.versions("gz-001", "R404")


def test_sealing_is_gap_free_and_ordered(store: Store) -> None:
    accepted = store.submit("gz-001", [rec(i) for i in range(25)])
    heads = []
    while (head := store.seal("gz-001", max_size=10)) is not None:
        heads.append(head)
    assert [(h.seq, h.size) for h in heads] == [(1, 10), (2, 10), (3, 5)]
    assert store.batch_leaves("gz-001", 2) == [a.leaf_hash for a in accepted[10:20]]
    assert store.seal("qd-002", 10) is None
    assert [b.seq for b in store.batches("gz-001")] == [1, 2, 3]
    assert store.batch("gz-001", 3).root == heads[2].root
    with pytest.raises(NotFoundError):
        store.batch("gz-001", 4)
    with pytest.raises(UnknownHospitalError):
        store.seal("nope", 10)


def test_due_hospitals_by_size_and_age(store: Store, clock: Clock) -> None:
    store.submit("gz-001", [rec(i) for i in range(10)])
    clock.now = T0 + timedelta(seconds=3)
    store.submit("qd-002", [rec(1, hospital="qd-002")])
    assert store.due_hospitals(10, timedelta(seconds=5)) == ["gz-001"]  # full
    assert store.due_hospitals(100, timedelta(seconds=5)) == []
    clock.now = T0 + timedelta(seconds=5)
    assert store.due_hospitals(100, timedelta(seconds=5)) == ["gz-001"]  # oldest is 5 s old
    clock.now = T0 + timedelta(seconds=8)
    assert sorted(store.due_hospitals(100, timedelta(seconds=5))) == ["gz-001", "qd-002"]


def test_concurrent_sealers_never_duplicate_or_skip(store: Store) -> None:
    store.submit("gz-001", [rec(i) for i in range(200)])
    errors: list[BaseException] = []

    def sealer() -> None:
        try:
            while store.seal("gz-001", max_size=7) is not None:
                pass
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sealer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    seqs = [b.seq for b in store.batches("gz-001")]
    assert seqs == list(range(1, len(seqs) + 1))
    assert sum(b.size for b in store.batches("gz-001")) == 200
    assert count(store, BatchLeaf) == 200 and count(store, PendingLeaf) == 0


def test_concurrent_identical_submissions_store_once(store: Store) -> None:
    records = [rec(i) for i in range(100)]
    results: list[list[Any]] = []

    def submit() -> None:
        results.append(store.submit("gz-001", records))

    threads = [threading.Thread(target=submit) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3
    assert count(store, RecordVersion) == 100
    leaves = {tuple(a.leaf_hash for a in r) for r in results}
    assert len(leaves) == 1


def test_times_round_trip_as_utc(store: Store, clock: Clock) -> None:
    store.submit("gz-001", [rec(1)])
    head = store.seal("gz-001", 10, now=datetime(2024, 5, 1, 16, 0, tzinfo=UTC))
    assert head is not None
    assert store.batch("gz-001", 1).sealed_at == datetime(2024, 5, 1, 16, 0, tzinfo=UTC)
    assert store.versions("gz-001", "R1")[0].accepted_at == T0
    with store.engine.connect() as c:
        assert c.execute(select(Batch.sealed_at)).scalar_one().tzinfo is not None
