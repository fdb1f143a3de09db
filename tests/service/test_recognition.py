"""Recognition: the pure decision (every reason alone, in combination, window boundaries, item matching) and the
``recognition`` member of ``POST /v1/verify`` (revocation verdict included) without a chain and against anvil."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mrledger.ledger import ResultRecord
from mrledger.service.recognition import (
    DCM,
    IMAGING_SYSTEM,
    REASON_CODES,
    Later,
    decide,
    default_catalogue,
    match_items,
)
from tests.harness import Api
from tests.http.test_results import record, submit
from tests.http.test_verify import verify

CAT = default_catalogue()
ALL = frozenset(CAT.categories)
ISSUED = datetime(2024, 5, 1, 7, 30, tzinfo=UTC)
NOW = ISSUED + timedelta(days=1)
LOINC = "http://loinc.org"


def obs(code: str, value: float = 5.0, system: str = LOINC) -> dict[str, Any]:
    return {"code": {"system": system, "code": code}, "value": value, "unit": "x"}


def lab(code: str = "2345-7", *, status: str = "final", observations: list[str] | None = None,
        system: str = LOINC, kind: str = "lab", version: int = 1) -> ResultRecord:
    obj: dict[str, Any] = {
        "hospital_id": "gz-001", "result_id": "R1", "version": version, "kind": kind,
        "code": {"system": system, "code": code}, "subject": {"value": "P1"},
        "effective": "2024-05-01T07:00:00Z", "issued": "2024-05-01T07:30:00Z", "status": status,
        "content": {"type": "observations", "observations": [obs(c, system=system)
                                                             for c in (observations or [code])]}}
    if version > 1:
        obj["supersedes"] = version - 1
    return ResultRecord.from_obj(obj)


def study(modality: str, body_part: str | None = None) -> ResultRecord:
    content: dict[str, Any] = {"type": "imaging-study", "study_instance_uid": "1.2.3", "modality": modality}
    if body_part is not None:
        content["body_part"] = body_part
    return ResultRecord.from_obj({
        "hospital_id": "gz-001", "result_id": "S1", "version": 1, "kind": "imaging",
        "code": {"system": DCM, "code": modality.split("\\")[0]}, "subject": {"value": "P1"},
        "effective": "2024-05-01T07:00:00Z", "issued": "2024-05-01T07:30:00Z", "status": "final",
        "content": content})


def fhir(resource: dict[str, Any], code: dict[str, str], kind: str = "imaging") -> ResultRecord:
    return ResultRecord.from_obj({
        "hospital_id": "gz-001", "result_id": "F1", "version": 1, "kind": kind, "code": code,
        "subject": {"value": "P1"}, "effective": "2024-05-01T07:00:00Z", "issued": "2024-05-01T07:30:00Z",
        "status": "final", "content": {"type": "fhir-resource", "resource_type": resource["resourceType"],
                                       "resource": resource}})


def run(rec: ResultRecord | None = None, **kw: Any) -> Any:
    args: dict[str, Any] = {"verdict": "authentic", "record": rec or lab(), "catalogue": CAT, "eligible": ALL,
                            "now": NOW, **kw}
    return decide(**args)


# -- the decision -------------------------------------------------------------------------------------------

LATER = Later(2, "corrected", "2024-05-02T07:30:00Z")
REVOKING = Later(2, "entered-in-error", "2024-05-02T07:30:00Z")
ALONE: dict[str, dict[str, Any]] = {
    "not-authentic": {"verdict": "tampered", "failed_check": "content"},
    "revoked": {"revoked_by": REVOKING},
    "superseded": {"superseded_by": LATER},
    "not-final": {"rec": lab(status="preliminary")},
    "not-in-catalogue": {"rec": lab("9999-9")},
    "too-old": {"now": ISSUED + timedelta(days=7, microseconds=1)},
    "hospital-not-eligible": {"eligible": ALL - {"clinical-biochemistry"}},
    "anchor-pending": {"verdict": "pending"},
}


def test_recognised_when_no_reason_applies() -> None:
    out = run()
    assert out.decision == "recognise" and out.reasons == () and out.category == "clinical-biochemistry"
    assert out.item is not None and (out.item.code, out.item.window_days) == ("2345-7", 7)
    assert out.to_obj() == {
        "decision": "recognise", "reasons": [], "category": "clinical-biochemistry",
        "item": {"code": "2345-7", "system": LOINC, "name": "Glucose [Mass/volume] in Serum or Plasma",
                 "category": "clinical-biochemistry", "window_days": 7},
        "items": [out.item.to_obj()], "valid_until": "2024-05-08T07:30:00Z"}


def test_the_table_covers_every_reason() -> None:
    assert set(ALONE) == set(REASON_CODES)


@pytest.mark.parametrize("code", list(ALONE))
def test_each_reason_alone(code: str) -> None:
    kw = dict(ALONE[code])
    out = run(kw.pop("rec", None), **kw)
    assert out.decision == "reorder" and out.codes == (code,), out.reasons
    assert out.reasons[0].detail


def test_unknown_is_not_authentic_and_names_the_check() -> None:
    out = run(verdict="unknown", failed_check="lookup")
    assert out.codes == ("not-authentic",) and "unknown" in out.reasons[0].detail and "lookup" in out.reasons[0].detail


def test_a_revocation_record_itself_is_revoked_not_merely_not_final() -> None:
    assert run(lab(status="entered-in-error", version=2)).codes == ("revoked",)


def test_every_reason_at_once_in_the_documented_order() -> None:
    out = run(lab(status="preliminary"), verdict="tampered", revoked_by=REVOKING, superseded_by=REVOKING,
              eligible=frozenset(), now=ISSUED + timedelta(days=30))
    assert out.codes == ("not-authentic", "revoked", "superseded", "not-final", "too-old", "hospital-not-eligible")
    pending = run(lab("9999-9"), verdict="pending", superseded_by=LATER)
    assert pending.codes == ("superseded", "not-in-catalogue", "anchor-pending")
    assert pending.item is None and pending.category is None and pending.valid_until is None


def test_not_in_catalogue_means_no_age_or_eligibility_reason() -> None:
    out = run(lab("9999-9"), eligible=frozenset(), now=ISSUED + timedelta(days=999))
    assert out.codes == ("not-in-catalogue",) and "http://loinc.org|9999-9" in out.reasons[0].detail


@pytest.mark.parametrize(("code", "days"), [("2345-7", 7), ("2823-3", 3), ("718-7", 3), ("5196-1", 30),
                                            ("4548-4", 90), ("1988-5", 3)])
def test_window_boundary_is_inclusive(code: str, days: int) -> None:
    at_limit = run(lab(code), now=ISSUED + timedelta(days=days))
    assert at_limit.decision == "recognise" and at_limit.item is not None and at_limit.item.window_days == days
    assert run(lab(code), now=ISSUED + timedelta(days=days, microseconds=1)).codes == ("too-old",)
    assert run(lab(code), now=ISSUED + timedelta(days=days) - timedelta(microseconds=1)).decision == "recognise"


def test_a_result_issued_after_now_is_not_too_old() -> None:
    assert run(now=ISSUED - timedelta(hours=1)).decision == "recognise"


# -- item matching ------------------------------------------------------------------------------------------


def test_the_record_code_decides_before_the_observations() -> None:
    items, _ = match_items(lab("2345-7", observations=["2345-7", "9999-9"]), CAT)
    assert [i.code for i in items] == ["2345-7"]


def test_a_panel_is_recognised_only_if_every_observation_is_an_item() -> None:
    out = run(lab("24323-8", observations=["2345-7", "2823-3", "2160-0"]))  # a metabolic panel code
    assert out.decision == "recognise" and {i.code for i in out.items} == {"2345-7", "2823-3", "2160-0"}
    assert out.item is not None and out.item.code == "2823-3"  # the most perishable test binds the panel
    assert run(lab("24323-8", observations=["2345-7", "2823-3"]), now=ISSUED + timedelta(days=4)).codes == \
        ("too-old",)
    missing = run(lab("24323-8", observations=["2345-7", "9999-9"]))
    assert missing.codes == ("not-in-catalogue",) and "9999-9" in missing.reasons[0].detail


def test_a_mixed_panel_needs_every_category() -> None:
    out = run(lab("x-1", observations=["2345-7", "718-7"]), eligible=frozenset({"clinical-biochemistry"}))
    assert out.codes == ("hospital-not-eligible",) and "clinical-hematology" in out.reasons[0].detail


def test_lab_codes_only_match_in_loinc() -> None:
    assert run(lab("2345-7", system="http://example.org/local")).codes == ("not-in-catalogue",)


@pytest.mark.parametrize(("modality", "part", "want"), [
    ("CT", "HEAD", "ct-head"), ("CT", "BRAIN", "ct-head"), ("ct", "chest", "ct-chest"), ("CT", "ABDOMEN", "ct-abdomen"),
    ("MR", "L SPINE", "mr-spine"), ("MR", "KNEE", "mr-knee"), ("DX", "CHEST", "xr-chest"), ("CR", "CHEST", "xr-chest"),
    ("DR", "CHEST", "xr-chest"), ("OT\\CT", "HEAD", "ct-head"),
])
def test_imaging_by_modality_and_body_part(modality: str, part: str, want: str) -> None:
    out = run(study(modality, part))
    assert out.decision == "recognise" and out.item is not None and out.item.code == want
    assert out.item.system == IMAGING_SYSTEM and out.category == CAT.categories[out.item.category].id


@pytest.mark.parametrize(("modality", "part"), [("CT", None), ("US", "ABDOMEN"), ("MR", "HAND"), ("CT", "KNEE")])
def test_imaging_not_in_catalogue(modality: str, part: str | None) -> None:
    out = run(study(modality, part))
    assert out.codes == ("not-in-catalogue",) and f"modality {modality}" in out.reasons[0].detail


def test_a_two_part_study_matches_both_items() -> None:
    out = run(study("CT", "CHEST\\ABDOMEN"))
    assert {i.code for i in out.items} == {"ct-chest", "ct-abdomen"} and out.decision == "recognise"


def test_imaging_windows() -> None:
    assert run(study("CT", "HEAD"), now=ISSUED + timedelta(days=31)).codes == ("too-old",)
    assert run(study("CT", "CHEST"), now=ISSUED + timedelta(days=90)).decision == "recognise"
    assert run(study("MR", "KNEE"), now=ISSUED + timedelta(days=180)).decision == "recognise"
    assert run(study("CT", "HEAD"), eligible=ALL - {"ct"}).codes == ("hospital-not-eligible",)


def test_fhir_imaging_study_by_series_modality_and_snomed_body_site() -> None:
    resource = {"resourceType": "ImagingStudy", "status": "available", "subject": {"reference": "Patient/p"},
                "series": [{"uid": "1.2", "modality": {"system": DCM, "code": "CT"},
                            "bodySite": {"system": "http://snomed.info/sct", "code": "51185008",
                                         "display": "Thoracic structure"}}]}
    out = run(fhir(resource, {"system": DCM, "code": "CT"}))
    assert out.decision == "recognise" and out.item is not None and out.item.code == "ct-chest"
    by_display = {**resource, "series": [{**resource["series"][0], "bodySite": {"display": "Knee"}}]}
    assert run(fhir(by_display, {"system": DCM, "code": "CT"})).codes == ("not-in-catalogue",)  # no CT knee item
    mr = {**by_display, "modality": [{"system": DCM, "code": "MR"}]}
    assert run(fhir(mr, {"system": DCM, "code": "MR"})).item.code == "mr-knee"  # type: ignore[union-attr]


def test_fhir_observation_by_record_code_and_dicom_coded_report_without_body_part() -> None:
    resource = {"resourceType": "Observation", "status": "final", "code": {"coding": [
        {"system": LOINC, "code": "718-7"}]}, "valueQuantity": {"value": 13.2, "unit": "g/dL"}}
    out = run(fhir(resource, {"system": LOINC, "code": "718-7"}, kind="lab"))
    assert out.decision == "recognise" and out.category == "clinical-hematology"
    report = lab("CT", system=DCM, kind="imaging")
    assert run(report).codes == ("not-in-catalogue",)


# -- through the API, no chain ------------------------------------------------------------------------------

API_NOW = datetime(2024, 5, 3, tzinfo=UTC)


def _at(api: Api, now: datetime) -> None:
    api.clock.now = now


def _grant(api: Api, category: str = "clinical-biochemistry", hid: str = "gz-001") -> None:
    got = api.client.put(f"/v1/hospitals/{hid}/eligibility/{category}", json={"reference": "EQA-1"},
                         headers=api.auth("admin"))
    assert got.status_code == 200, got.text


def _codes(out: dict[str, Any]) -> list[str]:
    return [r["code"] for r in out["recognition"]["reasons"]]


def body(i: int = 1, **kw: Any) -> dict[str, Any]:
    return {"hospital_id": "gz-001", "result_id": f"R{i}", "record": record(i, **kw)}


def test_pending_unknown_and_eligibility_without_chain(api: Api) -> None:
    _at(api, API_NOW)
    unknown = verify(api, body(), "doctor")
    assert unknown["verdict"] == "unknown"
    # Eligibility is not told about a result nothing established (issue 14, finding 3).
    assert _codes(unknown) == ["not-authentic"]
    assert unknown["recognition"]["item"]["code"] == "2345-7"  # matched from the held record
    submit(api, record(1))
    assert _codes(verify(api, body(), "doctor")) == ["hospital-not-eligible", "anchor-pending"]
    _grant(api)
    pending = verify(api, body(), "doctor")
    assert pending["verdict"] == "pending" and pending["revoked_by"] is None
    assert pending["recognition"]["decision"] == "reorder" and _codes(pending) == ["anchor-pending"]
    assert pending["recognition"]["valid_until"] == "2024-05-08T07:30:00Z"
    _at(api, datetime(2024, 5, 9, tzinfo=UTC))
    assert _codes(verify(api, body(), "doctor")) == ["too-old", "anchor-pending"]
    tampered = verify(api, {**body(), "record": record(1, value=9.9)}, "doctor")
    assert tampered["verdict"] == "tampered" and _codes(tampered)[0] == "not-authentic"


def test_receipt_form_carries_recognition(api: Api) -> None:
    _at(api, API_NOW)
    _grant(api)
    submit(api, record(1))
    api.ledger.store.seal("gz-001", 100)
    receipt = api.ledger.store.receipt("gz-001", "R1")
    assert receipt is not None
    out = verify(api, {"receipt": json.loads(receipt.to_json())})
    assert out["verdict"] == "pending" and _codes(out) == ["anchor-pending"]


def test_not_final_result(api: Api) -> None:
    _at(api, API_NOW)
    _grant(api)
    submit(api, record(1, status="preliminary"))
    assert _codes(verify(api, body(status="preliminary"), "doctor")) == ["not-final", "anchor-pending"]


def test_revoked_without_chain(api: Api) -> None:
    _at(api, API_NOW)
    _grant(api)
    submit(api, record(1))
    revocation = record(1, version=2, status="entered-in-error")
    assert submit(api, revocation).status_code == 202
    v1 = verify(api, body(), "doctor")
    assert v1["verdict"] == "revoked" and v1["failed_check"] == "revocation"
    assert v1["revoked_by"] == {"version": 2, "status": "entered-in-error", "issued": "2024-05-02T07:30:00Z",
        "batch_seq": None, "anchor_status": "pending", "block_number": None, "tx_hash": None}
    assert v1["superseded_by"] == v1["revoked_by"]
    assert _codes(v1) == ["revoked", "superseded", "anchor-pending"]  # the anchor was pending before revocation
    v2 = verify(api, {**body(), "version": 2, "record": revocation}, "doctor")
    assert v2["verdict"] == "revoked" and v2["superseded_by"] is None and _codes(v2) == ["revoked", "anchor-pending"]
    forged = verify(api, {**body(), "record": record(1, value=1.0)}, "doctor")
    # A record that does not match learns nothing of the result's later versions (issue 14, finding 8).
    assert forged["verdict"] == "tampered" and forged["revoked_by"] is None and forged["superseded_by"] is None
    assert _codes(forged) == ["not-authentic"]
    reinstated = record(1, version=3, value=5.5)
    assert submit(api, reinstated).status_code == 202
    again = verify(api, body(), "doctor")
    assert again["verdict"] == "pending" and again["revoked_by"] is None and again["superseded_by"]["version"] == 3
    verdicts = [e.verdict for e in api.ledger.access.entries(limit=10) if e.action == "verify"]
    assert verdicts.count("revoked") == 2


# -- against anvil ------------------------------------------------------------------------------------------


@pytest.mark.anvil
def test_recognised_then_revoked_on_chain(chain_api: Api) -> None:
    api = chain_api
    _at(api, API_NOW)
    for category in ("clinical-biochemistry", "ct"):
        _grant(api, category)
    head_ct = {**record(2), "kind": "imaging", "code": {"system": DCM, "code": "CT"},
               "content": {"type": "imaging-study", "study_instance_uid": "1.2.840.1", "modality": "CT",
                           "body_part": "HEAD"}}
    submit(api, {"records": [record(1), head_ct]})
    api.anchor_all()
    out = verify(api, body(), "doctor")
    assert out["verdict"] == "authentic" and out["recognition"]["decision"] == "recognise", out
    assert out["recognition"]["reasons"] == [] and out["recognition"]["category"] == "clinical-biochemistry"
    ct = verify(api, {"hospital_id": "gz-001", "result_id": "R2", "record": head_ct}, "doctor")
    assert ct["verdict"] == "authentic" and ct["recognition"]["item"]["code"] == "ct-head"
    assert ct["recognition"]["decision"] == "recognise"
    receipt = api.client.get("/v1/hospitals/gz-001/results/R1/receipt", headers=api.auth("hospital:gz-001")).json()
    assert verify(api, {"receipt": receipt})["recognition"]["decision"] == "recognise"

    api.client.delete("/v1/hospitals/gz-001/eligibility/ct", headers=api.auth("admin"))
    ct_after = verify(api, {"hospital_id": "gz-001", "result_id": "R2", "record": head_ct}, "doctor")
    assert ct_after["verdict"] == "authentic" and _codes(ct_after) == ["hospital-not-eligible"]

    submit(api, record(1, version=2, status="entered-in-error"))
    revoked = verify(api, {"receipt": receipt})
    assert revoked["verdict"] == "revoked" and revoked["revoked_by"]["version"] == 2
    assert _codes(revoked) == ["revoked", "superseded"]  # v1's own anchor is confirmed
    api.anchor_all()
    v2_body = {**body(), "version": 2, "record": record(1, version=2, status="entered-in-error")}
    deadline = time.monotonic() + 5
    while "anchor-pending" in _codes(v2 := verify(api, v2_body, "doctor")) and time.monotonic() < deadline:
        time.sleep(0.1)  # the node caches the chain head for a moment (ChainContext.head)
    assert v2["verdict"] == "revoked" and _codes(v2) == ["revoked"] and v2["anchored_at"]
