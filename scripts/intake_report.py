"""Intake report: every file of a folder through a real node, as a hospital integrator would send it. Not a test.

Usage:  python scripts/intake_report.py FOLDER [--json] [--tz UTC] [--wait 300] [--include vital-signs,…]

Starts ``mrledger serve`` on a temp data dir (like scripts/bench_api.py), registers one hospital and sends every
file under FOLDER (hidden files skipped), told apart by content, one request per file (all or nothing each):

* **DICOM** (``DICM`` after the 128-byte preamble): fingerprinted here, as ``mrledger submit --format dicom`` does,
  and posted to ``POST …/results``;
* **HL7 v2** (text starting with ``MSH|``, ``FHS|`` or ``BHS|``, MLLP framing allowed): ``POST …/hl7v2?tz=``;
* **FHIR JSON** (an object with a ``resourceType``): ``POST …/fhir`` with the default category policy, or the
  categories named with ``--include``;
* anything else: counted as refused without a request.

Then it waits for anchoring and fetches the receipt of every accepted result version through the API
(``receipts_unreachable`` counts those that never answer 200), and checks, **field by field and independently of
the mapping code**, that every value of the source is in the committed record (``silent_changes`` counts those
that are not): for HL7 each OBX-3 code, OBX-5 component, OBX-6 unit, OBX-7 reference range, OBX-8 flag and NTE
comment, each OBR-4 code and PID-3 id; for FHIR every leaf value of each committed Observation / DiagnosticReport /
ImagingStudy (its narrative, ``meta``, and the references and local ids that folding rewrites aside); for DICOM
the study, instance, patient and accession ids and the modality. A value counts as present when the record holds
it as a string (HL7 escapes undone, instants compared as instants) or, for a number, as an equal number. Not
counted, because docs/formats.md lists them as deliberately not mapped: trailing zeros of decimals, and the
alternate triplet of an HL7 coded value whose primary triplet has its code (a translation of the same concept).

Prints one JSON line: ``{"files", "accepted", "refused", "5xx", "receipts_unreachable", "silent_changes"}``; details
(refusal reasons by count, each silent change) go to stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_api import Server  # noqa: E402

from mrledger.cli.http_client import result_segment  # noqa: E402

HID = "intake-report"
HL7_START = re.compile(rb"^[\x0b\xef\xbb\xbf\s]*(MSH|FHS|BHS)\|")
INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")
#: FHIR keys whose values folding rewrites (references to ``#id``, local ids) or that are not committed.
FHIR_SKIP_KEYS = {"meta", "reference", "fullUrl", "id"}


def kind_of(data: bytes) -> str:
    if len(data) > 132 and data[128:132] == b"DICM":
        return "dicom"
    if HL7_START.match(data[:64]):
        return "hl7v2"
    try:
        obj = json.loads(data)
    except ValueError:
        return "other"
    return "fhir" if isinstance(obj, dict) and isinstance(obj.get("resourceType"), str) else "other"


# -- what the committed record holds ----------------------------------------------------------------


def _instant(text: str) -> datetime | None:
    if not INSTANT.match(text):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


class Held:
    """Every leaf of a committed record, as strings, numbers and instants."""

    def __init__(self, record: Any) -> None:
        self.strings: list[str] = []
        self.numbers: list[float] = []
        self.instants: set[datetime] = set()
        self._walk(record)
        self.spaced = [" ".join(s.split()) for s in self.strings]
        self.joined = "\x00".join("".join(s.split()) for s in self.strings)

    def _walk(self, value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                self._walk(v)
        elif isinstance(value, list):
            for v in value:
                self._walk(v)
        elif isinstance(value, bool):
            self.strings.append(str(value).lower())
        elif isinstance(value, int | float):
            self.numbers.append(float(value))
            self.strings.append(str(value))
        elif isinstance(value, str):
            self.strings.append(value)
            instant = _instant(value)
            if instant is not None:
                self.instants.add(instant)

    def _number(self, value: float) -> bool:
        return any(abs(abs(n) - abs(value)) <= 1e-9 * max(1.0, abs(value)) for n in self.numbers)

    def has(self, value: Any) -> bool:
        """Present as a string (whitespace runs compared as one space; base64 line breaks and the like are
        spelling), as an equal instant, or — a number, or a range ``0.00-0.89`` committed as {low, high} — each
        number as an equal number."""
        if isinstance(value, bool):
            return str(value).lower() in self.strings
        if isinstance(value, int | float):
            return self._number(float(value))
        text = " ".join(str(value).split())
        if not text:
            return True
        instant = _instant(text)
        if instant is not None and instant in self.instants:
            return True
        if any(text in s for s in self.spaced) or "".join(text.split()) in self.joined:
            return True
        numbers = re.fullmatch(r"([+-]?\d+(?:\.\d+)?)(?:\s*-\s*([+-]?\d+(?:\.\d+)?))?", text)
        return numbers is not None and all(self._number(float(n)) for n in numbers.groups() if n is not None)


# -- what the source says ----------------------------------------------------------------------------


_HL7_ESCAPES = {"\\F\\": "|", "\\S\\": "^", "\\T\\": "&", "\\R\\": "~", "\\E\\": "\\"}


def _unescape(text: str) -> str:
    for escaped, plain in _HL7_ESCAPES.items():
        text = text.replace(escaped, plain)
    return text


def hl7_values(data: bytes) -> list[tuple[str, str]]:
    """(where, value) of every field the ledger says it commits, read with no HL7 library."""
    out: list[tuple[str, str]] = []
    text = data.decode("utf-8", "replace").strip("\x0b\x1c\r\n")
    for line in re.split(r"\r\n|\r|\n", text):
        line = line.rstrip().removesuffix("<CR>").rstrip()
        fields = line.split("|")
        seg = fields[0]

        def field(n: int, fields: list[str] = fields) -> str:
            return fields[n] if n < len(fields) else ""

        def comps(n: int) -> list[str]:
            return [_unescape(c) for c in field(n).split("^")]

        if seg == "PID":
            out.append(("PID-3.1", comps(3)[0].split("~")[0]))
        elif seg == "OBR":
            code = comps(4)
            out.append(("OBR-4", code[0] or (code[3] if len(code) > 3 else "")))
        elif seg == "OBX":
            vtype = field(2)
            code = comps(3)
            out.append(("OBX-3", code[0] or (code[3] if len(code) > 3 else "")))
            value = comps(5)
            if vtype in ("CE", "CWE", "CNE", "CF"):  # a code: the primary triplet's, else the alternate's
                out.append(("OBX-5 code", value[0] or (value[3] if len(value) > 3 else "")))
            else:
                out += [("OBX-5", v) for v in value if v.strip() and v not in (":", "-", "+", "/", ".")]
            unit = comps(6)
            out.append(("OBX-6", unit[0] or (unit[1] if len(unit) > 1 else "")))
            out.append(("OBX-7", _unescape(field(7))))
            out += [("OBX-8", f) for f in field(8).split("~")]
        elif seg == "NTE":
            out += [("NTE-3", " ".join(c.split())) for c in _unescape(field(3)).split("~")]
    return [(w, v) for w, v in out if v.strip()]


def fhir_values(resource: Any, path: str = "") -> list[tuple[str, Any]]:
    """(path, leaf) of a resource, without its narrative, meta, and what folding rewrites."""
    out: list[tuple[str, Any]] = []
    if isinstance(resource, dict):
        for key, value in resource.items():
            if key in FHIR_SKIP_KEYS or (key == "text" and isinstance(value, dict) and "div" in value):
                continue
            out += fhir_values(value, f"{path}.{key}" if path else key)
    elif isinstance(resource, list):
        for i, value in enumerate(resource):
            out += fhir_values(value, f"{path}[{i}]")
    elif resource is not None:
        out.append((path, resource))
    return out


def fhir_committed_sources(obj: dict[str, Any], skipped: set[int]) -> list[dict[str, Any]]:
    """The result resources of a FHIR input that were not skipped (a Bundle's entries by position)."""
    if obj.get("resourceType") != "Bundle":
        return [obj]
    out = []
    for i, entry in enumerate(obj.get("entry") or []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and i not in skipped and \
                resource.get("resourceType") in ("Observation", "DiagnosticReport", "ImagingStudy"):
            out.append(resource)
    return out


def dicom_values(data: bytes) -> list[tuple[str, str]]:
    import pydicom

    ds = pydicom.dcmread(__import__("io").BytesIO(data), stop_before_pixels=True)
    return [(k, str(ds.get(k, "") or "")) for k in ("StudyInstanceUID", "SOPInstanceUID", "PatientID",
                                                    "AccessionNumber", "Modality")]


# -- the run -----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    ap.add_argument("--tz", default="UTC", help="zone of HL7 v2 and DICOM times without an offset")
    ap.add_argument("--wait", type=float, default=300, help="seconds to wait for every receipt")
    ap.add_argument("--include", default="", help="FHIR Observation categories to commit although they are not "
                                                  "results (POST …/fhir?include=)")
    args = ap.parse_args()
    files = sorted(p for p in args.folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(args.folder).parts))

    tmp = Path(tempfile.mkdtemp(prefix="mrl-intake-report-"))
    server = Server(tmp / "data", batch_interval=1.0)
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    silent: list[str] = []
    accepted_versions: list[tuple[str, int, str, list[tuple[str, Any]]]] = []
    try:
        server.start()
        admin = (server.data_dir / "admin-token").read_text().strip()
        with httpx.Client(timeout=120) as client:
            r = client.post(f"{server.api}/hospitals", json={"id": HID, "name": "Intake report"},
                            headers={"Authorization": f"Bearer {admin}"})
            if r.status_code != 201:
                raise SystemExit(f"cannot register {HID}: {r.status_code} {r.text}")
            auth = {"Authorization": f"Bearer {server.token(f'hospital:{HID}')}"}
            for path in files:
                counts["files"] += 1
                data = path.read_bytes()
                kind = kind_of(data)
                answer, values = send(client, server.api, auth, kind, data, args.tz, args.include)
                if answer is None:
                    counts["refused"] += 1
                    reasons[f"{kind}: {values}"] += 1
                    continue
                if answer.status_code >= 500:
                    counts["5xx"] += 1
                    reasons[f"{kind}: HTTP {answer.status_code}"] += 1
                    continue
                if answer.status_code >= 400:
                    counts["refused"] += 1
                    detail = str(answer.json().get("detail", ""))
                    reasons[f"{kind} {answer.status_code}: {_generic(detail)}"] += 1
                    continue
                counts["accepted"] += 1
                body = answer.json()
                if kind == "fhir":
                    skipped = {s["entry"] for s in body.get("skipped", [])}
                    sources = fhir_committed_sources(json.loads(data), skipped)
                    values = [(f"{s.get('resourceType')}/{s.get('id')} {w}", v)
                              for s in sources for w, v in fhir_values(s)]
                for result in body["results"]:
                    accepted_versions.append((result["result_id"], result["version"],
                                              str(path.relative_to(args.folder)), values))
            unreachable = 0
            receipts: dict[tuple[str, int], Any] = {}
            deadline = time.monotonic() + args.wait
            pending = {(rid, v) for rid, v, _, _ in accepted_versions}
            while pending and time.monotonic() < deadline:
                for rid, v in sorted(pending):
                    got = client.get(f"{server.api}/hospitals/{HID}/results/{result_segment(rid)}/receipt",
                                     params={"version": v}, headers=auth)
                    if got.status_code == 200:
                        receipts[(rid, v)] = got.json()
                        pending.discard((rid, v))
                    elif got.status_code != 409:
                        break  # unreachable: retrying will not help
                else:
                    time.sleep(1)
                    continue
                break
            unreachable = len(pending)
            # Values per file: a file's values must be found in the union of the records it produced.
            by_file: dict[str, tuple[list[tuple[str, Any]], list[Any]]] = {}
            for rid, v, name, values in accepted_versions:
                entry = by_file.setdefault(name, (values, []))
                if (rid, v) in receipts:
                    entry[1].append(receipts[(rid, v)]["record"])
            for name, (values, records) in by_file.items():
                if not records:
                    continue
                held = Held(records)
                for where, value in values:
                    if not held.has(value):
                        silent.append(f"{name}: {where} = {value!r}")
    finally:
        server.stop()
    for reason, n in reasons.most_common():
        print(f"refused {n:5d}  {reason}", file=sys.stderr)
    for line in silent:
        print(f"silent change: {line}", file=sys.stderr)
    summary = {"files": counts["files"], "accepted": counts["accepted"], "refused": counts["refused"],
               "5xx": counts["5xx"], "receipts_unreachable": unreachable, "silent_changes": len(silent)}
    print(json.dumps(summary) if args.json else "\n".join(f"{k}: {v}" for k, v in summary.items()))


def _generic(detail: str) -> str:
    """A refusal reason without the ids that make every one unique (for counting)."""
    detail = re.sub(r"^[^:]*?(Bundle|Observation|DiagnosticReport|ImagingStudy)/[^:]*: ", "", detail)
    detail = re.sub(r"'[^']*'", "'…'", detail)
    return re.sub(r"\d[\d.]{3,}", "…", detail)[:140]


def send(client: httpx.Client, api: str, auth: dict[str, str], kind: str, data: bytes,
         tz: str, include: str = "") -> tuple[httpx.Response | None, Any]:
    """The request for one file, and the source values to look for afterwards (or, refused before any
    request, None and the reason)."""
    if kind == "fhir":
        return client.post(f"{api}/hospitals/{HID}/fhir", content=data,
                           params={"include": include} if include else None,
                           headers={**auth, "Content-Type": "application/fhir+json"}), []
    if kind == "hl7v2":
        return client.post(f"{api}/hospitals/{HID}/hl7v2", content=data, params={"tz": tz},
                           headers={**auth, "Content-Type": "x-application/hl7-v2+er7"}), hl7_values(data)
    if kind == "dicom":
        from zoneinfo import ZoneInfo

        from mrledger.ledger.formats import FormatError, from_dicom

        try:
            records = from_dicom(data, HID, default_tz=ZoneInfo(tz))
        except FormatError as exc:
            return None, _generic(str(exc))
        return client.post(f"{api}/hospitals/{HID}/results", json={"records": [r.to_obj() for r in records]},
                           headers=auth), dicom_values(data)
    return None, "not FHIR JSON, HL7 v2 or DICOM"


if __name__ == "__main__":
    main()
