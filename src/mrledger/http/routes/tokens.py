"""API tokens for administrators: list, create, revoke (``mrledger token …`` does the same on the host).

Admin tokens only. A listing never holds a token or its hash (only hashes are stored; a listing is metadata).
Admin tokens are not made here: a leaked admin token that could mint admin tokens would survive its own
revocation, so new admins come from the host (``mrledger token create --role admin``), where the database is.
Revocation and expiry take effect on the next request on every node: tokens are looked up on every request.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from mrledger.http.deps import PrincipalDep, ServicesDep, authorize
from mrledger.http.problems import Problem
from mrledger.http.schemas import problems
from mrledger.http.strict_json import StrictJsonRoute
from mrledger.store.access import TokenInfo

router = APIRouter(prefix="/v1", tags=["tokens"], route_class=StrictJsonRoute)
log = logging.getLogger("mrledger.tokens")

#: Ten years: longer is "never", which is what leaving the expiry out says.
MAX_EXPIRES_IN = 10 * 366 * 86400
MAX_TOKEN_ID = 2**63 - 1
_NO_STORE = {"Cache-Control": "no-store"}


class TokenOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 7, "role": "doctor:qd-002", "label": "ward 3 workstation", "created_at": "2026-12-02T09:00:00Z",
        "expires_at": "2027-03-02T09:00:00Z", "revoked_at": None, "state": "active"}]})

    id: int
    role: str
    label: str
    created_at: datetime
    expires_at: datetime | None = Field(description="Refused from this instant on; null: until revoked.")
    revoked_at: datetime | None
    state: Literal["active", "expired", "revoked"]


class TokenList(BaseModel):
    tokens: list[TokenOut]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"role": "doctor:qd-002", "label": "ward 3 workstation", "expires_in": 7776000},
        {"role": "hospital:gz-001", "label": "LIS upload", "expires_at": "2027-06-30T00:00:00+08:00"}]})

    role: str = Field(description="doctor, doctor:<hid>, auditor or hospital:<hid> (admin tokens: on the host).",
                      max_length=80)
    label: str = Field("", max_length=128, description="What the token is for (shown in listings and audits).")
    expires_in: int | None = Field(None, ge=1, le=MAX_EXPIRES_IN, description="Seconds until it is refused.")
    expires_at: AwareDatetime | None = Field(None, description="RFC 3339 time (with an offset) from which it is "
                                                               "refused.")

    @model_validator(mode="after")
    def _one_expiry(self) -> TokenCreate:
        if self.expires_in is not None and self.expires_at is not None:
            raise ValueError("give expires_in or expires_at, not both")
        return self


class TokenCreated(TokenOut):
    token: str = Field(description="The token itself: shown this once, only its hash is stored.")


def _out(t: TokenInfo, now: datetime) -> dict[str, Any]:
    return {"id": t.id, "role": t.role, "label": t.label, "created_at": t.created_at, "expires_at": t.expires_at,
            "revoked_at": t.revoked_at, "state": t.state(now)}


@router.get("/tokens", response_model=TokenList, summary="List API tokens (admin)",
            description="Every token, oldest first — revoked and expired ones included (the audit trail). Never "
                        "a token or its hash.", responses=problems(401, 403, 422))
def list_tokens(ledger: ServicesDep, principal: PrincipalDep,
                limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
                offset: Annotated[int, Query(ge=0, le=MAX_TOKEN_ID)] = 0) -> Any:
    authorize(principal, "admin")
    now = ledger.clock()
    return {"tokens": [_out(t, now) for t in ledger.access.tokens(limit=limit, offset=offset)]}


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenCreated,
             summary="Create an API token (admin; not admin tokens)",
             description="The answer holds the token once (`Cache-Control: no-store`). Admin tokens are refused "
                         "(403): they are made on the host with `mrledger token create --role admin`, so that a "
                         "leaked admin token cannot mint its own successor.",
             responses=problems(400, 401, 403, 404, 413, 422))
def create_token(body: TokenCreate, ledger: ServicesDep, principal: PrincipalDep, response: Response) -> Any:
    authorize(principal, "admin")
    if body.role == "admin":
        raise Problem(403, "forbidden", "Admin tokens are made on the host",
                      "create admin tokens with `mrledger token create --role admin` where the database is")
    now = ledger.clock()
    expires_at = body.expires_at
    if body.expires_in is not None:
        expires_at = now + timedelta(seconds=body.expires_in)
    token, info = ledger.access.issue_token(body.role, body.label or f"api {body.role}", now, expires_at)
    log.info("token %d (%s) created by token %s", info.id, info.role, principal.token_id)
    ledger.access_log.log(principal, "token-create")
    response.headers.update(_NO_STORE)
    return {**_out(info, now), "token": token}


@router.post("/tokens/{token_id}/revoke", response_model=TokenOut, summary="Revoke an API token (admin)",
             description="Every node refuses the token from the next request on. Idempotent: a revoked token keeps "
                         "its first revocation time.", responses=problems(401, 403, 404, 422))
def revoke_token(token_id: Annotated[int, Path(ge=1, le=MAX_TOKEN_ID)], ledger: ServicesDep,
                 principal: PrincipalDep) -> Any:
    authorize(principal, "admin")
    now = ledger.clock()
    info = ledger.access.revoke_token(token_id, now)
    log.info("token %d (%s) revoked by token %s", info.id, info.role, principal.token_id)
    ledger.access_log.log(principal, "token-revoke")
    return _out(info, now)
