"""The status map as the store keeps it (issue 18): keys written at submission, a root committed by every seal,
proofs from a map rebuilt from the sealed rows — each checked against a map built independently here from the
receipts (salt, leaf) a patient holds."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, update

from mrledger.ledger.statusmap import (
    UNKEYABLE,
    StatusMap,
    StatusValue,
    map_changes,
    record_entries,
    status_key,
    verify_status_proof,
)
from mrledger.store import Store, StoreError, statusmaps
from mrledger.store.models import Batch, RecordVersion
from mrledger.store.statusmaps import backfill_status_keys
from tests.conftest import TEST_KEY
from tests.store.test_repository import rec

H = "gz-001"


@pytest.fixture
def store(engine: Engine) -> Store:
    s = Store(engine, master_key=TEST_KEY)
    s.register_hospital(H, "Guangzhou First People's Hospital")
    return s


def expected_map(store: Store, latest: dict[str, int], first: dict[str, int] | None = None) -> StatusMap:
    """The map a verifier derives from receipts alone: key from the first version's salt, value from the
    latest version's receipt (withdrawn when that record is entered-in-error)."""
    entries = {}
    for rid, version in latest.items():
        head = store.receipt(H, rid, (first or {}).get(rid, 1))
        now = store.receipt(H, rid, version)
        assert head is not None and now is not None
        entries[status_key(H, rid, head.salt)] = StatusValue.for_record(version, now.record.status, now.leaf_hash)
    return StatusMap(entries)


def seal(store: Store) -> int:
    head = store.seal(H, 1000)
    assert head is not None
    return head.seq


def test_every_seal_commits_the_map_of_the_latest_versions(store: Store) -> None:
    store.submit(H, [rec(i) for i in range(5)])
    s1 = seal(store)
    assert store.map_root(H, s1) == expected_map(store, {f"R{i}": 1 for i in range(5)}).root
    # A correction, a withdrawal (entered-in-error) and a new result in the next batch.
    store.submit(H, [rec(1, version=2, value=9.0), rec(2, version=2, status="entered-in-error"), rec(7)])
    s2 = seal(store)
    latest = {"R0": 1, "R1": 2, "R2": 2, "R3": 1, "R4": 1, "R7": 1}
    want = expected_map(store, latest)
    assert store.map_root(H, s2) == want.root != store.map_root(H, s1)
    key = status_key(H, "R2", store.receipt(H, "R2", 1).salt)  # type: ignore[union-attr]
    assert want.get(key) == StatusValue(2, "withdrawn", store.receipt(H, "R2", 2).leaf_hash)  # type: ignore[union-attr]


def test_a_correction_in_the_same_submission_keeps_the_first_versions_key(store: Store) -> None:
    store.submit(H, [rec(0), rec(0, version=2, value=7.0), rec(0, version=3, value=8.0)])
    seq = seal(store)
    assert store.map_root(H, seq) == expected_map(store, {"R0": 3}).root


def test_the_proof_served_is_checked_against_the_committed_root(store: Store) -> None:
    store.submit(H, [rec(i) for i in range(20)])
    s1 = seal(store)
    store.submit(H, [rec(3, version=2, value=1.0)])
    s2 = seal(store)
    key = status_key(H, "R3", store.receipt(H, "R3", 1).salt)  # type: ignore[union-attr]
    for seq, version in ((s2, 2), (s1, 1), (s2, 2)):  # forward, back (a rebuild), forward again
        got = store.status_proof(H, key, seq)
        assert got is not None
        root, proof = got
        answer = verify_status_proof(root, key, proof)
        assert (answer.kind, answer.version) == ("current", version)
        assert answer.leaf_hash == store.receipt(H, "R3", version).leaf_hash  # type: ignore[union-attr]
    # Rows altered after sealing: the rebuilt map no longer matches, and no proof is served.
    fresh = Store(store.engine, master_key=TEST_KEY)
    with store.engine.begin() as conn:
        conn.execute(update(RecordVersion).where(RecordVersion.version == 2).values(status="entered-in-error"))
    with pytest.raises(StoreError, match="does not match"):
        fresh.status_proof(H, key, s2)


def test_a_cold_sealer_commits_the_same_root_as_a_warm_one(store: Store) -> None:
    """The sealer's map lives in memory: a node that starts (or takes over as leader) rebuilds it from the
    rows and must commit the very root the warm one would have."""
    store.submit(H, [rec(i) for i in range(10)])
    seal(store)
    store.submit(H, [rec(4, version=2, value=3.0), rec(11)])
    cold = Store(store.engine, master_key=TEST_KEY)
    seq = seal(cold)
    assert cold.map_root(H, seq) == expected_map(store, {**{f"R{i}": 1 for i in range(10)}, "R4": 2, "R11": 1}).root
    store.submit(H, [rec(12)])
    seq = seal(store)  # the warm store's cache is a batch behind: it catches up from the rows
    assert store.map_root(H, seq) == expected_map(
        store, {**{f"R{i}": 1 for i in range(10)}, "R4": 2, "R11": 1, "R12": 1}).root


def test_an_older_version_sealed_late_does_not_step_the_map_back(store: Store) -> None:
    store.submit(H, [rec(0), rec(0, version=2, value=7.0)])
    seal(store)
    # Version 3 arrives without version 2's resend... then version 2 is resent: a duplicate, nothing new.
    store.submit(H, [rec(0, version=3, value=8.0)])
    s2 = seal(store)
    assert store.submit(H, [rec(0, version=2, value=7.0)])[0].status == "duplicate"
    assert store.map_root(H, s2) == expected_map(store, {"R0": 3}).root


def test_rows_written_before_the_migration_get_their_keys_when_the_store_opens(store: Store, engine: Engine) -> None:
    store.submit(H, [rec(0), rec(0, version=2, value=7.0), rec(1)])
    with engine.begin() as conn:
        conn.execute(update(RecordVersion).values(status_key=None))
    # A store without the master key cannot derive keys: it seals without a map root, and says so.
    keyless = Store(engine)
    head = keyless.seal(H, 1000)
    assert head is not None and keyless.map_root(H, head.seq) is None
    assert store.status_proof(H, bytes(32), head.seq) is None
    # The next store that opens with the key derives them; the next batch commits the whole map.
    reopened = Store(engine, master_key=TEST_KEY)
    reopened.unlock()
    store.submit(H, [rec(2)])
    seq = seal(reopened)
    assert reopened.map_root(H, seq) == expected_map(store, {"R0": 2, "R1": 1, "R2": 1}).root
    assert backfill_status_keys(reopened) == 0


def test_a_legacy_row_that_cannot_be_opened_stays_out_of_the_map(store: Store, engine: Engine) -> None:
    store.submit(H, [rec(0), rec(1)])
    with engine.begin() as conn:
        conn.execute(update(RecordVersion).values(status_key=None))
        conn.execute(update(RecordVersion).where(RecordVersion.id == 1).values(salt_enc=b"not a ciphertext"))
    reopened = Store(engine, master_key=TEST_KEY)
    reopened.unlock()  # logs the row it cannot open; the store opens all the same
    assert backfill_status_keys(reopened) == 0
    seq = seal(reopened)
    keys: list[Any] = []
    with engine.connect() as conn:
        keys = [k for (k,) in conn.execute(RecordVersion.__table__.select().with_only_columns(
            RecordVersion.status_key).order_by(RecordVersion.id))]
        assert conn.execute(Batch.__table__.select()).first() is not None
    assert keys[0] == UNKEYABLE and keys[1] != UNKEYABLE
    assert reopened.map_root(H, seq) == expected_map(store, {"R1": 1}).root


def test_a_sealer_of_many_hospitals_advances_each_map_without_rebuilding_it(store: Store,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A city's sealer seals hundreds of hospitals and event streams in turn: each map is held and advanced by
    the new batch's rows alone (the maps were bounded to 64, and the 65th hospital evicted the first, so every
    seal of a round rebuilt a map from all of that hospital's rows). Under a budget too small for them all,
    maps are dropped and rebuilt, and the roots stay those of a cold sealer."""
    hospitals = [H, *(f"h-{i:03d}" for i in range(80))]
    for hid in hospitals[1:]:
        store.register_hospital(hid, hid)
    reads: list[tuple[str, int, int]] = []
    rows_of = statusmaps.map_rows

    def counted(conn: Any, hospital_id: str, after: int, upto: int) -> Any:
        reads.append((hospital_id, after, upto))
        return rows_of(conn, hospital_id, after, upto)

    monkeypatch.setattr(statusmaps, "map_rows", counted)
    roots: dict[tuple[str, int], bytes | None] = {}
    for n in range(3):
        for hid in hospitals:
            store.submit(hid, [rec(n, hospital=hid)])
            head = store.seal(hid, 10)
            assert head is not None
            roots[(hid, head.seq)] = store.map_root(hid, head.seq)
    assert reads == []  # every map advanced in memory: none was read back
    monkeypatch.setattr(statusmaps, "MAX_CACHED_ENTRIES", 5)
    small = Store(store.engine, master_key=TEST_KEY)
    for n in (3, 4):
        for hid in hospitals:
            small.submit(hid, [rec(n, hospital=hid)])
            head = small.seal(hid, 10)
            assert head is not None
            roots[(hid, head.seq)] = small.map_root(hid, head.seq)
    assert len(reads) == 2 * len(hospitals)  # every map dropped before its hospital's turn came again
    cold = Store(store.engine, master_key=TEST_KEY)
    for (hid, seq), root in roots.items():
        with cold.single_read() as conn:
            rebuilt = StatusMap()
            rebuilt.apply(map_changes(rebuilt, record_entries(statusmaps.map_rows(conn, hid, 0, seq))))
        assert root == rebuilt.root is not None
