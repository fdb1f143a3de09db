"""Submission, versions, receipts and batches over HTTP: all-or-nothing, idempotent, strict JSON, roles."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from mrledger.ledger import verify_receipt
from mrledger.store.models import AccessLog, RecordVersion
from tests.harness import Api
from tests.http.test_hospitals import assert_problem

URL = "/v1/hospitals/{}/results"


def record(i: int, hospital: str = "gz-001", version: int = 1, value: float = 5.0, **kw: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "hospital_id": hospital, "result_id": f"R{i}", "version": version, "kind": "lab",
        "code": {"system": "http://loinc.org", "code": "2345-7"}, "subject": {"value": f"P{i}"},
        "effective": "2024-05-01T07:00:00Z", "issued": f"2024-05-0{version}T07:30:00Z", "status": "final",
        "content": {"type": "observations", "observations": [
            {"code": {"system": "http://loinc.org", "code": "2345-7"}, "value": value, "unit": "mmol/L"}]},
    }
    if version > 1:
        obj.update(supersedes=version - 1, status="corrected")
    obj.update(kw)
    return obj


def submit(api: Api, body: Any, hospital: str = "gz-001", role: str | None = None) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return api.client.post(URL.format(hospital), content=data, headers={
        "content-type": "application/json", **api.auth(role or f"hospital:{hospital}")})


def stored(api: Api) -> int:
    with api.ledger.store.engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(RecordVersion)).scalar_one())


def test_single_and_list_bodies(api: Api) -> None:
    one = submit(api, record(1))
    assert one.status_code == 202, one.text
    body = one.json()
    assert body["hospital_id"] == "gz-001" and body["accepted"] == 1 and body["duplicates"] == 0
    [r] = body["results"]
    assert r["result_id"] == "R1" and r["version"] == 1 and r["status"] == "accepted" and len(r["leaf_hash"]) == 64
    many = submit(api, {"records": [record(i) for i in range(1, 6)]})
    assert many.status_code == 202
    assert (many.json()["accepted"], many.json()["duplicates"]) == (4, 1)
    assert many.json()["results"][0] == {**r, "status": "duplicate"}  # same content → same leaf back
    assert stored(api) == 5


def test_thousand_is_the_limit_and_nothing_is_written(api: Api) -> None:
    too_many = submit(api, {"records": [record(i) for i in range(1001)]})
    body = assert_problem(too_many, 422, "invalid-submission")
    assert "1000" in body["detail"]
    assert_problem(submit(api, {"records": []}), 422, "invalid-submission")
    assert stored(api) == 0
    assert submit(api, {"records": [record(i) for i in range(1000)]}).json()["accepted"] == 1000


def test_bad_record_names_index_and_field_and_writes_nothing(api: Api) -> None:
    records = [record(i) for i in range(5)]
    records[3]["content"]["observations"][0]["value"] = [1]
    body = assert_problem(submit(api, {"records": records}), 422, "invalid-record")
    assert body["field"] == "records[3].content.observations.0.value"
    missing = [record(0), {k: v for k, v in record(1).items() if k != "issued"}]
    assert assert_problem(submit(api, {"records": missing}), 422, "invalid-record")["field"] == "records[1].issued"
    single = assert_problem(submit(api, record(1, kind="x-ray")), 422, "invalid-record")
    assert single["field"] == "kind"
    assert stored(api) == 0


def test_record_of_another_hospital_is_refused(api: Api) -> None:
    body = assert_problem(submit(api, {"records": [record(0), record(1, hospital="qd-002")]}), 422, "invalid-record")
    assert body["field"] == "records[1].hospital_id"
    assert stored(api) == 0


def test_only_the_hospitals_own_token_submits(api: Api) -> None:
    assert_problem(submit(api, record(1), role="hospital:qd-002"), 403, "forbidden")
    for role in ("admin", "doctor", "auditor"):
        assert_problem(submit(api, record(1), role=role), 403, "forbidden")
    no_token = api.client.post(URL.format("gz-001"), json=record(1))
    assert_problem(no_token, 401, "unauthenticated")
    assert no_token.headers["www-authenticate"] == "Bearer"
    assert stored(api) == 0


@pytest.mark.parametrize("raw", [
    b'{"records": [', b"", b"[1, 2",
    json.dumps(record(1)).replace('"kind": "lab"', '"kind": "lab", "kind": "ecg"').encode(),
    json.dumps(record(1)).replace("5.0", "NaN").encode(),
    json.dumps(record(1)).encode() + b" {}",
])
def test_malformed_json_is_400(api: Api, raw: bytes) -> None:
    assert_problem(submit(api, raw), 400, "malformed")
    assert stored(api) == 0


def test_conflict_is_409_with_keys_and_writes_nothing(api: Api) -> None:
    submit(api, record(1))
    conflict = submit(api, {"records": [record(2), record(1, value=9.9)]})
    body = assert_problem(conflict, 409, "conflict")
    assert body["keys"] == [{"hospital_id": "gz-001", "result_id": "R1", "version": 1}]
    assert stored(api) == 1
    lineage = submit(api, record(7, version=2))
    assert_problem(lineage, 422, "lineage")


def test_versions_listing_and_access_log(api: Api) -> None:
    submit(api, record(1))
    api.ledger.store.seal("gz-001", 100)
    submit(api, record(1, version=2, value=6.1))
    for role in ("hospital:gz-001", "auditor", "admin"):
        got = api.client.get(f"{URL.format('gz-001')}/R1", headers=api.auth(role))
        assert got.status_code == 200, got.text
    body = got.json()
    assert body["hospital_id"] == "gz-001" and body["result_id"] == "R1"
    v1, v2 = body["versions"]
    assert (v1["version"], v1["status"], v1["supersedes"], v1["batch_seq"], v1["leaf_index"], v1["anchor_status"]) \
        == (1, "final", None, 1, 0, "sealed")
    assert (v2["version"], v2["status"], v2["supersedes"], v2["batch_seq"], v2["anchor_status"]) \
        == (2, "corrected", 1, None, "pending")
    assert len(v1["leaf_hash"]) == 64 and v1["accepted_at"]
    assert_problem(api.client.get(f"{URL.format('gz-001')}/R1", headers=api.auth("hospital:qd-002")), 403,
                   "forbidden")
    assert_problem(api.client.get(f"{URL.format('gz-001')}/R1"), 401, "unauthenticated")
    assert_problem(api.client.get(f"{URL.format('gz-001')}/nope", headers=api.auth("auditor")), 404, "not-found")
    # A doctor cannot probe ids: held and never-held answer alike, 403 (issue 14, finding 8).
    for rid in ("R1", "nope"):
        assert_problem(api.client.get(f"{URL.format('gz-001')}/{rid}", headers=api.auth("doctor")), 403, "forbidden")
    entries = api.ledger.access.entries(hospital_id="gz-001")
    lookups = [e for e in entries if e.action == "lookup"]
    assert len(lookups) == 3 and {e.role for e in lookups} == {"hospital:gz-001", "auditor", "admin"}
    assert all(e.result_id == "R1" and e.verdict is None for e in lookups)


def test_receipt_pending_states_and_roles(api: Api) -> None:
    submit(api, record(1))
    url = f"{URL.format('gz-001')}/R1/receipt"
    pending = assert_problem(api.client.get(url, headers=api.auth("hospital:gz-001")), 409, "receipt-pending")
    assert pending["anchor_status"] == "pending"
    api.ledger.store.seal("gz-001", 100)
    sealed = assert_problem(api.client.get(url, headers=api.auth("auditor")), 409, "receipt-pending")
    assert sealed["anchor_status"] == "sealed"
    assert_problem(api.client.get(url, headers=api.auth("doctor")), 403, "forbidden")
    assert_problem(api.client.get(url + "?version=2", headers=api.auth("admin")), 404, "not-found")
    assert_problem(api.client.get(url + "?version=0", headers=api.auth("admin")), 422, "validation")
    assert_problem(api.client.get(f"{URL.format('gz-001')}/R9/receipt", headers=api.auth("admin")), 404,
                   "not-found")


def test_batch_endpoint(api: Api) -> None:
    accepted = submit(api, {"records": [record(i) for i in range(3)]}).json()["results"]
    head = api.ledger.store.seal("gz-001", 100)
    assert head is not None
    got = api.client.get("/v1/hospitals/gz-001/batches/1", headers=api.auth("hospital:gz-001"))
    assert got.status_code == 200
    body = got.json()
    assert (body["seq"], body["size"], body["root"]) == (1, 3, head.root.hex())
    assert body["leaf_hashes"] == [a["leaf_hash"] for a in accepted]
    assert body["anchor"]["status"] == "sealed" and body["anchor"]["confirmations"] is None
    assert api.client.get("/v1/hospitals/gz-001/batches/1", headers=api.auth("auditor")).status_code == 200
    assert_problem(api.client.get("/v1/hospitals/gz-001/batches/1", headers=api.auth("doctor")), 403, "forbidden")
    assert_problem(api.client.get("/v1/hospitals/gz-001/batches/1", headers=api.auth("hospital:qd-002")), 403,
                   "forbidden")
    assert_problem(api.client.get("/v1/hospitals/gz-001/batches/2", headers=api.auth("admin")), 404, "not-found")
    assert_problem(api.client.get("/v1/hospitals/gz-001/batches/0", headers=api.auth("admin")), 422, "validation")


@pytest.mark.anvil
def test_receipt_after_anchoring_verifies(chain_api: Api) -> None:
    api = chain_api
    leaf = submit(api, record(1)).json()["results"][0]["leaf_hash"]
    url = f"{URL.format('gz-001')}/R1/receipt"
    assert assert_problem(api.client.get(url, headers=api.auth("hospital:gz-001")), 409,
                          "receipt-pending")["anchor_status"] == "pending"
    api.anchor_all()
    got = api.client.get(url, headers=api.auth("hospital:gz-001"))
    assert got.status_code == 200 and got.headers["content-type"] == "application/json"
    receipt = got.json()
    assert receipt["format"] == "mrl-receipt/1" and receipt["leaf"]["hash"] == leaf and receipt["anchor"]
    verdict = verify_receipt(got.content)
    assert verdict.status == "valid", verdict.checks
    batch = api.client.get("/v1/hospitals/gz-001/batches/1", headers=api.auth("auditor")).json()
    anchor = batch["anchor"]
    assert anchor["status"] == "confirmed" and anchor["confirmations"] >= 1
    assert anchor["tx_hash"] == receipt["anchor"]["tx_hash"] and anchor["chain_id"] == receipt["anchor"]["chain_id"]
    versions = api.client.get(f"{URL.format('gz-001')}/R1", headers=api.auth("auditor")).json()["versions"]
    assert versions[0]["anchor_status"] == "confirmed"
    with api.ledger.store.engine.connect() as c:
        actions = list(c.execute(select(AccessLog.action)).scalars())
    assert "receipt" in actions
