"""Verification for doctors: a receipt (anyone), a held record or a held FHIR resource (doctor token)."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic_core
from anyio import CapacityLimiter, to_thread
from anyio.lowlevel import RunVar
from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from mrledger.anchoring.chain import CacheMiss, cache_only, fresh, with_facts
from mrledger.http.deps import PrincipalDep, ServicesDep, authorize, get_principal, get_services
from mrledger.http.problems import Problem, invalid_body
from mrledger.http.ratelimit import RateLimiter, client_key, retry_after
from mrledger.http.schemas import (
    EXAMPLE_FHIR,
    EXAMPLE_RECORD,
    VerifyByFhir,
    VerifyByReceipt,
    VerifyByRecord,
    VerifyOut,
    json_body,
    problems,
)
from mrledger.ledger import parse_json
from mrledger.ledger.formats import FormatError
from mrledger.service.verification import NotAReceiptError, Outcome
from mrledger.store.access import ANONYMOUS, Principal

router = APIRouter(prefix="/v1", tags=["verify"])

#: Verifications that need a thread get a pool of their own, as large as the handlers' pool: they may wait
#: on the chain node (up to MRL_RPC_TIMEOUT), and must never hold the threads that accept submissions — with a
#: frozen node, four stuck verifications made submissions and /healthz wait 40 s (issue 15). Per event loop.
_POOL: RunVar[CapacityLimiter] = RunVar("mrl_verify_pool")


async def run_in_verify_pool(fn: Any, *args: Any) -> Any:
    try:
        pool = _POOL.get()
    except LookupError:
        pool = CapacityLimiter(to_thread.current_default_thread_limiter().total_tokens)
        _POOL.set(pool)
    return await to_thread.run_sync(fn, *args, limiter=pool)

DESCRIPTION = """
Three forms:

* `{"receipt": {...}}` — an `mrl-receipt/1` document. **No token needed**: anyone holding a receipt may check it.
  Checked offline (record → leaf → inclusion proof), then against this ledger's registry on chain. The chain is
  the proof, so a hospital this node never registered still verifies. Without a token, each client address
  (IPv6: each /64) may verify `MRL_VERIFY_RATE_LIMIT` times a second (default 5, bursts of `MRL_VERIFY_BURST`,
  default 30); beyond that a 429 `too-many-requests` problem with `Retry-After`. Tokens are not limited.
* `{"hospital_id", "result_id", "version"?, "record": {...}}` — the result a doctor holds, compared with what the
  hospital committed (`doctor`, `auditor` or `admin` token). `version` defaults to the held record's own version.
* `{"hospital_id", "fhir": {...}, "tz"?}` — the FHIR R4 resource the doctor received (Observation,
  DiagnosticReport, ImagingStudy, or a Bundle holding exactly one of them; same tokens as the record form). Mapped
  exactly as `POST /v1/hospitals/{hid}/fhir` maps it; the result id comes from the resource. The held version with
  the same content (version and supersedes aside, however the JSON is spelt) is verified like a held record, so an
  older copy answers authentic with `superseded_by`. Data that means the same matches: equal instants however
  written, date-only times in any zone, and the same result grouped otherwise (a report held alone whose
  Observations were committed inside it; an Observation held alone that was committed inside its report —
  the answer is then about that report; check `grouping` says so). The result id held but no version matches:
  **tampered** (`content`); not held: **unknown** (`lookup`); a report that matches held with Observations the
  hospital never committed: **cannot-match** (`grouping`). `tz`: the zone the hospital submitted with (bare
  FHIR dates only; default UTC; a date-only time matches in any zone). A resource that cannot be mapped, or a
  Bundle with several results, is a 422 `unsupported-content` problem: verifying only the first would read as
  vouching for the others.

`verdict`: **authentic** (content committed and anchored, anchor confirmed), **tampered** (a check failed;
`failed_check` names it), **unknown** (this ledger holds no such result, or cannot check the anchor's chain or
registry), **pending** (genuine so far, anchor not confirmed yet), **cannot-match** (FHIR form: what is held
cannot be decided against what was committed — not a finding of tampering; the failed check says why).
`superseded_by` names a newer version when the result was amended or corrected. Every verification is written to
the access log (identities and verdict only).

What this ledger's database knows — `hospital_name`, `superseded_by`, `revoked_by` (and the `revoked` verdict),
the stored `issued` time, the hospital's eligibility in `recognition` — is told only to a caller who holds what
the hospital committed: the record equal to the committed one, a receipt whose leaf is the committed leaf, or a
receipt whose root the registry holds. Anyone else hears "not found" (`unknown`) or "does not match" (`tampered`)
and the fields of their own document, the same for a result id that exists as for one that never did; and gets no
`verification_id` (only established verifications can be decided, `POST /v1/decisions`).

`signature`: the hospital's signature of the batch as this node checked it against its trust anchors
(docs/signatures.md): `valid` with the `signer` (subject, issuer, serial, validity, fingerprint), `absent`,
`not-checked`, or the failure's reason — a failed signature makes the verdict **tampered** with `failed_check`
`signature`, and so does an unsigned receipt where this node requires signatures (`signature-missing`).
"""


async def anonymous_limit(request: Request, principal: Principal) -> None:
    """The per-address token bucket of anonymous verification (http/ratelimit.py), spent before the body is
    read. A caller with a token is not limited: the token is checked first (an unknown one is a 401)."""
    limiter: RateLimiter | None = request.app.state.verify_limit
    if limiter is None or principal is not ANONYMOUS:
        return
    wait = limiter.take(client_key(request.client.host if request.client else None))
    if wait:
        raise Problem(429, "too-many-requests", "Too many anonymous verifications",
                      f"this address may verify {limiter.rate:g} receipt(s) per second without a token (bursts of "
                      f"{limiter.burst}); retry later, or verify with a doctor's token"
                      ).with_headers({"Retry-After": retry_after(wait)})


@router.post(
    "/verify", response_model=VerifyOut,
    summary="Verify a receipt (anyone) or a held record or FHIR resource (doctor)",
    description=DESCRIPTION,
    responses=problems(400, 401, 403, 413, 422, 429, 503, s422=(
        "not-a-receipt", "Not an mrl-receipt/1 document", "missing receipt fields: ['leaf']", {})),
    openapi_extra=json_body(VerifyByReceipt | VerifyByRecord | VerifyByFhir,
                            "A receipt, a record with its identity, or a FHIR resource with its hospital", {
        "receipt": {"receipt": {"format": "mrl-receipt/1", "record": EXAMPLE_RECORD, "salt": "…",
                                "leaf": {"index": 0, "hash": "…"}, "audit_path": [], "batch": {}, "anchor": None}},
        "record": {"hospital_id": "gz-001", "result_id": EXAMPLE_RECORD["result_id"], "version": 1,
                   "record": EXAMPLE_RECORD},
        "fhir": {"hospital_id": "gz-001", "fhir": EXAMPLE_FHIR}}),
)
async def verify(request: Request) -> Any:
    """No FastAPI dependencies, on purpose: the caller, the anonymous limit and the body are resolved here, in
    that order (the limit is spent before the body is read). Resolving them as four ``Depends`` cost a quarter
    of a receipt verification's CPU in FastAPI's dependency solver (cProfile of the ASGI app, issue 20) — the
    hottest anonymous route of the node pays it on every request."""
    ledger = await get_services(request)
    principal = await get_principal(request, ledger)
    await anonymous_limit(request, principal)
    obj = parse_json(await request.body())
    if isinstance(obj, dict) and "receipt" in obj and "fhir" not in obj:
        if set(obj) != {"receipt"}:
            raise Problem(422, "validation", "Request does not match the schema",
                          f"unknown members next to 'receipt': {sorted(set(obj) - {'receipt'})}")
        try:
            outcome = await _verify_by_receipt(ledger, principal, obj["receipt"])
        except NotAReceiptError as exc:
            raise Problem(422, "not-a-receipt", "Not an mrl-receipt/1 document", str(exc)) from exc
        return _answer(outcome)
    return await run_in_verify_pool(_verify_held, obj, ledger, principal)


async def _verify_by_receipt(ledger: ServicesDep, principal: PrincipalDep, receipt: Any) -> Outcome:
    """On the event loop when every chain fact is cached, on a worker thread otherwise.

    Why the loop: a receipt verification is ~1 ms of CPU and its database reads are single statements
    (``Store.single_read``, µs on SQLite). Sending every one to a thread cost more than the verification and,
    worse, put tens of CPU-bound threads in a convoy on the GIL with the event loop: measured with
    ``scripts/bench_api.py --mine 12`` (2 cores), p99 at 500/s over five runs was 17–2,786 ms (median 801 ms)
    and saturation 457/s with the thread hop, against 5–6 ms p99 and ~975/s on the loop (docs/anchoring.md).
    A receipt anchored too recently to be cached has its registry entry and block read from the node on the
    loop first (``ChainContext.prefetch``, one round trip, for this request only). Anything still missing (a
    long-stale head, an endpoint the loop's client cannot speak to, a node that does not answer) raises
    ``CacheMiss`` before any side effect, and the verification runs on a worker thread of the verification
    pool instead, where waiting for the node blocks nobody else and an unreachable node becomes a 503."""
    chain = ledger.chain
    facts = await chain.prefetch(receipt) if chain is not None else {}
    try:
        with cache_only(), fresh(facts):
            return ledger.verification.by_receipt(principal, receipt)
    except CacheMiss:
        outcome: Outcome = await run_in_verify_pool(with_facts, facts, ledger.verification.by_receipt, principal,
                                                    receipt)
        return outcome


def _verify_held(obj: Any, ledger: ServicesDep, principal: PrincipalDep) -> Any:
    """The record and FHIR forms (database reads and a chain check: a worker thread)."""
    if isinstance(obj, dict) and "fhir" in obj:
        return _verify_fhir(obj, ledger, principal)
    authorize(principal, "doctor", "auditor", "admin")
    try:
        request = VerifyByRecord.model_validate(obj, strict=True)
    except ValidationError as exc:
        raise invalid_body(exc, "send {\"receipt\": {...}} or "
                                "{\"hospital_id\", \"result_id\", \"version\"?, \"record\"}") from exc
    return _answer(ledger.verification.by_record(principal, request.hospital_id, request.result_id,
                                                 request.version, request.record))


def _verify_fhir(obj: dict[str, Any], ledger: ServicesDep, principal: PrincipalDep) -> Any:
    """The FHIR form (``VerificationService.by_fhir``), logged like the other forms: identities and verdict only."""
    authorize(principal, "doctor", "auditor", "admin")
    try:
        request = VerifyByFhir.model_validate(obj, strict=True)
    except ValidationError as exc:
        raise invalid_body(exc, "send {\"hospital_id\", \"fhir\": {...FHIR resource...}, \"tz\"?}") from exc
    try:
        zone = None if request.tz is None else ZoneInfo(request.tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise Problem(422, "validation", "Request does not match the schema",
                      f"tz {request.tz!r} is not an IANA time zone name (e.g. Asia/Shanghai, Europe/Berlin, UTC)",
                      errors=[{"loc": ["tz"], "msg": "unknown time zone"}]) from exc
    try:
        outcome = ledger.verification.by_fhir(principal, request.hospital_id, request.fhir, zone)
    except FormatError as exc:  # the adapter's reason, as intake words it (not the generic invalid-record)
        extra = {"where": exc.where} if exc.where else {}
        raise Problem(422, "unsupported-content", "The content cannot be taken as results", str(exc),
                      **extra) from exc
    return _answer(outcome)


def _answer(outcome: Outcome) -> Response:
    """The verdict as JSON, serialised directly: ``Outcome.to_obj`` is already shaped like ``VerifyOut``
    (the schemathesis test holds the two together), and FastAPI's re-validation of the dict through the
    response model was a tenth of a verification's time (cProfile of the ASGI app)."""
    return Response(pydantic_core.to_json(outcome.to_obj()), media_type="application/json")
