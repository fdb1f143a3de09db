"""The audit API: lineage, batch sequence gaps, database-vs-chain consistency, access log, and who may
read them. Database states that the store never produces (a deleted batch, a rewritten root) are made
with SQL, because detecting exactly those is what the audit endpoints are for."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from mrledger.anchoring import contract as reg
from mrledger.ledger import hospital_key
from tests.harness import Api
from tests.store.test_repository import rec

GZ = "gz-001"
AUDIT_PATHS = (f"/v1/audit/hospitals/{GZ}/results/R1/lineage", f"/v1/audit/hospitals/{GZ}/batches",
               f"/v1/audit/hospitals/{GZ}/consistency", "/v1/audit/access-log")


def sql(api: Api, statement: str, **params: object) -> None:
    with api.ledger.store.engine.begin() as conn:
        conn.execute(text(statement), params)


def seal_batches(api: Api, n: int, hospital: str = GZ) -> None:
    """``n`` batches of two results each (R{2k}, R{2k+1})."""
    start = len(api.ledger.store.batches(hospital))
    for b in range(start, start + n):
        api.ledger.intake.submit(hospital, [rec(2 * b, hospital), rec(2 * b + 1, hospital)])
        assert api.ledger.store.seal(hospital, 100) is not None


def mark_anchored(api: Api, seq: int) -> None:
    """What the worker records for a confirmed anchor, without a chain (the batches view only reads it)."""
    now = datetime.now(UTC)
    api.ledger.outbox.mark_included(GZ, seq, chain_id=31337, contract="0x" + "11" * 20, tx_hash="0x" + "22" * 32,
                                    block_number=10 + seq, block_hash="0x" + "33" * 32, now=now)
    api.ledger.outbox.mark_confirmed(GZ, seq, now)


def test_lineage_lists_versions_with_batch_and_anchor_and_flags_a_break(api: Api) -> None:
    api.ledger.intake.submit(GZ, [rec(1)])
    api.ledger.store.seal(GZ, 100)
    api.ledger.intake.submit(GZ, [rec(1, version=2, value=6.0)])
    api.ledger.store.seal(GZ, 100)
    api.ledger.intake.submit(GZ, [rec(1, version=3, value=7.0, supersedes=2)])
    mark_anchored(api, 1)

    r = api.client.get(AUDIT_PATHS[0], headers=api.auth("auditor"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["chain_intact"] is True and body["breaks"] == []
    versions = body["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert [v["supersedes"] for v in versions] == [None, 1, 2]
    assert [v["batch_seq"] for v in versions] == [1, 2, None]
    assert [v["leaf_index"] for v in versions] == [0, 0, None]
    assert versions[0]["anchor"]["status"] == "confirmed" and versions[0]["anchor"]["block_number"] == 11
    assert versions[0]["anchor"]["confirmed_at"] is not None
    assert versions[1]["anchor"] == {"status": "sealed", "chain_id": None, "contract": None, "tx_hash": None,
                                     "block_number": None, "block_hash": None, "confirmed_at": None}
    assert versions[2]["anchor"] is None
    assert all(len(v["leaf_hash"]) == 64 for v in versions)

    # The store refuses a broken lineage at submission, so a break means someone edited the database.
    sql(api, "UPDATE record_versions SET version = 5 WHERE result_hmac = :h AND version = 3",
        h=api.ledger.store.result_key(GZ, "R1"))
    broken = api.client.get(AUDIT_PATHS[0], headers=api.auth("admin")).json()
    assert broken["chain_intact"] is False and [v["version"] for v in broken["versions"]] == [1, 2, 5]
    assert any("[3, 4]" in b for b in broken["breaks"])

    missing = api.client.get(f"/v1/audit/hospitals/{GZ}/results/nope/lineage", headers=api.auth("auditor"))
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")


def test_batches_pages_in_seq_order_and_flags_sequence_and_anchoring_gaps(api: Api) -> None:
    seal_batches(api, 4)
    for seq in (1, 3):  # 2 unanchored before an anchored 3: an anchoring gap; 4 is merely not anchored yet
        mark_anchored(api, seq)
    r = api.client.get(f"/v1/audit/hospitals/{GZ}/batches", headers=api.auth("auditor"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [b["seq"] for b in body["batches"]] == [1, 2, 3, 4]
    assert [b["anchor_status"] for b in body["batches"]] == ["confirmed", "sealed", "confirmed", "sealed"]
    assert all(b["size"] == 2 and len(b["root"]) == 64 for b in body["batches"])
    assert body["gaps"] == {"missing_seqs": [], "anchoring": [2]}
    assert body["totals"] == {"batches": 4, "last_seq": 4, "on_page": 4, "confirmed_on_page": 2}
    assert body["next_after_seq"] is None

    page = api.client.get(f"/v1/audit/hospitals/{GZ}/batches", params={"after_seq": 1, "limit": 2},
                          headers=api.auth("admin")).json()
    assert [b["seq"] for b in page["batches"]] == [2, 3] and page["next_after_seq"] == 3

    # A batch vanishing from the database leaves a hole in the gap-free sequence.
    sql(api, "DELETE FROM batch_leaves WHERE hospital_id = :h AND seq = 2", h=GZ)
    sql(api, "DELETE FROM batches WHERE hospital_id = :h AND seq = 2", h=GZ)
    holed = api.client.get(f"/v1/audit/hospitals/{GZ}/batches", headers=api.auth("auditor")).json()
    assert holed["gaps"] == {"missing_seqs": [2], "anchoring": []}
    assert holed["totals"]["batches"] == 3

    unknown = api.client.get("/v1/audit/hospitals/xx-999/batches", headers=api.auth("auditor"))
    assert unknown.status_code == 404
    bad = api.client.get(f"/v1/audit/hospitals/{GZ}/batches", params={"limit": 0}, headers=api.auth("auditor"))
    assert bad.status_code == 422


@pytest.mark.anvil
def test_batches_after_anchoring_everything_have_no_gaps(chain_api: Api) -> None:
    seal_batches(chain_api, 3)
    chain_api.anchor_all()
    body = chain_api.client.get(f"/v1/audit/hospitals/{GZ}/batches", headers=chain_api.auth("auditor")).json()
    assert [b["anchor_status"] for b in body["batches"]] == ["confirmed"] * 3
    assert body["gaps"] == {"missing_seqs": [], "anchoring": []}


@pytest.mark.anvil
def test_consistency_detects_root_mismatch_and_batches_missing_on_either_side(chain_api: Api) -> None:
    api, url = chain_api, f"/v1/audit/hospitals/{GZ}/consistency"
    seal_batches(api, 3)
    api.anchor_all()
    ok = api.client.get(url, headers=api.auth("auditor"))
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["consistent"] is True
    assert (body["db_batches"], body["chain_batches"], body["last_seq_chain"], body["last_seq_db"]) == (3, 3, 3, 3)
    assert body["missing_on_chain"] == body["missing_in_db"] == body["root_mismatches"] == []
    assert body["chain_id"] == api.ledger.chain.chain_id and body["contract"] == api.ledger.chain.contract  # type: ignore[union-attr]

    # Sealed but not anchored yet: reported, not an alarm.
    seal_batches(api, 1)
    pending = api.client.get(url, headers=api.auth("auditor")).json()
    assert pending["consistent"] is True
    assert pending["missing_on_chain"] == [{"seq": 4, "anchor_status": "sealed", "alarm": False}]

    # The database's root of batch 2 rewritten after anchoring.
    sql(api, "UPDATE batches SET root = :r WHERE hospital_id = :h AND seq = 2", r=b"\x00" * 32, h=GZ)
    tampered = api.client.get(url, headers=api.auth("admin")).json()
    assert tampered["consistent"] is False
    assert [(m["seq"], m["source"], m["db_root"]) for m in tampered["root_mismatches"]] == [(2, "batchOf", "00" * 32)]

    # Batches anchored on chain behind the database's back: 4 (the sealed one) and 5, unknown here.
    chain = api.ledger.chain
    assert chain is not None and chain.submitter is not None
    key, head4 = hospital_key(GZ), api.ledger.store.batch(GZ, 4)
    reg.anchor(chain.w3, chain.contract, chain.submitter, key, 4, head4.root, head4.size)
    reg.anchor(chain.w3, chain.contract, chain.submitter, key, 5, b"\x55" * 32, 7)
    ahead = api.client.get(url, headers=api.auth("auditor")).json()
    assert ahead["consistent"] is False and ahead["last_seq_chain"] == 5 and ahead["last_seq_db"] == 4
    assert ahead["chain_batches"] == 5 and ahead["missing_on_chain"] == []
    assert [(m["seq"], m["root"], m["size"]) for m in ahead["missing_in_db"]] == [(5, "55" * 32, 7)]


def test_consistency_without_a_chain_is_a_503_problem(api: Api) -> None:
    r = api.client.get(f"/v1/audit/hospitals/{GZ}/consistency", headers=api.auth("auditor"))
    assert r.status_code == 503 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"].endswith("chain-not-configured")


@pytest.mark.parametrize("role", ["doctor", "hospital:gz-001", "hospital:qd-002"])
def test_other_roles_are_forbidden(api: Api, role: str) -> None:
    for path in AUDIT_PATHS:
        r = api.client.get(path, headers=api.auth(role))
        assert r.status_code == 403, (path, r.text)
        assert r.json()["type"] == "urn:mrledger:problem:forbidden"


def test_no_or_bad_token_is_unauthenticated(api: Api) -> None:
    for path in AUDIT_PATHS:
        for headers in ({}, {"Authorization": "Bearer mrl_not-a-token"}):
            r = api.client.get(path, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, r.text)


def test_every_audit_read_is_logged_and_the_log_can_be_filtered(api: Api) -> None:
    api.ledger.intake.submit(GZ, [rec(1)])
    api.client.get(AUDIT_PATHS[0], headers=api.auth("auditor"))
    api.client.get(AUDIT_PATHS[1], headers=api.auth("admin"))
    api.client.get(f"/v1/audit/hospitals/{GZ}/results/nope/lineage", headers=api.auth("auditor"))  # 404: logged
    api.client.get(AUDIT_PATHS[0], headers=api.auth("doctor"))  # refused before reading: not an audit read

    r = api.client.get("/v1/audit/access-log", params={"hospital_id": GZ}, headers=api.auth("auditor"))
    assert r.status_code == 200, r.text
    entries = r.json()["entries"]
    assert [(e["action"], e["role"], e["result_id"], e["verdict"]) for e in entries] == [
        ("audit-lineage", "auditor", "nope", "error"),
        ("audit-batches", "admin", None, "no-gaps"),
        ("audit-lineage", "auditor", "R1", "intact"),
    ]
    everything = api.client.get("/v1/audit/access-log", headers=api.auth("admin")).json()["entries"]
    assert everything[0]["action"] == "audit-access-log" and everything[0]["hospital_id"] == GZ
    page = api.client.get("/v1/audit/access-log", params={"limit": 1, "offset": 1}, headers=api.auth("admin")).json()
    assert page["limit"] == 1 and page["offset"] == 1 and len(page["entries"]) == 1
    assert page["entries"][0] == everything[0]  # offset 1: the read of `everything` is newest now
