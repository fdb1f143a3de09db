"""Who may call what: every ``/v1`` route × every kind of caller, as one table.

Why a table: authorisation is declared route by route (``authorize(...)`` in each handler), so a new
route with a forgotten or wrong check is the likeliest security bug. ``test_every_route_is_in_the_table``
fails for any route of the app that the table does not list, so a route cannot be added without
deciding, here, who may call it. Rows for planned routes that do not exist yet are skipped, not dropped.

Classes: ``ok`` = authorisation passed (any status but 401/403: 200, 404 and 409 all mean the caller got
past the check), ``401`` = no token, ``403`` = wrong role or another hospital.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from mrledger.http.schemas import EXAMPLE_FHIR
from mrledger.store import Store, make_engine, migrate
from tests.conftest import TEST_KEY
from tests.harness import Api, _make
from tests.store.test_repository import rec

OWN, OTHER = "gz-001", "qd-002"
#: Callers: no token, the four roles, and the hospital token on its own and on another hospital.
CALLERS = ("none", "admin", "doctor", "auditor", "own", "other")
#: Routes outside /v1 that are public by design (probes and the Prometheus scrape).
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
          # the doctor's and auditor's pages and their scripts (http/web/): tokens are typed into the page
          ("GET", "/verify"), ("GET", "/audit"), ("GET", "/web/{name}")}

ok, U, F = "ok", "401", "403"

Body = Callable[[Api, str], Any]


def _record_body(api: Api, hid: str) -> Any:
    return {"hospital_id": hid, "result_id": "R1", "version": 1, "record": rec(1, hid).to_obj()}


def _fhir_body(api: Api, hid: str) -> Any:
    return {"hospital_id": hid, "fhir": EXAMPLE_FHIR}


def _receipt_body(api: Api, hid: str) -> Any:
    receipt = api.ledger.store.receipt(hid, "R1")
    assert receipt is not None
    return {"receipt": json.loads(receipt.to_json())}


@dataclass(frozen=True)
class Row:
    method: str
    path: str  # {hid} is the caller's target hospital; other placeholders are filled in place
    expect: dict[str, str]
    body: Body | None = None
    label: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.method, normalise(self.path.split("?", 1)[0])


def only(allowed: set[str]) -> dict[str, str]:
    """Allowed callers get ``ok``, no token 401, everybody else 403."""
    return {c: ok if c in allowed else U if c == "none" else F for c in CALLERS}


AUDIT = only({"admin", "auditor"})
TABLE = [
    Row("POST", "/v1/hospitals", only({"admin"}), lambda api, hid: {"id": "xx-003", "name": "Xiamen"}),
    Row("GET", "/v1/hospitals", only({"admin", "doctor", "auditor", "own", "other"})),
    Row("POST", "/v1/hospitals/{hid}/results", only({"own"}), lambda api, hid: {"records": [rec(1, hid).to_obj()]}),
    Row("POST", "/v1/hospitals/{hid}/fhir", only({"own"}), lambda api, hid: {"resourceType": "Patient"}),
    Row("POST", "/v1/hospitals/{hid}/hl7v2", only({"own"})),
    # Not doctors: an id and a doctor's token would tell whether a hospital holds a result, its status, leaves and
    # times (issue 14, finding 8); a doctor who holds the result learns its later versions from /v1/verify.
    Row("GET", "/v1/hospitals/{hid}/results/R1", only({"own", "auditor", "admin"})),
    Row("GET", "/v1/hospitals/{hid}/results/R1/receipt", only({"own", "auditor", "admin"})),
    Row("GET", "/v1/hospitals/{hid}/results/R1/receipt.png", only({"own", "auditor", "admin"})),
    Row("GET", "/v1/hospitals/{hid}/results/R1/receipt.svg", only({"own", "auditor", "admin"})),
    # public: hashes only, and only for a caller who names the leaf hash (http/routes/receipt_qr.py)
    Row("GET", "/v1/hospitals/{hid}/results/R1/proof", dict.fromkeys(CALLERS, ok)),
    # public: a status-map proof, only for a caller who names the result's status key (docs/receipt.md §17)
    Row("GET", "/v1/hospitals/{hid}/results/R1/status-proof?key=" + "00" * 32, dict.fromkeys(CALLERS, ok)),
    Row("GET", "/v1/hospitals/{hid}/batches/1", only({"own", "auditor", "admin"})),
    # public: the signed head and salted leaf hashes, what an outside monitor re-derives the root from
    Row("GET", "/v1/hospitals/{hid}/batches/head", dict.fromkeys(CALLERS, ok)),
    Row("GET", "/v1/hospitals/{hid}/batches/1/leaves", dict.fromkeys(CALLERS, ok)),
    # versions and withdrawals per leaf: for auditors (the monitor's --token), not the public
    Row("GET", "/v1/hospitals/{hid}/batches/1/map", AUDIT),
    Row("POST", "/v1/verify", dict.fromkeys(CALLERS, ok), _receipt_body, "receipt"),
    Row("POST", "/v1/verify", only({"doctor", "admin", "auditor"}), _record_body, "record"),
    Row("POST", "/v1/verify", only({"doctor", "admin", "auditor"}), _fhir_body, "fhir"),
    Row("GET", "/v1/audit/hospitals/{hid}/results/R1/lineage", AUDIT),
    Row("GET", "/v1/audit/hospitals/{hid}/batches", AUDIT),
    Row("GET", "/v1/audit/hospitals/{hid}/consistency", AUDIT),
    Row("GET", "/v1/audit/access-log", AUDIT),
    # Mutual recognition: the catalogue is public configuration; eligibility is written by admins.
    Row("GET", "/v1/catalogue", dict.fromkeys(CALLERS, ok)),
    Row("PUT", "/v1/hospitals/{hid}/eligibility/clinical-biochemistry", only({"admin"}),
        lambda api, hid: {"reference": "EQA-2024-001"}),
    Row("DELETE", "/v1/hospitals/{hid}/eligibility/clinical-biochemistry", only({"admin"})),
    Row("GET", "/v1/hospitals/{hid}/eligibility", only({"admin", "doctor", "auditor"})),
    # Recognition decisions (affiliated doctors), encounters (the hospital itself), KPIs and their audit.
    Row("POST", "/v1/decisions", only({"doctor"}), lambda api, hid: {"verification_id": "01JD3S4V6Q8E2N7W0X5K9C1B2A",
                                                                     "decision": "recognised"}),
    Row("POST", "/v1/encounters", only({"own"}), lambda api, hid: {"hospital_id": hid, "encounters": [
        {"encounter_id": "E1", "patient": {"value": "P1"}, "seen_at": "2024-05-01T08:00:00+08:00",
         "retrieved": True}]}),
    Row("GET", "/v1/kpis", AUDIT),
    Row("GET", "/v1/kpis.csv", AUDIT),
    Row("GET", "/v1/audit/decisions", AUDIT),
    # The audit as a job (http/routes/audit_jobs.py): the second allowed caller gets the 409 of the running job.
    Row("POST", "/v1/audit/decisions/jobs", AUDIT),
    Row("GET", "/v1/audit/decisions/jobs/01JD3S4V6Q8E2N7W0X5K9C1B2A", AUDIT, label="an unknown job: 404 for auditors"),
    # API tokens (http/routes/tokens.py): administrators only; admin tokens themselves are made on the host.
    Row("GET", "/v1/tokens", only({"admin"})),
    Row("POST", "/v1/tokens", only({"admin"}), lambda api, hid: {"role": "auditor", "label": "matrix"}),
    Row("POST", "/v1/tokens/999999/revoke", only({"admin"}), label="an unknown id: 404 for admin"),
]


def normalise(template: str) -> str:
    """Compare route templates and table paths by shape: ``/h/{hid}/r/{rid}`` ≡ ``/h/gz-001/r/R1``, so a
    colleague naming a parameter ``{hospital_id}`` does not break the table."""
    template = re.sub(r"\{[^}]+\}", "{}", template)
    return re.sub(r"(?<=/hospitals/)[^/{]+|(?<=/results/)[^/{]+|(?<=/batches/)[^/{]+|(?<=/eligibility/)[^/{]+"
                  r"|(?<=/tokens/)[^/{]+|(?<=/jobs/)[^/{]+", "{}", template)


def app_routes(api: Api) -> set[tuple[str, str]]:
    """(method, normalised template) of every route the app serves, FastAPI's own docs pages excepted.
    FastAPI >= 0.16x nests included routers in ``app.routes``; ``iter_route_contexts`` flattens them."""
    app: FastAPI = api.client.app  # type: ignore[assignment]
    docs = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    routes = set()
    for r in iter_route_contexts(app.routes):
        if r.path is None or r.path in docs:
            continue
        routes |= {(m, normalise(r.path)) for m in (r.methods or {"*"}) if m != "HEAD"}
    return routes


@pytest.fixture
def seeded(tmp_path: Path) -> Api:
    """SQLite only: authorisation does not depend on the database, and this file makes many requests.
    R1 of both hospitals is submitted and sealed, so allowed reads find something."""
    engine = make_engine(f"sqlite:///{tmp_path / 'authz.db'}")
    migrate(engine)
    api = _make(Store(engine, master_key=TEST_KEY))
    # The doctor is affiliated (doctor:<hid>, docs/kpis.md), as recording a decision requires; for every other
    # route the kind, doctor, is what counts. An unaffiliated doctor's 403 is tested in test_decisions.py.
    api.tokens["doctor"] = api.ledger.access.create_token(f"doctor:{OWN}", "test doctor", api.ledger.clock())
    for hid in (OWN, OTHER):
        api.ledger.intake.submit(hid, [rec(1, hid)])
        api.ledger.store.seal(hid, 100)
    return api


def test_every_route_is_in_the_table(seeded: Api) -> None:
    known = {row.key for row in TABLE} | {(m, normalise(p)) for m, p in PUBLIC}
    unlisted = sorted(app_routes(seeded) - known)
    assert not unlisted, f"routes without an authorisation row in {__file__}: {unlisted}"


def test_table_covers_every_caller() -> None:
    assert all(set(row.expect) == set(CALLERS) for row in TABLE)


@pytest.mark.parametrize("row", TABLE, ids=[f"{r.method} {r.path} {r.label}".strip() for r in TABLE])
def test_matrix(seeded: Api, row: Row) -> None:
    if row.key not in app_routes(seeded):
        pytest.skip(f"{row.method} {row.path} is planned but not in the app yet")
    wrong = []
    for caller in CALLERS:
        hid = OTHER if caller == "other" else OWN
        headers = {} if caller == "none" else seeded.auth(f"hospital:{OWN}" if caller in ("own", "other") else caller)
        body = row.body(seeded, hid) if row.body else None
        r = seeded.client.request(row.method, row.path.replace("{hid}", hid), headers=headers, json=body)
        got = str(r.status_code) if r.status_code in (401, 403) else ok
        if got != row.expect[caller]:
            wrong.append(f"{caller}: expected {row.expect[caller]}, got {r.status_code} {r.text[:200]}")
    assert not wrong, "\n".join(wrong)


def test_the_completeness_check_sees_a_new_route(seeded: Api) -> None:
    app: FastAPI = seeded.client.app  # type: ignore[assignment]

    @app.get("/v1/hospitals/{hospital_id}/secrets")
    def _secrets(hospital_id: str) -> dict[str, str]:
        return {}

    known = {row.key for row in TABLE} | {(m, normalise(p)) for m, p in PUBLIC}
    assert app_routes(seeded) - known == {("GET", "/v1/hospitals/{}/secrets")}
