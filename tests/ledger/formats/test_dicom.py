"""DICOM adapter against the real test images pydicom ships (CT_small.dcm, MR_small.dcm).

Why: the fingerprint is the whole point of an imaging record, so the tests prove that one changed pixel
byte changes it (and the leaf), that header edits outside the committed fields do not, and that files
which are not images are refused rather than fingerprinted as nothing.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from zoneinfo import ZoneInfo

import pydicom
import pytest
from pydicom.data import get_testdata_file

from mrledger.ledger import ResultRecord, commit
from mrledger.ledger.formats import FormatError, from_dicom
from mrledger.ledger.records import ImagingStudyContent

UTC_ = ZoneInfo("UTC")
HOSPITAL = "de-charite-rad"
SALT = bytes(range(16))


def _bytes(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None, f"pydicom test file {name} is missing"
    return Path(path).read_bytes()


CT, MR = _bytes("CT_small.dcm"), _bytes("MR_small.dcm")


def _edited(data: bytes, **changes: object) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _content(record: ResultRecord) -> ImagingStudyContent:
    assert isinstance(record.content, ImagingStudyContent)
    return record.content


@pytest.mark.parametrize(
    ("name", "modality", "patient", "effective"),
    [
        # StudyDate/StudyTime 20040119 072730 with TimezoneOffsetFromUTC -0500
        ("CT_small.dcm", "CT", "1CT1", "2004-01-19T12:27:30Z"),
        # 20040826 185059 with -0400
        ("MR_small.dcm", "MR", "4MR1", "2004-08-26T22:50:59Z"),
    ],
)
def test_one_study_per_file(name: str, modality: str, patient: str, effective: str) -> None:
    data = _bytes(name)
    (record,) = from_dicom(data, HOSPITAL, default_tz=ZoneInfo("Asia/Shanghai"))  # offset tag wins
    ds = pydicom.dcmread(io.BytesIO(data))
    content = _content(record)
    assert (record.kind, record.status, content.modality) == ("imaging", "final", modality)
    assert (record.code.system, record.code.code) == ("http://dicom.nema.org/resources/ontology/DCM", modality)
    assert record.result_id == content.study_instance_uid == ds.StudyInstanceUID  # no AccessionNumber
    assert record.subject.value == patient
    assert record.to_obj()["effective"] == record.to_obj()["issued"] == effective
    assert [i.sop_instance_uid for i in content.instances] == [ds.SOPInstanceUID]
    # The mrl-pixels/1 digest of the one frame, derived by hand from docs/formats.md (issue 16, point 8: the
    # fingerprint is of the decoded pixels, no longer of PixelData as stored).
    pixels = ds.pixel_array.astype(ds.pixel_array.dtype.newbyteorder("<"))
    head = f"{ds.Rows} {ds.Columns} 1 {pixels.dtype.str}".encode()
    assert content.instances[0].frames_sha256 == [hashlib.sha256(b"mrl-pixels/1\0" + head + b"\0"
                                                                 + pixels.tobytes()).hexdigest()]
    assert content.instances[0].pixel_sha256 is None


def test_instances_are_grouped_by_study_and_sorted() -> None:
    second = _edited(CT, SOPInstanceUID="1.2.3.4", AccessionNumber="")
    records = from_dicom([MR, second, CT], HOSPITAL, default_tz=UTC_)
    assert [_content(r).modality for r in records] == ["CT", "MR"]  # by StudyInstanceUID
    uids = [i.sop_instance_uid for i in _content(records[0]).instances]
    assert uids == sorted(uids) and len(uids) == 2


def test_one_pixel_byte_changes_fingerprint_and_leaf() -> None:
    before = pydicom.dcmread(io.BytesIO(CT)).PixelData
    at = CT.index(before) + len(before) // 2  # a byte in the middle of the pixel data, as stored
    tampered = CT[:at] + bytes([CT[at] ^ 0x01]) + CT[at + 1 :]
    after = pydicom.dcmread(io.BytesIO(tampered)).PixelData
    assert sum(a != b for a, b in zip(before, after, strict=True)) == 1
    (original,) = from_dicom(CT, HOSPITAL, default_tz=UTC_)
    (changed,) = from_dicom(tampered, HOSPITAL, default_tz=UTC_)
    assert _content(original).instances[0].frames_sha256 != _content(changed).instances[0].frames_sha256
    assert commit(original, SALT) != commit(changed, SALT)


def test_header_fields_that_are_not_committed_leave_the_leaf_alone() -> None:
    (original,) = from_dicom(CT, HOSPITAL, default_tz=UTC_)
    (renamed,) = from_dicom(_edited(CT, PatientName="OTHER^NAME"), HOSPITAL, default_tz=UTC_)
    assert commit(original, SALT) == commit(renamed, SALT)


def test_accession_and_issuer_are_used() -> None:
    (record,) = from_dicom(_edited(CT, AccessionNumber="A-77", IssuerOfPatientID="CHARITE"), HOSPITAL,
                           default_tz=UTC_)
    assert (record.result_id, _content(record).accession) == ("A-77", "A-77")
    assert (record.subject.system, record.subject.value) == ("CHARITE", "1CT1")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not a dicom file at all", "not a DICOM Part 10 file"),
        (b'{"resourceType": "Observation"}', "not a DICOM Part 10 file"),
        (_edited(CT, PixelData=None), "has no pixel data"),
        (_edited(CT, PatientID=""), "PatientID is empty"),
    ],
    ids=["text", "json", "no-pixels", "no-patient"],
)
def test_refusals(data: bytes, reason: str) -> None:
    with pytest.raises(FormatError, match=reason):
        from_dicom(data, HOSPITAL, default_tz=UTC_)


def test_instances_of_one_study_must_agree_on_the_patient() -> None:
    other = _edited(CT, SOPInstanceUID="1.2.3.4", PatientID="SOMEONE-ELSE")
    with pytest.raises(FormatError, match="instances disagree on PatientID"):
        from_dicom([CT, other], HOSPITAL, default_tz=UTC_)


def test_the_same_instance_twice_is_refused() -> None:
    with pytest.raises(FormatError, match="is given twice"):
        from_dicom([CT, CT], HOSPITAL, default_tz=UTC_)
