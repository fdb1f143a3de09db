"""POST /v1/verify, FHIR form: a doctor holds the resource the other hospital sent, not our record.

Real resources from ``hl7.fhir.r4.examples@4.0.1`` (Observation-f001, DiagnosticReport-f201) go in through
the hospital's own intake route (``POST /v1/hospitals/{hid}/fhir``) and come back, spelt differently, through
verification; the server must map them the same way and find the version they are.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.harness import Api
from tests.http.test_hospitals import assert_problem
from tests.http.test_verify import verify, verify_logs
from tests.ledger.formats.test_fhir import EXAMPLES
from tests.service.test_intake import needs_examples, post

HID = "gz-001"
FHIR = "application/fhir+json"

pytestmark = needs_examples


def example(name: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    return obj


def respelt(resource: dict[str, Any]) -> dict[str, Any]:
    """The same resource as another system would send it: keys reordered, ``meta`` rewritten, ``+01:00``
    times and all (pretty-printing happens on the wire: the client sends ``json.dumps(indent=2)``)."""
    out: dict[str, Any] = json.loads(json.dumps(resource, sort_keys=True))
    out["meta"] = {"lastUpdated": "2030-01-01T00:00:00Z", "versionId": "7"}
    return dict(reversed(list(out.items())))


def check(api: Api, resource: Any, role: str | None = "doctor", **extra: Any) -> Any:
    """The raw answer to the FHIR form, the body pretty-printed as a doctor's tool would paste it."""
    body = json.dumps({"hospital_id": HID, "fhir": resource, **extra}, indent=2, ensure_ascii=False)
    return api.client.post("/v1/verify", content=body, headers={"content-type": "application/json",
                                                                **(api.auth(role) if role else {})})


def ok(api: Api, resource: Any, **extra: Any) -> dict[str, Any]:
    got = check(api, resource, **extra)
    assert got.status_code == 200, got.text
    out: dict[str, Any] = got.json()
    return out


def submitted(api: Api, resource: dict[str, Any]) -> dict[str, Any]:
    got = post(api, "fhir", json.dumps(resource).encode(), FHIR)
    assert got.status_code == 202, got.text
    [result] = got.json()["results"]
    out: dict[str, Any] = result
    return out


def amended_f001() -> dict[str, Any]:
    amended = example("Observation-f001.json")
    amended["status"] = "amended"
    amended["valueQuantity"]["value"] = 6.8
    amended["issued"] = "2013-04-04T10:00:00+01:00"
    return amended


# -- without a chain ----------------------------------------------------------------------------------


def test_tokens_like_the_record_form(api: Api) -> None:
    f001 = example("Observation-f001.json")
    submitted(api, f001)
    assert_problem(check(api, f001, role=None), 401, "unauthenticated")
    assert_problem(check(api, f001, role="hospital:gz-001"), 403, "forbidden")
    assert_problem(check(api, f001, role="hospital:qd-002"), 403, "forbidden")
    for role in ("doctor", "auditor", "admin"):
        assert ok(api, f001, role=role)["verdict"] == "pending"  # submitted, not sealed: no chain here
    assert [e.role for e in reversed(verify_logs(api))] == ["doctor", "auditor", "admin"]


def test_unmappable_input_is_422_and_not_logged(api: Api) -> None:
    submitted(api, example("Observation-f001.json"))
    for resource, needle in [({"hello": "world"}, "resourceType"),
                             ({"resourceType": "Patient", "id": "p"}, "a Patient is not a result"),
                             ({**example("Observation-f001.json"), "status": "cancelled"}, "cancelled")]:
        body = assert_problem(check(api, resource), 422, "unsupported-content")
        assert needle in body["detail"], body
    several = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": example("Observation-f001.json")},
        {"fullUrl": "urn:uuid:2", "resource": example("Observation-f002.json")}]}
    body = assert_problem(check(api, several), 422, "unsupported-content")
    assert "holds 2 results (6323, 6324); send one result" in body["detail"] and body["where"] == "Bundle"
    # Envelope errors: not an object, a member too many, an unknown zone, a missing hospital id.
    for bad in [{"hospital_id": HID, "fhir": "Observation/f001"},
                {"hospital_id": HID, "fhir": example("Observation-f001.json"), "result_id": "6323"},
                {"hospital_id": HID, "fhir": example("Observation-f001.json"), "tz": "Mars/Olympus"},
                {"fhir": example("Observation-f001.json")}]:
        assert_problem(api.client.post("/v1/verify", json=bad, headers=api.auth("doctor")), 422, "validation")
    assert verify_logs(api) == []


def test_unknown_and_tampered_without_a_chain(api: Api) -> None:
    unknown = ok(api, example("Observation-f001.json"))
    assert (unknown["verdict"], unknown["failed_check"], unknown["result_id"], unknown["version"]) == \
        ("unknown", "lookup", "6323", None)
    assert unknown["hospital_name"] is None  # nothing from the database for a result the caller does not hold
    assert unknown["recognition"]["decision"] == "reorder"
    submitted(api, example("Observation-f001.json"))
    changed = example("Observation-f001.json")
    changed["valueQuantity"]["value"] = 3.1
    tampered = ok(api, changed)
    assert (tampered["verdict"], tampered["failed_check"]) == ("tampered", "content")
    # "Does not match", and no more: not which versions the ledger holds (issue 14, finding 8).
    assert tampered["checks"][-1]["detail"] == "the resource differs from every version the hospital committed"
    assert tampered["hospital_name"] is None and tampered["issued"] is None and tampered["version"] is None
    # Another hospital's id: this ledger holds no such result there.
    assert verify(api, {"hospital_id": "qd-002", "fhir": example("Observation-f001.json")},
                  "doctor")["verdict"] == "unknown"


# -- against anvil ------------------------------------------------------------------------------------


@pytest.mark.anvil
def test_real_resources_authentic_tampered_unknown_superseded(chain_api: Api) -> None:
    api = chain_api
    f001, f201 = example("Observation-f001.json"), example("DiagnosticReport-f201.json")
    ids = {name: submitted(api, r)["result_id"] for name, r in (("f001", f001), ("f201", f201))}
    assert ids == {"f001": "6323", "f201": "DiagnosticReport/f201"}
    api.anchor_all()
    receipt = api.client.get(f"/v1/hospitals/{HID}/results/6323/receipt", headers=api.auth(f"hospital:{HID}")).json()

    for name, resource in (("f001", f001), ("f201", f201)):
        out = ok(api, respelt(resource))
        assert out["verdict"] == "authentic", out
        assert (out["hospital_id"], out["result_id"], out["version"], out["failed_check"], out["superseded_by"]) == \
            (HID, ids[name], 1, None, None)
        assert out["confirmations"] >= 1 and out["anchored_at"] and out["tx_hash"]
        assert [c["name"] for c in out["checks"]] == \
            ["fhir", "lookup", "content", "inclusion", "anchor-root", "anchor-confirmed"]
        assert all(c["ok"] for c in out["checks"])
    same = ok(api, f001)
    assert (same["tx_hash"], same["block_number"]) == (receipt["anchor"]["tx_hash"], receipt["anchor"]["block_number"])
    # A one-result Bundle (as a FHIR server's search answers) is that result.
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"fullUrl": "http://example.org/fhir/Observation/f001", "resource": f001}]}
    assert ok(api, bundle)["verdict"] == "authentic"

    changed = copy.deepcopy(f001)
    changed["valueQuantity"]["value"] = 9.3
    report = copy.deepcopy(f201)
    report["conclusion"] = "CT brains: no abnormality."
    for forged in (changed, report):
        out = ok(api, forged)
        assert (out["verdict"], out["failed_check"]) == ("tampered", "content"), out
        assert out["recognition"]["decision"] == "reorder"

    unknown = ok(api, example("Observation-f002.json"))
    assert (unknown["verdict"], unknown["failed_check"], unknown["result_id"]) == ("unknown", "lookup", "6324")

    assert submitted(api, amended_f001())["version"] == 2
    old = ok(api, respelt(f001))
    assert old["verdict"] == "authentic" and old["version"] == 1
    assert old["superseded_by"] == {"version": 2, "status": "amended", "issued": "2013-04-04T09:00:00Z",
        "batch_seq": None, "anchor_status": "pending", "block_number": None, "tx_hash": None}
    assert old["recognition"]["decision"] == "reorder"
    assert "superseded" in {r["code"] for r in old["recognition"]["reasons"]}
    new = ok(api, amended_f001())
    assert (new["verdict"], new["version"], new["superseded_by"]) == ("pending", 2, None)
    api.anchor_all()
    assert api.ledger.chain is not None
    api.ledger.chain.head(max_age=0)  # the head is cached for 0.5 s; the new anchor may be younger than that
    latest = ok(api, amended_f001())
    assert latest["verdict"] == "authentic", latest["checks"]
    # Once the amendment is anchored, the original's answer says where: its batch, block and transaction.
    later = ok(api, respelt(f001))["superseded_by"]
    assert later["anchor_status"] == "confirmed" and later["batch_seq"] == 2
    assert later["tx_hash"] == latest["tx_hash"] and later["block_number"] == latest["block_number"]

    assert [(e.verdict, e.result_id, e.version) for e in reversed(verify_logs(api))] == [
        ("authentic", "6323", 1), ("authentic", "DiagnosticReport/f201", 1), ("authentic", "6323", 1),
        ("authentic", "6323", 1), ("tampered", "6323", None), ("tampered", "DiagnosticReport/f201", None),
        ("unknown", "6324", None), ("authentic", "6323", 1), ("pending", "6323", 2), ("authentic", "6323", 2),
        ("authentic", "6323", 1)]


@pytest.mark.anvil
def test_revoked_resource(chain_api: Api) -> None:
    api = chain_api
    f001 = example("Observation-f001.json")
    submitted(api, f001)
    void = {**copy.deepcopy(f001), "status": "entered-in-error"}
    assert submitted(api, void)["version"] == 2
    api.anchor_all()
    out = ok(api, f001)
    assert (out["verdict"], out["failed_check"], out["revoked_by"]["version"]) == ("revoked", "revocation", 2)
