"""A decision in one PostgreSQL statement (store/decision_write.py): it writes exactly what ``Store.submit`` with the
index's ``within`` writes, all or nothing, and hands every other case back to that path unchanged.

PostgreSQL only: the statement is a data-modifying WITH, which SQLite has not (SQLite keeps ``Store.submit``; the
rest of tests/service/test_decisions.py runs both there)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from mrledger.ledger import canonicalize, commit, content_digest
from mrledger.ledger.statusmap import status_key
from mrledger.service.decisions import new_id
from mrledger.store.events import DecisionFacts, events_stream
from mrledger.store.models import Decision, PendingLeaf, RecordVersion, Verification
from tests.harness import Api
from tests.service.test_decisions import count, decide, stream_records, verification

pytestmark = pytest.mark.parametrize("engine", [pytest.param("postgresql", marks=pytest.mark.postgres)],
                                     indirect=True)
STREAM = events_stream("qd-002")


def statements(api: Api, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each decision statement run from now on wrote its rows (a list that grows)."""
    ran: list[bool] = []
    store = api.ledger.store
    write_alone = store.write_alone

    def spy(sql: str, args: Any) -> list[Any]:
        ran.append(False)
        rows = write_alone(sql, args)  # a refused statement raises
        ran[-1] = bool(rows)
        return rows

    monkeypatch.setattr(store, "write_alone", spy)
    return ran


def stored(api: Api, vid: str) -> dict[str, Any]:
    """What the ledger holds for the decision of ``vid``: its record's row, opened as the audit opens it (canonical
    bytes, salt), its pending row, its index row and its verification row, by column."""
    store = api.ledger.store
    with store.read() as s:
        decision = s.scalars(select(Decision).where(Decision.verification_id == vid)).one()
        rv = s.get(RecordVersion, decision.record_version_id)
        assert rv is not None
        pending = s.get(PendingLeaf, rv.id)
        assert pending is not None
        v = s.get(Verification, vid)
        assert v is not None
        held = {"rv": {c.name: getattr(rv, c.name) for c in RecordVersion.__table__.columns},
                "pending": (pending.hospital_id, pending.accepted_at),
                "decision": {c.name: getattr(decision, c.name) for c in Decision.__table__.columns},
                "verification": {c.name: getattr(v, c.name) for c in Verification.__table__.columns}}
    opened = {o.record_version_id: o for o in store.opened_pending(STREAM, 0, 100)}[held["rv"]["id"]]  # as audited
    return {**held, "canonical": opened.canonical, "salt": opened.salt}


def test_a_new_decision_is_one_statement_writing_what_submit_writes(api: Api, monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    """Two like decisions, one through the statement and one through ``Store.submit`` (the statement switched
    off): the same columns, each row consistent with its record (leaf = commit(record, salt), the status-map key
    from that salt, the content digest), the pending leaf stamped like the record, the verification written."""
    ran = statements(api, monkeypatch)
    one, two = verification(api), verification(api)
    assert decide(api, {"verification_id": one, "decision": "recognised"}).status_code == 201
    assert ran == [True]
    monkeypatch.setattr(api.ledger.events, "_one_statement", False)
    assert decide(api, {"verification_id": two, "decision": "recognised"}).status_code == 201
    assert ran == [True]  # the second went through Store.submit
    a, b = stored(api, one), stored(api, two)
    for x in (a, b):
        record = api.ledger.store.record(STREAM, f"decision:{x['decision']['verification_id']}", 1)
        assert x["canonical"] == canonicalize(record.to_obj())
        assert bytes(x["rv"]["leaf_hash"]) == commit(record, x["salt"])
        assert bytes(x["rv"]["status_key"]) == status_key(STREAM, record.result_id, x["salt"])
        assert bytes(x["rv"]["content_digest"]) == content_digest(record)
        assert x["pending"] == (STREAM, x["rv"]["accepted_at"])
    differ = {"id", "result_hmac", "record_enc", "content_digest", "salt_enc", "leaf_hash", "status_key",
              "accepted_at"}
    assert {k: v for k, v in a["rv"].items() if k not in differ} == {k: v for k, v in b["rv"].items()
                                                                      if k not in differ}
    differ = {"verification_id", "record_version_id", "decided_at", "verified_at"}
    assert {k: v for k, v in a["decision"].items() if k not in differ} == {
        k: v for k, v in b["decision"].items() if k not in differ}
    assert {k: v for k, v in a["verification"].items() if k not in {"id", "at"}} == {
        k: v for k, v in b["verification"].items() if k not in {"id", "at"}}
    assert api.ledger.store.versions(STREAM, f"decision:{one}")[0].leaf_hash == bytes(a["rv"]["leaf_hash"])


def test_a_held_record_falls_back_and_the_same_decision_again_is_a_duplicate(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same decision again: the statement finds the record's key held, writes nothing, and ``Store.submit``
    answers the duplicate; another decision for the verification is the 409 it always was."""
    ran = statements(api, monkeypatch)
    vid = verification(api)
    first = decide(api, {"verification_id": vid, "decision": "recognised"})
    again = decide(api, {"verification_id": vid, "decision": "recognised"})
    assert (first.status_code, again.status_code, again.json()["status"]) == (201, 200, "duplicate")
    assert again.json()["leaf_hash"] == first.json()["leaf_hash"]
    other = decide(api, {"verification_id": vid, "decision": "reordered", "reason": "emergency"})
    assert other.status_code == 409, other.text
    assert ran[0] is True and count(api, Decision) == 1 and stream_records(api) == 1


def test_a_refused_statement_writes_nothing_and_falls_back(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """An anonymous verification decided first for one hospital, then by a doctor of another: the second
    statement violates the index row's key and writes nothing — no record in the second stream, no pending leaf —
    and ``Store.submit`` answers the 409 it always did."""
    ran = statements(api, monkeypatch)
    vid = verification(api)
    assert decide(api, {"verification_id": vid, "decision": "recognised"}, hospital="qd-002").status_code == 201
    pending = count(api, PendingLeaf)
    second = decide(api, {"verification_id": vid, "decision": "recognised"}, hospital="gz-001")
    assert second.status_code == 409 and second.json()["type"].endswith("already-decided"), second.text
    assert ran == [True, False]
    assert stream_records(api, "gz-001") == 0 and count(api, PendingLeaf) == pending
    assert count(api, Decision) == 1 and count(api, Verification) == 1


def test_a_statement_without_its_verification_writes_nothing(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A verification that is neither in this process's memory nor in the database: the index row's foreign key
    refuses the statement, and nothing of the record is left (``write_new`` answers None, for the fallback)."""
    ran = statements(api, monkeypatch)
    assert decide(api, {"verification_id": verification(api), "decision": "recognised"}).status_code == 201
    records, pending = stream_records(api), count(api, PendingLeaf)
    now = api.ledger.clock()
    facts = DecisionFacts(new_id(now), "qd-002", None, now, now, "gz-001", "ref", 1, "authentic", "recognise", (),
                          "clinical-biochemistry", (), "CNY", "recognised", None, None)
    assert api.ledger.events.write_new(facts, facts.record()) is None
    assert ran == [True, False]
    assert (stream_records(api), count(api, PendingLeaf), count(api, Decision)) == (records, pending, 1)


def test_a_failed_statement_leaves_its_verification_to_the_buffer(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The statement claimed the verification from the buffer, the buffer wrote in the meantime (leaving it out),
    then the statement failed: the verification is queued again and written, not lost."""
    events, store = api.ledger.events, api.ledger.store
    events.start_buffering(interval=3600)
    try:
        vid = verification(api)

        def broken(sql: str, args: Any) -> list[Any]:
            events.flush()  # the buffer writes between the claim and the statement
            raise RuntimeError("the database went away")

        monkeypatch.setattr(store, "write_alone", broken)
        with pytest.raises(RuntimeError, match="went away"):
            decide(api, {"verification_id": vid, "decision": "recognised"})
        assert count(api, Verification) == 0
        events.flush()
        assert count(api, Verification) == 1 and count(api, Decision) == 0 and stream_records(api) == 0
    finally:
        events.close()
