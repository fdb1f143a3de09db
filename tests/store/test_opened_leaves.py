"""``Results.opened_in_batches`` (store/results.py), the audit job's read of every record of a range of batches,
fetched on the DB-API cursor (``fastread.Prepared``): each leaf in its batch order, decrypted to exactly the
bytes and salt its leaf commits; a row that no longer decrypts comes back with neither (the audit reports it,
it must not raise); other hospitals' and other batches' records are not read."""

from __future__ import annotations

from sqlalchemy import text

from mrledger.ledger.leaf import commit_canonical
from mrledger.store import Store
from tests.store.test_repository import clock, rec, store  # noqa: F401  (fixtures)


def test_a_range_of_batches_opens_in_order_to_the_bytes_its_leaves_commit(store: Store) -> None:  # noqa: F811  (the fixture)
    records = [rec(i) for i in range(5)]
    accepted = store.submit("gz-001", records)
    first = store.seal("gz-001", max_size=3)
    second = store.seal("gz-001", max_size=3)
    store.submit("qd-002", [rec(9, hospital="qd-002")])
    store.seal("qd-002", max_size=10)
    assert first is not None and second is not None and (first.size, second.size) == (3, 2)

    opened = store.opened_in_batches("gz-001", first.seq, second.seq)
    assert [(o.seq, o.leaf_index) for o in opened] == [(first.seq, 0), (first.seq, 1), (first.seq, 2),
                                                       (second.seq, 0), (second.seq, 1)]
    assert [o.leaf_hash for o in opened] == [a.leaf_hash for a in accepted]
    for o, r in zip(opened, records, strict=True):
        assert isinstance(o.leaf_hash, bytes) and type(o.version) is int and o.version == 1
        assert o.canonical == r.canonical_bytes() and o.salt is not None
        assert commit_canonical("gz-001", r.result_id, 1, o.canonical, o.salt) == o.leaf_hash
    assert [o.leaf_hash for o in store.opened_in_batches("gz-001", second.seq, second.seq)] == [
        a.leaf_hash for a in accepted[3:]]

    with store.engine.begin() as conn:  # one stored version's identity edited: its ciphertext no longer opens
        conn.execute(text("UPDATE record_versions SET version = 7 WHERE id = :id"), {"id": opened[1].record_version_id})
    again = store.opened_in_batches("gz-001", first.seq, first.seq)
    assert [(o.canonical is None, o.salt is None) for o in again] == [(False, False), (True, True), (False, False)]
    assert again[1].version == 7 and again[1].leaf_hash == opened[1].leaf_hash
