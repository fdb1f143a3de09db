"""Mutual recognition: may a doctor accept another hospital's result instead of repeating the test?

Verification answers "is this what the hospital anchored?"; recognition answers the doctor's next question,
with the rules of a regional programme (Qingdao: 47 items in 6 categories across 32 hospitals): the item must be
in the programme's catalogue, young enough for that item, final, current, and from a hospital that is eligible
for the item's category (it passed external quality assessment). The answer lists *every* reason that applies,
not the first: a doctor (or an authority counting reorders) should see that a result was both too old and from
an ineligible hospital, and a client can switch on the stable reason codes.

Pure on purpose: no FastAPI, no database, no clock. The verifier passes the verdict, the record, the hospital's
eligible categories and ``now``; the catalogue is validated configuration (``catalogue/default.toml``, overridable
with ``MRL_CATALOGUE_FILE``). The shipped defaults are editable configuration, not clinical advice.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mrledger.ledger.errors import MrLedgerError
from mrledger.ledger.records import ResultRecord, format_time

LOINC = "http://loinc.org"
#: The DICOM code system: the DICOM and FHIR adapters name a study by its modality in it.
DCM = "http://dicom.nema.org/resources/ontology/DCM"
#: The code system of imaging catalogue items (they have no LOINC code; ``ct-head`` etc. are ours).
IMAGING_SYSTEM = "urn:mrledger:catalogue:imaging"
CATALOGUE_FORMAT = "mrl-catalogue/1"
#: Bounds of a catalogue: a window above ten years is a typo, not a policy.
MAX_WINDOW_DAYS = 3650
MAX_ITEMS = 2000
#: Most a single catalogue item may cost, in currency units: a price above a million is a typo.
MAX_PRICE = 1_000_000
MAX_REORDER_REASONS = 64

Decision = Literal["recognise", "reorder"]
ReasonCode = Literal["not-authentic", "revoked", "superseded", "not-final", "not-in-catalogue", "too-old",
                     "hospital-not-eligible", "anchor-pending"]
#: Reasons in the order they are reported: from "not the hospital's result" to "not on chain yet".
REASON_CODES: tuple[ReasonCode, ...] = ("not-authentic", "revoked", "superseded", "not-final", "not-in-catalogue",
                                        "too-old", "hospital-not-eligible", "anchor-pending")
#: Statuses a recognised result may have (``entered-in-error`` is ``revoked``, ``preliminary`` is ``not-final``).
FINAL_STATUSES = frozenset({"final", "amended", "corrected"})


class CatalogueError(MrLedgerError, ValueError):
    """The catalogue file is missing, not TOML, or does not describe a valid catalogue."""


# -- the catalogue file -------------------------------------------------------------------------------

Slug = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,63}$")]
Name = Annotated[str, Field(min_length=1, max_length=256)]
Window = Annotated[int, Field(ge=1, le=MAX_WINDOW_DAYS, strict=True)]
Loinc = Annotated[str, Field(pattern=r"^[0-9]{1,7}-[0-9]$")]


def _cents(value: float | int) -> float | int:
    """Prices are money: at most two decimals (``12.5`` yuan, not ``12.345``), so money saved adds up exactly
    in minor units (``Item.price_minor``) instead of drifting with binary floating point."""
    if Decimal(str(value)).as_tuple().exponent < -2:  # type: ignore[operator]
        raise ValueError("a price has at most two decimals")
    return value


#: Price of one catalogue item in the catalogue's currency (what a repeated test would have cost).
Price = Annotated[Annotated[float, Field(strict=True)] | Annotated[int, Field(strict=True)],
                  Field(ge=0, le=MAX_PRICE), AfterValidator(_cents)]


def _norm(term: str) -> str:
    """Body parts and modalities compare case- and separator-insensitively (``L SPINE`` = ``lspine``)."""
    return re.sub(r"[\s_\-]+", "", term).upper()


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CategorySpec(_Strict):
    name: Name
    window_days: Window = Field(description="Validity window of the category's items unless an item says otherwise.")
    price: Price | None = Field(None, description="Price of the category's items unless an item says otherwise.")


class LabSpec(_Strict):
    loinc: Loinc
    name: Name
    category: Slug
    window_days: Window | None = None
    price: Price | None = None


class ImagingSpec(_Strict):
    code: Slug
    name: Name
    category: Slug
    modalities: Annotated[list[Annotated[str, Field(pattern=r"^[A-Za-z0-9]{1,16}$")]], Field(min_length=1)]
    #: DICOM BodyPartExamined terms, SNOMED CT codes or displays; empty: any body part (or none).
    body_parts: list[Annotated[str, Field(min_length=1, max_length=64)]] = []
    window_days: Window | None = None
    price: Price | None = None


class ReorderReasonSpec(_Strict):
    """A reason a doctor may give for repeating a test (``POST /v1/decisions``, docs/kpis.md)."""

    name: Name
    #: Free text with the reason: ``required`` (``other``), ``optional`` or ``none``.
    detail: Literal["required", "optional", "none"] = "optional"


#: The reorder reasons when the catalogue file has no ``[reorder_reasons]`` table.
DEFAULT_REORDER_REASONS: dict[str, ReorderReasonSpec] = {
    "condition-changed": ReorderReasonSpec(name="The patient's condition has changed"),
    "result-too-old": ReorderReasonSpec(name="The result is too old"),
    "quality-doubt": ReorderReasonSpec(name="Doubt about the quality of the result"),
    "emergency": ReorderReasonSpec(name="Emergency"),
    "patient-request": ReorderReasonSpec(name="The patient asked for it"),
    "not-in-catalogue": ReorderReasonSpec(name="The test is not in the catalogue"),
    "other": ReorderReasonSpec(name="Other (explain)", detail="required"),
}


class CatalogueSpec(_Strict):
    """The TOML document, as written by an authority (see ``catalogue/default.toml``)."""

    format: Literal["mrl-catalogue/1"]
    title: Name = "mrledger catalogue"
    #: ISO 4217 code of the prices (money saved is reported in it).
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "CNY"
    categories: Annotated[dict[Slug, CategorySpec], Field(min_length=1)]
    lab: list[LabSpec] = []
    imaging: list[ImagingSpec] = []
    reorder_reasons: Annotated[dict[Slug, ReorderReasonSpec], Field(min_length=1, max_length=MAX_REORDER_REASONS)] \
        = Field(default_factory=lambda: dict(DEFAULT_REORDER_REASONS))

    @field_validator("lab", "imaging")
    @classmethod
    def _bounded(cls, items: list[Any]) -> list[Any]:
        if len(items) > MAX_ITEMS:
            raise ValueError(f"more than {MAX_ITEMS} items")
        return items

    @model_validator(mode="after")
    def _consistent(self) -> CatalogueSpec:
        unknown = sorted(({i.category for i in self.lab} | {i.category for i in self.imaging}) - set(self.categories))
        if unknown:
            raise ValueError(f"items name undefined categories: {unknown}")
        lab, imaging = [i.loinc for i in self.lab], [i.code for i in self.imaging]
        for what, keys in (("lab loinc", lab), ("imaging code", imaging)):
            dupes = sorted({k for k in keys if keys.count(k) > 1})
            if dupes:
                raise ValueError(f"duplicate {what}: {dupes}")
        return self


# -- the loaded catalogue -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Item:
    """A recognised item: a LOINC-coded lab test, or an imaging exam (modality + body part)."""

    code: str
    system: str
    name: str
    category: str
    window_days: int
    modalities: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    #: Price in minor units of the catalogue's currency (fen for CNY); None when the catalogue sets none.
    #: Not in ``to_obj``: verification answers stay as they were; ``GET /v1/catalogue`` adds it.
    price_minor: int | None = None

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"code": self.code, "system": self.system, "name": self.name,
                               "category": self.category, "window_days": self.window_days}
        if self.system == IMAGING_SYSTEM:
            obj.update(modalities=list(self.modalities), body_parts=list(self.body_parts))
        return obj


@dataclass(frozen=True, slots=True)
class Category:
    id: str
    name: str
    window_days: int


@dataclass(frozen=True, slots=True)
class ReorderReason:
    code: str
    name: str
    detail: Literal["required", "optional", "none"]


def _minor(price: float | int | None) -> int | None:
    return None if price is None else int(Decimal(str(price)) * 100)


class Catalogue:
    """Immutable, validated catalogue with lookups by LOINC code and by modality / body part."""

    def __init__(self, spec: CatalogueSpec, source: str) -> None:
        self.source, self.title, self.currency = source, spec.title, spec.currency
        self.categories = {k: Category(k, c.name, c.window_days) for k, c in spec.categories.items()}
        self.reorder_reasons = {k: ReorderReason(k, r.name, r.detail) for k, r in spec.reorder_reasons.items()}
        window = {k: c.window_days for k, c in spec.categories.items()}
        price = {k: c.price for k, c in spec.categories.items()}

        def cost(item: LabSpec | ImagingSpec) -> int | None:
            return _minor(item.price if item.price is not None else price[item.category])

        lab = [Item(i.loinc, LOINC, i.name, i.category, i.window_days or window[i.category], price_minor=cost(i))
               for i in spec.lab]
        imaging = [Item(i.code, IMAGING_SYSTEM, i.name, i.category, i.window_days or window[i.category],
                        tuple(m.upper() for m in i.modalities), tuple(i.body_parts), cost(i)) for i in spec.imaging]
        self.items: tuple[Item, ...] = (*lab, *imaging)
        self._lab = {i.code: i for i in lab}
        self._imaging = tuple(imaging)

    def lab_item(self, system: str, code: str) -> Item | None:
        return self._lab.get(code) if system == LOINC else None

    def imaging_items(self, modalities: Iterable[str], body_parts: Iterable[str]) -> list[Item]:
        """Items naming one of ``modalities`` and (when the item names body parts) one of ``body_parts``.
        An item with body parts is preferred over a modality-only item of the same modality."""
        mods = {_norm(m) for m in modalities}
        parts = {_norm(p) for p in body_parts}
        candidates = [i for i in self._imaging if mods & {_norm(m) for m in i.modalities}]
        specific = [i for i in candidates if i.body_parts and parts & {_norm(p) for p in i.body_parts}]
        covered = {m for i in specific for m in map(_norm, i.modalities)}
        generic = [i for i in candidates if not i.body_parts and not covered & {_norm(m) for m in i.modalities}]
        return specific + generic


def parse_catalogue(text: str, source: str = "<string>") -> Catalogue:
    """Validate a TOML catalogue; CatalogueError names the file and the first problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"catalogue {source}: not valid TOML: {exc}") from exc
    try:
        spec = CatalogueSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise CatalogueError(f"catalogue {source}: {loc + ': ' if loc else ''}"
                             f"{str(first['msg']).removeprefix('Value error, ')}") from exc
    return Catalogue(spec, source)


def load_catalogue(path: Path | None = None) -> Catalogue:
    """The catalogue at ``path``, or the shipped default (package data) when ``path`` is None."""
    if path is None:
        return default_catalogue()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogueError(f"catalogue {path}: cannot read: {exc}") from exc
    return parse_catalogue(text, str(path))


@cache
def default_catalogue() -> Catalogue:
    text = resources.files("mrledger.service").joinpath("catalogue/default.toml").read_text(encoding="utf-8")
    return parse_catalogue(text, "mrledger/service/catalogue/default.toml")


# -- which items a record is ----------------------------------------------------------------------------


def _split(value: str | None) -> list[str]:
    # DICOM multi-valued strings (the DICOM adapter joins a study's modalities and body parts with "\").
    return [v for v in (value or "").split("\\") if v.strip()]


def _fhir_imaging(resource: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Modalities and body sites of an R4 ImagingStudy: ``modality[]`` and each series' ``modality`` and
    ``bodySite`` (codes and displays, so both ``51185008`` and ``Chest`` can name an item's body part)."""
    series = [s for s in resource.get("series", []) if isinstance(s, dict)]
    codings = [c for c in resource.get("modality", []) if isinstance(c, dict)]
    codings += [s["modality"] for s in series if isinstance(s.get("modality"), dict)]
    sites = [s["bodySite"] for s in series if isinstance(s.get("bodySite"), dict)]
    modalities = [str(c["code"]) for c in codings if c.get("code")]
    parts = [str(c[k]) for c in sites for k in ("code", "display") if c.get(k)]
    return modalities, parts


def match_items(record: ResultRecord, catalogue: Catalogue) -> tuple[list[Item], str]:
    """The catalogue items ``record`` is, and when none, why (for the ``not-in-catalogue`` reason).

    Imaging content (``imaging-study``, or a FHIR ImagingStudy) by modality and body part; otherwise the
    record's own ``code`` (a LOINC lab item, or a DICOM modality code for a report without body part); an
    observations panel whose own code is not an item is recognised only if *every* observation is one.
    """
    content = record.content
    if content.type == "imaging-study":
        modalities, parts = _split(content.modality), _split(content.body_part)
    elif content.type == "fhir-resource" and content.resource_type == "ImagingStudy":
        modalities, parts = _fhir_imaging(content.resource)
    elif record.code.system == DCM:
        modalities, parts = [record.code.code], []
    else:
        item = catalogue.lab_item(record.code.system, record.code.code)
        if item is not None:
            return [item], ""
        if content.type == "observations":
            found = [catalogue.lab_item(o.code.system, o.code.code) for o in content.observations]
            if all(found):
                return list({i.code: i for i in found if i is not None}.values()), ""
            missing = sorted({f"{o.code.system}|{o.code.code}" for o, i in zip(content.observations, found,
                                                                                strict=True) if i is None})
            return [], (f"{record.code.system}|{record.code.code} is not a catalogue item, nor are all its "
                        f"observations ({', '.join(missing[:5])} {'is' if len(missing) == 1 else 'are'} not)")
        return [], f"{record.code.system}|{record.code.code} is not a catalogue item"
    items = catalogue.imaging_items(modalities, parts)
    if items:
        return items, ""
    return [], (f"no catalogue item for modality {'/'.join(modalities) or 'none'} and body part "
                f"{'/'.join(parts) or 'none'}")


# -- the decision -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reason:
    code: ReasonCode
    detail: str


@dataclass(frozen=True, slots=True)
class Recognition:
    """``recognise`` exactly when there is no reason to reorder. ``item`` is the binding item (the one with
    the shortest window: a panel is as young as its most perishable test); ``items`` all matched items."""

    decision: Decision
    reasons: tuple[Reason, ...]
    item: Item | None
    items: tuple[Item, ...]
    category: str | None
    valid_until: datetime | None = None

    @property
    def codes(self) -> tuple[ReasonCode, ...]:
        return tuple(r.code for r in self.reasons)

    def to_obj(self) -> dict[str, Any]:
        return {"decision": self.decision, "reasons": [{"code": r.code, "detail": r.detail} for r in self.reasons],
                "item": None if self.item is None else self.item.to_obj(), "category": self.category,
                "items": [i.to_obj() for i in self.items],
                "valid_until": None if self.valid_until is None else format_time(self.valid_until)}


@dataclass(frozen=True, slots=True)
class Later:
    """A later version of the result (superseding or revoking it)."""

    version: int
    status: str
    issued: str


def decide(*, verdict: str, record: ResultRecord, catalogue: Catalogue, eligible: Iterable[str], now: datetime,
           superseded_by: Later | None = None, revoked_by: Later | None = None,
           failed_check: str | None = None) -> Recognition:
    """Recognise or reorder, with every reason that applies.

    ``verdict`` is the verification verdict (``authentic`` | ``tampered`` | ``unknown`` | ``pending`` |
    ``revoked`` | ``cannot-match``); ``eligible`` the categories the issuing hospital is eligible for at
    ``now``. A result is too old when ``issued + window < now``: at exactly ``window`` days it is still
    recognised.
    """
    reasons: list[Reason] = []
    if verdict in ("tampered", "unknown", "cannot-match"):
        reasons.append(Reason("not-authentic", f"the verdict is {verdict}"
                                               + (f" (failed check: {failed_check})" if failed_check else "")))
    if revoked_by is not None or record.status == "entered-in-error":
        by = revoked_by or Later(record.version, record.status, format_time(record.issued))
        reasons.append(Reason("revoked", f"version {by.version} (entered-in-error, issued {by.issued}) revokes "
                                         "this result"))
    if superseded_by is not None:
        reasons.append(Reason("superseded", f"version {superseded_by.version} ({superseded_by.status}, issued "
                                            f"{superseded_by.issued}) supersedes version {record.version}"))
    if record.status not in FINAL_STATUSES and record.status != "entered-in-error":
        reasons.append(Reason("not-final", f"the status is {record.status}"))
    items, why = match_items(record, catalogue)
    item = min(items, key=lambda i: (i.window_days, i.code)) if items else None
    valid_until = None
    if item is None:
        reasons.append(Reason("not-in-catalogue", why))
    else:
        valid_until = record.issued + timedelta(days=item.window_days)
        if valid_until < now:
            reasons.append(Reason("too-old", f"issued {format_time(record.issued)}; {item.name} is recognised for "
                                             f"{item.window_days} day(s), until {format_time(valid_until)}"))
    allowed = set(eligible)
    missing = sorted({i.category for i in items} - allowed)
    if missing:
        reasons.append(Reason("hospital-not-eligible", f"{record.hospital_id} is not eligible for "
                                                       f"{', '.join(missing)}"))
    if verdict == "pending":
        reasons.append(Reason("anchor-pending", "the anchor is not confirmed on chain yet; verify again shortly"))
    reasons.sort(key=lambda r: REASON_CODES.index(r.code))
    return Recognition("reorder" if reasons else "recognise", tuple(reasons), item, tuple(items),
                       item.category if item else None, valid_until)


__all__ = ["CATALOGUE_FORMAT", "DCM", "DEFAULT_REORDER_REASONS", "IMAGING_SYSTEM", "LOINC", "REASON_CODES",
           "Catalogue", "CatalogueError", "Item", "Later", "Reason", "Recognition", "ReorderReason", "decide",
           "default_catalogue", "load_catalogue", "match_items", "parse_catalogue"]
