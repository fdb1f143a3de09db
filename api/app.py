"""The FastAPI application: routers, problem handlers, body-size limit. Built by ``create_app(ledger)`` so
tests and ``mrledger serve`` wire the same app to different ledgers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api import metrics, problems, web
from api.ratelimit import RateLimiter
from api.routes import audit, health, hospitals, receipt_qr, results, verify
from api.routes import catalogue as recognition_routes
from api.routes import decisions as decision_routes
from api.routes import intake as intake_routes
from api.routes import kpis as kpi_routes
from api.routes import tokens as token_routes
from api.service import Ledger
from api.settings import MAX_BODY_BYTES

DESCRIPTION = """
Hospitals submit results; each becomes a salted RFC 8785 commitment, batched per hospital into an RFC 9162
Merkle tree whose root is anchored on an EVM chain. Doctors verify a result or a patient's receipt;
auditors trace lineage and check the database against the chain.

Authentication: `Authorization: Bearer <token>`; roles `admin`, `hospital:<id>`, `doctor`, `doctor:<id>`
(a doctor affiliated with a hospital: needed to record recognition decisions), `auditor`
(`mrledger token create --role …`). Errors are RFC 9457 `application/problem+json` with a stable `type`.
"""


class BodyLimit:
    """413 for a declared body over ``MAX_BODY_BYTES`` before a byte of it is read. Pure ASGI: Starlette's
    ``BaseHTTPMiddleware`` (``@app.middleware``) runs every request through an extra task and stream, on
    the path a verification benchmark drives at hundreds of requests a second."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                body = problems.problem_body(413, "payload-too-large", "Request body too large",
                                             f"the limit is {MAX_BODY_BYTES} bytes", scope["path"])
                await JSONResponse(body, status_code=413, media_type=problems.MEDIA_TYPE)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(ledger: Ledger, *, threads: int | None = None, verify_limit: RateLimiter | None = None) -> FastAPI:
    """``threads``: size of the pool that runs the (synchronous) request handlers; None keeps AnyIO's 40.
    ``mrledger serve`` passes ``MRL_API_THREADS`` (default 4): the handlers are CPU-bound under one
    interpreter lock, and 40 threads contending for it lost a quarter of the verification throughput.
    ``verify_limit``: the per-address limit of anonymous verification (api/ratelimit.py); ``mrledger serve``
    passes ``MRL_VERIFY_RATE_LIMIT``/``MRL_VERIFY_BURST``, None (library use, tests) limits nothing."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if threads is not None:
            anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        yield

    app = FastAPI(title="mrledger", version="1", description=DESCRIPTION, lifespan=lifespan,
                  openapi_tags=[{"name": "health"}, {"name": "hospitals"}, {"name": "results"},
                                {"name": "verify"}, {"name": "audit"}])
    app.state.ledger = ledger
    app.state.verify_limit = verify_limit
    problems.install(app)

    app.add_middleware(BodyLimit)
    for module in (health, hospitals, results, verify, audit):
        app.include_router(module.router)
    app.include_router(intake_routes.router)  # FHIR / HL7 v2 intake (api/intake.py)
    app.include_router(recognition_routes.router)  # catalogue and eligibility (api/recognition.py)
    app.include_router(receipt_qr.router)  # receipt as QR, public proof for reference QRs (api/qr.py)
    app.include_router(decision_routes.router)  # recognition decisions and encounters (api/decisions.py)
    app.include_router(kpi_routes.router)  # KPIs and their audit check (api/kpis.py, api/kpi_audit.py)
    app.include_router(token_routes.router)  # API tokens for administrators (list, create, revoke)
    app.include_router(web.router)  # the /verify and /audit pages (api/web/)
    metrics.install(app, ledger)  # /metrics and the latency middleware (outermost: it times the 413s too)
    return app
