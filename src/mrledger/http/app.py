"""The FastAPI application: routers, problem handlers, body-size limit. Built by ``create_app(ledger)`` so
tests and ``mrledger serve`` wire the same app to different ledgers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mrledger.http import metrics, problems, web
from mrledger.http.fastlane import FastLane, always
from mrledger.http.ratelimit import RateLimiter
from mrledger.http.routes import audit, health, hospitals, published, receipt_qr, results, verify
from mrledger.http.routes import audit_jobs as audit_job_routes
from mrledger.http.routes import catalogue as recognition_routes
from mrledger.http.routes import decisions as decision_routes
from mrledger.http.routes import intake as intake_routes
from mrledger.http.routes import kpis as kpi_routes
from mrledger.http.routes import tokens as token_routes
from mrledger.http.strict_json import content_type, decodes_as_json
from mrledger.ledger.canonical import check_depth
from mrledger.ledger.errors import EncodingError
from mrledger.node.settings import BODY_TIMEOUT_SECONDS, MAX_BODY_BYTES
from mrledger.service.audit_jobs import AuditJobs
from mrledger.service.ledger import Services

DESCRIPTION = """
Hospitals submit results; each becomes a salted RFC 8785 commitment, batched per hospital into an RFC 9162
Merkle tree whose root is anchored on an EVM chain. Doctors verify a result or a patient's receipt;
auditors trace lineage and check the database against the chain.

Authentication: `Authorization: Bearer <token>`; roles `admin`, `hospital:<id>`, `doctor`, `doctor:<id>`
(a doctor affiliated with a hospital: needed to record recognition decisions), `auditor`
(`mrledger token create --role …`). Errors are RFC 9457 `application/problem+json` with a stable `type`.
"""


class BodyLimit:
    """Every request body, read here before the app sees it: counted as it arrives, so a body over
    ``MAX_BODY_BYTES`` is a 413 as soon as the limit is passed, whatever its ``Content-Length`` said or
    whether it had one (a chunked upload of 300 MiB used to be read whole first); a body that has not
    arrived within ``BODY_TIMEOUT_SECONDS`` is a 408 (a client trickling bytes holds no request open for
    long); and a JSON body nesting deeper than ``MAX_JSON_DEPTH`` is a 400 before anything decodes it —
    FastAPI's own parse of the bodies it validates (``/v1/decisions``, …) has no depth guard, and its C
    decoder segfaulted at ~75,000 levels (issue 14). The app then gets the body as one message.

    Pure ASGI: Starlette's ``BaseHTTPMiddleware`` (``@app.middleware``) runs every request through an extra
    task and stream, on the path a verification benchmark drives at hundreds of requests a second."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES,
                 timeout: float = BODY_TIMEOUT_SECONDS) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(scope, send, 413, "payload-too-large", "Request body too large",
                               f"the limit is {self.max_bytes} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout):  # (anyio.fail_after: 9 µs a request, this 4)
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return  # the client went away: nobody to answer
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        await self._refuse(scope, send, 413, "payload-too-large", "Request body too large",
                                           f"the limit is {self.max_bytes} bytes")
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await self._refuse(scope, send, 408, "request-timeout", "Request body not received in time",
                               f"the whole body must arrive within {self.timeout:g} seconds")
            return
        body = b"".join(chunks)
        if body and decodes_as_json(content_type(scope)):
            try:
                check_depth(body)
            except EncodingError as exc:
                await self._refuse(scope, send, 400, "malformed", "Malformed input", str(exc))
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for a disconnect, as the server would say it
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, status: int, name: str, title: str, detail: str) -> None:
        """Answered before the body was read to its end: the connection is closed after the answer rather
        than kept for a next request that would start inside the rest of this body."""
        body = problems.problem_body(status, name, title, detail, scope["path"])
        response = JSONResponse(body, status_code=status, media_type=problems.MEDIA_TYPE,
                                headers={"Connection": "close"})

        async def nothing() -> Message:
            return {"type": "http.disconnect"}

        await response(scope, nothing, send)


def create_app(ledger: Services, *, threads: int | None = None, body_timeout: float = BODY_TIMEOUT_SECONDS,
               metrics_token: str | None = None, verify_limit: RateLimiter | None = None,
               audit_jobs: AuditJobs | None = None, fast_lane: bool = True) -> FastAPI:
    """``threads``: size of the pool that runs the (synchronous) request handlers; None keeps AnyIO's 40.
    ``mrledger serve`` passes ``MRL_API_THREADS`` (default 4): the handlers are CPU-bound under one
    interpreter lock, and 40 threads contending for it lost a quarter of the verification throughput.
    ``body_timeout``: see ``BodyLimit`` (tests shorten it). ``metrics_token``: ``MRL_METRICS_TOKEN``.
    ``verify_limit``: the per-address limit of anonymous verification (http/ratelimit.py); ``mrledger serve``
    passes ``MRL_VERIFY_RATE_LIMIT``/``MRL_VERIFY_BURST``, None (library use, tests) limits nothing.
    ``audit_jobs``: where KPI audit jobs keep their state (``mrledger serve``: ``<data dir>/audit-jobs``, shared by
    its API processes); None: a private temporary directory, seen by this app only. ``fast_lane``: False serves
    the hot routes through FastAPI's router too (tests/http/test_fastlane.py compares the two)."""

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
    app.state.audit_jobs = audit_jobs if audit_jobs is not None else AuditJobs()
    problems.install(app)

    # Innermost of ours: the two routes every doctor's look takes, past FastAPI's router (http/fastlane.py).
    if fast_lane:
        app.add_middleware(FastLane, lanes={
            ("POST", "/v1/verify"): (verify.verify, always),
            ("POST", "/v1/decisions"): (decision_routes.record_decision_lane, decision_routes.declares_json)})
    app.add_middleware(BodyLimit, timeout=body_timeout)
    app.add_middleware(results.ResultIdPath)  # result ids with '/', '%', '?', … (http/routes/results.py)
    # The hottest routes first: the router tries routes in order, and FastAPI's nested routers (0.16x) make each
    # router passed cost ~10-20 µs — a decision, after nine routers, paid ~100 µs of matching before its handler.
    # A city replay sends a verification, a decision and an encounter per doctor's look (issue 20). Decisions and
    # encounters are literal paths no other router's pattern takes, so their place changes no match.
    app.include_router(verify.router)
    app.include_router(decision_routes.router)  # recognition decisions and encounters (service/decisions.py)
    for module in (health, hospitals, published, results, audit):  # published before results: …/head
        app.include_router(module.router)
    app.include_router(intake_routes.router)  # FHIR / HL7 v2 intake (service/intake.py)
    app.include_router(recognition_routes.router)  # catalogue and eligibility (service/recognition.py)
    app.include_router(receipt_qr.router)  # receipt as QR, public proof for reference QRs (service/qr.py)
    app.include_router(kpi_routes.router)  # KPIs and their audit check (service/kpis.py, service/kpi_audit.py)
    app.include_router(audit_job_routes.router)  # the audit check as a job (service/audit_jobs.py)
    app.include_router(token_routes.router)  # API tokens for administrators (list, create, revoke)
    app.include_router(web.router)  # the /verify and /audit pages (http/web/)
    # /metrics and the latency middleware (outermost: it times the 413s too)
    metrics.install(app, ledger, metrics_token)
    return app
