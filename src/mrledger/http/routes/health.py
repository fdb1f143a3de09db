"""Liveness and readiness.

``/healthz`` says the process runs: it is answered on the event loop, never behind a handler thread, so a
pool of threads waiting on a slow database or chain cannot make a live node look dead (it waited 40 s once
four handler threads were stuck on a frozen chain node). ``/readyz`` says the database and the chain answer,
and what an operator should know about anchoring: it reads the chain's health as the probe thread last saw
it (anchoring/health.py) instead of asking the node, so it answers within a second when the node does not
(it hung for up to 46 s). Anchoring alarms (anchors the chain lost, being re-anchored) are reported but do
not make the node unready: it still accepts and verifies results, and a load balancer taking it out of
service would only make things worse.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio
from anyio import CapacityLimiter, to_thread
from anyio.lowlevel import RunVar
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from mrledger.anchoring.node import rpc_request
from mrledger.http.deps import ServicesDep
from mrledger.service.ledger import Services

router = APIRouter(tags=["health"])
#: When the chain is not watched by a probe thread (library use, tests), readiness asks it with this timeout.
DIRECT_PROBE_TIMEOUT = 0.8


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def chain_check(ledger: Services) -> tuple[bool, Any]:
    """(answers, detail) for the chain, without waiting on it for more than a second."""
    chain = ledger.chain
    if chain is None:
        return True, "not configured"
    if chain.health is not None:
        snap = chain.health.snapshot()
        if snap.up:
            return True, {"chain_id": chain.chain_id, "head": snap.head}
        silent = "never answered" if snap.silent_for is None else f"no answer for {snap.silent_for:.0f} s"
        return False, f"error: {silent} ({snap.error})"
    try:
        head = int(rpc_request(chain.rpc_url, "eth_blockNumber", timeout=DIRECT_PROBE_TIMEOUT), 16) \
            if chain.rpc_url else chain.head(max_age=0)
    except Exception as exc:
        return False, f"error: {type(exc).__name__}"
    return True, {"chain_id": chain.chain_id, "head": head}


def anchoring_check(ledger: Services) -> dict[str, Any]:
    """How far anchoring is behind, and the open alarms (anchors the chain lost or moved)."""
    outbox = ledger.outbox
    oldest = outbox.oldest_unconfirmed()
    now = datetime.now(UTC)
    alarms = outbox.alarms()
    detail: dict[str, Any] = {
        "role": ledger.node_role(),
        "oldest_unconfirmed_batch_seconds": None if oldest is None else round((now - oldest).total_seconds(), 1),
        "alarms": [{"id": a.id, "kind": a.kind, "hospital_id": a.hospital_id, "first_seq": a.first_seq,
                    "last_seq": a.last_seq, "since": a.raised_at.isoformat(), "detail": a.detail}
                   for a in alarms],
    }
    if alarms:
        detail["status"] = "re-anchoring"
    return detail


#: /readyz's database reads run on a thread of their own, not in the handlers' pool: under full ingest that
#: pool is busy with submissions, and readiness waited behind them (1.5 s in scripts/chaos.py).
_POOL: RunVar[CapacityLimiter] = RunVar("mrl_readyz_pool")


@router.get("/readyz", summary="Database and chain are reachable", responses={503: {"description": "not ready"}})
async def readyz(ledger: ServicesDep) -> JSONResponse:
    try:
        pool = _POOL.get()
    except LookupError:
        pool = CapacityLimiter(2)
        _POOL.set(pool)
    with anyio.move_on_after(READY_WITHIN) as scope:
        body, status = await to_thread.run_sync(_readiness, ledger, limiter=pool, abandon_on_cancel=True)
    if scope.cancelled_caught:  # the database did not answer in time: that is the answer
        body, status = {"status": "not ready", "checks": {"database": "error: no answer within "
                                                                      f"{READY_WITHIN:.0f} s"}}, 503
    return JSONResponse(body, status_code=status)


#: Readiness answers within this many seconds, whatever hangs.
READY_WITHIN = 1.0


def _readiness(ledger: Services) -> tuple[dict[str, Any], int]:
    checks: dict[str, Any] = {}
    try:
        with ledger.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # readiness must answer, not raise
        checks["database"] = f"error: {type(exc).__name__}"
    chain_ok, checks["chain"] = chain_check(ledger)
    if checks["database"] == "ok":
        try:
            checks["anchoring"] = anchoring_check(ledger)
        except Exception as exc:
            checks["anchoring"] = f"error: {type(exc).__name__}"
    ready = checks["database"] == "ok" and chain_ok
    return {"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503
