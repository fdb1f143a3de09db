"""A new version never changes the patient or the test (issue 16, points 2 and 9).

Built on the CDC BioSense 2005 messages (../shared, read in place): two senders behind one hospital's interface
engine reuse the filler number of message EM-83 for another patient's other test. Before, the second became
``corrected`` version 2 of the first and the first patient's receipt read as superseded; the 409 for a changed
final result advised "send as amended or corrected", wrong advice for what is another patient's test.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from mrledger.http.schemas import EXAMPLE_RECORD
from mrledger.ledger.formats import from_hl7v2
from mrledger.ledger.formats.hl7v2 import legacy_result_id
from tests.harness import Api
from tests.http.test_hospitals import assert_problem
from tests.service.test_intake import BIOSENSE, HID, HL7, biosense, needs_shared, post, rows

TZ = "America/New_York"


def _message(filler: str) -> str:
    """The BioSense message whose OBR-3 is ``filler``, alone."""
    text = biosense().replace("\r\n", "\n")
    start = text.rindex("MSH", 0, text.index(f"|{filler}|"))
    end = text.find("\nMSH", start + 1)
    return text[start:] if end < 0 else text[start:end + 1]


def _other_sender(message: str, filler: str) -> str:
    """``message`` as another sender (MSH-3 REFLAB) would send it, numbered ``filler`` in its own series."""
    lines = message.split("\n")
    out = []
    for line in lines:
        fields = line.split("|")
        if fields[0] == "MSH":
            fields[2] = "REFLAB"
        if fields[0] == "OBR":
            fields[3] = filler
        out.append("|".join(fields))
    return "\n".join(out)


@needs_shared
def test_same_filler_number_from_two_senders_gives_two_results(api: Api) -> None:
    first = _message("EM-83")
    answer = post(api, "hl7v2", first.encode(), HL7, tz=TZ)
    assert answer.status_code == 202, answer.text
    assert [r["result_id"] for r in answer.json()["results"]] == ["EM-83^LIS"]
    # Another sender's message (another patient, another test: EM-811's) numbered EM-83 in its own series.
    second = _other_sender(_message("EM-811"), "EM-83")
    answer = post(api, "hl7v2", second.encode(), HL7, tz=TZ)
    assert answer.status_code == 202, answer.text
    assert [(r["result_id"], r["version"]) for r in answer.json()["results"]] == [("EM-83^REFLAB", 1)]
    held = api.client.get(f"/v1/hospitals/{HID}/results/EM-83%5ELIS", headers=api.auth(f"hospital:{HID}")).json()
    assert [v["version"] for v in held["versions"]] == [1]  # not superseded by the other patient's test


@needs_shared
def test_another_patient_and_test_under_one_id_is_a_409_that_says_so(api: Api) -> None:
    first = _message("EM-83")
    assert post(api, "hl7v2", first.encode(), HL7, tz=TZ).status_code == 202
    # Same sender, same number, another patient's other test, sent as a correction (OBX-11 C).
    other = _message("EM-811").replace("MSH|^~\\&|OE|", "MSH|^~\\&|LIS|").replace("|EM-811|", "|EM-83|")
    other = other.replace("|||A|||F|||", "|||A|||C|||")
    before = rows(api)
    body = assert_problem(post(api, "hl7v2", other.encode(), HL7, tz=TZ), 409, "conflict")
    assert body["differs"] == ["subject", "code"]
    assert "another patient and another test" in body["detail"]
    assert "amended or corrected" not in body["detail"]  # the old, wrong advice (point 9)
    assert "OBR-3.2" in body["detail"]
    assert "P281112205" not in body["detail"]  # the patient's identifier is not echoed
    assert rows(api) == before
    # Only the test differs (same patient): the 409 names the code, both codes shown.
    test_only = _message("EM-83").replace("7963-2^RUBEOLA VIRUS AB.IGM", "7964-0^RUBEOLA VIRUS AB.IGG")
    test_only = test_only.replace("|^^^160218^Rubeola Antibodies, IgM^L|", "|5244-9^RUBEOLA AB.IGG^LN|")
    test_only = test_only.replace("||H|||F|||", "||H|||C|||")
    body = assert_problem(post(api, "hl7v2", test_only.encode(), HL7, tz=TZ), 409, "conflict")
    assert body["differs"] == ["code"] and "L|160218 held, http://loinc.org|5244-9 received" in body["detail"]


def test_fhir_and_the_json_api_refuse_a_version_that_changes_patient_or_test(api: Api) -> None:
    hospital = api.auth(f"hospital:{HID}")
    obs: dict[str, Any] = {
        "resourceType": "Observation", "id": "g1", "identifier": [{"system": "urn:lab", "value": "G-1"}],
        "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"identifier": {"system": "urn:mrn", "value": "MRN-1"}},
        "effectiveDateTime": "2024-05-01T07:00:00+08:00", "valueQuantity": {"value": 5.4, "unit": "mmol/L"}}
    ctype = {"content-type": "application/fhir+json", **hospital}
    assert api.client.post(f"/v1/hospitals/{HID}/fhir", content=json.dumps(obs), headers=ctype).status_code == 202
    other = {**obs, "status": "corrected", "subject": {"identifier": {"system": "urn:mrn", "value": "MRN-2"}}}
    body = assert_problem(api.client.post(f"/v1/hospitals/{HID}/fhir", content=json.dumps(other), headers=ctype),
                          409, "conflict")
    assert body["differs"] == ["subject"] and "another patient" in body["detail"]
    # The JSON API: version 2 of LAB-1 for another patient, superseding version 1 — refused by the store.
    v1 = {**EXAMPLE_RECORD, "result_id": "LAB-1"}
    assert api.client.post(f"/v1/hospitals/{HID}/results", json=v1, headers=hospital).status_code == 202
    for change, differs in (({"subject": {"system": "urn:gz-001:mrn", "value": "MRN-9"}}, ["subject"]),
                            ({"code": {"system": "http://loinc.org", "code": "718-7"}}, ["code"])):
        v2 = {**v1, "version": 2, "supersedes": 1, "status": "corrected", **change}
        body = assert_problem(api.client.post(f"/v1/hospitals/{HID}/results", json=v2, headers=hospital),
                              409, "conflict")
        assert body["differs"] == differs, body
        assert "must keep the patient and the test of version 1" in body["detail"]
        # The same pair in one submission is refused too (version 1 read from the submission itself).
        both = {"records": [{**v1, "result_id": "LAB-2"}, {**v2, "result_id": "LAB-2"}]}
        body = assert_problem(api.client.post(f"/v1/hospitals/{HID}/results", json=both, headers=hospital),
                              409, "conflict")
        assert body["differs"] == differs
    # A display change is not another test.
    v2 = {**v1, "version": 2, "supersedes": 1, "status": "corrected",
          "code": {**v1["code"], "display": "Glucose, serum"}}
    assert api.client.post(f"/v1/hospitals/{HID}/results", json=v2, headers=hospital).status_code == 202


@needs_shared
def test_results_stored_under_the_old_id_scheme_keep_their_lineage(api: Api) -> None:
    """A result stored before ids carried the filler's authority (bare OBR-3.1) is continued under that id by
    its resend and its correction; another patient's test with the same bare number becomes a result of its
    own under the new id."""
    message = _message("EM-9.2")
    original = message.replace("|||C|||", "|||F|||")
    (record,) = from_hl7v2(original, HID, default_tz=__import__("zoneinfo").ZoneInfo(TZ))
    old_id = legacy_result_id(record.result_id)
    assert (record.result_id, old_id) == ("EM-9.2^LIS", "EM-9.2")
    api.ledger.intake.submit(HID, [record.model_copy(update={"result_id": old_id})])  # as the old adapter stored it
    resend = post(api, "hl7v2", original.encode(), HL7, tz=TZ).json()["results"]
    assert [(r["result_id"], r["version"], r["status"]) for r in resend] == [("EM-9.2", 1, "duplicate")]
    corrected = post(api, "hl7v2", message.encode(), HL7, tz=TZ).json()["results"]
    assert [(r["result_id"], r["version"], r["supersedes"]) for r in corrected] == [("EM-9.2", 2, 1)]
    stranger = _message("EM-811").replace("MSH|^~\\&|OE|", "MSH|^~\\&|LIS|").replace("|EM-811|", "|EM-9.2|")
    answer = post(api, "hl7v2", stranger.encode(), HL7, tz=TZ).json()["results"]
    assert [(r["result_id"], r["version"]) for r in answer] == [("EM-9.2^LIS", 1)]


@pytest.mark.parametrize(("obr3", "orc", "msh3", "want"), [
    ("4711^LAB^2.16.840.1.113883.3.72^ISO", "", "LIS", "4711^LAB^2.16.840.1.113883.3.72^ISO"),
    ("4711^^2.16.840.1.113883.3.72^ISO", "", "LIS", "4711^^2.16.840.1.113883.3.72^ISO"),
    ("4711", "ORC|RE||4711^CHEM", "LIS", "4711^CHEM"),
    ("4711", "ORC|RE||4712^CHEM", "LIS", "4711^LIS"),  # ORC-3 names another number: not its authority
    ("4711", "", "LIS^1.2.3^ISO", "4711^LIS^1.2.3^ISO"),
    ("4711", "", "", "4711^^1.2.840.9^ISO"),  # no MSH-3: MSH-4, the sending facility
    ("47\\S\\11", "", "LIS", "47\\S\\11^LIS"),  # a '^' inside the number stays escaped, unambiguous
])
def test_hl7_result_id_carries_the_fillers_authority(obr3: str, orc: str, msh3: str, want: str) -> None:
    msh = f"MSH|^~\\&|{msh3}|^1.2.840.9^ISO|||20240501083000+0800||ORU^R01|C1|P|2.5.1"
    lines = [msh, "PID|1||MRN-1^^^HOSP&1.2.3&ISO", *([orc] if orc else []),
             f"OBR|1|PL-1|{obr3}|2345-7^Glucose^LN|||202405010830+0800", "OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|||||F"]
    (record,) = from_hl7v2("\r".join(lines), HID, default_tz=UTC)
    assert record.result_id == want
    assert legacy_result_id(record.result_id) == obr3.split("^")[0].replace("\\S\\", "^")


def test_placer_number_when_there_is_no_filler_number() -> None:
    msh = "MSH|^~\\&|LIS|HOSP|||20240501083000+0800||ORU^R01|C1|P|2.5.1"
    lines = [msh, "PID|1||MRN-1", "OBR|1|PL-1^EHR||2345-7^Glucose^LN|||202405010830+0800",
             "OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|||||F"]
    (record,) = from_hl7v2("\r".join(lines), HID, default_tz=UTC)
    assert record.result_id == "PL-1^EHR"
    assert datetime(2024, 5, 1, tzinfo=UTC) < record.effective
    assert BIOSENSE.name  # the shared fixture's module is imported for its helpers only


def test_fhir_answer_lists_skipped_entries_and_honours_include_and_fhir_version(api: Api) -> None:
    """Issue 16, points 4 and 7, over HTTP: a patient's transaction Bundle (assembled from the R4 examples)."""
    from tests.ledger.formats.test_fhir_policy import patient_bundle

    body = json.dumps(patient_bundle()).encode()
    answer = post(api, "fhir", body, "application/fhir+json")
    assert answer.status_code == 202, answer.text
    got = answer.json()
    assert got["accepted"] == 2
    assert [(s["entry"], s["resource_type"]) for s in got["skipped"]] == [
        (0, "Patient"), (1, "Encounter"), (2, "Claim"), (3, "Observation"), (4, "Observation"), (5, "Observation")]
    assert "ask with include=social-history" in got["skipped"][4]["reason"]
    asked = post(api, "fhir", body, "application/fhir+json", params={"include": "vital-signs,social-history"})
    assert (asked.json()["accepted"], asked.json()["duplicates"]) == (2, 2)
    assert [s["resource_type"] for s in asked.json()["skipped"]] == ["Patient", "Encounter", "Claim", "Observation"]
    bad = assert_problem(post(api, "fhir", body, "application/fhir+json", params={"include": "laboratory"}),
                         422, "validation")
    assert "'laboratory' is not an Observation category that needs asking for" in bad["detail"]
    r5 = assert_problem(post(api, "fhir", body, "application/fhir+json; fhirVersion=5.0"), 422,
                        "unsupported-content")
    assert "this is FHIR R5; this endpoint takes R4" in r5["detail"]
    hl7 = post(api, "hl7v2", _message("EM-83").encode(), HL7, tz=TZ) if BIOSENSE.exists() else None
    assert hl7 is None or hl7.json()["skipped"] == []
