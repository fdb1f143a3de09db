"""What every adapter shares: the refusal type, the version/supersedes arguments, record construction and
the three ways real formats spell a point in time.

Times are the adapters' most consequential guess. A record needs an instant (UTC), but HL7 v2 and DICOM
often omit the offset and FHIR allows a bare date. The rule everywhere is the same and documented in
docs/formats.md: a missing offset is taken from the caller's ``default_tz`` (the sender's zone, which only
the integrator knows), and a partial date or time means the start of the period it names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

from mrledger.ledger.errors import RecordError
from mrledger.ledger.records import ResultRecord


class FormatError(RecordError):
    """Input that cannot become a ledger record, with a reason a hospital integrator can act on.

    A subclass of RecordError because to the caller it is the same event (this result cannot be
    committed) and code that already handles RecordError keeps working; ``where`` names the message,
    resource or file the reason is about.
    """

    def __init__(self, reason: str, *, where: str | None = None) -> None:
        super().__init__(f"{where}: {reason}" if where else reason)
        self.where = where


#: ``version`` / ``supersedes`` arguments: one number for every record of the input, or a mapping from
#: result_id to a number for inputs that carry several results (a missing result_id means version 1).
VersionArg = int | Mapping[str, int]


def lineage(result_id: str, version: VersionArg, supersedes: VersionArg | None) -> tuple[int, int | None]:
    """Version and superseded version for one result. Without an explicit ``supersedes`` a later version
    supersedes the one just before it; the service layer, which knows the stored lineage, decides the
    numbers — an adapter only sees one message and cannot know them."""
    v = version.get(result_id, 1) if isinstance(version, Mapping) else version
    if supersedes is None:
        return v, (v - 1 if v > 1 else None)
    s = supersedes.get(result_id) if isinstance(supersedes, Mapping) else supersedes
    return v, (s if s is not None else (v - 1 if v > 1 else None))


def build_record(obj: dict[str, Any], *, where: str) -> ResultRecord:
    """Validate through the record's own rules, so an adapter can never produce a record that
    ``ResultRecord.from_obj`` would refuse; the refusal names the source object."""
    try:
        return ResultRecord.from_obj(obj)
    except FormatError:
        raise
    except RecordError as exc:
        raise FormatError(str(exc), where=where) from exc


# -- time --------------------------------------------------------------------------------------------

_FHIR_DATETIME = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<mo>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d+))?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_HL7_DTM = re.compile(r"^(?P<digits>\d{4,})(?:\.(?P<f>\d{1,6}))?(?P<tz>[+-]\d{4})?$")


def _instant(parts: Mapping[str, str | None], offset: tzinfo, text: str, what: str) -> datetime:
    fraction = (parts.get("f") or "")[:6]  # below a microsecond is not representable; documented
    try:
        return datetime(
            int(parts["y"] or 0),
            int(parts.get("mo") or 1),
            int(parts.get("d") or 1),
            int(parts.get("h") or 0),
            int(parts.get("mi") or 0),
            int(parts.get("s") or 0),
            int(fraction.ljust(6, "0")) if fraction else 0,
            tzinfo=offset,
        ).astimezone(UTC)
    except ValueError as exc:
        raise FormatError(f"{what} {text!r} is not a valid date/time ({exc})") from exc


def _end(parts: Mapping[str, str | None], start: datetime) -> datetime:
    """The end of the period a partial date/time names: ``2012-09-17`` is the whole day, ``…T10:30`` the
    minute, ``…T10:30:05.2`` the tenth of a second. Used to compare times as what they say, no more."""
    fraction = parts.get("f")
    if fraction:
        return start + timedelta(microseconds=10 ** max(0, 6 - len(fraction)))
    for key, step in (("s", timedelta(seconds=1)), ("mi", timedelta(minutes=1)), ("h", timedelta(hours=1))):
        if parts.get(key):
            return start + step
    if parts.get("d"):
        return start + timedelta(days=1)
    # A month or a year: at least as long as any (only used to refuse contradictions, so erring long is safe).
    return start + timedelta(days=31 if parts.get("mo") else 366)


def issued_not_before_effective(effective: tuple[datetime, datetime], issued: tuple[datetime, datetime],
                                names: tuple[str, str], texts: tuple[str, str], where: str | None = None) -> None:
    """Refuse a result issued before it was observed: an impossible timeline (a sender's clock or mapping
    error) that would also shift the recognition window, which counts from ``issued``. Each time is a span
    (start, end) at the precision it was written, so ``2024-05-01`` issued for ``2024-05-01T10:30`` observed
    is not a contradiction; only an issued span that ends before the effective span starts is."""
    if issued[1] <= effective[0]:
        raise FormatError(f"{names[1]} {texts[1]!r} is before {names[0]} {texts[0]!r}: a result cannot be issued "
                          "before it was observed (check the sender's clock or field mapping)", where=where)


def _offset(text: str, what: str, value: str) -> timezone:
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > 14 or minutes > 59:
        raise FormatError(f"{what} {value!r} has an impossible UTC offset {text}")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def fhir_span(value: str, default_tz: tzinfo, what: str) -> tuple[datetime, datetime]:
    """``fhir_instant`` and the end of the period the value names (``_end``)."""
    m = _FHIR_DATETIME.match(value)
    start = fhir_instant(value, default_tz, what)
    assert m is not None  # fhir_instant refused it otherwise
    return start, _end(m.groupdict(), start)


def hl7_span(value: str, default_tz: tzinfo, what: str) -> tuple[datetime, datetime]:
    """``hl7_instant`` and the end of the period the value names (``_end``)."""
    start = hl7_instant(value, default_tz, what)
    m = _HL7_DTM.match(value)
    assert m is not None
    digits, fraction = m["digits"], m["f"]
    if len(digits) > 14 and fraction is None:
        digits, fraction = digits[:14], digits[14:]
    keys = ("y", "mo", "d", "h", "mi", "s")
    widths = (0, 4, 6, 8, 10, 12)
    parts: dict[str, str | None] = {k: digits[w:w + 2] or None for k, w in zip(keys, widths, strict=True)}
    parts["f"] = fraction
    return start, _end(parts, start)


def fhir_instant(value: str, default_tz: tzinfo, what: str) -> datetime:
    """FHIR date / dateTime / instant → UTC. ``2012-09-17`` is midnight of that day in ``default_tz``;
    the exact original spelling stays in the committed resource, so no precision is lost from the
    commitment, only from the record's summary fields."""
    m = _FHIR_DATETIME.match(value)
    if not m:
        raise FormatError(f"{what} {value!r} is not a FHIR date/time")
    tz = m["tz"]
    offset: tzinfo = UTC if tz == "Z" else _offset(tz, what, value) if tz else default_tz
    return _instant(m.groupdict(), offset, value, what)


def hl7_instant(value: str, default_tz: tzinfo, what: str) -> datetime:
    """HL7 v2 DTM ``YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]`` → UTC.

    Quirk accepted (documented): more than 14 digits without a ``.`` are read as fractional seconds.
    BioSense 2005 senders wrote ``200511221912102`` for 19:12:10.2; refusing it would refuse the message
    for a spelling of its header time, and no other reading of those digits is plausible.
    """
    m = _HL7_DTM.match(value)
    if not m:
        raise FormatError(f"{what} {value!r} is not an HL7 date/time (YYYYMMDDHHMMSS[.S][+/-ZZZZ])")
    digits, fraction = m["digits"], m["f"]
    if len(digits) > 14 and fraction is None:
        digits, fraction = digits[:14], digits[14:]
    if len(digits) % 2 or len(digits) > 14:
        raise FormatError(f"{what} {value!r} is not an HL7 date/time (YYYYMMDDHHMMSS[.S][+/-ZZZZ])")
    keys = ("y", "mo", "d", "h", "mi", "s")
    widths = (4, 2, 2, 2, 2, 2)
    parts: dict[str, str | None] = {"f": fraction}
    pos = 0
    for key, width in zip(keys, widths, strict=True):
        parts[key] = digits[pos : pos + width] or None
        pos += width
    offset: tzinfo = _offset(m["tz"], what, value) if m["tz"] else default_tz
    return _instant(parts, offset, value, what)


def dicom_instant(date: str, time: str, offset: str, default_tz: tzinfo, what: str) -> datetime:
    """DICOM DA ``YYYYMMDD`` + TM ``HH[MM[SS[.F{1,6}]]]`` (also the ACR-NEMA ``HH:MM:SS``) → UTC, with
    TimezoneOffsetFromUTC (``+hhmm``) when the instance carries it."""
    time = time.strip().replace(":", "")
    if not re.fullmatch(r"\d{8}", date.strip()) or not re.fullmatch(r"(\d{2}){0,3}(\.\d{1,6})?", time):
        raise FormatError(f"{what} {date!r} {time!r} is not a DICOM date (YYYYMMDD) and time (HHMMSS.F)")
    zone: tzinfo = default_tz
    if offset.strip():
        if not re.fullmatch(r"[+-]\d{4}", offset.strip()):
            raise FormatError(f"TimezoneOffsetFromUTC {offset!r} is not +hhmm or -hhmm")
        zone = _offset(offset.strip(), what, offset)
    whole, _, fraction = time.partition(".")
    d = date.strip()
    parts = {"y": d[:4], "mo": d[4:6], "d": d[6:8], "h": whole[:2] or None, "mi": whole[2:4] or None,
             "s": whole[4:6] or None, "f": fraction or None}
    return _instant(parts, zone, f"{date} {time}", what)
