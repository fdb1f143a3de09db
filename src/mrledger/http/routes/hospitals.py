"""Hospitals: registration (admin) and listing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from mrledger.http.deps import PrincipalDep, ServicesDep, authorize
from mrledger.http.problems import Problem
from mrledger.http.schemas import HospitalCreate, HospitalOut, HospitalSummary, problems
from mrledger.http.strict_json import StrictJsonRoute
from mrledger.store.events import STREAM_SUFFIX, is_event_stream

router = APIRouter(prefix="/v1", tags=["hospitals"], route_class=StrictJsonRoute)


@router.post(
    "/hospitals", status_code=status.HTTP_201_CREATED, response_model=HospitalOut,
    summary="Register a hospital (admin)",
    description="Registers the hospital in the ledger and, when this node holds the registry's admin key, on chain "
                "with the given submitter accounts (default: this node's anchoring account). Repeating a "
                "registration with the same name is a no-op; another name for the same id is a conflict.",
    responses=problems(400, 401, 403, 409, 413, 422, 503),
)
def register_hospital(body: HospitalCreate, ledger: ServicesDep, principal: PrincipalDep) -> HospitalOut:
    authorize(principal, "admin")
    if is_event_stream(body.id):
        raise Problem(422, "reserved-id", "Reserved hospital id",
                      f"ids ending in {STREAM_SUFFIX} name event streams (docs/kpis.md), not hospitals")
    on_chain = ledger.intake.register_hospital(body.id, body.name, body.submitters)
    return HospitalOut(id=body.id, name=body.name, on_chain_registered=on_chain)


@router.get("/hospitals", response_model=list[HospitalSummary], summary="List hospitals (any token)",
            responses=problems(401, 403))
def list_hospitals(ledger: ServicesDep, principal: PrincipalDep) -> Any:
    authorize(principal, "admin", "doctor", "auditor", "hospital")
    return [HospitalSummary(id=h, name=n) for h, n in ledger.store.hospitals()]
