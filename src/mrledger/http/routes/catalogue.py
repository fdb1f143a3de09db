"""Mutual-recognition configuration: *what* is recognised (the catalogue) and *who* is (institution eligibility).

One module for both because they are the two inputs of the same decision (``service/recognition.py``) and are
administered by the same regional authority. The catalogue is public: it is configuration, not patient data,
and hospital integration engineers need it before they hold any token. Eligibility is written by admins and
read by the roles that act on recognition decisions (doctor, auditor, admin).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from mrledger.http.deps import PrincipalDep, ServicesDep, authorize
from mrledger.http.problems import Problem
from mrledger.http.schemas import PARAM_422, ItemOut, LookupId, problems
from mrledger.http.strict_json import StrictJsonRoute
from mrledger.store.eligibility import MAX_REFERENCE, Eligibility, Grant

router = APIRouter(prefix="/v1", tags=["recognition"], route_class=StrictJsonRoute)

HospitalPath = Annotated[str, Path(description="Hospital id", examples=["gz-001"]), LookupId]
CategoryPath = Annotated[str, Path(description="Catalogue category id", examples=["clinical-biochemistry"],
                                   pattern=r"^[a-z][a-z0-9-]{0,63}$")]


class CategoryOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    window_days: int = Field(description="Default validity window of the category's items.")


class CatalogueItemOut(ItemOut):
    price: float | None = Field(None, description="What repeating the test costs, in the catalogue's `currency` "
                                                  "(money saved by recognition counts it; docs/kpis.md).")


class ReorderReasonOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    name: str
    detail: str = Field(description="Free text with the reason: required, optional or none.")


class CatalogueOut(BaseModel):
    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{
        "title": "mrledger default catalogue", "currency": "CNY", "categories": [
            {"id": "clinical-biochemistry", "name": "Clinical biochemistry", "window_days": 7}],
        "items": [{"code": "2345-7", "system": "http://loinc.org", "name": "Glucose [Mass/volume] in Serum or Plasma",
                   "category": "clinical-biochemistry", "window_days": 7, "price": 5.0}],
        "reorder_reasons": [{"code": "emergency", "name": "Emergency", "detail": "optional"},
                            {"code": "other", "name": "Other (explain)", "detail": "required"}]}]})

    title: str
    currency: str = Field("CNY", description="ISO 4217 code of the prices.")
    categories: list[CategoryOut]
    items: list[CatalogueItemOut]
    reorder_reasons: list[ReorderReasonOut] = Field(
        default_factory=list, description="Reasons a doctor may give for repeating a test (POST /v1/decisions).")


class GrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"reference": "EQA-2024-GD-0173", "valid_until": "2025-12-31T23:59:59+08:00"}]})

    reference: Annotated[str, Field(min_length=1, max_length=MAX_REFERENCE, pattern=r"\S",
                                    description="What the grant rests on, e.g. the EQA certificate id.")]
    valid_until: datetime | None = Field(None, description="End of eligibility (inclusive), with a UTC offset; "
                                                           "null: until revoked.")


class GrantOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    hospital_id: str
    category: str
    reference: str
    granted_at: datetime
    valid_until: datetime | None
    revoked_at: datetime | None
    active: bool = Field(description="Eligible now (granted, not revoked, not past valid_until).")


class EligibilityOut(BaseModel):
    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{
        "hospital_id": "gz-001", "eligible": ["clinical-biochemistry"], "grants": [{
            "hospital_id": "gz-001", "category": "clinical-biochemistry", "reference": "EQA-2024-GD-0173",
            "granted_at": "2024-05-01T08:00:00Z", "valid_until": None, "revoked_at": None, "active": True}]}]})

    hospital_id: str
    eligible: list[str] = Field(description="Categories the hospital is eligible for now.")
    grants: list[GrantOut]


def _out(grant: Grant, now: datetime) -> GrantOut:
    return GrantOut(hospital_id=grant.hospital_id, category=grant.category, reference=grant.reference,
                    granted_at=grant.granted_at, valid_until=grant.valid_until, revoked_at=grant.revoked_at,
                    active=grant.active(now))


@router.get("/catalogue", response_model=CatalogueOut, summary="The mutual-recognition catalogue (public)",
            description="Categories and items this node recognises, each with its validity window and price, and "
                        "the reasons a doctor may give for repeating a test. Editable "
                        "configuration of the programme (`MRL_CATALOGUE_FILE`), not clinical advice. No token "
                        "needed.",
            responses=problems(404, 422, s404=("not-found", "Not found", "no category 'pet' in the catalogue", {}),
                               s422=PARAM_422))
def catalogue(ledger: ServicesDep,
              category: Annotated[str | None, Query(description="Only this category's items.")] = None) -> Any:
    cat = ledger.catalogue
    if category is not None and category not in cat.categories:
        raise Problem(404, "not-found", "Not found", f"no category {category!r} in the catalogue")
    return {"title": cat.title, "currency": cat.currency,
            "categories": [{"id": c.id, "name": c.name, "window_days": c.window_days}
                           for c in cat.categories.values() if category in (None, c.id)],
            "items": [{**i.to_obj(), "price": None if i.price_minor is None else i.price_minor / 100}
                      for i in cat.items if category in (None, i.category)],
            "reorder_reasons": [{"code": r.code, "name": r.name, "detail": r.detail}
                                for r in cat.reorder_reasons.values()]}


@router.put("/hospitals/{hid}/eligibility/{category}", response_model=GrantOut,
            summary="Make a hospital eligible for a category (admin)",
            description="Grants eligibility (e.g. after external quality assessment), replacing the open grant of "
                        "that category if any. The category must be in the catalogue.",
            responses=problems(400, 401, 403, 404, 413, 422, s422=(
                "unknown-category", "Not a catalogue category", "'pet' is not one of ['clinical-biochemistry', …]",
                {})))
def grant(hid: HospitalPath, category: CategoryPath, body: GrantIn, ledger: ServicesDep,
          principal: PrincipalDep) -> GrantOut:
    authorize(principal, "admin")
    if category not in ledger.catalogue.categories:
        raise Problem(422, "unknown-category", "Not a catalogue category",
                      f"{category!r} is not one of {sorted(ledger.catalogue.categories)}")
    if body.valid_until is not None and body.valid_until.tzinfo is None:
        raise Problem(422, "validation", "Request does not match the schema", "valid_until needs a UTC offset")
    now = ledger.clock()
    return _out(Eligibility(ledger.store).grant(hid, category, body.reference, now, body.valid_until), now)


@router.delete("/hospitals/{hid}/eligibility/{category}", response_model=GrantOut,
               summary="Revoke a hospital's eligibility for a category (admin)",
               description="Ends the open grant now (history is kept). 404 when there is none.",
               responses=problems(401, 403, 404, 422, s422=PARAM_422))
def revoke(hid: HospitalPath, category: CategoryPath, ledger: ServicesDep, principal: PrincipalDep) -> GrantOut:
    authorize(principal, "admin")
    now = ledger.clock()
    return _out(Eligibility(ledger.store).revoke(hid, category, now), now)


@router.get("/hospitals/{hid}/eligibility", response_model=EligibilityOut,
            summary="A hospital's eligibility (doctor, auditor, admin)",
            responses=problems(401, 403, 404, 422, s422=PARAM_422))
def eligibility(hid: HospitalPath, ledger: ServicesDep, principal: PrincipalDep,
                history: Annotated[bool, Query(description="Include revoked and replaced grants.")] = False) -> Any:
    authorize(principal, "admin", "auditor", "doctor")
    now = ledger.clock()
    grants = Eligibility(ledger.store).grants(hid, history=history)
    return EligibilityOut(hospital_id=hid, eligible=sorted({g.category for g in grants if g.active(now)}),
                          grants=[_out(g, now) for g in grants])
