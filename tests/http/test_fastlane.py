"""The fast lane (http/fastlane.py) answers exactly as FastAPI's router did: the same requests, good and bad, sent
to the node's app and to the same app built without the lane, get the same status, headers that matter and
problem body — and the lane is really taken (the router's handler is never entered for them)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mrledger.http.app import create_app
from mrledger.http.routes import decisions as decision_routes
from tests.harness import Api
from tests.service.test_decisions import doctor, verification
from tests.store.test_repository import rec

JSON = "application/json"


def _answers(client: TestClient, path: str, body: bytes | None, headers: dict[str, str]) -> Any:
    r = client.post(path, content=body, headers=headers)
    out: Any = r.json() if r.headers.get("content-type", "").endswith("json") else r.text
    if isinstance(out, dict):
        out.pop("verification_id", None)  # a new id per verification, by design
    return r.status_code, r.headers.get("content-type"), r.headers.get("www-authenticate"), out


def _cases(api: Api) -> list[tuple[str, str, bytes | None, dict[str, str]]]:
    api.client.post("/v1/hospitals/gz-001/results", json={"records": [rec(1, "gz-001").to_obj()]},
                    headers=api.auth("hospital:gz-001")).raise_for_status()
    api.ledger.store.seal("gz-001", 100)
    receipt = api.ledger.store.receipt("gz-001", "R1")
    assert receipt is not None
    good = json.loads(receipt.to_json())
    forged = {**good, "salt": "00" * 32}
    vid = verification(api)
    doc, aud = doctor(api), api.auth("auditor")
    ct = {"content-type": JSON}
    decision = json.dumps({"verification_id": vid, "decision": "reordered", "reason": "other"}).encode()
    cases: list[tuple[str, str, bytes | None, dict[str, str]]] = []
    for label, body, headers in [
        ("receipt", {"receipt": good}, {}),
        ("forged receipt", {"receipt": forged}, {}),
        ("receipt with a doctor", {"receipt": good}, doc),
        ("not a receipt", {"receipt": {"format": "mrl-receipt/1"}}, {}),
        ("extra member", {"receipt": good, "x": 1}, {}),
        ("record form, no token", {"hospital_id": "gz-001", "result_id": "R1", "record": rec(1).to_obj()}, {}),
        ("record form", {"hospital_id": "gz-001", "result_id": "R1", "record": rec(1).to_obj()}, doc),
        ("a list", [], {}),
        ("bad token", {"receipt": good}, {"authorization": "Bearer nope"}),
        ("bad scheme", {"receipt": good}, {"authorization": "Basic abc"}),
    ]:
        cases.append((f"verify: {label}", "/v1/verify", json.dumps(body).encode(), {**ct, **headers}))
    cases += [
        ("verify: malformed", "/v1/verify", b'{"receipt": ', ct),
        ("verify: duplicate keys", "/v1/verify", b'{"receipt": 1, "receipt": 2}', ct),
        ("verify: empty", "/v1/verify", b"", ct),
        ("decide: no token", "/v1/decisions", decision, ct),
        ("decide: bad token", "/v1/decisions", decision, {**ct, "authorization": "Bearer nope"}),
        ("decide: auditor", "/v1/decisions", decision, {**ct, **aud}),
        ("decide: malformed", "/v1/decisions", b'{"verification_id": ', {**ct, **doc}),
        ("decide: malformed, no token", "/v1/decisions", b"[1,", ct),
        ("decide: duplicate keys", "/v1/decisions", b'{"decision": "x", "decision": "y"}', {**ct, **doc}),
        ("decide: huge number", "/v1/decisions", b'{"decision": 1e400}', {**ct, **doc}),
        ("decide: empty", "/v1/decisions", b"", {**ct, **doc}),
        ("decide: empty, no token", "/v1/decisions", b"", ct),
        ("decide: a list", "/v1/decisions", b"[]", {**ct, **doc}),
        ("decide: a string", "/v1/decisions", b'"x"', {**ct, **doc}),
        ("decide: nothing", "/v1/decisions", b"{}", {**ct, **doc}),
        ("decide: invalid, no token", "/v1/decisions", b"{}", ct),
        ("decide: extra", "/v1/decisions", json.dumps({"verification_id": vid, "decision": "recognised",
                                                        "x": 1}).encode(), {**ct, **doc}),
        ("decide: bad id", "/v1/decisions", b'{"verification_id": "x", "decision": "recognised"}', {**ct, **doc}),
        ("decide: unknown id", "/v1/decisions", json.dumps({"verification_id": "01JD3S4V6Q8E2N7W0X5K9C1B2A",
                                                             "decision": "recognised"}).encode(), {**ct, **doc}),
        ("decide: reason required", "/v1/decisions", json.dumps({"verification_id": vid, "decision":
                                                                  "reordered"}).encode(), {**ct, **doc}),
        ("decide: +json", "/v1/decisions", b"{}", {"content-type": "application/problem+json", **doc}),
        ("decide: text", "/v1/decisions", b"{}", {"content-type": "text/plain", **doc}),
        ("decide: no content type", "/v1/decisions", b"{}", doc),
    ]
    return cases


def test_the_lane_answers_as_the_router_did(api: Api) -> None:
    routed = TestClient(create_app(api.ledger, fast_lane=False))
    statuses = set()
    for label, path, body, headers in _cases(api):
        laned = _answers(api.client, path, body, headers)
        assert laned == _answers(routed, path, body, headers), label
        statuses.add(laned[0])
    assert statuses >= {200, 400, 401, 403, 404, 422}  # the cases reach every kind of answer


def test_a_decision_is_recorded_once_through_the_lane(api: Api) -> None:
    """The success path: 201, then the same decision again 200 ``duplicate`` — through the lane and through the
    router on another verification, with the same answer apart from the ids and times."""
    routed = TestClient(create_app(api.ledger, fast_lane=False))
    answers = []
    for client in (api.client, routed):
        vid = verification(api)
        body = {"verification_id": vid, "decision": "recognised"}
        first = client.post("/v1/decisions", json=body, headers=doctor(api))
        again = client.post("/v1/decisions", json=body, headers=doctor(api))
        assert (first.status_code, again.status_code) == (201, 200), first.text
        assert again.json()["status"] == "duplicate"
        answers.append({k: v for k, v in first.json().items()
                        if k not in ("verification_id", "result_key", "verified_at", "decided_at", "leaf_hash")})
    assert answers[0] == answers[1]


def test_the_lane_is_taken_and_labelled_as_the_route(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A JSON decision reaches the handler through the lane (the router holds its own reference to the handler,
    so a spy on the module's name sees only the lane's calls); /metrics labels the lane's answers by the route
    template, as it labels the router's."""
    routed = TestClient(create_app(api.ledger, fast_lane=False))
    calls: list[str] = []
    original = decision_routes.record_decision

    def spy(*args: Any) -> Any:
        calls.append("lane")
        return original(*args)

    monkeypatch.setattr(decision_routes, "record_decision", spy)
    for client in (api.client, routed):
        r = client.post("/v1/decisions", json={"verification_id": verification(api), "decision": "recognised"},
                        headers=doctor(api))
        assert r.status_code == 201, r.text
    assert calls == ["lane"]
    lines = api.client.get("/metrics").text.splitlines()
    assert any(line.startswith("mrledger_http_request_duration_seconds_count") and 'route="/v1/decisions"' in line
               and 'status="201"' in line for line in lines)
