"""RFC 9457 problem details: every error the API returns, from one exception handler.

Each problem has a stable ``type`` (a URN, so clients can switch on it without parsing text), a
``title``, the HTTP ``status`` and a ``detail`` for people. Routes raise domain errors or ``Problem``;
they never build error responses by hand.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from mrledger.anchoring.errors import AnchoringError
from mrledger.ledger.errors import EncodingError, RecordError
from mrledger.service.audit import ChainNotConfiguredError
from mrledger.service.kpi_audit import AuditTooLargeError
from mrledger.store.errors import (
    ConflictError,
    DecryptionError,
    IdentityChangeError,
    LineageError,
    NotFoundError,
    StoreError,
    SubmissionError,
    UnknownHospitalError,
)

log = logging.getLogger("mrledger.api")

MEDIA_TYPE = "application/problem+json"
PREFIX = "urn:mrledger:problem:"


class Problem(Exception):
    #: Response headers the problem needs (Retry-After of a 429): ``Problem(...).with_headers(...)``.
    headers: dict[str, str] | None = None

    def __init__(self, status: int, name: str, title: str, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or title)
        self.status, self.name, self.title, self.detail, self.extra = status, name, title, detail, extra

    def with_headers(self, headers: dict[str, str]) -> Problem:
        self.headers = headers
        return self


def error_list(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """pydantic/FastAPI validation errors as the ``errors`` member of a problem: location and message only
    (never the offending input, which may be patient data), at most 20."""
    return [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in errors][:20]


def invalid_body(exc: ValidationError, hint: str) -> Problem:
    """A 422 for a request body that does not match its model; ``hint`` says what to send instead."""
    return Problem(422, "validation", "Request does not match the schema", hint,
                   errors=error_list(exc.errors(include_url=False)))


def problem_body(status: int, name: str, title: str, detail: str = "", instance: str | None = None,
                 **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": PREFIX + name, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extra)
    return body


def _response(request: Request, status: int, name: str, title: str, detail: str = "",
              headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(problem_body(status, name, title, detail, request.url.path, **extra), status_code=status,
                        media_type=MEDIA_TYPE, headers=headers or None)


_STATUS_NAMES = {400: "bad-request", 401: "unauthenticated", 403: "forbidden", 404: "not-found",
                 405: "method-not-allowed", 406: "not-acceptable", 409: "conflict", 413: "payload-too-large",
                 415: "unsupported-media-type", 422: "validation", 429: "too-many-requests"}


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return _response(request, exc.status, exc.name, exc.title, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = error_list(exc.errors())
        first = str(errors[0]["msg"]) if errors else ""
        return _response(request, 422, "validation", "Request does not match the schema", first, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = _STATUS_NAMES.get(exc.status_code, "http-error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # RFC 9110 §15.5.6: Allow lists every method of the resource. Starlette fills it from the first
            # route that matched the path only, so with GET and POST on one path it would say "POST".
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return _response(request, exc.status_code, name, str(exc.detail), headers=headers)

    @app.exception_handler(AuditTooLargeError)
    async def _too_large(request: Request, exc: AuditTooLargeError) -> JSONResponse:
        """``GET /v1/audit/decisions`` over a ledger too large for one request: refused at once, not hung."""
        return _response(request, 422, "audit-too-large", "Too many records for one request",
                         f"{exc}: start a job with POST /v1/audit/decisions/jobs and poll its Location",
                         records=exc.records, limit=exc.limit, jobs="/v1/audit/decisions/jobs")

    @app.exception_handler(RecordError)
    async def _record(request: Request, exc: RecordError) -> JSONResponse:
        return _response(request, 422, "invalid-record", "A record is not valid", str(exc), field=exc.field)

    @app.exception_handler(EncodingError)
    async def _encoding(request: Request, exc: EncodingError) -> JSONResponse:
        return _response(request, 400, "malformed", "Malformed input", str(exc))

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> JSONResponse:
        if isinstance(exc, UnknownHospitalError):
            return _response(request, 404, "unknown-hospital", "Unknown hospital", str(exc))
        if isinstance(exc, NotFoundError):
            return _response(request, 404, "not-found", "Not found", str(exc))
        if isinstance(exc, ConflictError):
            keys = [{"hospital_id": h, "result_id": r, "version": v} for h, r, v in exc.keys]
            extra: dict[str, Any] = {"differs": exc.differs} if isinstance(exc, IdentityChangeError) else {}
            return _response(request, 409, "conflict", "Conflicts with what the ledger holds", str(exc), keys=keys,
                             **extra)
        if isinstance(exc, LineageError):
            return _response(request, 422, "lineage", "Version lineage is broken", str(exc))
        if isinstance(exc, SubmissionError):
            return _response(request, 422, "invalid-submission", "Submission is not valid", str(exc))
        if isinstance(exc, DecryptionError):  # the database was altered: say so, never answer with other data
            return _response(request, 500, "stored-data-integrity", "Stored data failed its integrity check",
                             str(exc))
        return _response(request, 503, "store-unavailable", "The ledger database is unavailable", str(exc),
                         headers=RETRY)

    @app.exception_handler(AnchoringError)
    async def _chain(request: Request, exc: AnchoringError) -> JSONResponse:
        if isinstance(exc, ChainNotConfiguredError):  # retrying will not help: no Retry-After
            return _response(request, 503, "chain-not-configured", "No chain configured", str(exc))
        return _response(request, 503, "chain-unavailable", "The chain could not be used", str(exc), headers=RETRY)

    @app.exception_handler(OperationalError)
    async def _database(request: Request, exc: OperationalError) -> JSONResponse:
        """The database could not do the work (a full disk, a locked or unreachable database): nothing was
        accepted, the client may retry. Was a plain-text 500 (58 times in a full-disk test)."""
        full = _disk_full(exc)
        log.error("database unavailable%s: %s", " (disk full)" if full else "", type(exc.orig).__name__)
        return _response(request, 503, "storage-full" if full else "store-unavailable",
                         "The ledger's disk is full" if full else "The ledger database is unavailable",
                         "nothing was stored; retry later" + (" (the node's operator is alerted by its log)"
                                                              if full else ""), headers=RETRY)

    @app.exception_handler(OSError)
    async def _disk(request: Request, exc: OSError) -> JSONResponse:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise exc
        log.error("disk full: %s", exc.strerror)
        return _response(request, 503, "storage-full", "The ledger's disk is full", "nothing was stored; retry "
                         "later", headers=RETRY)


#: What a 503 tells the client about retrying (RFC 9110 §10.2.3), in seconds.
RETRY = {"Retry-After": "5"}


def _disk_full(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "disk is full" in text or "no space left" in text or "could not extend file" in text or \
        "disk full" in text


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for ctx in iter_route_contexts(request.app.routes):
        route = ctx.route
        if isinstance(route, Route) and route.path_regex.match(request.url.path) and ctx.methods:
            methods |= set(ctx.methods)
    return sorted(methods)
