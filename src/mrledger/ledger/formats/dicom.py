"""DICOM instances → one imaging record per study, fingerprinting every instance's pixels.

The ledger does not hold images; it holds proof of them. Each instance contributes one SHA-256 per frame of its
**decoded** pixel values (``frame_digests``, ``mrl-pixels/1``), so a viewer can show that the pixels on screen are
the pixels the hospital anchored — whichever lossless transfer syntax they travelled in. PACS transcode between
explicit and implicit VR, big endian, RLE, JPEG-LS and JPEG 2000 lossless as a matter of course, and a fingerprint
of the stored bytes (what records before issue 16 carry in ``pixel_sha256``) made every such copy read as another
image; a lossy copy (JPEG baseline) has other pixel values and still reads as another image, rightly. The transfer
syntax is deliberately not committed: two encodings of the same pixels are one image, and committing the
encoding would make every transcoding a change. A file that pydicom cannot read whole — truncated, a value that
does not parse as its VR, pixel data shorter than its header says — is refused: its fingerprint would be of a
fragment, and it would then block the real image (docs/formats.md).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Iterable
from datetime import tzinfo
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from mrledger.ledger.formats._common import FormatError, VersionArg, build_record, dicom_instant, lineage
from mrledger.ledger.records import ResultRecord, format_time

#: Domain tag of the pixel fingerprint (docs/formats.md): SHA-256 over this tag, the frame's shape and sample
#: type, and its pixel values as little-endian bytes.
PIXELS_TAG = b"mrl-pixels/1"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
#: Displays from DICOM PS3.16 CID 29 (Acquisition Modality) for the common modalities; a code without a
#: display here is still committed, just without one.
MODALITY_DISPLAY = {
    "CR": "Computed Radiography", "CT": "Computed Tomography", "DX": "Digital Radiography",
    "ES": "Endoscopy", "IO": "Intra-oral Radiography", "MG": "Mammography", "MR": "Magnetic Resonance",
    "NM": "Nuclear Medicine", "OCT": "Optical Coherence Tomography", "OP": "Ophthalmic Photography",
    "PT": "Positron emission tomography", "PX": "Panoramic X-Ray", "RF": "Radiofluoroscopy",
    "US": "Ultrasound", "XA": "X-Ray Angiography", "XC": "External-camera Photography",
}
#: Study-level attributes every instance of a study must agree on; disagreement means a mis-filed
#: instance, and committing it would bind one patient's images to another's study.
STUDY_LEVEL = ("PatientID", "IssuerOfPatientID", "AccessionNumber", "StudyDate", "StudyTime", "TimezoneOffsetFromUTC")


def from_dicom(
    data: bytes | Iterable[bytes],
    hospital_id: str,
    *,
    default_tz: tzinfo,
    version: VersionArg = 1,
    supersedes: VersionArg | None = None,
) -> list[ResultRecord]:
    """One ``imaging-study`` record per StudyInstanceUID among the given Part 10 files (bytes each),
    ordered by study UID. ``default_tz`` applies when an instance has no TimezoneOffsetFromUTC (most do
    not; the sender's zone is the integrator's knowledge). Status is always ``final``: DICOM has no
    result status, and a study that reaches the archive is complete by the modality's account."""
    blobs = [data] if isinstance(data, bytes | bytearray) else list(data)
    if not blobs:
        raise FormatError("no DICOM instances given")
    studies: dict[str, list[Dataset]] = {}
    for number, blob in enumerate(blobs, start=1):
        ds = _read(bytes(blob), f"instance {number}")
        studies.setdefault(ds.StudyInstanceUID, []).append(ds)
    return [
        _record(uid, studies[uid], hospital_id, version, supersedes, default_tz) for uid in sorted(studies)
    ]


def pixel_sha256(ds: Dataset) -> str:
    """The stored-bytes fingerprint of records before issue 16: SHA-256 over the PixelData element's value bytes
    as stored (transfer syntax included). Kept so those records can still be recomputed and compared."""
    return hashlib.sha256(bytes(ds["PixelData"].value)).hexdigest()


def frame_digests(ds: Dataset) -> list[str]:
    """One ``mrl-pixels/1`` digest per frame: SHA-256 of ``PIXELS_TAG``, NUL, ``"<rows> <columns> <samples>
    <dtype>"`` (numpy's little-endian type string, e.g. ``<i2``), NUL, and the frame's decoded pixel values as
    little-endian bytes in row-major order (samples interleaved). Equal for every lossless encoding of the same
    pixels. Decoding needs numpy and, for JPEG-LS / JPEG 2000, pylibjpeg's decoders (dependencies)."""
    import numpy as np  # imported here: a verifier that only hashes records never needs it

    array = ds.pixel_array
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames == 1:
        array = array[np.newaxis, ...]
    out = []
    for frame in array:
        little = np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("<"))
        samples = little.shape[2] if little.ndim == 3 else 1
        head = f"{little.shape[0]} {little.shape[1]} {samples} {little.dtype.str}".encode("ascii")
        out.append(hashlib.sha256(PIXELS_TAG + b"\0" + head + b"\0" + little.tobytes()).hexdigest())
    return out


def transfer_syntax(ds: Dataset) -> str:
    """The instance's transfer syntax UID (reported beside a fingerprint, never committed: see the module)."""
    return str(getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID", "") or "")


def _read(blob: bytes, where: str) -> Dataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # syntax nits (a UID component with a leading zero) are common
            ds = pydicom.dcmread(io.BytesIO(blob))
            for element in ds.iterall():  # every value parsed now: a cut element shows here
                _unparsed(element)
    except FormatError as exc:
        raise FormatError(f"unreadable DICOM file: {exc}", where=where) from exc
    except InvalidDicomError as exc:
        raise FormatError(
            "not a DICOM Part 10 file (no 'DICM' marker after the 128-byte preamble)", where=where
        ) from exc
    except Exception as exc:  # truncated or corrupt element data: pydicom raises (and warns) many types
        raise FormatError(f"unreadable DICOM file: pydicom cannot read it whole ({exc})", where=where) from exc
    for keyword in ("StudyInstanceUID", "SOPInstanceUID", "Modality"):
        if not str(ds.get(keyword, "") or "").strip():
            raise FormatError(f"has no {keyword}", where=where)
    where = f"{where} ({ds.SOPInstanceUID})"
    if "PixelData" not in ds or not ds["PixelData"].value:
        raise FormatError(
            "has no pixel data (PixelData, 7FE0,0010): only image instances are fingerprinted", where=where
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. padding after the last frame: not pixels, rightly ignored
            ds.mrl_frames = frame_digests(ds)  # decoded now: a short or corrupt PixelData is refused here
    except Exception as exc:  # pydicom's pixel handlers raise ValueError, ImportError, RuntimeError, …
        raise FormatError(f"its pixel data cannot be decoded whole (transfer syntax {transfer_syntax(ds) or '?'}): "
                          f"{exc}", where=where) from exc
    return ds


#: VRs whose values pydicom converts to numbers; a value it had to leave as text (``IS '1A'``) is a bad VR.
_NUMERIC_VRS = ("IS", "DS")


def _unparsed(element: Any) -> None:
    """Refuse an element whose value does not parse as its VR: pydicom only warns and keeps the text, which
    would then be fingerprinted (or drive pixel decoding, as NumberOfFrames does) as if it were valid."""
    value = element.value
    if element.VR in _NUMERIC_VRS:
        for item in value if isinstance(value, pydicom.multival.MultiValue) else [value]:
            if isinstance(item, str) and item.strip():
                raise FormatError(f"element {element.tag} {element.keyword or ''} has value {item!r}, which is "
                                  f"not a valid {element.VR} (a bad VR)")


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def _agreed(instances: list[Dataset], keyword: str, where: str) -> str:
    values = {_text(ds, keyword) for ds in instances}
    if len(values) > 1:
        raise FormatError(f"instances disagree on {keyword}: {sorted(values)}", where=where)
    return values.pop()


def _subject(ds: Dataset, where: str) -> dict[str, Any]:
    """PatientID, with IssuerOfPatientID as the system; an ISO universal entity id from the issuer
    qualifiers (0010,0024) wins, as ``urn:oid:``, because it is globally unique where a name is not."""
    value = _text(ds, "PatientID")
    if not value:
        raise FormatError("PatientID is empty: the study names no patient", where=where)
    out = {"value": value}
    system = _text(ds, "IssuerOfPatientID")
    for item in ds.get("IssuerOfPatientIDQualifiersSequence", []):
        if _text(item, "UniversalEntityIDType") == "ISO" and _text(item, "UniversalEntityID"):
            system = f"urn:oid:{_text(item, 'UniversalEntityID')}"
    if system:
        out["system"] = system
    return out


def _record(
    study_uid: str,
    instances: list[Dataset],
    hospital_id: str,
    version: VersionArg,
    supersedes: VersionArg | None,
    default_tz: tzinfo,
) -> ResultRecord:
    where = f"study {study_uid}"
    for keyword in STUDY_LEVEL:
        _agreed(instances, keyword, where)
    first = instances[0]
    seen: set[str] = set()
    for ds in instances:
        if ds.SOPInstanceUID in seen:
            raise FormatError(f"instance {ds.SOPInstanceUID} is given twice", where=where)
        seen.add(ds.SOPInstanceUID)
    date = _text(first, "StudyDate")
    if not date:
        raise FormatError("StudyDate is empty: the study has no time", where=where)
    offset = _text(first, "TimezoneOffsetFromUTC")
    effective = format_time(dicom_instant(date, _text(first, "StudyTime"), offset, default_tz, "StudyDate/StudyTime"))
    modalities = sorted({_text(ds, "Modality") for ds in instances})
    body_parts = sorted({_text(ds, "BodyPartExamined") for ds in instances} - {""})
    accession = _text(first, "AccessionNumber")
    result_id = accession or study_uid
    v, s = lineage(result_id, version, supersedes)
    code = {"system": DCM, "code": modalities[0]}
    if modalities[0] in MODALITY_DISPLAY:
        code["display"] = MODALITY_DISPLAY[modalities[0]]
    content: dict[str, Any] = {
        "type": "imaging-study",
        "study_instance_uid": study_uid,
        "modality": "\\".join(modalities),
        "instances": [
            {"sop_instance_uid": str(ds.SOPInstanceUID), "frames_sha256": ds.mrl_frames}
            for ds in sorted(instances, key=lambda d: str(d.SOPInstanceUID))
        ],
    }
    if body_parts:
        content["body_part"] = "\\".join(body_parts)
    if accession:
        content["accession"] = accession
    obj: dict[str, Any] = {
        "hospital_id": hospital_id,
        "result_id": result_id,
        "version": v,
        "kind": "imaging",
        "code": code,
        "subject": _subject(first, where),
        "effective": effective,
        "issued": effective,
        "status": "final",
        "content": content,
    }
    if s is not None:
        obj["supersedes"] = s
    return build_record(obj, where=where)
