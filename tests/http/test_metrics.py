"""/metrics: ledger figures read from the database at scrape time, and latency per route template."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

from mrledger.http.app import create_app
from mrledger.service.ledger import build_services
from mrledger.store import Store
from tests.conftest import TEST_KEY
from tests.harness import Api
from tests.http.test_audit import GZ, mark_anchored
from tests.store.test_repository import rec


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Sample name and sorted labels → value."""
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def ledger_figures(client: TestClient) -> dict[str, float]:
    samples = scrape(client)
    names = ("mrledger_database_up", "mrledger_results_submitted", "mrledger_batches_sealed",
             "mrledger_batches_anchored", "mrledger_batches_awaiting_anchor", "mrledger_results_pending")
    return {n.removeprefix("mrledger_"): samples[(n, ())] for n in names}


def test_ledger_figures_follow_submit_seal_and_anchor(api: Api) -> None:
    assert ledger_figures(api.client) == {"database_up": 1, "results_submitted": 0, "batches_sealed": 0,
                                          "batches_anchored": 0, "batches_awaiting_anchor": 0, "results_pending": 0}
    api.ledger.intake.submit(GZ, [rec(i) for i in range(3)])
    api.ledger.intake.submit("qd-002", [rec(9, "qd-002")])
    after_submit = ledger_figures(api.client)
    assert (after_submit["results_submitted"], after_submit["results_pending"]) == (4, 4)
    per_hospital = scrape(api.client)
    assert per_hospital[("mrledger_hospital_results_pending", (("hospital_id", GZ),))] == 3

    api.ledger.store.seal(GZ, 100)
    after_seal = ledger_figures(api.client)
    assert (after_seal["batches_sealed"], after_seal["batches_awaiting_anchor"], after_seal["results_pending"]) \
        == (1, 1, 1)
    mark_anchored(api, 1)
    after_anchor = ledger_figures(api.client)
    assert (after_anchor["batches_anchored"], after_anchor["batches_awaiting_anchor"]) == (1, 0)
    assert ("mrledger_hospital_results_pending", (("hospital_id", GZ),)) not in scrape(api.client)


def test_oldest_pending_age_uses_the_ledger_clock(engine: Engine) -> None:
    now = [datetime(2024, 5, 1, 8, 0, tzinfo=UTC)]
    ledger = build_services(Store(engine, master_key=TEST_KEY, clock=lambda: now[0]), clock=lambda: now[0])
    ledger.intake.register_hospital(GZ, "Guangzhou")
    client = TestClient(create_app(ledger))
    assert scrape(client)[("mrledger_oldest_pending_age_seconds", ())] == 0
    ledger.intake.submit(GZ, [rec(1)])
    now[0] += timedelta(seconds=42)
    ledger.intake.submit(GZ, [rec(2)])
    now[0] += timedelta(seconds=8)
    assert scrape(client)[("mrledger_oldest_pending_age_seconds", ())] == 50


def test_a_database_failure_is_a_metric_not_a_failed_scrape(api: Api) -> None:
    with api.ledger.store.engine.begin() as conn:
        conn.execute(text("DROP TABLE pending_leaves"))
    samples = scrape(api.client)
    assert samples[("mrledger_database_up", ())] == 0
    assert ("mrledger_results_submitted", ()) not in samples


def test_latency_is_labelled_by_route_template_method_and_status(api: Api) -> None:
    for rid in ("R1", "R2"):
        api.client.get(f"/v1/audit/hospitals/{GZ}/results/{rid}/lineage", headers=api.auth("auditor"))
    api.client.get("/no/such/path")
    samples = scrape(api.client)
    lineage = (("method", "GET"), ("route", "/v1/audit/hospitals/{hid}/results/{result_id}/lineage"),
               ("status", "404"))
    assert samples[("mrledger_http_request_duration_seconds_count", lineage)] == 2
    unmatched = (("method", "GET"), ("route", "<unmatched>"), ("status", "404"))
    assert samples[("mrledger_http_request_duration_seconds_count", unmatched)] == 1
    assert not any("R1" in dict(labels).get("route", "") for _, labels in samples)


def test_verify_latency_is_under_the_verify_route(api: Api) -> None:
    routes = iter_route_contexts(api.client.app.routes)  # type: ignore[attr-defined]  # flattens included routers
    if not any(r.path == "/v1/verify" for r in routes):
        pytest.skip("POST /v1/verify is not in the app yet (being written in http/routes/verify.py)")
    api.client.post("/v1/verify", json={})
    samples = scrape(api.client)
    assert any(dict(labels).get("route") == "/v1/verify" and dict(labels).get("method") == "POST"
               for name, labels in samples if name == "mrledger_http_request_duration_seconds_count")


def test_two_apps_in_one_process_keep_separate_registries(api: Api) -> None:
    other = TestClient(create_app(api.ledger))
    api.client.get("/healthz")
    mine, theirs = scrape(api.client), scrape(other)
    health = (("method", "GET"), ("route", "/healthz"), ("status", "200"))
    assert mine[("mrledger_http_request_duration_seconds_count", health)] == 1
    assert ("mrledger_http_request_duration_seconds_count", health) not in theirs


def test_metrics_needs_no_token_and_is_documented(api: Api) -> None:
    assert api.client.get("/metrics").status_code == 200
    op = api.client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    assert "no token" in op["summary"].lower() and "MRL_METRICS_TOKEN" in op["summary"]
    assert "401" in op["responses"]


def test_metrics_token_closes_metrics(api: Api) -> None:
    """Issue 14 #16: the open figures name hospitals with pending results; MRL_METRICS_TOKEN closes them."""
    api.ledger.intake.submit("gz-001", [rec(1)])
    client = TestClient(create_app(api.ledger, metrics_token="s3cret-scrape-token"))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer s3cret-scrape-tokeN"},
                    {"Authorization": "Basic s3cret-scrape-token"}, {"Authorization": "s3cret-scrape-token"},
                    {"Authorization": f"Bearer {api.tokens['admin']}"}):  # an API token is not the metrics token
        r = client.get("/metrics", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"] == "Bearer"
        assert "gz-001" not in r.text and "mrledger_" not in r.text
    r = client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape-token"})
    assert r.status_code == 200
    assert 'mrledger_hospital_results_pending{hospital_id="gz-001"} 1.0' in r.text


def test_metrics_token_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The token comes from MRL_METRICS_TOKEN (node/settings.py) and is never shown in the settings' repr; a
    real serve started with it closes /metrics (tests/node/test_serve_hardening.py)."""
    from mrledger.node.settings import Settings

    monkeypatch.setenv("MRL_METRICS_TOKEN", "from-the-environment")
    settings = Settings()
    assert settings.metrics_token is not None
    assert settings.metrics_token.get_secret_value() == "from-the-environment"
    assert "from-the-environment" not in repr(settings)
