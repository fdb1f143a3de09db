"""Recognition decisions and encounters (service/decisions.py, http/routes/decisions.py): who may record them, the
rules a decision obeys, idempotency, and that nothing is written when a request is refused. Verifications that
need a specific recognition verdict are put in the verification log directly (``EventIndex.remember``): without
a chain the verifier never answers ``recognise``; the end-to-end path over a real chain is in test_kpi_audit.py.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from mrledger.service.decisions import (
    RegionalKeyError,
    encounter_ref,
    load_regional_key,
    new_id,
    patient_hash,
    result_ref,
)
from mrledger.store.decisions import EventIndex, VerificationRow
from mrledger.store.events import DecisionFacts, ItemRef, events_stream
from mrledger.store.models import Decision, Encounter, Verification
from tests.harness import Api
from tests.store.test_repository import rec

GLUCOSE = ItemRef("http://loinc.org", "2345-7", "clinical-biochemistry")
CT_HEAD = ItemRef("urn:mrledger:catalogue:imaging", "ct-head", "ct")


def doctor(api: Api, hospital: str = "qd-002") -> dict[str, str]:
    role = f"doctor:{hospital}"
    if role not in api.tokens:
        api.tokens[role] = api.ledger.access.create_token(role, "test doctor", api.ledger.clock())
    return api.auth(role)


def verification(api: Api, recognition: str = "recognise", items: tuple[ItemRef, ...] = (GLUCOSE,),
                 reasons: tuple[str, ...] = (), token_id: int | None = None, role: str | None = None,
                 verdict: str = "authentic") -> str:
    """A verification as the node records it when it answers (what a decision is checked against)."""
    now = api.ledger.clock()
    vid = new_id(now)
    api.ledger.events.remember(VerificationRow(
        vid, now, token_id, role, "gz-001", result_ref(api.ledger.regional_key, "gz-001", "R1"), 1,
        verdict, recognition, reasons, items[0].category if items else None, items))
    return vid


def decide(api: Api, body: dict[str, Any], hospital: str = "qd-002") -> Any:
    return api.client.post("/v1/decisions", json=body, headers=doctor(api, hospital))


def count(api: Api, model: Any) -> int:
    with api.ledger.store.read() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def stream_records(api: Api, hospital: str = "qd-002") -> int:
    with api.ledger.store.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM record_versions WHERE hospital_id = :h"),
                                {"h": events_stream(hospital)}).scalar_one())


# -- verification ids -----------------------------------------------------------------------------------


def test_every_verification_answer_carries_a_stored_verification_id(api: Api) -> None:
    api.ledger.intake.submit("gz-001", [rec(1)])
    body = {"hospital_id": "gz-001", "result_id": "R1", "record": rec(1).to_obj()}
    r = api.client.post("/v1/verify", json=body, headers=doctor(api))
    assert r.status_code == 200, r.text
    vid = r.json()["verification_id"]
    assert len(vid) == 26 and set(vid) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    stored = api.ledger.events.verification(vid)
    assert stored is not None and (stored.hospital_id, stored.version, stored.verdict) == ("gz-001", 1, "pending")
    assert stored.result_ref == result_ref(api.ledger.regional_key, "gz-001", "R1")  # never the clear result id
    assert stored.recognition == "reorder" and "anchor-pending" in stored.reasons
    again = api.client.post("/v1/verify", json=body, headers=doctor(api)).json()["verification_id"]
    assert again != vid  # one id per verification


def test_ulids_sort_by_time_and_do_not_repeat() -> None:
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    ids = [new_id(t0 + timedelta(milliseconds=i)) for i in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 50
    # 48 bits of milliseconds, then 80 random bits (github.com/ulid/spec): zero randomness at the epoch + 1 ms.
    assert new_id(datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC), lambda n: bytes(n)) == "0" * 9 + "1" + "0" * 16


# -- decisions ------------------------------------------------------------------------------------------


def test_a_recognised_decision_is_committed_to_the_doctors_hospital_stream(api: Api) -> None:
    vid = verification(api)
    r = decide(api, {"verification_id": vid, "decision": "recognised"})
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["hospital_id"] == "qd-002" and out["stream"] == "qd-002.events" and out["status"] == "accepted"
    assert out["recognition"] == "recognise" and out["tests_avoided"] == 1 and out["money_saved"] == 5.0
    assert out["items"] == [{"system": "http://loinc.org", "code": "2345-7", "category": "clinical-biochemistry",
                             "price": 5.0}]
    # The stream is registered like a hospital and the record is an ordinary pending record of it.
    assert "qd-002.events" in dict(api.ledger.store.hospitals())
    assert api.ledger.store.pending_count("qd-002.events") == 1
    committed = api.ledger.store.record("qd-002.events", f"decision:{vid}")
    assert committed.content.type == "event" and committed.content.event == "recognition-decision"
    assert DecisionFacts.from_record(committed) == api.ledger.events.decision(vid)
    assert api.ledger.store.versions("qd-002.events", f"decision:{vid}")[0].leaf_hash.hex() == out["leaf_hash"]


def test_the_same_decision_again_is_a_duplicate_and_another_is_a_conflict(api: Api) -> None:
    vid = verification(api)
    first = decide(api, {"verification_id": vid, "decision": "reordered", "reason": "emergency"})
    assert first.status_code == 201, first.text
    again = decide(api, {"verification_id": vid, "decision": "reordered", "reason": "emergency"})
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert again.json()["leaf_hash"] == first.json()["leaf_hash"]
    other = decide(api, {"verification_id": vid, "decision": "recognised"})
    assert other.status_code == 409 and other.json()["type"].endswith(":already-decided")
    assert count(api, Decision) == 1 and stream_records(api) == 1


def test_a_decision_for_an_unknown_verification_is_a_404(api: Api) -> None:
    r = decide(api, {"verification_id": "01JD3S4V6Q8E2N7W0X5K9C1B2A", "decision": "recognised"})
    assert r.status_code == 404 and r.json()["type"] == "urn:mrledger:problem:unknown-verification"
    assert r.headers["content-type"] == "application/problem+json"
    assert count(api, Decision) == 0 and stream_records(api) == 0


def test_a_reorder_of_a_recognise_verdict_needs_a_reason(api: Api) -> None:
    vid = verification(api)
    r = decide(api, {"verification_id": vid, "decision": "reordered"})
    assert r.status_code == 422 and r.json()["type"].endswith(":reason-required"), r.text
    assert count(api, Decision) == 0 and stream_records(api) == 0
    assert "qd-002.events" not in dict(api.ledger.store.hospitals())  # nothing written, not even the stream


def test_a_reorder_of_a_reorder_verdict_needs_no_reason(api: Api) -> None:
    vid = verification(api, "reorder", reasons=("too-old",))
    r = decide(api, {"verification_id": vid, "decision": "reordered"})
    assert r.status_code == 201, r.text
    assert r.json()["reason"] is None and r.json()["rule_reasons"] == ["too-old"] and r.json()["tests_avoided"] == 0


@pytest.mark.parametrize(("body", "problem"), [
    ({"decision": "recognised"}, "decision-not-allowed"),  # on a reorder verdict
    ({"decision": "reordered", "reason": "cosmic-rays"}, "unknown-reason"),
    ({"decision": "reordered", "reason": "other"}, "detail-required"),
    ({"decision": "reordered", "reason": "other", "detail": "   "}, "detail-required"),
    ({"decision": "reordered", "detail": "why not"}, "reason-required"),
], ids=["recognised-against-reorder", "unknown-reason", "other-without-detail", "blank-detail",
        "detail-without-reason"])
def test_refused_decisions_write_nothing(api: Api, body: dict[str, Any], problem: str) -> None:
    vid = verification(api, "reorder", reasons=("too-old",))
    r = decide(api, {"verification_id": vid, **body})
    assert r.status_code == 422 and r.json()["type"] == f"urn:mrledger:problem:{problem}", r.text
    assert count(api, Decision) == 0 and stream_records(api) == 0


def test_a_reason_with_a_recognised_result_is_refused(api: Api) -> None:
    r = decide(api, {"verification_id": verification(api), "decision": "recognised", "reason": "emergency"})
    assert r.status_code == 422 and r.json()["type"].endswith(":reason-not-applicable")


def test_other_with_a_detail_is_recorded(api: Api) -> None:
    vid = verification(api)
    r = decide(api, {"verification_id": vid, "decision": "reordered", "reason": "other",
                     "detail": "  Report illegible  "})
    assert r.status_code == 201 and r.json()["detail"] == "Report illegible"


def test_only_an_affiliated_doctor_may_decide(api: Api) -> None:
    vid = verification(api)
    r = api.client.post("/v1/decisions", json={"verification_id": vid, "decision": "recognised"},
                        headers=api.auth("doctor"))
    assert r.status_code == 403 and r.json()["type"].endswith(":not-affiliated")
    for role in ("admin", "auditor", "hospital:qd-002"):
        r = api.client.post("/v1/decisions", json={"verification_id": vid, "decision": "recognised"},
                            headers=api.auth(role))
        assert r.status_code == 403, role
    assert count(api, Decision) == 0


def test_a_doctors_verification_is_decided_with_her_own_token(api: Api) -> None:
    mine = doctor(api, "qd-002")
    token_id = api.ledger.access.authenticate(mine["Authorization"].removeprefix("Bearer "))
    assert token_id is not None
    vid = verification(api, token_id=token_id.token_id, role="doctor:qd-002")
    other = decide(api, {"verification_id": vid, "decision": "recognised"}, hospital="gz-001")
    assert other.status_code == 403 and other.json()["type"].endswith(":not-your-verification")
    assert decide(api, {"verification_id": vid, "decision": "recognised"}).status_code == 201


def test_a_decision_whose_index_row_was_lost_is_indexed_when_retried(api: Api) -> None:
    """A crash between committing the record and indexing it (store/decisions.py) heals on the retry."""
    vid = verification(api)
    assert decide(api, {"verification_id": vid, "decision": "recognised"}).status_code == 201
    with api.ledger.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM decisions"))
    r = decide(api, {"verification_id": vid, "decision": "recognised"})
    assert r.status_code == 200 and r.json()["status"] == "duplicate", r.text
    assert api.ledger.events.decision(vid) is not None and count(api, Decision) == 1


def test_prices_are_committed_as_they_were_when_decided(api: Api) -> None:
    vid = verification(api, items=(CT_HEAD,))
    assert decide(api, {"verification_id": vid, "decision": "recognised"}).json()["money_saved"] == 200.0
    decided = api.ledger.events.decision(vid)
    assert decided is not None and decided.items[0].price_minor == 20000 and decided.amount_minor == 20000


# -- encounters ----------------------------------------------------------------------------------------


def encounter(eid: str = "E1", retrieved: bool = True, **kw: Any) -> dict[str, Any]:
    return {"encounter_id": eid, "patient": {"system": "urn:cn:resident-id", "value": "SYNTHETIC-440106-0001"},
            "seen_at": "2024-05-02T08:55:00+08:00", "retrieved": retrieved, **kw}


def report(api: Api, encounters: list[dict[str, Any]], hospital: str = "qd-002", role: str = "hospital:qd-002") -> Any:
    return api.client.post("/v1/encounters", json={"hospital_id": hospital, "encounters": encounters},
                           headers=api.auth(role))


def test_encounters_are_committed_with_the_patient_only_as_a_keyed_hash(api: Api, tmp_path: Path) -> None:
    r = report(api, [encounter("E1", categories=["ct", "clinical-biochemistry"]), encounter("E2", False)])
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 2 and r.json()["stream"] == "qd-002.events"
    found = api.ledger.events.encounters("qd-002", [encounter_ref(api.ledger.regional_key, "qd-002", "E1")])
    (e1,) = found.values()
    assert e1.patient_hash == patient_hash(api.ledger.regional_key, "urn:cn:resident-id", "SYNTHETIC-440106-0001")
    assert e1.categories == ("clinical-biochemistry", "ct") and e1.retrieved is True
    assert e1.seen_at == datetime(2024, 5, 2, 0, 55, tzinfo=UTC)
    record = api.ledger.store.record("qd-002.events", e1.result_key)
    assert record.subject.value == e1.patient_hash and "SYNTHETIC" not in record.to_json()
    # Nowhere in the database, in clear: not the patient, not the hospital's encounter id.
    if api.ledger.store.engine.url.get_backend_name() == "sqlite":
        db = Path(str(api.ledger.store.engine.url.database))
        blob = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
        assert b"SYNTHETIC-440106-0001" not in blob


def test_an_encounter_report_is_idempotent_and_a_changed_one_is_a_conflict(api: Api) -> None:
    assert report(api, [encounter()]).status_code == 202
    again = report(api, [encounter()])
    assert again.status_code == 202 and again.json()["duplicates"] == 1 and again.json()["accepted"] == 0
    changed = report(api, [encounter(retrieved=False)])
    assert changed.status_code == 409 and "E1" in changed.json()["detail"]
    assert count(api, Encounter) == 1 and stream_records(api) == 1


def test_a_hospital_cannot_report_another_hospitals_encounters(api: Api) -> None:
    r = report(api, [encounter()], hospital="gz-001", role="hospital:qd-002")
    assert r.status_code == 403 and r.json()["type"].endswith(":forbidden")
    for role in ("admin", "doctor", "auditor"):
        assert report(api, [encounter()], role=role).status_code == 403
    assert count(api, Encounter) == 0 and stream_records(api, "gz-001") == 0


@pytest.mark.parametrize(("items", "problem"), [
    ([encounter(categories=["pet"])], "unknown-category"),
    ([encounter(seen_at="2999-01-01T00:00:00Z")], "validation"),
    ([encounter("E1"), encounter("E1")], "validation"),
    ([encounter(seen_at="2024-05-02T08:55:00")], "validation"),  # no UTC offset
    ([encounter(retrieved=1)], "validation"),
    ([{**encounter(), "patient": {"value": "A\x00B"}}], "validation"),
], ids=["unknown-category", "future", "duplicate-id", "naive-time", "retrieved-not-bool", "control-char"])
def test_bad_encounters_are_refused_whole(api: Api, items: list[dict[str, Any]], problem: str) -> None:
    r = report(api, [encounter("OK"), *items])
    assert r.status_code == 422 and r.json()["type"] == f"urn:mrledger:problem:{problem}", r.text
    assert count(api, Encounter) == 0 and stream_records(api) == 0


def test_stream_ids_are_reserved(api: Api) -> None:
    r = api.client.post("/v1/hospitals", json={"id": "xx-003.events", "name": "Not a hospital"},
                        headers=api.auth("admin"))
    assert r.status_code == 422 and r.json()["type"].endswith(":reserved-id")
    with pytest.raises(Exception, match="event stream"):
        api.ledger.access.create_token("hospital:qd-002.events", "x", api.ledger.clock())


def test_a_long_hospital_id_gets_a_valid_stream_id() -> None:
    long_id = "h" + "x" * 63
    stream = events_stream(long_id)
    assert len(stream) == 64 and stream.endswith(".events") and stream.startswith(long_id[:43])
    assert events_stream("h" + "x" * 62 + "y") != stream


def test_verification_rows_hold_no_clear_result_id(api: Api) -> None:
    api.ledger.intake.submit("gz-001", [rec(1)])
    api.client.post("/v1/verify", json={"hospital_id": "gz-001", "result_id": "R1", "record": rec(1).to_obj()},
                    headers=doctor(api))
    with api.ledger.store.read() as s:
        row = s.scalars(select(Verification)).one()
    assert "R1" not in {row.result_ref, row.items, row.reasons}


# -- the regional key ----------------------------------------------------------------------------------


def test_patient_hash_is_hmac_sha256_of_tagged_nul_separated_parts() -> None:
    key = bytes(range(32))
    # Derivation: HMAC-SHA256(key, b"mrl-patient/1" 0x00 system 0x00 value) with the parts NFC-normalised.
    want = hmac.new(key, b"mrl-patient/1\x00urn:x\x00Jos\xc3\xa9", hashlib.sha256).hexdigest()
    assert patient_hash(key, "urn:x", "Jose\u0301") == want  # decomposed é hashes like the composed one
    assert patient_hash(key, None, "A") == hmac.new(key, b"mrl-patient/1\x00\x00A", hashlib.sha256).hexdigest()


def test_the_dev_regional_key_is_generated_0600_and_kept(tmp_path: Path) -> None:
    key = load_regional_key(None, None, tmp_path)
    path = tmp_path / "regional.key"
    assert len(key) == 32 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_regional_key(None, None, tmp_path) == key


def test_a_configured_regional_key_wins_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    assert load_regional_key("ab" * 32, None, tmp_path) == bytes.fromhex("ab" * 32)
    assert not (tmp_path / "regional.key").exists()
    with pytest.raises(RegionalKeyError, match="hex") as exc:
        load_regional_key("not-hex-" * 8, None, tmp_path)
    assert "not-hex" not in str(exc.value)  # never echoed
    with pytest.raises(RegionalKeyError, match="32 bytes"):
        load_regional_key("ab" * 8, None, tmp_path)
    (tmp_path / "k").write_text("cd" * 32)
    (tmp_path / "k").chmod(0o600)
    assert load_regional_key(None, tmp_path / "k", tmp_path) == bytes.fromhex("cd" * 32)
    with pytest.raises(RegionalKeyError, match="cannot read"):
        load_regional_key(None, tmp_path / "missing", tmp_path)


def test_serve_takes_the_configured_regional_key_and_requires_one_on_postgresql(tmp_path: Path) -> None:
    from mrledger.node.settings import Settings
    from mrledger.node.wiring import ServeError, regional_key_for

    dev = Settings(data_dir=tmp_path)
    assert regional_key_for(dev) == regional_key_for(dev) == load_regional_key(None, None, tmp_path)  # one file
    assert regional_key_for(Settings(data_dir=tmp_path, regional_key="ef" * 32)) == bytes.fromhex("ef" * 32)
    pg = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    with pytest.raises(ServeError, match="regional key must be configured"):
        regional_key_for(Settings(data_dir=tmp_path / "pg", database_url=pg))
    assert not (tmp_path / "pg" / "regional.key").exists()  # no dev key made for a shared database
    assert regional_key_for(Settings(data_dir=tmp_path, database_url=pg, regional_key="ef" * 32))
    with pytest.raises(ServeError, match="not both"):
        regional_key_for(Settings(data_dir=tmp_path, regional_key="ef" * 32, regional_key_file=tmp_path / "k"))
    with pytest.raises(ServeError, match="32 bytes"):
        regional_key_for(Settings(data_dir=tmp_path, regional_key="ef" * 8))


def test_a_verification_buffered_by_another_api_process_is_found(api: Api) -> None:
    """Two API processes of one node (MRL_API_PROCESSES) each buffer the verifications they answer: a doctor whose
    decision reaches the other process at once is not told the verification does not exist."""
    other = EventIndex(api.ledger.store)  # the second process's index over the same database
    api.ledger.events.start_buffering(interval=0.2)
    other.start_buffering(interval=0.2)
    try:
        now = api.ledger.clock()
        vid = new_id(now)
        api.ledger.events.remember(VerificationRow(
            vid, now, None, None, "gz-001", result_ref(api.ledger.regional_key, "gz-001", "R1"), 1, "authentic",
            "recognise", (), None, ()))
        found = other.verification(vid)  # not flushed by the first process yet: found after its interval
        assert found is not None and found.id == vid and found.verdict == "authentic"
        assert other.verification(new_id(now)) is None  # an unknown id is still unknown
    finally:
        other.close()
        api.ledger.events.close()


def verification_inserts(api: Api, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The rows of every INSERT into ``verifications`` sent from now on (a list that grows): through SQLAlchemy, or
    inside a decision's one statement on PostgreSQL (store/decision_write.py, on the DB-API cursor), counted when
    that statement wrote its rows."""
    sent: list[int] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO VERIFICATIONS"):
            sent.append(len(parameters) if executemany else 1)

    event.listen(api.ledger.store.engine, "before_cursor_execute", seen)
    store = api.ledger.store
    write_alone = store.write_alone

    def alone(sql: str, args: Any) -> list[Any]:
        rows = write_alone(sql, args)
        if rows and "INSERT INTO verifications" in sql:
            sent.append(1)
        return rows

    monkeypatch.setattr(store, "write_alone", alone)
    return sent


def test_a_decision_commits_its_unwritten_verification_with_it(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A doctor decides before the buffer has written the verification: the decision's one transaction writes it
    (the index row refers to it), and the buffer leaves that row out of its own write (not written twice: the
    two transactions would wait on each other's row lock)."""
    events = api.ledger.events
    events.start_buffering(interval=3600)  # the buffer will not write on its own during the test
    try:
        vid = verification(api)
        verification(api)  # another one, not decided
        assert count(api, Verification) == 0
        sent = verification_inserts(api, monkeypatch)
        r = decide(api, {"verification_id": vid, "decision": "recognised"})
        assert r.status_code == 201, r.text
        assert (count(api, Verification), count(api, Decision), stream_records(api)) == (1, 1, 1)
        assert sent == [1]
        events.flush()  # the buffered copies: the decided one is left out, the other written
        assert sent == [1, 1] and count(api, Verification) == 2
        events.flush()
        assert sent == [1, 1]
        again = decide(api, {"verification_id": vid, "decision": "recognised"})
        assert again.status_code == 200 and again.json()["status"] == "duplicate"
    finally:
        events.close()
    assert count(api, Verification) == 2


def test_a_decision_whose_index_fails_commits_nothing(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record and its index row are one transaction: a failure indexing leaves no record in the stream (and
    the retried request records the decision whole)."""
    vid = verification(api)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the index write failed")

    # Store.submit's transaction; PostgreSQL's one statement: tests/store/test_decision_write.py.
    monkeypatch.setattr(api.ledger.events, "_one_statement", False)
    monkeypatch.setattr(api.ledger.events, "add_decision", broken)
    with pytest.raises(RuntimeError, match="index write failed"):
        decide(api, {"verification_id": vid, "decision": "recognised"})
    assert (count(api, Decision), stream_records(api)) == (0, 0)
    monkeypatch.undo()
    r = decide(api, {"verification_id": vid, "decision": "recognised"})
    assert r.status_code == 201 and (count(api, Decision), stream_records(api)) == (1, 1)


def test_a_failed_decision_leaves_its_verification_to_the_buffer(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision's transaction claimed the verification from the buffer, the buffer wrote in the meantime
    (leaving it out), then the transaction failed: the verification is queued again and written, not lost."""
    events = api.ledger.events
    events.start_buffering(interval=3600)
    try:
        vid = verification(api)

        def broken(*args: Any, **kwargs: Any) -> None:
            events.flush()  # the buffer writes while the decision's transaction is open
            raise RuntimeError("the index write failed")

        monkeypatch.setattr(events, "_one_statement", False)  # as above
        monkeypatch.setattr(events, "add_decision", broken)
        with pytest.raises(RuntimeError, match="index write failed"):
            decide(api, {"verification_id": vid, "decision": "recognised"})
        assert count(api, Verification) == 0
        events.flush()
        assert count(api, Verification) == 1
        monkeypatch.undo()
        r = decide(api, {"verification_id": vid, "decision": "recognised"})
        assert r.status_code == 201 and (count(api, Verification), count(api, Decision)) == (1, 1)
    finally:
        events.close()


def test_an_anonymous_verification_decided_for_one_hospital_is_not_decided_again_for_another(api: Api) -> None:
    """A receipt verified anonymously may be decided by any affiliated doctor, once: a doctor of another hospital
    gets 409 and nothing is written to her hospital's stream (its record would be a second decision)."""
    vid = verification(api)  # no token: anonymous
    first = decide(api, {"verification_id": vid, "decision": "recognised"}, hospital="qd-002")
    assert first.status_code == 201, first.text
    other = decide(api, {"verification_id": vid, "decision": "recognised"}, hospital="gz-001")
    assert other.status_code == 409 and other.json()["type"].endswith("already-decided"), other.text
    assert (count(api, Decision), stream_records(api, "qd-002"), stream_records(api, "gz-001")) == (1, 1, 0)
