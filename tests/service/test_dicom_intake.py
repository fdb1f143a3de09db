"""DICOM: broken files are refused, lossless re-encodings of one image are one result, a 409 says what differs
(issue 16, point 8).

pydicom ships one MR image re-encoded in every common lossless transfer syntax (explicit and implicit VR little
endian, explicit big endian twice, RLE, JPEG-LS lossless, JPEG 2000 lossless, and a copy with padding after the
pixels), a multi-frame RT dose in three encodings, a truncated copy of the MR image and a file with a bad VR
(``NumberOfFrames`` of ``1A``). Before, the truncated file was accepted and fingerprinted and then blocked the real
image with a 409; and the re-encoded copies gave different fingerprints.
"""

from __future__ import annotations

import io
from pathlib import Path
from zoneinfo import ZoneInfo

import pydicom
import pytest
from pydicom.data import get_testdata_file

from mrledger.ledger.formats import FormatError, from_dicom
from mrledger.ledger.formats.dicom import pixel_sha256
from tests.harness import Api
from tests.service.test_intake import HID, live, run  # noqa: F401  (live is a fixture)

TZ = ZoneInfo("Europe/Berlin")
MR_COPIES = ["MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
             "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_padded.dcm"]
DOSE_COPIES = ["rtdose.dcm", "rtdose_expb.dcm", "rtdose_rle.dcm"]


def _bytes(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None, f"pydicom test file {name} is missing"
    return Path(path).read_bytes()


def test_lossless_re_encodings_of_one_image_give_one_record() -> None:
    syntaxes = {str(pydicom.dcmread(io.BytesIO(_bytes(n))).file_meta.TransferSyntaxUID) for n in MR_COPIES}
    assert len(syntaxes) >= 6  # really different encodings
    stored = {pixel_sha256(pydicom.dcmread(io.BytesIO(_bytes(n)))) for n in MR_COPIES}
    assert len(stored) >= 6  # ... whose bytes as stored all differ
    records = [from_dicom(_bytes(n), HID, default_tz=TZ)[0].canonical_bytes() for n in MR_COPIES]
    assert len(set(records)) == 1, "a lossless copy must be the same result"
    doses = [from_dicom(_bytes(n), HID, default_tz=TZ)[0] for n in DOSE_COPIES]
    assert len({d.canonical_bytes() for d in doses}) == 1
    assert len(doses[0].content.instances[0].frames_sha256 or []) == 15  # type: ignore[union-attr]


@pytest.mark.parametrize(("name", "reason"), [
    ("MR_truncated.dcm", "its pixel data cannot be decoded whole (transfer syntax 1.2.840.10008.1.2.1)"),
    ("badVR.dcm", "element (0028,0008) NumberOfFrames has value '1A', which is not a valid IS (a bad VR)"),
])
def test_files_pydicom_cannot_read_whole_are_refused(name: str, reason: str) -> None:
    with pytest.raises(FormatError) as info:
        from_dicom(_bytes(name), HID, default_tz=TZ)
    assert reason in str(info.value)
    cut = _bytes("CT_small.dcm")[:-2000]  # cut inside the pixel data
    with pytest.raises(FormatError, match=r"cannot be decoded whole|cannot read it whole"):
        from_dicom(cut, HID, default_tz=TZ)


def _changed_pixel(data: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    at = data.index(ds.PixelData) + len(ds.PixelData) // 2
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def test_truncated_file_no_longer_blocks_the_image_and_a_409_says_what_differs(
        live: tuple[Api, str], tmp_path: Path) -> None:  # noqa: F811
    api, url = live
    token = api.tokens[f"hospital:{HID}"]

    def send(name: str, data: bytes) -> object:
        path = tmp_path / name
        path.write_bytes(data)
        return run(url, "--format", "dicom", "--tz", "Europe/Berlin", str(path), "--token", token)

    truncated = send("MR_truncated.dcm", _bytes("MR_truncated.dcm"))
    assert truncated.exit_code == 2 and "cannot be decoded whole" in truncated.output  # type: ignore[attr-defined]
    real = send("MR_small.dcm", _bytes("MR_small.dcm"))
    assert real.exit_code == 0 and "1 accepted" in real.stdout, real.output  # type: ignore[attr-defined]
    for name in MR_COPIES[1:]:  # another PACS' encoding of the same image: the same result, a duplicate
        copy = send(name, _bytes(name))
        assert copy.exit_code == 0 and "0 accepted, 1 duplicates" in copy.stdout, (name, copy.output)  # type: ignore[attr-defined]
    other = send("MR_other.dcm", _changed_pixel(_bytes("MR_small.dcm")))
    assert other.exit_code == 1  # type: ignore[attr-defined]
    text = " ".join(other.output.split())  # type: ignore[attr-defined]
    assert "1 instance(s) have other pixels (1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457; pixel fingerprint " \
           "differs)" in text, text
    assert "amended or corrected" not in text


def test_a_study_held_under_the_stored_bytes_fingerprint_is_named_so(api: Api) -> None:
    (record,) = from_dicom(_bytes("MR_small.dcm"), HID, default_tz=TZ)
    obj = record.to_obj()
    ds = pydicom.dcmread(io.BytesIO(_bytes("MR_small.dcm")))
    obj["content"]["instances"] = [{"sop_instance_uid": ds.SOPInstanceUID, "pixel_sha256": pixel_sha256(ds)}]
    hospital = api.auth(f"hospital:{HID}")
    assert api.client.post(f"/v1/hospitals/{HID}/results", json=obj, headers=hospital).status_code == 202
    again = api.client.post(f"/v1/hospitals/{HID}/results", json=record.to_obj(), headers=hospital)
    assert again.status_code == 409
    assert "fingerprinted by the earlier scheme (pixel_sha256" in again.json()["detail"]
    assert "nothing needs to be sent again" in again.json()["detail"]
