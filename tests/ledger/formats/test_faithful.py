"""Nothing is rewritten or dropped in silence (issue 16, point 3): what the mapping cannot represent is
refused with the field named, or kept verbatim.

The cases are those the issue saw in real feeds — an OBX whose fields are shifted by one (no value, a
reference range of ``>``, an interpretation ``1``, and it verified as authentic), an OBX-7 of ``^^10.000000``
dropped, a result issued before it was observed — plus the R4 example ``Bundle-dg2`` (issued a year before its
effective time) and structured numeric values.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import pytest

from mrledger.ledger.formats import FormatError, from_fhir, from_hl7v2
from tests.ledger.formats.test_fhir import EXAMPLES

MSH = "MSH|^~\\&|LIS|LAB|EHR|HOSP|20240501093000+0800||ORU^R01^ORU_R01|C1|P|2.5.1"
PID = "PID|1||MRN-1^^^HOSP&1.2.3&ISO"
OBR = "OBR|1||FI-1^LIS|2345-7^Glucose^LN|||202405010830+0800"


def _hl7(*obx: str, obr: str = OBR) -> list[Any]:
    return from_hl7v2("\r".join([MSH, PID, obr, *obx]), "cn-test", default_tz=UTC)


def _observation(obx: str) -> dict[str, Any]:
    (record,) = _hl7(obx)
    obs: dict[str, Any] = record.to_obj()["content"]["observations"][0]
    return obs


@pytest.mark.parametrize(("obx", "reason"), [
    # The OBX, fields shifted one to the right: OBX-5 empty, the unit in OBX-6... the range in OBX-8.
    ("OBX|1|NM|2345-7^Glucose^LN|||5.4|>|1|||F", "OBX-5 (value) is empty although the observation is final"),
    ("OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|>|N|||F", "OBX-7 (reference range) '>' names no number or word"),
    ("OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|3.9-6.1|1|||F", "OBX-8 (interpretation) '1' is not an HL7 table 0078"),
    ("OBX|1|NM|2345-7^Glucose^LN|||mmol/L|3.9-6.1|N|||F", "OBX-5 (value) is empty although the observation is final"),
    ("OBX|1|NM|2345-7^Glucose^LN||5.4^mmol/L|||N|||F", "OBX-5 (NM) has more components than its type carries"),
    ("OBX|1|SN|2345-7^Glucose^LN||~>^5|mmol/L|||||F", "OBX-5 repeats"),
    ("OBX|1|SN|2345-7^Glucose^LN||!^5|mmol/L|||||F", "OBX-5 (SN) comparator '!' is not one of"),
    ("OBX|1|SN|2345-7^Glucose^LN||^1^x^80||||||F", "OBX-5 (SN) separator 'x' is not one of"),
    ("OBX|1|SN|2345-7^Glucose^LN||^1^^80||||||F", "OBX-5 (SN) has a second number '80' without a separator"),
    ("OBX|1|SN|2345-7^Glucose^LN||>^^:^||||||F", "OBX-5 (SN) has no number"),
    ("OBX|1|SN|2345-7^Glucose^LN||^1^:^80^9||||||F", "OBX-5 (SN) has more components than its type carries"),
])
def test_what_cannot_be_mapped_faithfully_is_refused_with_the_field_named(obx: str, reason: str) -> None:
    with pytest.raises(FormatError, match=reason.replace("(", r"\(").replace(")", r"\)")) as info:
        _hl7(obx)
    assert "OBX 1" in str(info.value)  # the message, OBR and OBX are named


@pytest.mark.parametrize(("obx", "field", "kept"), [
    ("OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|^^10.000000|N|||F", "reference_range", {"text": "^^10.000000"}),
    ("OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|3.9^6.1|N|||F", "reference_range", {"text": "3.9^6.1"}),
    ("OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|<6.1|N|||F", "reference_range", {"text": "<6.1"}),
    ("OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|3.9-6.1|N|||F", "reference_range", {"low": 3.9, "high": 6.1}),
    ("OBX|1|CWE|2345-7^Glucose^LN||POS^Positive||||||F", "value", "POS^Positive"),  # a code without system
    ("OBX|1|CWE|2345-7^Glucose^LN||^Positive||||||F", "value", "Positive"),
    ("OBX|1|ST|2345-7^Glucose^LN||above^range||||||F", "value", "above^range"),
    ("OBX|1|ST|2345-7^Glucose^LN||see note||||||F", "value", "see note"),
    ("OBX|1|SN|2345-7^Glucose^LN||>^10|mmol/L|||||F", "value", ">10"),
    ("OBX|1|SN|2345-7^Glucose^LN||<=^0.5|mmol/L|||||F", "value", "<=0.5"),
    ("OBX|1|SN|2345-7^Glucose^LN||^1^:^80||||||F", "value", "1:80"),
    ("OBX|1|SN|2345-7^Glucose^LN||^2^-^5||||||F", "value", "2-5"),
    ("OBX|1|SN|2345-7^Glucose^LN||^2^+||||||F", "value", "2+"),
    ("OBX|1|SN|2345-7^Glucose^LN||^5.60|mmol/L|||||F", "value", 5.6),
    ("OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|3.9-6.1|H~AA|||F", "interpretation", "H,AA"),
])
def test_what_the_record_has_no_structure_for_is_kept_verbatim(obx: str, field: str, kept: Any) -> None:
    assert _observation(obx)[field] == kept


def test_an_empty_value_with_a_comment_or_not_final_is_kept() -> None:
    (record,) = _hl7("OBX|1|ST|2345-7^Glucose^LN||||||||F", "NTE|1|L|Specimen haemolysed, see comment")
    assert "value" not in record.to_obj()["content"]["observations"][0]
    (record,) = _hl7("OBX|1|NM|2345-7^Glucose^LN|||mmol/L|||||P")
    assert record.status == "preliminary"


def test_hl7_issued_before_observed_is_refused_and_precision_is_respected() -> None:
    early = OBR + "|||||||||||||||202405010700+0800"  # OBR-22 07:00, observed 08:30
    assert early.split("|")[22] == "202405010700+0800"
    with pytest.raises(FormatError, match=r"OBR-22 \(results reported\) '202405010700\+0800' is before OBR-7"):
        _hl7("OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|||||F", obr=early)
    same_day = OBR + "|||||||||||||||20240501"  # a date only: the whole day, not its midnight
    (record,) = _hl7("OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|||||F", obr=same_day)
    assert record.to_obj()["issued"] == "2024-05-01T00:00:00Z"


def test_fhir_issued_before_effective_is_refused() -> None:
    with pytest.raises(FormatError, match=r"issued '2014-05-16T10:28:00\+01:00' is before effective"):
        from_fhir((EXAMPLES / "Bundle-dg2.json").read_bytes(), "nl-test")
    obs = json.loads((EXAMPLES / "Observation-f001.json").read_text())
    assert obs["issued"] == "2013-04-03T15:30:10+01:00"
    from_fhir({**obs, "effectivePeriod": {"start": "2013-04-03T15:30:10+01:00"}}, "nl-test")  # equal: fine
    with pytest.raises(FormatError, match="issued '2013-04-03T15:30:10"):
        from_fhir({**obs, "effectivePeriod": {"start": "2013-04-03T15:31:00+01:00"}}, "nl-test")
    from_fhir({**obs, "effectivePeriod": {"start": "2013-04-03"}}, "nl-test")  # the day it was issued: fine
