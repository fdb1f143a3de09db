"""The audit check of the KPIs (service/kpi_audit.py, GET /v1/audit/decisions): decisions and encounters altered,
dropped or added in the database after they were committed are found. Database states the service never
produces are made with SQL, because detecting exactly those is what the check is for. The first test runs the
whole path over a real chain: verify → authentic and recognised → decision → sealed and anchored → altered.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from mrledger.ledger import verify_receipt
from mrledger.service.decisions import new_id, result_ref
from mrledger.store import kpi_rollup
from mrledger.store.decisions import VerificationRow
from mrledger.store.events import ItemRef
from tests.harness import Api
from tests.store.test_repository import rec

GLUCOSE = ItemRef("http://loinc.org", "2345-7", "clinical-biochemistry")


def sql(api: Api, statement: str, **params: object) -> None:
    with api.ledger.store.engine.begin() as conn:
        conn.execute(text(statement), params)


def doctor(api: Api, hospital: str = "qd-002") -> dict[str, str]:
    role = f"doctor:{hospital}"
    if role not in api.tokens:
        api.tokens[role] = api.ledger.access.create_token(role, "test doctor", api.ledger.clock())
    return api.auth(role)


def audit(api: Api, **params: str) -> dict[str, Any]:
    r = api.client.get("/v1/audit/decisions", params=params, headers=api.auth("auditor"))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def recognised(api: Api) -> str:
    """A recognised decision of qd-002 on a verification the node recorded as ``recognise``."""
    now = api.ledger.clock()
    vid = new_id(now)
    api.ledger.events.remember(VerificationRow(vid, now, None, None, "gz-001",
                                               result_ref(api.ledger.regional_key, "gz-001", "R1"), 1, "authentic",
                                               "recognise", (), "clinical-biochemistry", (GLUCOSE,)))
    r = api.client.post("/v1/decisions", json={"verification_id": vid, "decision": "recognised"}, headers=doctor(api))
    assert r.status_code == 201, r.text
    return vid


def encounter(api: Api, eid: str = "E1") -> None:
    r = api.client.post("/v1/encounters", headers=api.auth("hospital:qd-002"), json={
        "hospital_id": "qd-002", "encounters": [{"encounter_id": eid, "patient": {"value": "P1"},
                                                 "seen_at": "2024-05-02T08:00:00Z", "retrieved": True}]})
    assert r.status_code == 202, r.text


@pytest.mark.anvil
def test_a_decision_altered_after_anchoring_is_detected(chain_api: Api) -> None:
    api = chain_api
    ledger = api.ledger
    from mrledger.store.eligibility import Eligibility

    Eligibility(ledger.store).grant("gz-001", "clinical-biochemistry", "EQA-1", ledger.clock())
    fresh = rec(1, issued=ledger.clock().isoformat(), effective=ledger.clock().isoformat())
    ledger.intake.submit("gz-001", [fresh])
    api.anchor_all()
    assert api.node is not None
    api.node.rpc("anvil_mine", "0x2")
    v = api.client.post("/v1/verify", json={"hospital_id": "gz-001", "result_id": "R1", "record": fresh.to_obj()},
                        headers=doctor(api)).json()
    assert v["verdict"] == "authentic" and v["recognition"]["decision"] == "recognise", v
    r = api.client.post("/v1/decisions", json={"verification_id": v["verification_id"], "decision": "recognised"},
                        headers=doctor(api))
    assert r.status_code == 201, r.text
    encounter(api)
    assert ledger.store.seal("qd-002.events", 100) is not None
    api.anchor_all()
    before = audit(api)
    assert before["ok"] is True, before["problems"]
    (stream,) = before["streams"]
    assert stream["stream"] == "qd-002.events" and stream["chain_checked"] is True
    assert (stream["records"], stream["decisions"], stream["encounters"], stream["confirmed_batches"]) == (2, 1, 1, 1)
    # A decision has a receipt like any result: an auditor can prove it offline and against the chain.
    got = api.client.get(f"/v1/hospitals/qd-002.events/results/decision:{v['verification_id']}/receipt",
                         headers=api.auth("auditor"))
    assert got.status_code == 200, got.text
    assert verify_receipt(got.content).status == "valid"
    kpi = api.client.get("/v1/kpis", headers=api.auth("auditor")).json()
    assert kpi["sources"]["batches"] == [
        {"stream": "qd-002.events", "first_seq": 1, "last_seq": 1, "anchor_status": "confirmed"}]
    assert kpi["totals"]["current"]["recognised"] == 1

    # Someone turns the recognition into a reorder in the KPI table (and so changes what counts for money).
    sql(api, "UPDATE decisions SET decision = 'reordered', reason = 'emergency'")
    after = audit(api)
    assert after["ok"] is False
    # The report counted the batch before the edit: its counts no longer match the index either, nor do the day and
    # month sums of its hospital (seq null: the stream's rollup as a whole).
    assert [(p["kind"], p["seq"]) for p in after["problems"] if p["kind"] == "rollup-mismatch"] == [
        ("rollup-mismatch", 1), ("rollup-mismatch", None)]
    (problem,) = [p for p in after["problems"] if p["kind"] != "rollup-mismatch"]
    assert problem["kind"] == "altered" and problem["verification_id"] == v["verification_id"]
    assert problem["fields"] == ["data.decision", "data.reason"] and problem["seq"] == 1

    # Rewriting the stream's batch too does not help: its root no longer matches the registry's.
    sql(api, "UPDATE decisions SET decision = 'recognised', reason = NULL")
    assert audit(api)["ok"] is True
    sql(api, "UPDATE batches SET root = :r WHERE hospital_id = 'qd-002.events'", r=b"\x00" * 32)
    kinds = {p["kind"] for p in audit(api)["problems"]}
    assert "chain-mismatch" in kinds


def test_an_altered_decision_is_detected_without_a_chain(api: Api) -> None:
    vid = recognised(api)
    api.ledger.store.seal("qd-002.events", 100)
    assert audit(api)["ok"] is True
    sql(api, "UPDATE decisions SET items = :i WHERE verification_id = :v",
        i='[{"category":"ct","code":"ct-head","price_minor":20000,"system":"urn:mrledger:catalogue:imaging"}]', v=vid)
    (problem,) = audit(api)["problems"]
    assert problem["kind"] == "altered" and problem["fields"] == ["data.items"]


def test_records_sealed_while_the_audit_reads_them_are_not_unindexed(api: Api, monkeypatch: pytest.MonkeyPatch
                                                                     ) -> None:
    """The audit reads a stream's pending records, then their index rows: the sealer sealing them in between
    must not make them read as missing from the KPI tables."""
    recognised(api)
    encounter(api)
    store = api.ledger.store
    read = store.opened_pending

    def then_sealed(*args: Any, **kwargs: Any) -> Any:
        leaves = read(*args, **kwargs)
        store.seal("qd-002.events", 100)  # the sealer, between the audit's two reads
        return leaves

    monkeypatch.setattr(store, "opened_pending", then_sealed)
    answer = audit(api)
    assert answer["ok"] is True, answer["problems"]


def test_the_rollup_check_reads_batches_in_chunks(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """``batch_facts`` asks a bounded number of batches per statement (a city stream has tens of thousands, past
    PostgreSQL's parameter limit): with one batch per statement the check still sees every batch."""
    monkeypatch.setattr(kpi_rollup, "_PAIRS", 1)
    for eid in ("E1", "E2", "E3"):
        encounter(api, eid)
        api.ledger.store.seal("qd-002.events", 100)
    rollup = kpi_rollup.KpiRollup(api.ledger.store)
    assert rollup.roll_up() == 3  # as the sealer counts them
    assert audit(api)["ok"] is True
    assert rollup.check("qd-002.events") == []  # every batch read by the check itself, one per statement
    sql(api, "UPDATE kpi_rollup SET n = n + 1 WHERE id = (SELECT max(id) FROM kpi_rollup)")
    assert "rollup-mismatch" in {p["kind"] for p in audit(api)["problems"]}
    assert [seq for seq, _ in rollup.check("qd-002.events")] == [3]


@pytest.mark.parametrize("altered", [False, True])
def test_a_batch_counted_after_the_audit_read_its_rows_is_checked_too(api: Api, monkeypatch: pytest.MonkeyPatch,
                                                                     altered: bool) -> None:
    """The audit hands the rollup check each batch's sums from the index rows it read range by range (not read a
    second time); a batch sealed and counted after those reads is read by the check itself, and checked."""
    store = api.ledger.store
    encounter(api, "E1")
    store.seal("qd-002.events", 100)
    assert kpi_rollup.KpiRollup(store).roll_up() == 1
    encounter(api, "E2")
    read = store.opened_pending

    def then_sealed_and_counted(*args: Any, **kwargs: Any) -> Any:
        leaves = read(*args, **kwargs)
        if store.seal("qd-002.events", 100) is not None:  # the sealer, after the audit's ranges of batches
            assert kpi_rollup.KpiRollup(store).roll_up() == 1
            if altered:
                sql(api, "UPDATE kpi_rollup SET n = n + 1 WHERE seq = 2")
        return leaves

    monkeypatch.setattr(store, "opened_pending", then_sealed_and_counted)
    problems = [(p["kind"], p["seq"]) for p in audit(api)["problems"]]
    assert problems == ([("rollup-mismatch", 2)] if altered else [])


def test_an_altered_encounter_is_detected(api: Api) -> None:
    encounter(api)
    api.ledger.store.seal("qd-002.events", 100)
    sql(api, "UPDATE encounters SET retrieved = :f", f=False)
    (problem,) = audit(api)["problems"]
    assert problem["kind"] == "altered" and problem["fields"] == ["data.retrieved"]
    assert problem["hospital_id"] == "qd-002" and len(problem["encounter_ref"]) == 64


def test_a_dropped_decision_is_detected(api: Api) -> None:
    recognised(api)
    encounter(api)
    sql(api, "DELETE FROM decisions")
    (problem,) = audit(api)["problems"]
    assert problem["kind"] == "unindexed" and problem["seq"] is None  # found even before sealing


def test_an_added_decision_is_detected(api: Api) -> None:
    """A KPI row pointing at a record that is not its own: here the encounter's."""
    vid = recognised(api)
    encounter(api)
    api.ledger.store.seal("qd-002.events", 100)
    sql(api, "UPDATE decisions SET record_version_id = (SELECT record_version_id FROM encounters) "
             "WHERE verification_id = :v", v=vid)
    kinds = sorted(p["kind"] for p in audit(api)["problems"])
    assert kinds == ["altered", "unindexed"]  # points elsewhere; its own record is no longer counted


def test_a_rewritten_record_is_detected(api: Api) -> None:
    """Rewriting the row's record in the store as well leaves the leaf, and the root, unchanged."""
    vid = recognised(api)
    api.ledger.store.seal("qd-002.events", 100)
    sql(api, "UPDATE decisions SET decision = 'reordered', reason = 'emergency' WHERE verification_id = :v", v=vid)
    sql(api, "UPDATE batches SET root = :r WHERE hospital_id = 'qd-002.events'", r=b"\x01" * 32)
    kinds = sorted(p["kind"] for p in audit(api)["problems"])
    assert "altered" in kinds and "root-mismatch" in kinds


def test_one_hospital_and_who_may_audit(api: Api) -> None:
    recognised(api)
    assert audit(api, hospital="qd-002")["checked_records"] == 1
    assert audit(api, hospital="gz-001") == {"ok": True, "checked_records": 0, "streams": [], "problems": []}
    assert api.client.get("/v1/audit/decisions", params={"hospital": "nope"},
                          headers=api.auth("auditor")).status_code == 404
    for role in ("doctor", "hospital:qd-002"):
        assert api.client.get("/v1/audit/decisions", headers=api.auth(role)).status_code == 403
    assert api.client.get("/v1/audit/decisions").status_code == 401


def test_the_batches_index_rows_read_on_the_cursor_are_the_orms_facts(api: Api) -> None:
    """``EventAudit.indexed_in_batches`` reads on the DB-API cursor (store/event_audit.py, ``_placed``): the facts
    it makes — datetimes, booleans, token ids, items and codes — equal those of the same rows read through
    SQLAlchemy (``indexed_pending``, by the same records' ids), on both databases; only the batches asked for."""
    vids = [recognised(api) for _ in range(3)]
    encounter(api, "E1")
    encounter(api, "E2")
    store, index = api.ledger.store, api.ledger.events
    first = store.seal("qd-002.events", 100)
    recognised(api)
    encounter(api, "E3")
    store.seal("qd-002.events", 100)
    with store.read() as s:
        ids = [int(i) for i in s.execute(text(
            "SELECT record_version_id FROM batch_leaves WHERE hospital_id = 'qd-002.events' AND seq = :seq"),
            {"seq": first.seq}).scalars()]
    fast = index.indexed_in_batches("qd-002.events", first.seq, first.seq)
    orm = index.indexed_pending("qd-002.events", ids)
    assert len(fast) == 5 and sorted(map(repr, fast)) == sorted(map(repr, orm))  # repr: True is not 1, types too
    assert {f.verification_id for _, f in fast if hasattr(f, "verification_id")} == set(vids)
    assert len(index.indexed_in_batches("qd-002.events", first.seq, first.seq + 1)) == 7
