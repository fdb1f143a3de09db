"""What a verification answer may tell whom (issue 14, findings 3, 8 and 9).

A caller who does not hold what the hospital committed — a forged receipt naming another hospital's result, a
doctor's record that does not match — hears "not found" or "does not match" and nothing else: not the hospital's
name, not whether the result id exists, not whether it was corrected or withdrawn, not the stored issue time.
The test for each: the answer about an existing, corrected and withdrawn result is the answer about a result id
that never existed. Only a verification that established the result gets a ``verification_id`` a decision can
name.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mrledger.ledger import ResultRecord
from mrledger.ledger.leaf import commit
from mrledger.store.models import Decision
from tests.harness import Api
from tests.http.test_results import record, submit
from tests.http.test_verify import verify
from tests.service.test_decisions import count, stream_records, verification

#: Members of an answer that are about the caller's own input (and so differ between two probes by design).
OWN = ("result_id", "verification_id")


def _history(api: Api) -> dict[str, Any]:
    """gz-001: R1 v1 sealed, then corrected (v2) and withdrawn (v3, entered-in-error); R9 sealed. Returns R9's
    genuine receipt: the forger's raw material."""
    assert submit(api, {"records": [record(1), record(9)]}).status_code == 202
    api.ledger.store.seal("gz-001", 100)
    assert submit(api, record(1, version=2, value=6.2)).status_code == 202
    assert submit(api, record(1, version=3, value=6.2, status="entered-in-error")).status_code == 202
    receipt = api.ledger.store.receipt("gz-001", "R9")
    assert receipt is not None
    return receipt.to_obj()


def _forge(genuine: dict[str, Any], result_id: str, *, one_leaf: bool) -> dict[str, Any]:
    """R9's receipt re-labelled as ``result_id``: fails its leaf hash, or — re-committed by the forger into a
    one-leaf batch of their own, anchored nowhere — passes every offline check (no trust configured here)."""
    forged = copy.deepcopy(genuine)
    forged["record"]["result_id"] = result_id
    if one_leaf:
        salt = bytes(range(16))
        leaf = commit(ResultRecord.from_obj(forged["record"]), salt).hex()
        forged.update(salt=salt.hex(), leaf={"index": 0, "hash": leaf}, audit_path=[])
        forged["batch"].update(size=1, root=leaf)
    return forged


def _strip(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k not in OWN}


@pytest.mark.parametrize(("one_leaf", "verdict"), [(False, "tampered"), (True, "pending")],
                         ids=["leaf-hash-fails", "self-made-batch"])
def test_a_forged_receipt_learns_nothing_about_the_result_it_names(api: Api, one_leaf: bool, verdict: str) -> None:
    genuine = _history(api)
    existing = verify(api, {"receipt": _forge(genuine, "R1", one_leaf=one_leaf)})
    never = verify(api, {"receipt": _forge(genuine, "R-NEVER-SUBMITTED", one_leaf=one_leaf)})
    assert existing["verdict"] == verdict
    assert _strip(existing) == _strip(never)  # an existing, corrected, withdrawn id answers like no id at all
    assert existing["hospital_name"] is None and existing["superseded_by"] is None and existing["revoked_by"] is None
    assert existing["verification_id"] is None and never["verification_id"] is None  # nothing to decide on


def test_the_holder_of_the_genuine_receipt_hears_about_corrections(api: Api) -> None:
    _history(api)
    receipt = api.ledger.store.receipt("gz-001", "R1", 1)
    assert receipt is not None
    out = verify(api, {"receipt": receipt.to_obj()})  # anonymous: the patient's own receipt, anchor pending
    assert out["verdict"] == "revoked" and out["hospital_name"] == "Guangzhou First People's Hospital"
    assert out["revoked_by"]["version"] == 3 and out["superseded_by"]["version"] == 3
    assert out["verification_id"] is not None  # established (its leaf is the committed one): decidable


def test_a_record_that_does_not_match_hears_only_that(api: Api) -> None:
    """Verify-by-record with a wrong record: no stored ``issued`` time, no later versions, no hospital name —
    the same answer for a result id that is held (and was corrected and withdrawn) and one that only exists
    as a version number in the question."""
    _history(api)
    wrong = record(1, value=1.0, issued="2030-01-01T00:00:00Z")
    held = verify(api, {"hospital_id": "gz-001", "result_id": "R1", "version": 1, "record": wrong}, "doctor")
    assert (held["verdict"], held["failed_check"]) == ("tampered", "content")
    assert held["issued"] == "2030-01-01T00:00:00Z"  # the caller's own claim, never the stored 2024-05-01T07:30Z
    assert held["hospital_name"] is None and held["superseded_by"] is None and held["revoked_by"] is None
    assert held["verification_id"] is None
    right = verify(api, {"hospital_id": "gz-001", "result_id": "R1", "version": 1, "record": record(1)}, "doctor")
    assert right["verdict"] == "revoked" and right["issued"] == "2024-05-01T07:30:00Z"
    assert right["hospital_name"] and right["revoked_by"]["version"] == 3 and right["verification_id"]


def test_an_anonymous_forgery_cannot_become_a_decision(api: Api) -> None:
    """The attack of finding 9: an anonymous tampered verification used to get a verification id that any
    affiliated doctor could turn into a committed ``reordered`` decision about the hospital the forgery named."""
    genuine = _history(api)
    forged = verify(api, {"receipt": _forge(genuine, "R1", one_leaf=False)})
    assert forged["verdict"] == "tampered" and forged["verification_id"] is None
    doctor = api.ledger.access.create_token("doctor:qd-002", "test", api.ledger.clock())
    # Ids of tampered verifications recorded before this rule are refused too (and nothing is written).
    old = verification(api, "reorder", reasons=("not-authentic",), verdict="tampered")
    r = api.client.post("/v1/decisions", json={"verification_id": old, "decision": "reordered"},
                        headers={"Authorization": f"Bearer {doctor}"})
    assert r.status_code == 422 and r.json()["type"] == "urn:mrledger:problem:not-decidable", r.text
    assert count(api, Decision) == 0 and stream_records(api) == 0


def test_the_public_proof_route_answers_a_stored_id_like_one_never_stored(api: Api) -> None:
    """The proof route needs no token; without the leaf hash its 404 must not tell a stored result id from one
    that never was (it said "no result 'R1' at hospital" for the latter only: found by scripts/attack.py)."""
    _history(api)
    answers = {}
    for rid in ("R1", "R-NEVER-SUBMITTED"):
        got = api.client.get(f"/v1/hospitals/gz-001/results/{rid}/proof", params={"leaf_hash": "ab" * 32})
        assert got.status_code == 404, got.text
        answers[rid] = {k: str(v).replace(rid, "<id>") for k, v in got.json().items() if k != "instance"}
    assert answers["R1"] == answers["R-NEVER-SUBMITTED"]
