"""Prometheus metrics at ``GET /metrics``: ledger progress read from the database at scrape time, and
HTTP latency per route template.

Why computed at scrape time: the database is the source of truth and is shared by every API process and
the anchoring worker. Counters kept in process memory would reset on restart and differ between
replicas; a handful of ``COUNT`` queries per scrape (every 15-60 s) gives every replica the same, exact
numbers. If the database does not answer, the scrape still succeeds with ``mrledger_database_up 0``, so
an outage shows up as a metric instead of a failed scrape.

Why a ``CollectorRegistry`` per app: the process-global default registry refuses a second metric of the
same name, and tests build many apps in one process.

``/metrics`` needs no token by default (scrapers rarely hold one): it exposes counts and latencies, no
patient data, but it does name the hospitals that have results waiting to be sealed
(``mrledger_hospital_results_pending{hospital_id=…}``) and how busy each route is. Where that is sensitive,
set ``MRL_METRICS_TOKEN``: the scraper then sends ``Authorization: Bearer <token>`` (Prometheus:
``authorization: {credentials: …}``), compared in constant time; anything else is a 401 problem.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mrledger.http.problems import Problem
from mrledger.ledger.status import CONFIRMED
from mrledger.service.ledger import Services
from mrledger.store.models import Anchor, Batch, PendingLeaf, RecordVersion

#: Label for requests that matched no route, so scanners probing random paths cannot blow up the
#: number of time series.
UNMATCHED = "<unmatched>"
#: Buckets in seconds: verification is expected in single-digit milliseconds, submissions of 1,000
#: records in hundreds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

router = APIRouter(tags=["health"])


class LedgerCollector(Collector):
    """Reads the ledger's progress with one aggregate statement per scrape.

    The statement lives here rather than in ``store/`` only because the store's public API has no
    "stats" call yet; it is read-only and uses the indexed, small ``pending_leaves`` outbox for the
    pending figures.
    """

    def __init__(self, ledger: Services) -> None:
        self._ledger = ledger

    def collect(self) -> Iterable[Metric]:
        stats = getattr(self._ledger, "sign_stats", None)
        if stats is not None:  # in process memory: this node's sealer, answered even when the database is not
            buckets, total, _count = stats.snapshot()
            signing = HistogramMetricFamily("mrledger_batch_sign_seconds", "Time the sealer spent signing a batch "
                                            "(signature and its check against this node's trust store)")
            signing.add_metric([], buckets, total)
            yield signing
        yield from self._chain()
        up = GaugeMetricFamily("mrledger_database_up", "1 if the last scrape could read the ledger database")
        try:
            figures, per_hospital = self._read()
            anchoring = self._anchoring()
        except Exception:  # a scrape must answer even when the database does not
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from anchoring
        # Gauges, not counters: the values are read, not incremented here, and must be exposed without
        # the ``_total`` suffix handling of a CounterMetricFamily (they are still monotonic except the
        # pending ones, so ``rate()`` works on the first three).
        for name, doc, value in (
            ("mrledger_results_submitted", "Record versions accepted (all hospitals)", figures[0]),
            ("mrledger_batches_sealed", "Batches sealed (all hospitals)", figures[1]),
            ("mrledger_batches_anchored", "Batches whose anchor is confirmed on chain", figures[2]),
            ("mrledger_batches_awaiting_anchor", "Sealed batches whose anchor is not confirmed yet",
             figures[1] - figures[2]),
        ):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], value)
            yield g
        now = self._ledger.clock()
        pending = GaugeMetricFamily("mrledger_results_pending", "Accepted results not yet sealed into a batch")
        oldest = GaugeMetricFamily("mrledger_oldest_pending_age_seconds",
                                   "Age of the oldest result waiting to be sealed (0 if none)")
        by_hospital = GaugeMetricFamily("mrledger_hospital_results_pending",
                                        "Accepted results not yet sealed, per hospital that has any",
                                        labels=["hospital_id"])
        ages = [max(0.0, (now - _aware(first)).total_seconds()) for _, _, first in per_hospital]
        for hospital_id, count, _ in per_hospital:
            by_hospital.add_metric([hospital_id], count)
        pending.add_metric([], sum(count for _, count, _ in per_hospital))
        oldest.add_metric([], max(ages, default=0.0))
        yield pending
        yield oldest
        yield by_hospital

    def _chain(self) -> Iterable[Metric]:
        """From the probe thread's last answer (anchoring/health.py): never waits on the node."""
        chain = getattr(self._ledger, "chain", None)  # a ledger not fully built (registration describes it)
        if chain is None:
            return
        yield from _chain_reads(chain.reader)
        health = chain.health
        if health is None:
            return
        snap = health.snapshot()
        up = GaugeMetricFamily("mrledger_chain_up", "1 if the chain node answered within the last few seconds")
        up.add_metric([], 1 if snap.up else 0)
        yield up
        if snap.head is not None:
            head = GaugeMetricFamily("mrledger_chain_head_block", "Latest block number the chain node reported")
            head.add_metric([], snap.head)
            yield head
        role = self._ledger.node_role() if hasattr(self._ledger, "node_role") else None
        if role is not None:
            leader = GaugeMetricFamily("mrledger_node_leader", "1 if this node seals and anchors (holds the "
                                       "ledger's leader lock), 0 if it is a follower or starting")
            leader.add_metric([], 1 if role == "leader" else 0)
            yield leader

    def _anchoring(self) -> list[Metric]:
        """How far anchoring is behind, and the reconciliation's alarms (anchoring/reconcile.py)."""
        outbox = self._ledger.outbox
        oldest = outbox.oldest_unconfirmed()
        open_, total = outbox.alarm_counts()
        age = GaugeMetricFamily("mrledger_oldest_unanchored_batch_age_seconds",
                                "Age of the oldest sealed batch whose anchor is not confirmed (0 if none)")
        age.add_metric([], 0.0 if oldest is None else max(0.0, (self._ledger.clock() - oldest).total_seconds()))
        alarms = GaugeMetricFamily("mrledger_anchor_alarms_open", "Anchors the chain lost or moved that are not "
                                   "confirmed again yet, as alarms (a reorg deeper than the confirmations, a chain "
                                   "reset); /readyz lists them")
        alarms.add_metric([], open_)
        raised = GaugeMetricFamily("mrledger_anchor_alarms_raised", "Alarms ever raised by the anchoring "
                                   "reconciliation (monotonic; alert on an increase)")
        raised.add_metric([], total)
        return [age, alarms, raised]

    def _read(self) -> tuple[tuple[int, int, int], list[tuple[str, int, datetime]]]:
        totals = select(
            select(func.count()).select_from(RecordVersion).scalar_subquery(),
            select(func.count()).select_from(Batch).scalar_subquery(),
            select(func.count()).select_from(Anchor).where(Anchor.status == CONFIRMED).scalar_subquery(),
        )
        pending = (select(PendingLeaf.hospital_id, func.count(), func.min(PendingLeaf.accepted_at))
                   .group_by(PendingLeaf.hospital_id).order_by(PendingLeaf.hospital_id))
        with self._ledger.store.engine.connect() as conn:
            results, batches, anchored = conn.execute(totals).one()
            rows = [(str(h), int(c), m) for h, c, m in conn.execute(pending)]
        return (int(results), int(batches), int(anchored)), rows


def _aware(value: datetime | str) -> datetime:
    """``min()`` over the UTC column comes back untyped (naive, or a string on SQLite)."""
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class LatencyMiddleware:
    """Pure ASGI middleware (no ``BaseHTTPMiddleware``: that would buffer bodies and add a task per
    request) observing each response's latency under the route *template* — ``/v1/hospitals/{hid}/…``,
    never the concrete path, whose ids would make one time series per result."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before sending a response

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            self.histogram.labels(_template(scope), scope["method"], str(status)).observe(
                time.perf_counter() - start)


def _template(scope: Scope) -> str:
    route = scope.get("route")  # set by the router on a match (Starlette >= 0.33)
    if route is not None and hasattr(route, "path"):
        return str(route.path)
    # Answered before routing (e.g. the body-size limit): find the route the path would have matched.
    app = scope.get("app")
    for candidate in getattr(app, "routes", ()):
        match, child = candidate.matches(scope)
        if match is Match.FULL:  # FastAPI >= 0.16x nests included routers; the child scope names the route
            return str(getattr(child.get("route", candidate), "path", UNMATCHED))
    return UNMATCHED


def _chain_reads(reader: Any) -> Iterable[Metric]:
    """What verifications on this process asked the chain's node for (anchoring/_flight.py), and how many were
    answered by a read already in flight instead. Per process, like the latency histogram: an operator paying
    a metered RPC endpoint sees its verification traffic here (anchors not yet final are read per request).
    ``reader``: the chain's ``CachedReader`` (an import from anchoring/ here would cross the layers)."""
    flights = (reader.flights, reader.loop_flights)
    sent = CounterMetricFamily("mrledger_chain_verification_reads", "Chain reads that verifications on this API "
                               "process sent to the node (facts not cached: an anchor not yet final, or not "
                               "read since the start)")
    sent.add_metric([], sum(f.sent for f in flights))
    shared = CounterMetricFamily("mrledger_chain_verification_reads_shared", "Verifications on this API process "
                                 "answered by the same read already in flight instead of one of their own")
    shared.add_metric([], sum(f.joined for f in flights))
    yield sent
    yield shared


def install(app: FastAPI, ledger: Services, token: str | None = None) -> None:
    """Give ``app`` its own registry, the ledger collector, the latency middleware and ``/metrics``
    (behind ``token`` when one is given: ``MRL_METRICS_TOKEN``)."""
    app.state.metrics_token = token.encode() if token else None
    registry = CollectorRegistry(auto_describe=True)
    registry.register(LedgerCollector(ledger))
    histogram = Histogram("mrledger_http_request_duration_seconds", "HTTP request latency by route template",
                          ["route", "method", "status"], registry=registry, buckets=LATENCY_BUCKETS)
    app.state.metrics_registry = registry
    app.add_middleware(LatencyMiddleware, histogram=histogram)
    app.include_router(router)


@router.get("/metrics", summary="Prometheus metrics (no token needed unless MRL_METRICS_TOKEN is set)",
            response_class=Response,
            description="Ledger counts read from the database, pending results per hospital (by hospital id) and "
                        "request latency per route template. Open unless the node sets `MRL_METRICS_TOKEN`; then "
                        "`Authorization: Bearer <that token>` is required (401 otherwise). Not an API token: "
                        "`mrledger token` tokens are not accepted here.",
            responses={200: {"description": "Prometheus text exposition format 0.0.4: ledger counts read "
                                            "from the database and request latency per route template.",
                             "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}},
                       401: {"description": "MRL_METRICS_TOKEN is set and the request does not carry it"}})
def metrics(request: Request) -> Response:
    """Open by default: Prometheus scrapers rarely carry bearer tokens, and the output holds counts and
    latencies only (no result, patient or API token identifiers), hospital ids aside — which is why a
    deployment can close it with ``MRL_METRICS_TOKEN``."""
    expected: bytes | None = request.app.state.metrics_token
    if expected is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken does not tell how much of a guess was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise Problem(401, "unauthenticated", "Metrics token required",
                          "this node protects /metrics with MRL_METRICS_TOKEN: send Authorization: Bearer <it>")
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
