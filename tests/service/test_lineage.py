"""Result lineage of real formats: which version a received FHIR resource becomes (service/intake.py).

Why both levels: ``plan`` is the rule table, tested exhaustively without a database; the HTTP tests prove
the rules hold end to end on SQLite and PostgreSQL with a real example resource (Observation-f001 of the
HL7 R4 examples), and the chain test proves a correction is anchored like any result and that the old
receipt then answers ``superseded_by``.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from mrledger.ledger import ResultRecord
from mrledger.ledger.formats import from_fhir
from mrledger.service.intake import UnannouncedChangeError, UnknownCorrectionError, plan
from mrledger.store.models import RecordVersion
from tests.harness import Api
from tests.http.test_hospitals import assert_problem
from tests.http.test_results import record
from tests.ledger.formats.test_fhir import EXAMPLES

HID = "gz-001"
FHIR_URL = f"/v1/hospitals/{HID}/fhir"
needs_examples = pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f"{EXAMPLES} is absent (run npm ci)")


def rec(status: str = "final", value: float = 5.0, version: int = 1, rid: str = "R1") -> ResultRecord:
    """A record as an adapter hands it over: the version is provisional, ``plan`` decides it."""
    obj = record(1, value=value, result_id=rid, status=status, version=version, issued="2024-05-01T07:30:00Z")
    obj.pop("supersedes", None)
    if version > 1:
        obj["supersedes"] = version - 1
    obj["status"] = status
    return ResultRecord.from_obj(obj)


def lineage(records: list[ResultRecord]) -> list[tuple[int, int | None, str]]:
    return [(r.version, r.supersedes, r.status) for r in records]


# -- the rule table (no database) --------------------------------------------------------------------


@pytest.mark.parametrize("status", ["final", "preliminary", "entered-in-error"])
def test_a_result_never_seen_becomes_version_1(status: str) -> None:
    assert lineage(plan([rec(status, version=2)], {})) == [(1, None, status)]


@pytest.mark.parametrize("status", ["amended", "corrected"])
def test_a_correction_of_a_result_never_seen_is_refused(status: str) -> None:
    with pytest.raises(UnknownCorrectionError, match="correction of a result this ledger never received"):
        plan([rec(status, version=2)], {})


def test_the_same_content_is_the_held_version_whatever_number_the_adapter_gave() -> None:
    held = rec()
    out = plan([rec(version=2)], {"R1": [held]})
    assert out == [held] and out[0] is held


@pytest.mark.parametrize(("new", "held_status"), [
    ("amended", "final"), ("corrected", "final"), ("corrected", "amended"), ("amended", "preliminary"),
    ("entered-in-error", "final"), ("entered-in-error", "corrected"),
    ("final", "preliminary"), ("preliminary", "preliminary"), ("corrected", "entered-in-error"),
])
def test_a_declared_change_is_the_next_version(new: str, held_status: str) -> None:
    v1 = rec(held_status if held_status not in ("amended", "corrected") else "final")
    held = [v1] if v1.status == held_status else [v1, rec(held_status, value=6.0, version=2)]
    out = plan([rec(new, value=9.0, version=2)], {"R1": held})
    n = len(held)
    assert lineage(out) == [(n + 1, n, new)]


@pytest.mark.parametrize(("new", "held_status", "reason"), [
    ("final", "final", "a changed result must be sent as amended or corrected"),
    ("final", "corrected", "a changed result must be sent as amended or corrected"),
    ("preliminary", "final", "cannot become preliminary again"),
    ("final", "entered-in-error", "a re-issue must be sent as corrected"),
])
def test_an_undeclared_change_is_a_conflict(new: str, held_status: str, reason: str) -> None:
    v1 = rec(held_status if held_status != "corrected" else "final")
    held = [v1] if v1.status == held_status else [v1, rec(held_status, value=6.0, version=2)]
    with pytest.raises(UnannouncedChangeError, match=reason) as caught:
        plan([rec(new, value=9.0)], {"R1": held})
    assert caught.value.keys == [(HID, "R1", len(held))]


def test_a_replayed_older_version_is_a_duplicate_not_a_reversion() -> None:
    v1, v2 = rec(), rec("corrected", value=6.0, version=2)
    assert plan([rec()], {"R1": [v1, v2]}) == [v1]


def test_one_request_is_planned_in_order() -> None:
    out = plan([rec(version=2), rec("amended", 6.0, 2), rec("amended", 6.0, 2), rec("entered-in-error", 6.0, 2),
                rec(version=2, rid="R2")], {})
    assert [(r.result_id, *x) for r, x in zip(out, lineage(out), strict=True)] == [
        ("R1", 1, None, "final"), ("R1", 2, 1, "amended"), ("R1", 2, 1, "amended"),
        ("R1", 3, 2, "entered-in-error"), ("R2", 1, None, "final")]


# -- over HTTP (SQLite and PostgreSQL) ---------------------------------------------------------------


def f001() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((EXAMPLES / "Observation-f001.json").read_text(encoding="utf-8"))
    return doc


def changed(doc: dict[str, Any], status: str | None = None, value: float | None = None) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    if status is not None:
        out["status"] = status
    if value is not None:
        out["valueQuantity"]["value"] = value
    return out


def post_fhir(api: Api, doc: Any, hospital: str = HID) -> Any:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return api.client.post(f"/v1/hospitals/{hospital}/fhir", content=data, headers={
        "content-type": "application/fhir+json", **api.auth(f"hospital:{hospital}")})


def rows(api: Api) -> int:
    with api.ledger.store.engine.connect() as c:
        return int(c.scalar(select(func.count()).select_from(RecordVersion)) or 0)


@needs_examples
def test_fhir_lineage_over_http(api: Api) -> None:
    first = post_fhir(api, f001())
    assert first.status_code == 202, first.text
    (v1,) = first.json()["results"]
    assert (v1["result_id"], v1["version"], v1["supersedes"], v1["status"]) == ("6323", 1, None, "accepted")

    # Another system's spelling of the same resource: pretty-printed, keys reversed, a new meta.
    respelt = dict(reversed(list(f001().items())), meta={"versionId": "9", "lastUpdated": "2024-01-01T00:00:00Z"})
    again = post_fhir(api, json.dumps(respelt, indent=4).encode())
    assert again.json()["results"] == [{**v1, "status": "duplicate"}]
    assert again.json()["duplicates"] == 1

    undeclared = post_fhir(api, changed(f001(), value=7.2))
    body = assert_problem(undeclared, 409, "conflict")
    assert "must be sent as amended or corrected" in body["detail"]
    assert body["keys"] == [{"hospital_id": HID, "result_id": "6323", "version": 1}]
    assert rows(api) == 1

    amended = post_fhir(api, changed(f001(), "amended", 7.2)).json()["results"][0]
    assert (amended["version"], amended["supersedes"], amended["result_status"]) == (2, 1, "amended")
    assert post_fhir(api, changed(f001(), "amended", 7.2)).json()["results"][0]["status"] == "duplicate"

    revoked = post_fhir(api, changed(f001(), "entered-in-error", 7.2)).json()["results"][0]
    assert (revoked["version"], revoked["supersedes"], revoked["result_status"]) == (3, 2, "entered-in-error")

    history = api.client.get(f"/v1/hospitals/{HID}/results/6323", headers=api.auth("auditor")).json()
    assert [(v["version"], v["supersedes"], v["status"]) for v in history["versions"]] == [
        (1, None, "final"), (2, 1, "amended"), (3, 2, "entered-in-error")]
    assert [v["leaf_hash"] for v in history["versions"]] == [
        v1["leaf_hash"], amended["leaf_hash"], revoked["leaf_hash"]]


@needs_examples
def test_a_correction_of_an_unknown_result_is_refused_and_nothing_is_stored(api: Api) -> None:
    body = assert_problem(post_fhir(api, changed(f001(), "corrected", 7.2)), 422, "lineage")
    assert "correction of a result this ledger never received" in body["detail"]
    assert rows(api) == 0


@needs_examples
def test_a_bundle_with_a_result_and_its_amendment_gives_versions_in_order(api: Api) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "http://example.org/fhir/Observation/f001", "resource": f001()},
        {"fullUrl": "http://example.org/fhir/Observation/f001-b", "resource": changed(f001(), "amended", 7.2)}]}
    answer = post_fhir(api, bundle)
    assert answer.status_code == 202, answer.text
    assert [(r["version"], r["supersedes"], r["status"]) for r in answer.json()["results"]] == [
        (1, None, "accepted"), (2, 1, "accepted")]


@needs_examples
def test_all_or_nothing_when_one_result_of_a_bundle_is_an_undeclared_change(api: Api) -> None:
    post_fhir(api, f001())
    other = changed(f001(), value=1.0)
    other["identifier"][0]["value"] = "other-result"
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": other}, {"resource": changed(f001(), value=7.2)}]}
    assert_problem(post_fhir(api, bundle), 409, "conflict")
    assert rows(api) == 1


# -- on chain ----------------------------------------------------------------------------------------


def verify(api: Api, receipt: dict[str, Any]) -> dict[str, Any]:
    answer = api.client.post("/v1/verify", json={"receipt": receipt})
    assert answer.status_code == 200, answer.text
    out: dict[str, Any] = answer.json()
    return out


@needs_examples
@pytest.mark.anvil
def test_fhir_result_is_anchored_verified_and_then_superseded(chain_api: Api) -> None:
    assert post_fhir(chain_api, f001()).status_code == 202
    chain_api.anchor_all()
    got = chain_api.client.get(f"/v1/hospitals/{HID}/results/6323/receipt", headers=chain_api.auth("auditor"))
    assert got.status_code == 200, got.text
    receipt = got.json()
    # The receipt commits the same record the adapter builds from the file: a receiving hospital can
    # recompute it from the FHIR resource it was shown.
    assert receipt["record"] == from_fhir(f001(), HID)[0].to_obj()
    first = verify(chain_api, receipt)
    assert (first["verdict"], first["version"], first["superseded_by"]) == ("authentic", 1, None)

    corrected = post_fhir(chain_api, changed(f001(), "corrected", 7.2)).json()["results"][0]
    assert (corrected["version"], corrected["supersedes"]) == (2, 1)
    chain_api.anchor_all()
    old = verify(chain_api, receipt)
    assert old["verdict"] == "authentic"
    assert old["superseded_by"]["version"] == 2 and old["superseded_by"]["status"] == "corrected"
    new = chain_api.client.get(f"/v1/hospitals/{HID}/results/6323/receipt", headers=chain_api.auth("auditor"))
    assert verify(chain_api, new.json())["verdict"] == "authentic"
