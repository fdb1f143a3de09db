"""HL7 v2.x ORU^R01 results → ledger records: one record per OBR with its OBX results and NTE comments.

Parsing is python-hl7's; this module decides what each field means for the ledger (docs/formats.md has
the tables). Real feeds are not textbook: the accepted quirks are the ones the CDC BioSense 2005 test
messages show (batch headers without trailers, a repeated MSH-10, ``F<CR>`` typed literally at a segment
end, 15-digit timestamps) and are each documented where they are handled.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

import hl7  # type: ignore[import-untyped]  # python-hl7 ships no type information

from mrledger.ledger.formats._common import (
    FormatError,
    VersionArg,
    build_record,
    hl7_span,
    issued_not_before_effective,
    lineage,
)
from mrledger.ledger.records import Kind, ResultRecord, Status, format_time

#: HL7 table 0396 mnemonics and OIDs whose FHIR/terminology URI is well known. Anything else is kept
#: verbatim (``L``, ``99LAB``): an invented URI would look authoritative and be wrong.
CODING_SYSTEMS = {
    "LN": "http://loinc.org", "2.16.840.1.113883.6.1": "http://loinc.org",
    "SCT": "http://snomed.info/sct", "SNOMEDCT": "http://snomed.info/sct", "2.16.840.1.113883.6.96": "http://snomed.info/sct",
    "UCUM": "http://unitsofmeasure.org", "2.16.840.1.113883.6.8": "http://unitsofmeasure.org",
    "I10": "http://hl7.org/fhir/sid/icd-10", "DCM": "http://dicom.nema.org/resources/ontology/DCM",
}
#: OBR-25 / OBX-11 result status (HL7 table 0085/0123) → ours. X (cannot be obtained) and N (not asked)
#: are refused: there is no result to commit.
STATUS: dict[str, Status] = {
    "F": "final", "U": "final", "C": "corrected", "P": "preliminary", "R": "preliminary", "S": "preliminary",
    "I": "preliminary", "A": "preliminary", "D": "entered-in-error", "W": "entered-in-error",
}
REFUSED_STATUS = {"X": "results cannot be obtained for this observation", "N": "not asked: no result was sought"}
#: When OBR-25 and the OBX-11s differ, the record takes the most cautious: a report holding a wrong or
#: preliminary result is not final, and one corrected result makes the report a correction.
STATUS_RANK: dict[Status, int] = {"final": 0, "amended": 1, "corrected": 1, "preliminary": 2, "entered-in-error": 3}
#: OBR-24 diagnostic service section (HL7 table 0074) → kind; empty OBR-24 → the caller's default_kind.
SERVICE_SECTION: dict[str, Kind] = {
    **dict.fromkeys(("LAB", "CH", "HM", "MB", "MCB", "MYC", "PAR", "SR", "VR", "BLB", "CP", "SP", "PAT",
                     "TX", "SC", "IMM", "CG", "HLA", "OSL", "URN", "BG"), "lab"),
    **dict.fromkeys(("RAD", "CT", "MR", "US", "NMR", "NMS", "RX", "CUS", "OUS", "VUS", "XRC", "RUS"), "imaging"),
    "EC": "ecg",
}
TEXT_TYPES = ("ST", "TX", "FT", "DT", "TM", "TS", "DTM", "ID", "IS")
CODED_TYPES = ("CE", "CWE", "CNE", "CF")
BATCH_SEGMENTS = ("FHS", "BHS", "BTS", "FTS")
#: SN components 1 and 3 (HL7 v2.5 §2.A.74): the comparator and the separator/suffix.
SN_COMPARATORS = ("", ">", "<", ">=", "<=", "=", "<>")
SN_SEPARATORS = ("", "-", "+", "/", ".", ":")
#: OBX-8 abnormal flags, HL7 table 0078 (v2.5.1, with the codes v2.6-v2.9 added).
ABNORMAL_FLAGS = frozenset({
    "L", "H", "LL", "HH", "<", ">", "N", "A", "AA", "U", "D", "B", "W", "S", "R", "I", "MS", "VS", "NEG", "POS",
    "IND", "DET", "ND", "AC", "RR", "QCF", "TOX", "WR", "SDD", "SYN-R", "SYN-S", "EX", "HX", "LX", "HU", "LU",
    "NR", "NCL", "IE", "E", "EXP", "CAR", "HM", "N/A"})
#: OBX-11 / OBR-25 codes of a result that is out (final, corrected, final without change).
FINAL_CODES = ("F", "C", "U")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")
_RANGE = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*-\s*([+-]?\d+(?:\.\d+)?)\s*$")


def from_hl7v2(
    data: bytes | str,
    hospital_id: str,
    *,
    default_tz: tzinfo,
    version: VersionArg = 1,
    supersedes: VersionArg | None = None,
    default_kind: Kind = "lab",
    encoding: str = "utf-8",
) -> list[ResultRecord]:
    """Every OBR of every ORU^R01 message in ``data`` (one message, or a FHS/BHS batch file).

    ``default_tz`` is required: most feeds send local times without an offset and only the integrator
    knows the sender's zone (the BioSense messages are US). ``hospital_id`` is the authenticated
    submitter, never MSH-4, which is a claim inside the message. All or nothing, as for FHIR bundles.
    """
    records: list[ResultRecord] = []
    for number, lines in enumerate(_messages(_text(data, encoding)), start=1):
        where = f"message {number}"
        try:
            message = hl7.parse("\r".join(lines))
        except Exception as exc:  # python-hl7 raises bare ValueError/IndexError subclasses alike
            raise FormatError(f"not parseable as HL7 v2: {exc}", where=where) from exc
        _check_type(message, where)
        for order in _orders(message, where):
            records.append(_record(order, message, hospital_id, version, supersedes, default_tz, default_kind))
    if not records:
        raise FormatError("no MSH segment: not an HL7 v2 message")
    return records


# -- framing -----------------------------------------------------------------------------------------


def _text(data: bytes | str, encoding: str) -> str:
    if isinstance(data, bytes | bytearray):
        try:
            return bytes(data).decode(encoding)
        except UnicodeDecodeError as exc:
            raise FormatError(f"not {encoding} text ({exc}); pass the feed's encoding (MSH-18)") from exc
    return data


def _messages(text: str) -> Iterator[list[str]]:
    """Segments grouped per message. Accepts ``\\r``, ``\\n`` and ``\\r\\n``; drops MLLP framing bytes and
    FHS/BHS/BTS/FTS batch wrappers (with or without trailers); a segment that ends in the literal text
    ``<CR>`` (a segment terminator typed out by hand, BioSense EM-851) loses it."""
    current: list[str] = []
    for raw in re.split(r"\r\n|\r|\n", text.strip("\x0b\x1c\r\n")):
        line = raw.rstrip()
        if line.endswith("<CR>"):
            line = line[: -len("<CR>")].rstrip()
        if not line or line[:3] in BATCH_SEGMENTS:
            continue
        if line.startswith("MSH"):
            if current:
                yield current
            current = []
        elif not current:
            raise FormatError(f"segment {line[:3]!r} appears before the first MSH")
        current.append(line)
    if current:
        yield current


def _get(segment: Any, field_num: int, rep: int = 1, comp: int = 1, sub: int = 1) -> str:
    """One value by HL7 position (1-based), unescaped; absent positions are empty, as HL7 intends."""
    try:
        return str(segment.extract_field(1, field_num, rep, comp, sub)).strip()
    except IndexError:
        return ""


def _repeats(segment: Any, field_num: int) -> int:
    """How many repetitions (``~``) a field has; 0 when the segment is shorter."""
    return len(segment(field_num)) if field_num < len(segment) else 0


def _check_type(message: Any, where: str) -> None:
    msh = message.segment("MSH")
    kind = f"{_get(msh, 9, 1, 1)}^{_get(msh, 9, 1, 2)}"
    if kind != "ORU^R01":
        raise FormatError(f"message type {kind} is not a result (ORU^R01)", where=where)


# -- structure ---------------------------------------------------------------------------------------


@dataclass
class _Order:
    """An OBR with the PID it belongs to, its OBX results and the NTE comments attached to each."""

    pid: Any
    obr: Any
    where: str
    orc: Any = None
    notes: list[str] = field(default_factory=list)
    results: list[tuple[Any, list[str]]] = field(default_factory=list)


def _orders(message: Any, where: str) -> list[_Order]:
    orders: list[_Order] = []
    pid: Any = None
    orc: Any = None
    for segment in message:
        sid = str(segment[0])
        if sid == "PID":
            pid = segment
        elif sid == "ORC":
            orc = segment
        elif sid == "OBR":
            filler = _get(segment, 3) or _get(segment, 2) or f"#{len(orders) + 1}"
            orders.append(_Order(pid, segment, f"{where} OBR {filler}", orc))
            orc = None  # an ORC belongs to the OBR that follows it
        elif sid == "OBX":
            if not orders:
                raise FormatError("OBX before any OBR: a result must belong to an order", where=where)
            orders[-1].results.append((segment, []))
        elif sid == "NTE" and orders:
            comment = " ".join(_get(segment, 3, r) for r in range(1, _repeats(segment, 3) + 1))
            target = orders[-1].results[-1][1] if orders[-1].results else orders[-1].notes
            if comment.strip():
                target.append(comment.strip())
    if not orders:
        raise FormatError("ORU^R01 without OBR: no result in this message", where=where)
    return orders


# -- one record --------------------------------------------------------------------------------------


def _record(
    order: _Order,
    message: Any,
    hospital_id: str,
    version: VersionArg,
    supersedes: VersionArg | None,
    default_tz: tzinfo,
    default_kind: Kind,
) -> ResultRecord:
    obr, where = order.obr, order.where
    result_id = _result_id(order, message.segment("MSH"))
    if not result_id:
        raise FormatError("OBR-3 (filler order number) and OBR-2 (placer order number) are both empty", where=where)
    if not order.results:
        raise FormatError("OBR has no OBX results", where=where)
    observed = _get(obr, 7)
    if not observed:
        raise FormatError("OBR-7 (observation date/time) is empty: the result has no time", where=where)
    effective_span = hl7_span(observed, default_tz, "OBR-7")
    if _get(obr, 22):
        issued_span = hl7_span(_get(obr, 22), default_tz, "OBR-22")
        issued_not_before_effective(effective_span, issued_span, ("OBR-7 (observation time)",
                                    "OBR-22 (results reported)"), (observed, _get(obr, 22)), where)
    else:
        # No issued time stated: MSH-7 (when the message was made) stands in, but never earlier than OBR-7.
        # Header times are often template values (every BioSense message says 2005-11-22 19:12, two of them
        # for results observed later); OBR-22, when sent, is refused if it is before OBR-7.
        issued_span = max(hl7_span(_get(message.segment("MSH"), 7), default_tz, "MSH-7"), effective_span)
    section = _get(obr, 24).upper()
    v, s = lineage(result_id, version, supersedes)
    obj: dict[str, Any] = {
        "hospital_id": hospital_id,
        "result_id": result_id,
        "version": v,
        "kind": SERVICE_SECTION.get(section, "other") if section else default_kind,
        "code": _coding(obr, 4, where, "OBR-4"),
        "subject": _subject(order.pid, where),
        "effective": format_time(effective_span[0]),
        "issued": format_time(issued_span[0]),
        "status": _status(order, where),
        "content": {
            "type": "observations",
            "observations": [_observation(obx, notes, where, _get(obr, 25)) for obx, notes in order.results],
        },
    }
    if order.notes:
        obj["content"]["conclusion"] = " ".join(order.notes)
    if s is not None:
        obj["supersedes"] = s
    return build_record(obj, where=where)


#: HL7 escape sequences for the delimiters (v2.5 §2.7.4), used to spell a result id as an HL7 EI.
_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))


def _escape(text: str) -> str:
    for plain, escaped in _ESCAPES:
        text = text.replace(plain, escaped)
    return text


def _unescape(text: str) -> str:
    for plain, escaped in reversed(_ESCAPES):
        text = text.replace(escaped, plain)
    return text


def _ei(segment: Any, field_num: int) -> list[str]:
    """An EI (entity id, namespace id, universal id, universal id type) or HD (the last three) as 4 parts."""
    return [_get(segment, field_num, 1, i) for i in (1, 2, 3, 4)] if segment is not None else ["", "", "", ""]


def _result_id(order: _Order, msh: Any) -> str:
    """The result id: the filler order number *with its assigning authority*, spelt as the HL7 EI it is
    (``EM-811^LIS``, ``4711^LAB^2.16.840.1.113883.3.72^ISO``; delimiters inside a component escaped, trailing
    empty components dropped). A bare OBR-3.1 is unique only within the filler application that assigned it:
    two senders behind one hospital's interface engine reused a number, and another patient's other test
    became "version 2" of a result. The authority is OBR-3.2-3.4; else ORC-3's when ORC-3 names the same
    number; else MSH-3, the sending application (which in an ORU is the filler that assigned it), else MSH-4.
    Without OBR-3, the placer number OBR-2 the same way (its own authority, else ORC-2's). Results stored
    under the bare number before (``legacy_result_id``) are continued by service/intake.py."""
    for field_num in (3, 2):
        entity, *authority = _ei(order.obr, field_num)
        if not entity:
            continue
        if not any(authority) and order.orc is not None and _get(order.orc, field_num) == entity:
            authority = _ei(order.orc, field_num)[1:]
        if not any(authority) and field_num == 3:
            authority = _ei(msh, 3)[:3] if any(_ei(msh, 3)[:3]) else _ei(msh, 4)[:3]
        parts = [_escape(p) for p in (entity, *authority)]
        while parts and not parts[-1]:
            parts.pop()
        return "^".join(parts)
    return ""


def legacy_result_id(result_id: str) -> str:
    """The id the adapter gave the same OBR before result ids carried the filler's authority: OBR-3.1 (or
    OBR-2.1) alone."""
    return _unescape(result_id.split("^", 1)[0])


def _system(name: str) -> str:
    if name in CODING_SYSTEMS:
        return CODING_SYSTEMS[name]
    return f"urn:oid:{name}" if re.fullmatch(r"[0-2](\.\d+)+", name) else name


def _coded(segment: Any, field_num: int) -> dict[str, str] | None:
    """CE/CWE: the primary triplet (components 1-3), else the alternate (4-6). None if neither has a
    code *and* a coding system."""
    for offset in (0, 3):
        code, text, system = (_get(segment, field_num, 1, offset + i) for i in (1, 2, 3))
        if code and system:
            out = {"system": _system(system), "code": code}
            if text:
                out["display"] = text
            return out
    return None


def _coding(segment: Any, field_num: int, where: str, name: str) -> dict[str, str]:
    coding = _coded(segment, field_num)
    if coding is None:
        raise FormatError(f"{name} has no code with a coding system (neither components 1-3 nor 4-6)", where=where)
    return coding


def _subject(pid: Any, where: str) -> dict[str, str]:
    """PID-3, first repetition: CX.1 is the id, CX.4 (assigning authority, an HD) becomes the system:
    ``urn:oid:`` + universal id for ISO, ``urn:uuid:`` for UUID, the URI itself, else the namespace id."""
    if pid is None:
        raise FormatError("no PID segment before the OBR: the result names no patient", where=where)
    value = _get(pid, 3, 1, 1)
    if not value:
        raise FormatError("PID-3 (patient identifier list) is empty", where=where)
    namespace, universal, kind = (_get(pid, 3, 1, 4, i) for i in (1, 2, 3))
    system = {"ISO": f"urn:oid:{universal}", "UUID": f"urn:uuid:{universal}", "URI": universal}.get(kind.upper())
    if not universal:
        system = None
    out = {"value": value}
    if system or namespace or universal:
        out["system"] = system or namespace or universal
    return out


def _status(order: _Order, where: str) -> Status:
    codes = [("OBR-25", _get(order.obr, 25))] + [("OBX-11", _get(obx, 11)) for obx, _ in order.results]
    found: list[Status] = []
    for name, raw in codes:
        code = raw.upper()
        if not code:
            continue
        if code in REFUSED_STATUS:
            raise FormatError(f"{name} = {code}: {REFUSED_STATUS[code]}", where=where)
        if code not in STATUS:
            raise FormatError(f"{name} = {raw!r} is not a result status (HL7 table 0085)", where=where)
        found.append(STATUS[code])
    if not found:
        raise FormatError("neither OBR-25 nor any OBX-11 gives a result status", where=where)
    return max(found, key=STATUS_RANK.__getitem__)


def _number(text: str, where: str, what: str) -> int | float:
    if not _NUMBER.match(text):
        raise FormatError(f"{what} {text!r} is not a number", where=where)
    return float(text) if "." in text else int(text)


def _components(segment: Any, field_num: int) -> list[str]:
    """The (unescaped) components of a field's first repetition; [] when absent."""
    if _repeats(segment, field_num) == 0:
        return []
    first = segment(field_num)[0]
    count = len(first) if isinstance(first, hl7.containers.Container) and not isinstance(first, str) else 1
    return [_get(segment, field_num, 1, i) for i in range(1, max(count, 1) + 1)]


def _verbatim(segment: Any, field_num: int) -> str:
    """A field exactly as sent (ER7, escapes and delimiters included): how a value the record has no
    structure for is kept, rather than losing the components the mapping does not read."""
    return str(segment(field_num)).strip()


def _only(parts: list[str], used: int, where: str, what: str) -> None:
    """Refuse content beyond the first ``used`` components: it would be dropped without a word."""
    extra = [p for p in parts[used:] if p]
    if extra:
        raise FormatError(f"{what} has more components than its type carries ({extra[0]!r} after component "
                          f"{used}); are the fields shifted?", where=where)


def _value(obx: Any, where: str) -> Any:
    """OBX-5 by OBX-2. Nothing the sender wrote is dropped: what the record has no structure for is kept
    verbatim (the field's ER7 text) or refused with the field named.

    SN (structured numeric: comparator, number, separator/suffix, number) with only a number is that
    number; otherwise it is kept as its compact text ``<comparator><num1><separator><num2>`` (``<5``,
    ``100:150``, ``1:80``, ``2-5``), after checking each part against HL7's SN definition: the record has no
    ratio type, and the text is unambiguous and round-trips to HL7."""
    vtype = _get(obx, 2).upper()
    if _repeats(obx, 5) > 1:
        raise FormatError("OBX-5 repeats: multiple values in one OBX are not mapped", where=where)
    raw = _get(obx, 5)
    if _repeats(obx, 5) == 0 or not str(obx(5)).strip("^& "):
        return None
    parts = _components(obx, 5)
    if vtype == "NM":
        _only(parts, 1, where, "OBX-5 (NM)")
        return _number(raw, where, "OBX-5 (NM)")
    if vtype == "SN":
        _only(parts, 4, where, "OBX-5 (SN)")
        comparator, num1, separator, num2 = [*parts, "", "", "", ""][:4]
        if comparator not in SN_COMPARATORS:
            raise FormatError(f"OBX-5 (SN) comparator {comparator!r} is not one of {', '.join(SN_COMPARATORS[1:])}",
                              where=where)
        if separator not in SN_SEPARATORS:
            raise FormatError(f"OBX-5 (SN) separator {separator!r} is not one of {', '.join(SN_SEPARATORS[1:])}",
                              where=where)
        if not num1 and not num2:
            raise FormatError("OBX-5 (SN) has no number", where=where)
        if num2 and not separator:
            raise FormatError(f"OBX-5 (SN) has a second number {num2!r} without a separator", where=where)
        for part in (num1, num2):
            if part:
                _number(part, where, "OBX-5 (SN) number")
        if not (comparator or separator or num2):
            return _number(num1, where, "OBX-5 (SN)")
        return f"{comparator}{num1}{separator}{num2}"
    if vtype in CODED_TYPES:
        coding = _coded(obx, 5)
        if coding is not None:
            return coding
        # No code with a coding system: the text alone when that is all there is, else the field verbatim
        # (a code without its system is still what the sender said).
        present = [i for i, p in enumerate(parts) if p]
        return parts[present[0]] if len(present) == 1 and present[0] in (1, 4) else _verbatim(obx, 5)
    if vtype in TEXT_TYPES:
        return raw if len([p for p in parts if p]) <= 1 and parts[0] == raw else _verbatim(obx, 5)
    raise FormatError(f"OBX-2 value type {vtype or '(empty)'!r} is not mapped (NM, SN, CE/CWE, ST/TX/FT)", where=where)


def _reference(obx: Any, where: str) -> dict[str, Any] | None:
    """OBX-7: ``low-high`` with two numbers → {low, high}; other text → {text}; a field with components
    (``^^10.000000``) → {text} verbatim, never its first component only; text without a digit or a letter
    (``>``, a shifted field) is refused."""
    if _repeats(obx, 7) == 0 or not str(obx(7)).strip():
        return None
    parts = _components(obx, 7)
    if _repeats(obx, 7) > 1 or len([p for p in parts if p]) > 1 or (parts and not parts[0]):
        return {"text": _verbatim(obx, 7)}
    reference = parts[0]
    m = _RANGE.match(reference)
    if m:
        return {"low": _number(m[1], where, "OBX-7"), "high": _number(m[2], where, "OBX-7")}
    if not any(c.isalnum() for c in reference):
        raise FormatError(f"OBX-7 (reference range) {reference!r} names no number or word: not a range; are the "
                          "fields shifted?", where=where)
    return {"text": reference}


def _interpretation(obx: Any, where: str) -> str | None:
    """OBX-8 (repetitions joined with ``,``): each must be an HL7 table 0078 code. A shifted OBX puts other
    fields' values here (``1``), and the ledger would then vouch for an interpretation nobody made."""
    flags = [f for f in (_get(obx, 8, r) for r in range(1, _repeats(obx, 8) + 1)) if f]
    for flag in flags:
        if flag not in ABNORMAL_FLAGS:
            raise FormatError(f"OBX-8 (interpretation) {flag!r} is not an HL7 table 0078 code (L, H, LL, HH, N, A, "
                              "AA, <, >, …); are the fields shifted?", where=where)
    return ",".join(flags) or None


def _observation(obx: Any, notes: list[str], where: str, obr_status: str = "") -> dict[str, Any]:
    where = f"{where} OBX {_get(obx, 1) or '?'}"
    out: dict[str, Any] = {"code": _coding(obx, 3, where, "OBX-3")}
    value = _value(obx, where)
    status = (_get(obx, 11) or obr_status).upper()
    if value is None and status in FINAL_CODES and not notes:
        field = "OBX-11" if _get(obx, 11) else "OBR-25"
        raise FormatError(f"OBX-5 (value) is empty although the observation is final ({field} = {status}) and "
                          "carries no comment; are the fields shifted?", where=where)
    if value is not None:
        out["value"] = value
    unit = _get(obx, 6, 1, 1) or _get(obx, 6, 1, 2)
    if unit:
        out["unit"] = unit
    reference = _reference(obx, where)
    if reference is not None:
        out["reference_range"] = reference
    interpretation = _interpretation(obx, where)
    if interpretation:
        out["interpretation"] = interpretation
    if notes:
        out["note"] = " ".join(notes)
    return out
