"""Liveness and readiness: /healthz says the process runs, /readyz that the database and chain answer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import LedgerDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Database and chain are reachable", responses={503: {"description": "not ready"}})
def readyz(ledger: LedgerDep) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        with ledger.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # readiness must answer, not raise
        checks["database"] = f"error: {type(exc).__name__}"
    if ledger.chain is None:
        checks["chain"] = "not configured"
    else:
        try:
            checks["chain"] = {"chain_id": ledger.chain.chain_id, "head": ledger.chain.head(max_age=0)}
        except Exception as exc:
            checks["chain"] = f"error: {type(exc).__name__}"
    ready = checks["database"] == "ok" and isinstance(checks["chain"], dict | str) and \
        not str(checks["chain"]).startswith("error")
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503)
