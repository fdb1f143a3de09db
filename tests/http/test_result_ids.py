"""Every accepted result is reachable by every endpoint that takes a result id, and by ``mrledger receipt``,
whatever characters its id has (issue 16, point 1).

The ids are those real intake produces — ``Observation/<id>`` for a FHIR resource without an identifier (the
case of most Observations in generated patient bundles), ``urn:uuid:…`` from a transaction bundle — and the
characters a URL treats specially: ``%``, space, ``?``, ``#``, ``+``, non-Latin scripts, an id that ends in
``/receipt``. They are asked over real HTTP (uvicorn decodes ``%2F`` before routing, the failure this test
was written for) and through the TestClient.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
import pytest
from typer.testing import CliRunner

from mrledger.cli.http_client import result_segment
from mrledger.cli.main import app as cli
from mrledger.http.schemas import EXAMPLE_RECORD
from tests.harness import Api, serve_in_thread

HID = "gz-001"
IDS = ["Observation/f001", "50% off", "a?b#c", "a+b=c&d", "检验-2024/一", "Ωμέγα", "x/receipt", "x/proof",
       "urn:uuid:0b0c6c4e-5b76-4c1d-9b0e-6a3b3c7d0f11", "..", "%2F", "back\\slash", "quote\"d"]
runner = CliRunner()


def _record(rid: str) -> dict[str, object]:
    return {**EXAMPLE_RECORD, "result_id": rid}


def _paths(rid: str) -> dict[str, str]:
    seg = result_segment(rid)
    base = f"/v1/hospitals/{HID}/results/{seg}"
    return {"versions": base, "receipt": f"{base}/receipt", "png": f"{base}/receipt.png",
            "svg": f"{base}/receipt.svg", "lineage": f"/v1/audit/hospitals/{HID}/results/{seg}/lineage"}


def _check_all(api: Api, get: object, rid: str) -> None:
    fetch = get  # (path, headers, params) -> httpx.Response
    hospital, auditor = api.auth(f"hospital:{HID}"), api.auth("auditor")
    paths = _paths(rid)
    versions = fetch(paths["versions"], hospital, None)  # type: ignore[operator]
    assert versions.status_code == 200, (rid, versions.text)
    assert versions.json()["result_id"] == rid
    receipt = fetch(paths["receipt"], hospital, None)  # type: ignore[operator]
    assert receipt.status_code == 200, (rid, receipt.text)
    assert receipt.json()["record"]["result_id"] == rid
    for kind in ("png", "svg"):
        image = fetch(paths[kind], hospital, None)  # type: ignore[operator]
        assert image.status_code == 200, (rid, kind, image.text)
        assert f"filename*=UTF-8''{quote(f'receipt-{rid}.{kind}', safe='')}" in image.headers["content-disposition"]
    leaf = receipt.json()["leaf"]["hash"]
    proof = fetch(f"{paths['versions']}/proof", {}, {"leaf_hash": leaf})  # type: ignore[operator]
    assert proof.status_code == 200, (rid, proof.text)
    assert proof.json()["leaf"]["hash"] == leaf
    lineage = fetch(paths["lineage"], auditor, None)  # type: ignore[operator]
    assert lineage.status_code == 200, (rid, lineage.text)
    assert lineage.json()["result_id"] == rid and lineage.json()["chain_intact"]


@pytest.mark.anvil
def test_every_endpoint_and_the_cli_reach_results_whatever_their_id(chain_api: Api, tmp_path: object) -> None:
    api = chain_api
    hospital = api.auth(f"hospital:{HID}")
    answer = api.client.post(f"/v1/hospitals/{HID}/results", json={"records": [_record(r) for r in IDS]},
                             headers=hospital)
    assert answer.status_code == 202, answer.text
    # A FHIR Observation without an identifier: its result id is "Observation/<id>".
    fhir = {"resourceType": "Observation", "id": "no-ident", "status": "final", "category": [{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-05-01T07:00:00+08:00",
            "issued": "2024-05-01T08:00:00+08:00", "valueQuantity": {"value": 5.4, "unit": "mmol/L"}}
    intake = api.client.post(f"/v1/hospitals/{HID}/fhir", content=json.dumps(fhir),
                             headers={"content-type": "application/fhir+json", **hospital})
    assert intake.status_code == 202, intake.text
    assert [r["result_id"] for r in intake.json()["results"]] == ["Observation/no-ident"]
    api.anchor_all()
    ids = [*IDS, "Observation/no-ident"]

    def through_testclient(path: str, headers: dict[str, str], params: dict[str, str] | None) -> httpx.Response:
        return api.client.get(path, headers=headers, params=params)

    with serve_in_thread(api.client.app) as server:  # type: ignore[arg-type]
        def over_http(path: str, headers: dict[str, str], params: dict[str, str] | None) -> httpx.Response:
            return httpx.get(server + path, headers=headers, params=params)

        for rid in ids:
            _check_all(api, through_testclient, rid)
            _check_all(api, over_http, rid)
            out = tmp_path / "receipt.json"  # type: ignore[operator]
            done = runner.invoke(cli, ["receipt", HID, rid, "--api", server, "--token",
                                       api.tokens[f"hospital:{HID}"], "--out", str(out)])
            assert done.exit_code == 0, (rid, done.output)
            assert json.loads(out.read_text())["record"]["result_id"] == rid
        # A literal (unencoded) '/' still separates segments: that is another path, not this id.
        literal = httpx.get(f"{server}/v1/hospitals/{HID}/results/Observation/no-ident/receipt", headers=hospital)
        assert literal.status_code == 404
        # An id that is only a suffix's prefix does not swallow the suffix route.
        x = httpx.get(f"{server}/v1/hospitals/{HID}/results/x/receipt", headers=hospital)
        assert x.status_code == 404  # no result "x"; "x/receipt" is another result, reached as x%2Freceipt


def test_unknown_and_malformed_ids_are_problems_not_crashes(api: Api) -> None:
    hospital = api.auth(f"hospital:{HID}")
    assert api.client.get(f"/v1/hospitals/{HID}/results/nope%2Fnope", headers=hospital).status_code == 404
    too_long = quote("检" * 129, safe="")
    assert api.client.get(f"/v1/hospitals/{HID}/results/{too_long}", headers=hospital).status_code == 422
    fits = quote("检" * 128, safe="")  # 128 characters, 1,152 bytes once percent-encoded
    assert api.client.get(f"/v1/hospitals/{HID}/results/{fits}", headers=hospital).status_code == 404
    bad_utf8 = api.client.get(f"/v1/hospitals/{HID}/results/%FF%FE/receipt", headers=hospital)
    assert bad_utf8.status_code in (404, 422)
