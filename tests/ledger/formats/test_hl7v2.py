"""HL7 v2 ORU^R01 adapter against real CDC BioSense 2005 test messages (../shared/fixtures, read in place).

Why these messages: they carry the quirks real feeds have (batch headers without trailers, one MSH-10
for every message, ``F<CR>`` typed out, 15-digit timestamps, SN ratios, a corrected result), which a
textbook message would not. A few small inline messages cover the rules the file does not exercise.
"""

from __future__ import annotations

import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mrledger.ledger import ResultRecord, commit
from mrledger.ledger.formats import FormatError, from_hl7v2
from mrledger.ledger.formats.hl7v2 import legacy_result_id

#: tests/ledger/formats/test_hl7v2.py → parents[3] is the repository (/work/main); shared lives beside it.
SHARED = (Path(__file__).resolve().parents[3] / ".." / "shared").resolve()
BIOSENSE = SHARED / "fixtures" / "hl7v2" / "biosense-oru-r01-2005.txt"
needs_shared = pytest.mark.skipif(not BIOSENSE.exists(), reason=f"{BIOSENSE} is absent (../shared not checked out)")

US_EAST = ZoneInfo("America/New_York")
UTC_ = ZoneInfo("UTC")  # BioSense test senders are US; the messages carry no offsets
HOSPITAL = "us-biosense-test"
SALT = bytes(range(16))
#: OBR-3 filler order numbers, one OBR per message, in file order, with their assigning authority: the
#: messages' OBR-3 has none, so it is MSH-3, the sending application (issue 16: ids carry the filler).
RESULT_IDS = ["EM-811^OE", "EM-8.1.2^OE", "EM-83^LIS", "EM-851^LIS", "EM-8.9^LIS", "EM-8.14^LIS", "EM-9.2^LIS"]
#: EM-9.2 carries OBX-11 = C: a correction, which the record rules only accept as version ≥ 2.
LINEAGE = {"EM-9.2^LIS": 2}


def _file() -> str:
    return BIOSENSE.read_text(encoding="utf-8")


def _parse(text: str | bytes) -> list[ResultRecord]:
    return from_hl7v2(text, HOSPITAL, default_tz=US_EAST, version=LINEAGE)


def _messages() -> list[str]:
    """The file's messages, each alone (batch header lines dropped)."""
    text = "\n".join(line for line in _file().split("\n") if not line.startswith(("FHS", "BHS")))
    return ["MSH" + chunk for chunk in text.split("MSH")[1:]]


def _by_id(records: list[ResultRecord]) -> dict[str, ResultRecord]:
    """By OBR-3.1 alone (the filler number without its authority), which is how the messages name them."""
    return {legacy_result_id(r.result_id): r for r in records}


@needs_shared
def test_every_message_of_the_file_becomes_one_record() -> None:
    records = _parse(_file())
    assert [r.result_id for r in records] == RESULT_IDS
    assert len({r.subject.value for r in records}) == 7  # seven patients despite one MSH-10 for all
    assert all(r.subject.system == "urn:oid:2.16.840.1.114222.4.3.3.1" for r in records)


@needs_shared
@pytest.mark.parametrize("index", range(len(RESULT_IDS)), ids=RESULT_IDS)
def test_each_message_parses_alone(index: int) -> None:
    (record,) = _parse(_messages()[index])
    assert record.result_id == RESULT_IDS[index]
    assert ResultRecord.from_json(record.to_json()) == record


@needs_shared
def test_corrected_result_needs_a_later_version() -> None:
    with pytest.raises(FormatError, match=r"message 7 OBR EM-9\.2: status: an amended or corrected result must be"):
        from_hl7v2(_file(), HOSPITAL, default_tz=US_EAST)
    record = _by_id(_parse(_file()))["EM-9.2"]
    assert (record.status, record.version, record.supersedes) == ("corrected", 2, 1)
    assert "THIS IS A CORRECTED RESULT." in (record.content.observations[0].note or "")  # type: ignore[union-attr]


@needs_shared
@pytest.mark.parametrize("separator", ["\r", "\n", "\r\n"], ids=["CR", "LF", "CRLF"])
def test_segment_separators_give_identical_records(separator: str) -> None:
    reference = [r.canonical_bytes() for r in _parse(_file())]
    lines = _file().replace("\r\n", "\n").split("\n")
    assert [r.canonical_bytes() for r in _parse(separator.join(lines).encode("utf-8"))] == reference


@needs_shared
def test_structured_numeric_values() -> None:
    records = _by_id(_parse(_file()))
    brucella = records["EM-8.1.2"].content.observations[0]  # type: ignore[union-attr]
    assert (brucella.value, brucella.unit) == ("100:150", "mcg/dL")  # OBX-5 ^100^:^150
    rubeola = records["EM-83"].content.observations[0]  # type: ignore[union-attr]
    assert rubeola.value == 5.6  # OBX-5 ^5.60: a bare number
    assert (rubeola.reference_range.low, rubeola.reference_range.high) == (0, 0.89)  # type: ignore[union-attr]
    rpr = records["EM-8.14"].content.observations  # type: ignore[union-attr]
    assert rpr[1].value == "1:80" and rpr[1].reference_range.text == "=<1:1"  # type: ignore[union-attr]
    assert rpr[0].value.code == "REA" and rpr[0].reference_range.text == "Non-Reactive"  # type: ignore[union-attr]


@needs_shared
def test_quirks_of_the_real_file() -> None:
    records = _by_id(_parse(_file()))
    hsv = records["EM-851"].content.observations  # type: ignore[union-attr]
    assert (hsv[1].value, hsv[1].unit) == (20, "d")  # the OBX ending in the literal text "F<CR> "
    assert records["EM-851"].status == "final"
    giardia = records["EM-811"]
    assert giardia.content.observations[0].note == "POSITIVE Giardia antigen detected."  # type: ignore[union-attr]
    assert giardia.content.observations[0].value.system == "SNM"  # type: ignore[union-attr]  # kept verbatim
    # EM-811's OBR has one field too few: its "F" lands in OBR-24 (service section), which is no table 0074
    # code, so the kind is "other" and the status comes from OBX-11.
    assert (giardia.kind, giardia.status) == ("other", "final")
    assert records["EM-8.1.2"].kind == "lab"  # empty OBR-24 → default_kind
    assert records["EM-8.1.2"].code.system == "L"  # OBR-4 has only the alternate (local) code
    # OBR-7 200511220300 at US Eastern (UTC-5); MSH-7 200511221912102 (15 digits) → 19:12:10.2.
    assert giardia.to_obj()["effective"] == "2005-11-22T08:00:00Z"
    assert giardia.to_obj()["issued"] == "2005-11-23T00:12:10.2Z"


@needs_shared
def test_a_changed_value_changes_the_leaf() -> None:
    original = _by_id(_parse(_file()))["EM-83"]
    changed = _by_id(_parse(_file().replace("||^5.60|AU|", "||^5.70|AU|")))["EM-83"]
    assert commit(original, SALT) != commit(changed, SALT)


# -- inline messages for rules the file does not exercise ----------------------------------------------

MSH = "MSH|^~\\&|LIS|LAB|EHR|HOSP|20240501083000+0800||ORU^R01^ORU_R01|C1|P|2.5.1"
PID = "PID|1||MRN-1^^^HOSP&1.2.3&ISO||DOE^JANE"
#: OBR-1..OBR-25: 2 placer, 3 filler, 4 service, 7 observation time, 24 section (empty), 25 status.
OBR = "|".join(["OBR", "1", "PL-1", "FI-1", "2345-7^Glucose^LN", "", "", "202405010830", *[""] * 16, "", "{obr25}"])
OBX = "OBX|1|{type}|2345-7^Glucose^LN||{value}|mmol/L|3.9-6.1|N|||{obx11}"


def _message(*, value: str = "5.4", vtype: str = "NM", obr25: str = "F", obx11: str = "F", msh: str = MSH) -> str:
    return "\r".join([msh, PID, OBR.format(obr25=obr25), OBX.format(type=vtype, value=value, obx11=obx11)])


def test_inline_message_with_offsets() -> None:
    # MSH-7 a day later than in _message(): an issued time standing in for OBR-22 is never before OBR-7
    # (there 00:30Z against 12:30Z), which would have been taken as OBR-7 itself (issue 16, point 3).
    msh = MSH.replace("20240501083000+0800", "20240502083000+0800")
    (record,) = from_hl7v2(_message(msh=msh), "cn-test", default_tz=US_EAST)
    assert record.to_obj()["issued"] == "2024-05-02T00:30:00Z"  # MSH-7 carries +0800: default_tz unused
    assert record.to_obj()["effective"] == "2024-05-01T12:30:00Z"  # OBR-7 without offset: US Eastern (EDT)
    assert (record.result_id, record.subject.system, record.subject.value) == ("FI-1^LIS", "urn:oid:1.2.3", "MRN-1")
    obs = record.content.observations[0]  # type: ignore[union-attr]
    assert (obs.code.system, obs.value, obs.unit, obs.interpretation) == ("http://loinc.org", 5.4, "mmol/L", "N")


@pytest.mark.parametrize(
    ("obr25", "obx11", "status"),
    [("F", "F", "final"), ("P", "F", "preliminary"), ("F", "W", "entered-in-error"), ("", "D", "entered-in-error")],
)
def test_status_mapping(obr25: str, obx11: str, status: str) -> None:
    assert OBR.split("|")[25] == "{obr25}"
    (record,) = from_hl7v2(_message(obr25=obr25, obx11=obx11), "cn-test", default_tz=UTC_)
    assert record.status == status


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"obx11": "X"}, "OBX-11 = X: results cannot be obtained"),
        ({"value": "abc"}, "OBX-5 (NM) 'abc' is not a number"),
        ({"vtype": "ED", "value": "x"}, "OBX-2 value type 'ED' is not mapped"),
        ({"msh": MSH.replace("ORU^R01^ORU_R01", "ADT^A01")}, "message type ADT^A01 is not a result (ORU^R01)"),
        ({"msh": MSH.replace("20240501083000+0800", "2024050108")}, None),
        ({"msh": MSH.replace("20240501083000+0800", "202405010")}, "MSH-7 '202405010' is not an HL7 date/time"),
    ],
    ids=["X", "NM-text", "ED", "ADT", "short-time-ok", "odd-digits"],
)
def test_inline_refusals(kwargs: dict[str, str], reason: str | None) -> None:
    if reason is None:
        assert from_hl7v2(_message(**kwargs), "cn-test", default_tz=UTC_)
        return
    with pytest.raises(FormatError, match=re.escape(reason)):
        from_hl7v2(_message(**kwargs), "cn-test", default_tz=UTC_)


def test_sn_comparator_is_kept_as_text() -> None:
    (record,) = from_hl7v2(_message(vtype="SN", value="<^5"), "cn-test", default_tz=UTC_)
    assert record.content.observations[0].value == "<5"  # type: ignore[union-attr]


def test_not_hl7_is_refused() -> None:
    with pytest.raises(FormatError, match="segment 'hel' appears before the first MSH"):
        from_hl7v2("hello", "cn-test", default_tz=UTC_)
    with pytest.raises(FormatError, match="not utf-8 text"):
        from_hl7v2(b"MSH|\xff", "cn-test", default_tz=UTC_)
