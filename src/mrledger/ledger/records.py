"""Result records: what a hospital commits to, validated once at construction and immutable after.

Consensus-critical: ``ResultRecord.canonical_bytes()`` feeds the leaf commitment. Normalisation happens
here, at construction, not in the hash: strings are NFC-normalised (a name typed on a Mac and on
Windows is the same name), times are converted to UTC with a ``Z`` suffix, and absent optional fields
are omitted rather than written as ``null``. A receipt carries the already-normalised record, so a
verifier in another language needs only RFC 8785 and SHA-256, not these rules.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    ValidationError,
    model_validator,
)

from mrledger.ledger.canonical import _Fallback, _prepare, canonicalize, encode_prepared, parse_json
from mrledger.ledger.errors import EncodingError, RecordError

#: Bounds, checked at construction. A record's canonical form above this size is refused.
MAX_RECORD_BYTES = 1024 * 1024
MAX_OBSERVATIONS = 1000
MAX_INSTANCES = 5000
MAX_TEXT = 4096
MAX_VERSION = 2**31 - 1
#: JSON numbers must survive an IEEE-754 double round trip (RFC 8785 §3.2.2.3, I-JSON).
MAX_SAFE_INTEGER = 2**53 - 1

Kind = Literal["lab", "imaging", "ecg", "other"]
Status = Literal["final", "amended", "corrected", "entered-in-error", "preliminary"]
STATUSES: tuple[str, ...] = ("final", "amended", "corrected", "entered-in-error", "preliminary")


#: Unicode general category Cc is exactly these 65 code points (C0, DEL, C1).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _nfc(value: str) -> str:
    # Called for every string of every record (~18 per lab result). A regex search and skipping NFC for
    # ASCII (already NFC) replaced a per-character category loop: 14 -> ~3 µs per record.
    if not value.isascii():
        value = unicodedata.normalize("NFC", value)
    if _CONTROL.search(value):
        raise ValueError("control characters are not allowed")
    return value


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("time must carry a UTC offset (e.g. 2024-05-01T08:30:00+08:00)")
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with ``Z``; fractional seconds only when present. One spelling per instant."""
    value = value.astimezone(UTC)
    if type(value) is datetime:
        # The same text, faster (called twice per record): isoformat() of a datetime whose tzinfo is UTC is
        # the fields below, zero-padded alike, then ".%06d" of the microseconds when non-zero, then "+00:00".
        text = value.isoformat()[:-6]
        return (text.rstrip("0") if value.microsecond else text) + "Z"
    text = f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def _finite(value: float | int) -> float | int:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("number must be finite")
    if abs(value) > MAX_SAFE_INTEGER and (isinstance(value, int) or value == int(value)):
        raise ValueError(f"number magnitude above {MAX_SAFE_INTEGER} is not portable JSON")
    return value


Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT), AfterValidator(_nfc)]
Ident = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_nfc)]
HOSPITAL_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
HospitalId = Annotated[str, Field(pattern=f"^{HOSPITAL_ID_PATTERN}$")]
UtcTime = Annotated[datetime, AfterValidator(_utc), PlainSerializer(format_time, return_type=str)]
Number = Annotated[float | int, AfterValidator(_finite)]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class Coding(_Frozen):
    """A code in a code system, e.g. LOINC ``http://loinc.org`` / ``2345-7``."""

    system: Text
    code: Ident
    display: Text | None = None


class Identifier(_Frozen):
    """The patient as the submitting hospital knows them (never leaves the hospital's database in clear
    except inside a receipt the patient holds)."""

    system: Text | None = None
    value: Ident


class Range(_Frozen):
    low: Number | None = None
    high: Number | None = None
    text: Text | None = None


class Observation(_Frozen):
    """One measured value: a number with its unit, a text, or a coded answer."""

    code: Coding
    value: Number | Text | Coding | StrictBool | None = None
    unit: Text | None = None
    reference_range: Range | None = None
    interpretation: Text | None = None
    note: Text | None = None


class ObservationsContent(_Frozen):
    type: Literal["observations"] = "observations"
    observations: Annotated[list[Observation], Field(min_length=1, max_length=MAX_OBSERVATIONS)]
    conclusion: Text | None = None


#: Frames one instance's fingerprint may list (multi-frame CT/MR/US reach a few thousand).
MAX_FRAMES = 10000


class InstanceFingerprint(_Frozen):
    """One DICOM instance: ``frames_sha256``, one ``mrl-pixels/1`` digest of the decoded pixels per frame
    (mrledger.ledger.formats.dicom.frame_digests: equal for every lossless transfer syntax), or — records made before
    it — ``pixel_sha256``, SHA-256 of the PixelData bytes as stored. Exactly one of the two. Adding the optional
    field left the encoding of existing records unchanged."""

    sop_instance_uid: Ident
    pixel_sha256: Sha256Hex | None = None
    frames_sha256: Annotated[list[Sha256Hex], Field(min_length=1, max_length=MAX_FRAMES)] | None = None

    @model_validator(mode="after")
    def _one_fingerprint(self) -> InstanceFingerprint:
        if (self.pixel_sha256 is None) == (self.frames_sha256 is None):
            raise ValueError("frames_sha256: an instance has exactly one of pixel_sha256 and frames_sha256")
        return self


class ImagingStudyContent(_Frozen):
    """The fingerprint of a study: enough to prove the images shown are the images anchored."""

    type: Literal["imaging-study"] = "imaging-study"
    study_instance_uid: Ident
    modality: Ident
    body_part: Text | None = None
    accession: Ident | None = None
    instances: Annotated[list[InstanceFingerprint], Field(max_length=MAX_INSTANCES)] = []
    conclusion: Text | None = None


#: Bounds of a committed FHIR resource projection (beyond MAX_RECORD_BYTES): nesting depth, so a hostile
#: document cannot exhaust the recursion of the validator or of the canonicaliser.
MAX_RESOURCE_DEPTH = 64
_ALLOWED_CONTROLS = frozenset("\t\n\r")  # FHIR strings may hold these (FHIR string: [ \r\n\t\S]+)
#: Category Cc (``_CONTROL``) but for _ALLOWED_CONTROLS: one regex search instead of a category lookup per
#: character (a FHIR projection holds hundreds of characters; tests/ledger/test_fast_paths.py checks the set).
_CONTROL_IN_JSON = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_string(value: str, key: bool) -> str:
    """One rule for every string of opaque JSON, object keys included (docs/receipt.md §3): NFC, no lone
    surrogate (no UTF-8 form, so nothing RFC 8785 can hash), no control character but tab, LF and CR.
    Errors name a key (structure) but never quote a value (it may be patient data)."""
    where = f" in key {value[:40]!a}" if key else ""
    if not str.isascii(value):  # ASCII is NFC already: normalize() would return it as is, after a scan
        if _SURROGATE.search(value):
            raise ValueError(f"a lone surrogate is not allowed{where}")
        value = unicodedata.normalize("NFC", value)
    if _CONTROL_IN_JSON.search(value):
        raise ValueError(f"control characters other than tab, CR and LF are not allowed{where}")
    return value


def _json_value(value: Any, depth: int) -> Any:
    """A JSON value normalised like the rest of the record: NFC strings, portable numbers; deep-copied so
    the caller's dict can change afterwards without changing what was committed. ``depth``: 0 for the
    ``resource``/``data`` object itself, one more for each member or element below it."""
    if depth > MAX_RESOURCE_DEPTH:
        raise ValueError(f"resource is nested deeper than {MAX_RESOURCE_DEPTH} levels")
    if isinstance(value, str):
        return _json_string(value, key=False)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return _finite(value)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError("object keys must be strings")
            key = _json_string(k, key=True)
            if key in out:  # two spellings of one key: NFC would silently keep only the last value
                first = next(o for o in value if o != k and unicodedata.normalize("NFC", o) == key)
                raise ValueError(f"keys {first!a} and {k!a} are one key once NFC-normalised")
            out[key] = _json_value(v, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_json_value(v, depth + 1) for v in value]
    raise ValueError(f"{type(value).__name__} is not a JSON value")


def _json_object(value: Any) -> Any:
    """Before pydantic's own ``dict[str, Any]`` check, which would turn a key with a lone surrogate into
    three U+FFFD (and so commit a key nobody sent) instead of refusing it."""
    return _json_value(value, 0) if isinstance(value, dict) else value


class FhirResourceContent(_Frozen):
    """A FHIR resource committed as a whole: its canonical projection (``mrledger.ledger.formats.fhir``: the
    resource's JSON minus ``meta`` and ``text`` of every resource in it). The projection, not a summary,
    is committed because a FHIR result carries more than ``Observation`` can say (components, panels,
    specimens, interpretations), and any of it may be what a receiving doctor relies on."""

    type: Literal["fhir-resource"] = "fhir-resource"
    resource_type: Annotated[str, Field(pattern=r"^[A-Z][A-Za-z]{1,63}$")]
    resource: Annotated[dict[str, Any], BeforeValidator(_json_object)]

    @model_validator(mode="after")
    def _same_type(self) -> FhirResourceContent:
        if self.resource.get("resourceType") != self.resource_type:
            raise ValueError("resource_type: must equal resource.resourceType")
        return self


class EventContent(_Frozen):
    """A programme event in a hospital's event stream (``<hid>.events``, docs/kpis.md): a doctor's
    recognition decision or a reported encounter. Committed, batched and anchored exactly like a result so
    that an auditor can prove no decision was added, changed or dropped; ``data`` is opaque JSON normalised
    like a FHIR projection (NFC strings, portable numbers). Added as a new content type, so the encodings
    of the existing ones are untouched."""

    type: Literal["event"] = "event"
    event: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,63}$")]
    data: Annotated[dict[str, Any], BeforeValidator(_json_object)]


Content = Annotated[
    ObservationsContent | ImagingStudyContent | FhirResourceContent | EventContent, Field(discriminator="type")
]


class ResultRecord(_Frozen):
    """One version of one result of one hospital. ``(hospital_id, result_id, version)`` is its identity."""

    hospital_id: HospitalId
    result_id: Ident
    # Strict: "1" is not a version. A lax int would accept what the hospital did not send.
    version: Annotated[int, Field(ge=1, le=MAX_VERSION, strict=True)]
    kind: Kind
    code: Coding
    subject: Identifier
    effective: UtcTime
    issued: UtcTime
    status: Status
    supersedes: Annotated[int, Field(ge=1, le=MAX_VERSION, strict=True)] | None = None
    content: Content

    @model_validator(mode="after")
    def _lineage(self) -> ResultRecord:
        if self.version == 1 and self.supersedes is not None:
            raise ValueError("supersedes: version 1 cannot supersede anything")
        if self.version > 1 and (self.supersedes is None or self.supersedes >= self.version):
            raise ValueError("supersedes: a later version must name an earlier version it supersedes")
        if self.status in ("amended", "corrected") and self.version == 1:
            raise ValueError("status: an amended or corrected result must be version 2 or later")
        if self.content.type == "imaging-study" and self.kind != "imaging":
            raise ValueError("kind: imaging-study content requires kind 'imaging'")
        return self

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def from_obj(cls, obj: Any) -> ResultRecord:
        """Validate a parsed JSON object; raise RecordError naming the first bad field."""
        if not isinstance(obj, dict):
            raise RecordError("a record must be a JSON object")
        try:
            # What model_validate(obj) calls, without its argument checks (~0.4 µs per record).
            record: ResultRecord = cls.__pydantic_validator__.validate_python(obj)
        except ValidationError as exc:
            raise _record_error(exc) from exc
        size = len(record.canonical_bytes())
        if size > MAX_RECORD_BYTES:
            raise RecordError(f"canonical record is {size} bytes, limit {MAX_RECORD_BYTES}")
        return record

    @classmethod
    def from_json(cls, data: bytes | str) -> ResultRecord:
        try:
            obj = parse_json(data)
        except EncodingError as exc:
            raise RecordError(str(exc)) from exc
        return cls.from_obj(obj)

    # -- encoding -----------------------------------------------------------------------------------

    def to_obj(self) -> dict[str, Any]:
        """The normalised JSON object: what the receipt carries and what is canonicalised."""
        return self.model_dump(mode="json", exclude_none=True)

    def canonical_bytes(self) -> bytes:
        # Computed once: the record is immutable, and the digest, the leaf and the stored JSON all need it.
        # Cached in the instance dict by hand: Python 3.11's functools.cached_property computes under one
        # lock shared by all instances, and ingest's request threads queued on it (6 % of server time).
        cached: bytes | None = self.__dict__.get("_canonical")
        if cached is None:
            cached = _canonical_fast(self)
            if cached is None:
                cached = canonicalize(self.to_obj())
            self.__dict__["_canonical"] = cached
        return cached

    def to_json(self) -> str:
        return self.canonical_bytes().decode("utf-8")

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy is built through validation again: an update must neither bypass the record's rules
        nor inherit the cached canonical bytes of the original."""
        return self.model_validate({**self.to_obj(), **(update or {})})

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.hospital_id, self.result_id, self.version)


def _record_error(exc: ValidationError) -> RecordError:
    first = exc.errors(include_url=False)[0]
    loc = _field_path(first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "value_error" and ": " in message:
        # Our model validators prefix the field ("supersedes: …"); surface it as the field.
        field, _, reason = message.partition(": ")
        return RecordError(reason, field=f"{loc}.{field}" if loc else field)
    return RecordError(message, field=loc or None)


_UNION_MEMBERS = frozenset({"float", "int", "str", "bool", "Coding"})
_CONTENT_TAGS = frozenset({"observations", "imaging-study", "fhir-resource", "event"})


def _field_path(loc: tuple[int | str, ...]) -> str:
    """Dotted path as the user wrote it: pydantic inserts union member names and discriminator tags
    into locations (``content.observations.observations.0``); drop those."""
    parts: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(part, str) and (part in _UNION_MEMBERS or "[" in part):
            continue
        if isinstance(part, str) and part in _CONTENT_TAGS and i > 0 and loc[i - 1] == "content":
            continue
        parts.append(str(part))
    return ".".join(parts)


# -- fast canonical bytes ------------------------------------------------------------------------------
# Why: ``canonicalize(self.to_obj())`` walks each record three times (pydantic's model_dump, the
# canonicaliser's ``_prepare``, the JSON encoder): ~17 µs of a lab record's ~45 µs of ingest. ``_plain``
# builds ``_prepare(self.to_obj())`` in one walk of the model, for what records hold once validated:
# model_dump(mode="json", exclude_none=True) of such a model is its fields minus the None ones, with
# ``format_time`` applied to the times, each nested model the same, and exact str/int/float/bool and JSON
# dicts/lists unchanged (so ``_prepare`` of them is ``_prepare`` of the dump). Field names are walked in
# sorted order, so the encoder need not sort them unless a JSON dict came from ``_prepare``. Anything
# else (an unknown type or model, a model this reasoning does not cover) raises _Fallback, and the
# record takes the reference path. tests/ledger/test_fast_paths.py compares both paths.

#: Per model class, its field names in sorted order, and those of them that are times (format_time).
_PLAIN: dict[type[BaseModel], tuple[tuple[str, ...], frozenset[str]]] = {}


def _plain_fields(cls: type[BaseModel]) -> tuple[tuple[str, ...], frozenset[str]] | None:
    """The field table of a model that model_dump serialises field by field, or None (the model takes the
    reference path) for one whose dump may be more than that: a serialiser other than the times' anywhere
    in its schema (nested models have their own table), computed, excluded or aliased fields."""
    root = cls.__pydantic_core_schema__
    definitions = {d["ref"]: d for d in root.get("definitions", ()) if isinstance(d, dict) and "ref" in d}
    hooks = list(_serialisation_hooks(root, cls, definitions))
    fields: list[tuple[str, bool]] = []
    for name, info in cls.model_fields.items():
        if info.exclude or info.alias is not None or info.serialization_alias is not None:
            return None
        is_time = any(isinstance(m, PlainSerializer) and m.func is format_time for m in info.metadata)
        fields.append((name, is_time))
    times = sum(is_time for _, is_time in fields)
    if cls.model_computed_fields or len(hooks) != times or not all(_is_time_hook(h) for h in hooks):
        return None
    return tuple(sorted(name for name, _ in fields)), frozenset(name for name, is_time in fields if is_time)


_HOOK_KEYS = frozenset({"serialization", "serialization_exclude", "serialization_alias", "serialization_exclude_if",
                        "computed_fields"})


def _is_time_hook(hook: Any) -> bool:
    return isinstance(hook, dict) and hook.get("type") == "function-plain" and hook.get("function") is format_time


def _serialisation_hooks(node: Any, cls: type[BaseModel], definitions: dict[str, Any]) -> Iterator[Any]:
    """Everything in a core schema that can make a dump differ from the validated value, except inside
    other models; a reference to anything but a model counts as one."""
    if isinstance(node, list | tuple):
        for item in node:
            yield from _serialisation_hooks(item, cls, definitions)
    elif isinstance(node, dict):
        if node.get("type") == "model" and node.get("cls") is not cls:
            return
        if node.get("type") == "definition-ref":
            if definitions.get(node.get("schema_ref", ""), {}).get("type") != "model":
                yield node
            return
        for key, value in node.items():
            if key in _HOOK_KEYS:
                if value:
                    yield value
            elif key != "definitions":
                yield from _serialisation_hooks(value, cls, definitions)


def _plain(model: BaseModel, unsorted: list[bool]) -> dict[str, Any]:
    """``_prepare(model.model_dump(mode="json", exclude_none=True))``, or _Fallback."""
    spec = _PLAIN.get(type(model))
    if spec is None:
        raise _Fallback
    names, times = spec
    values = model.__dict__
    for name in times:
        if type(values[name]) is not datetime:
            raise _Fallback
    out: dict[str, Any] = {}
    for name in names:
        value = values[name]
        t = type(value)
        if t is str:
            out[name] = value
        elif value is None:
            continue
        elif t in _PLAIN:
            out[name] = _plain(value, unsorted)
        elif t is datetime:
            if name not in times:
                raise _Fallback
            out[name] = format_time(value)
        elif t is list:
            out[name] = [_plain(item, unsorted) for item in value]
        else:
            if t is dict:
                unsorted.append(True)
            out[name] = _prepare(value)
    return out


def _canonical_fast(record: ResultRecord) -> bytes | None:
    """``canonicalize(record.to_obj())`` where ``_plain`` proves the shortcut, else None."""
    unsorted: list[bool] = []
    try:
        obj = _plain(record, unsorted)
    except (_Fallback, KeyError):
        return None
    return encode_prepared(obj, keys_sorted=not unsorted)


for _cls in (Coding, Identifier, Range, Observation, ObservationsContent, InstanceFingerprint,
             ImagingStudyContent, FhirResourceContent, EventContent, ResultRecord):
    _table = _plain_fields(_cls)
    if _table is not None:
        _PLAIN[_cls] = _table
