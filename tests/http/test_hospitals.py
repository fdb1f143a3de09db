"""POST/GET /v1/hospitals: admin-only registration, idempotency, conflicts, validation, and the OpenAPI
contract every route of this module family relies on (problem+json error responses, resolvable refs)."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from tests.harness import Api

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, name: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == f"urn:mrledger:problem:{name}" and body["status"] == status
    assert isinstance(body, dict)
    return body


def test_register_is_admin_only_and_idempotent(api: Api) -> None:
    body = {"id": "sz-003", "name": "Shenzhen People's Hospital"}
    created = api.client.post("/v1/hospitals", json=body, headers=api.auth("admin"))
    assert created.status_code == 201
    assert created.json() == {"id": "sz-003", "name": "Shenzhen People's Hospital", "on_chain_registered": False}
    again = api.client.post("/v1/hospitals", json=body, headers=api.auth("admin"))
    assert again.status_code == 201 and again.json()["id"] == "sz-003"
    conflict = api.client.post("/v1/hospitals", json={**body, "name": "Other"}, headers=api.auth("admin"))
    assert_problem(conflict, 409, "conflict")
    assert_problem(api.client.post("/v1/hospitals", json=body, headers=api.auth("doctor")), 403, "forbidden")
    assert_problem(api.client.post("/v1/hospitals", json=body, headers=api.auth("hospital:gz-001")), 403,
                   "forbidden")
    assert_problem(api.client.post("/v1/hospitals", json=body), 401, "unauthenticated")


@pytest.mark.parametrize("bad", [{"id": "bad id", "name": "x"}, {"id": "-x", "name": "x"}, {"id": "ok", "name": ""},
                                 {"id": "ok", "name": "x", "submitters": ["0x12"]}, {"name": "x"}])
def test_register_rejects_bad_input(api: Api, bad: dict[str, object]) -> None:
    assert_problem(api.client.post("/v1/hospitals", json=bad, headers=api.auth("admin")), 422, "validation")
    assert [h["id"] for h in api.client.get("/v1/hospitals", headers=api.auth("admin")).json()] == \
        ["gz-001", "qd-002"]


def test_list_needs_any_valid_token(api: Api) -> None:
    for role in api.tokens:
        listed = api.client.get("/v1/hospitals", headers=api.auth(role))
        assert listed.status_code == 200
        assert listed.json() == [{"id": "gz-001", "name": "Guangzhou First People's Hospital"},
                                 {"id": "qd-002", "name": "Qingdao Municipal Hospital"}]
    assert_problem(api.client.get("/v1/hospitals"), 401, "unauthenticated")
    assert_problem(api.client.get("/v1/hospitals", headers={"Authorization": "Bearer mrl_nope"}), 401,
                   "unauthenticated")


@pytest.mark.anvil
def test_register_on_chain(chain_api: Api) -> None:
    created = chain_api.client.post("/v1/hospitals", json={"id": "sz-003", "name": "Shenzhen"},
                                    headers=chain_api.auth("admin"))
    assert created.status_code == 201 and created.json()["on_chain_registered"] is True
    again = chain_api.client.post("/v1/hospitals", json={"id": "sz-003", "name": "Shenzhen"},
                                  headers=chain_api.auth("admin"))
    assert again.json()["on_chain_registered"] is False


def test_openapi_documents_bodies_examples_and_problems(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    text = json.dumps(spec)
    components = set(spec["components"]["schemas"])
    assert {r.removeprefix("#/components/schemas/") for r in re.findall(r'"\$ref": "([^"]+)"', text)} <= components
    ours = {("/v1/hospitals", "post"), ("/v1/hospitals", "get"), ("/v1/hospitals/{hospital_id}/results", "post"),
            ("/v1/hospitals/{hospital_id}/results/{result_id}", "get"),
            ("/v1/hospitals/{hospital_id}/results/{result_id}/receipt", "get"),
            ("/v1/hospitals/{hospital_id}/batches/{seq}", "get"), ("/v1/verify", "post")}
    for path, method in ours:
        op = spec["paths"][path][method]
        errors = {code: r for code, r in op["responses"].items() if code.startswith(("4", "5"))}
        assert "401" in errors, (path, method)
        for code, r in errors.items():
            assert list(r["content"]) == [PROBLEM], (path, method, code)
            assert r["content"][PROBLEM]["example"]["status"] == int(code)
    submit = spec["paths"]["/v1/hospitals/{hospital_id}/results"]["post"]
    assert "1000" in submit["description"]
    assert set(submit["requestBody"]["content"]["application/json"]["examples"]) == {"single", "list"}
    assert "$ref" not in json.dumps(submit["requestBody"])
    for name in ("HospitalCreate", "HospitalOut", "SubmissionOut", "ResultOut", "BatchDetailOut", "VerifyOut",
                 "ReceiptDoc"):
        assert spec["components"]["schemas"][name].get("examples"), name
