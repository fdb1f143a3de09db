"""Encryption at rest seen through the API (docs/encryption.md): tampered rows are answered as an integrity
failure and never as data; auditors find a result's accesses by its clear id, which the log holds hashed."""

from __future__ import annotations

from sqlalchemy import text

from tests.harness import Api
from tests.http.test_hospitals import assert_problem
from tests.http.test_results import URL, record, submit


def test_a_tampered_record_is_an_integrity_problem_not_data(api: Api) -> None:
    assert submit(api, {"records": [record(1), record(2)]}).status_code == 202
    api.ledger.store.seal("gz-001", 100)
    url = f"{URL.format('gz-001')}/R1/receipt"
    with api.ledger.store.engine.begin() as conn:  # R2's record moved into R1's row
        conn.execute(text("UPDATE record_versions SET record_enc = (SELECT record_enc FROM record_versions "
                          "WHERE result_hmac = :r2) WHERE result_hmac = :r1"),
                     {"r1": api.ledger.store.result_key("gz-001", "R1"),
                      "r2": api.ledger.store.result_key("gz-001", "R2")})
    api.ledger.outbox.mark_included("gz-001", 1, chain_id=31337, contract="0x" + "11" * 20,
                                    tx_hash="0x" + "22" * 32, block_number=5, block_hash="0x" + "33" * 32,
                                    now=api.ledger.clock())
    body = assert_problem(api.client.get(url, headers=api.auth("hospital:gz-001")), 500, "stored-data-integrity")
    assert "P2" not in str(body) and "R2" not in str(body)
    assert api.client.get(f"{URL.format('gz-001')}/R2/receipt", headers=api.auth("hospital:gz-001")).status_code \
        in (200, 409)  # the untouched row still answers (receipt or not yet anchored)


def test_auditors_filter_the_access_log_by_a_clear_result_id(api: Api) -> None:
    first, second = "ACC-MRN-773101", "ACC-MRN-773102"  # long enough not to turn up in random bytes
    body = {"records": [record(1, result_id=first), record(2, result_id=second)]}
    assert submit(api, body).status_code == 202
    for rid in (first, second, first):
        api.client.get(f"{URL.format('gz-001')}/{rid}", headers=api.auth("hospital:gz-001"))
    page = api.client.get("/v1/audit/access-log", params={"hospital_id": "gz-001", "result_id": first},
                          headers=api.auth("auditor"))
    assert page.status_code == 200, page.text
    entries = page.json()["entries"]
    assert [(e["action"], e["result_id"]) for e in entries] == [("lookup", first)] * 2
    everything = api.client.get("/v1/audit/access-log", headers=api.auth("auditor")).json()["entries"]
    assert {e["result_id"] for e in everything if e["action"] == "lookup"} == {first, second}
    assert_problem(api.client.get("/v1/audit/access-log", params={"result_id": first}, headers=api.auth("auditor")),
                   422, "validation")
    with api.ledger.store.engine.connect() as conn:
        stored = conn.execute(text("SELECT result_hmac, result_enc FROM access_log WHERE action = 'lookup'")).all()
    assert len(stored) == 3 and all(b"MRN-7731" not in bytes(h) + bytes(e) for h, e in stored)
