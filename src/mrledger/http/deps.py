"""Typed FastAPI dependencies: the node's services (``mrledger.service.ledger.Services``), the caller, and role
checks. Routes name the services parameter ``ledger``: the services of this node's ledger.

Authorisation is declared per route with ``authorize(principal, ...)``: a token of the wrong role is a
403, a missing or unknown token a 401, both RFC 9457 problems.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mrledger.http.problems import Problem
from mrledger.service.ledger import Services
from mrledger.store.access import ANONYMOUS, Principal


# The dependencies are ``async``: FastAPI runs a plain ``def`` dependency in the thread pool, and these two
# had cost every request two thread hand-offs before its handler's own.
async def get_services(request: Request) -> Services:
    ledger: Services = request.app.state.ledger
    return ledger


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_principal(request: Request, ledger: ServicesDep) -> Principal:
    header = request.headers.get("authorization")
    if header is None:
        return ANONYMOUS
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "unauthenticated", "Bearer token required", "use 'Authorization: Bearer <token>'")
    # A database read on every request, no cache: a revoked or expired token is refused on the next request
    # by every node of the database (docs: README, `mrledger token revoke`). On the event loop, as a receipt
    # verification's reads are (routes/verify.py): one indexed single-statement read (``Store.fetch``, no
    # transaction around it), cheaper than the hand-off to a worker thread and back, which every authenticated
    # request paid before its handler's own (issue 20: a city replay's decisions and record verifications).
    principal = ledger.access.authenticate(token.strip(), ledger.clock())
    if principal is None:
        raise Problem(401, "unauthenticated", "Unknown, revoked or expired token")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def authorize(principal: Principal, *roles: str, hospital_id: str | None = None) -> None:
    """Allow ``roles`` (``admin``, ``doctor``, ``auditor``, ``hospital``); a ``hospital`` token only for
    its own ``hospital_id``."""
    if principal is ANONYMOUS or principal.token_id is None:
        raise Problem(401, "unauthenticated", "Bearer token required", "this endpoint needs a token")
    kind = principal.kind
    if kind == "hospital" and "hospital" in roles:
        if hospital_id is None or principal.hospital == hospital_id:
            return
        raise Problem(403, "forbidden", "Not your hospital",
                      f"a token of hospital {principal.hospital} cannot act for {hospital_id}")
    if kind not in roles:
        raise Problem(403, "forbidden", "Role not allowed", f"role {kind!r} may not use this endpoint; "
                      f"allowed: {', '.join(sorted(roles))}")
