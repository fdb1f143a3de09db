"""scripts/intake_report.py's own checks: files told apart by content, and a value dropped from the committed
record is counted — the check is independent of the mapping code, so it must catch what the mapping loses."""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

from mrledger.ledger.formats import from_hl7v2
from scripts.intake_report import Held, fhir_values, hl7_values, kind_of
from tests.ledger.formats.test_fhir import EXAMPLES
from tests.service.test_intake import BIOSENSE, needs_shared

MESSAGE = ("MSH|^~\\&|LIS|LAB|||20240501093000+0800||ORU^R01|C1|P|2.5.1\r"
           "PID|1||MRN-1^^^HOSP&1.2.3&ISO\r"
           "OBR|1||FI-1^LIS|2345-7^Glucose^LN|||202405010830+0800\r"
           "OBX|1|SN|2345-7^Glucose^LN||>^10|mmol/L|^^10.000000|H|||F\r"
           "NTE|1|L|Specimen   haemolysed\r")


def test_files_are_told_apart_by_content() -> None:
    assert kind_of(b"\x00" * 128 + b"DICM" + b"\x00" * 8) == "dicom"
    assert kind_of(b"\x0bMSH|^~\\&|x") == "hl7v2" and kind_of(b"FHS|^~\\&|") == "hl7v2"
    assert kind_of(b'{"resourceType": "Observation"}') == "fhir"
    assert kind_of(b'{"name": "package"}') == "other" and kind_of(b"\x89PNG") == "other"


def test_every_value_of_the_source_is_found_in_a_faithful_record() -> None:
    (record,) = from_hl7v2(MESSAGE, "h", default_tz=ZoneInfo("UTC"))
    held = Held(record.to_obj())
    values = hl7_values(MESSAGE.encode())
    assert ("OBX-7", "^^10.000000") in values and ("NTE-3", "Specimen haemolysed") in values
    assert [v for v in values if not held.has(v[1])] == []


def test_a_dropped_or_changed_value_is_counted() -> None:
    (record,) = from_hl7v2(MESSAGE, "h", default_tz=ZoneInfo("UTC"))
    obj = record.to_obj()
    del obj["content"]["observations"][0]["reference_range"]  # what the old mapping did to ^^10.000000
    obj["content"]["observations"][0]["interpretation"] = "L"
    held = Held(obj)
    missing = [w for w, v in hl7_values(MESSAGE.encode()) if not held.has(v)]
    assert missing == ["OBX-7", "OBX-8"]


@needs_shared
def test_the_biosense_messages_lose_nothing() -> None:
    records = from_hl7v2(BIOSENSE.read_bytes(), "h", default_tz=ZoneInfo("America/New_York"),
                         version={"EM-9.2^LIS": 2})
    held = Held([r.to_obj() for r in records])
    assert [v for v in hl7_values(BIOSENSE.read_bytes()) if not held.has(v[1])] == []


def test_fhir_leaves_and_equal_instants() -> None:
    obs = json.loads((EXAMPLES / "Observation-f001.json").read_text())
    values = dict(fhir_values(obs))
    assert "text.div" not in " ".join(values) and values["valueQuantity.value"] == 6.3
    del obs["text"]  # the narrative is not committed
    committed = {**obs, "effectivePeriod": {"start": "2013-04-02T08:30:10Z"}}
    held = Held(committed)
    assert held.has("2013-04-02T09:30:10+01:00") and not held.has("2013-04-02T09:30:11+01:00")
    assert not Held({**obs, "valueQuantity": {"value": 6.4}}).has(6.3)
