"""POST /v1/verify: receipts (anyone) and held records (doctors), against the store and a real chain."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.harness import Api
from tests.http.test_hospitals import assert_problem
from tests.http.test_results import record, submit


def anchored_receipt(api: Api, result_id: str = "R1", version: int | None = None) -> dict[str, Any]:
    url = f"/v1/hospitals/gz-001/results/{result_id}/receipt" + (f"?version={version}" if version else "")
    got = api.client.get(url, headers=api.auth("hospital:gz-001"))
    assert got.status_code == 200, got.text
    receipt: dict[str, Any] = got.json()
    return receipt


def verify(api: Api, body: Any, role: str | None = None) -> dict[str, Any]:
    got = api.client.post("/v1/verify", json=body, headers=api.auth(role) if role else {})
    assert got.status_code == 200, got.text
    verdict: dict[str, Any] = got.json()
    return verdict


def verify_logs(api: Api) -> list[Any]:
    return [e for e in api.ledger.access.entries(limit=1000) if e.action == "verify"]


# -- without a chain ----------------------------------------------------------------------------------


def test_unanchored_receipt_is_pending(api: Api) -> None:
    submit(api, record(1))
    api.ledger.store.seal("gz-001", 100)
    receipt = api.ledger.store.receipt("gz-001", "R1")
    assert receipt is not None and receipt.anchor is None
    out = verify(api, {"receipt": receipt.to_obj()})  # no token: anyone holding a receipt may check it
    assert out["verdict"] == "pending" and out["failed_check"] == "anchor-confirmed"
    assert (out["hospital_id"], out["hospital_name"], out["result_id"], out["version"], out["issued"]) == \
        ("gz-001", "Guangzhou First People's Hospital", "R1", 1, "2024-05-01T07:30:00Z")
    [entry] = verify_logs(api)
    assert (entry.role, entry.hospital_id, entry.result_id, entry.version, entry.verdict) == \
        ("anonymous", "gz-001", "R1", 1, "pending")


def test_tampered_receipt_offline(api: Api) -> None:
    submit(api, record(1))
    api.ledger.store.seal("gz-001", 100)
    receipt = api.ledger.store.receipt("gz-001", "R1")
    assert receipt is not None
    forged = receipt.to_obj()
    forged["record"]["content"]["observations"][0]["value"] = 9.9
    out = verify(api, {"receipt": forged})
    assert out["verdict"] == "tampered" and out["failed_check"] == "leaf-hash"
    assert [c["name"] for c in out["checks"] if not c["ok"]] == ["leaf-hash"]


@pytest.mark.parametrize("body", [{"receipt": {"format": "mrl-receipt/1"}}, {"receipt": "x"}, {"receipt": None},
                                  {"receipt": [None]}, {"receipt": "{}"},
                                  {"receipt": {"format": "mrl-receipt/9"}}])
def test_malformed_receipt_is_422(api: Api, body: dict[str, Any]) -> None:
    assert_problem(api.client.post("/v1/verify", json=body), 422, "not-a-receipt")
    assert verify_logs(api) == []


def test_malformed_requests(api: Api) -> None:
    dup = b'{"receipt": {}, "receipt": {}}'
    assert_problem(api.client.post("/v1/verify", content=dup, headers={"content-type": "application/json"}), 400,
                   "malformed")
    bad = {"hospital_id": "gz-001", "result_id": "R1", "record": record(1), "extra": 1}
    assert_problem(api.client.post("/v1/verify", json=bad, headers=api.auth("doctor")), 422, "validation")
    held = {"hospital_id": "gz-001", "result_id": "R1", "record": {**record(1), "kind": "x-ray"}}
    assert assert_problem(api.client.post("/v1/verify", json=held, headers=api.auth("doctor")), 422,
                          "invalid-record")["field"] == "kind"


def test_record_form_needs_a_doctor_token(api: Api) -> None:
    body = {"hospital_id": "gz-001", "result_id": "R1", "version": 1, "record": record(1)}
    assert_problem(api.client.post("/v1/verify", json=body), 401, "unauthenticated")
    assert_problem(api.client.post("/v1/verify", json=body, headers=api.auth("hospital:gz-001")), 403, "forbidden")
    for role in ("doctor", "auditor", "admin"):
        assert api.client.post("/v1/verify", json=body, headers=api.auth(role)).status_code == 200


def test_record_unknown_tampered_and_pending(api: Api) -> None:
    body = {"hospital_id": "gz-001", "result_id": "R1", "version": 1, "record": record(1)}
    unknown = verify(api, body, "doctor")
    assert unknown["verdict"] == "unknown" and unknown["failed_check"] == "lookup"
    submit(api, record(1))
    pending = verify(api, body, "doctor")
    assert pending["verdict"] == "pending" and pending["failed_check"] == "anchor-confirmed"
    assert pending["issued"] == "2024-05-01T07:30:00Z" and pending["hospital_name"]
    api.ledger.store.seal("gz-001", 100)
    sealed = verify(api, body, "doctor")
    assert sealed["verdict"] == "pending" and "sealed" in sealed["checks"][-1]["detail"]
    tampered = verify(api, {**body, "record": record(1, value=7.7)}, "doctor")
    assert tampered["verdict"] == "tampered" and tampered["failed_check"] == "content"
    assert verify(api, {**body, "version": 2}, "doctor")["verdict"] == "unknown"
    assert verify(api, {**body, "hospital_id": "zz-9"}, "doctor")["verdict"] == "unknown"
    verdicts = [(e.role, e.verdict) for e in reversed(verify_logs(api))]
    assert verdicts == [("doctor", "unknown"), ("doctor", "pending"), ("doctor", "pending"), ("doctor", "tampered"),
                        ("doctor", "unknown"), ("doctor", "unknown")]


# -- against anvil ------------------------------------------------------------------------------------


@pytest.mark.anvil
def test_receipt_authentic_tampered_superseded(chain_api: Api) -> None:
    api = chain_api
    submit(api, {"records": [record(1), record(2)]})
    api.anchor_all()
    receipt = anchored_receipt(api)
    out = verify(api, {"receipt": receipt})
    assert out["verdict"] == "authentic", out
    assert out["failed_check"] is None and out["superseded_by"] is None
    assert (out["hospital_id"], out["hospital_name"], out["result_id"], out["version"]) == \
        ("gz-001", "Guangzhou First People's Hospital", "R1", 1)
    anchor = receipt["anchor"]
    assert (out["chain_id"], out["contract"], out["tx_hash"], out["block_number"]) == \
        (anchor["chain_id"], anchor["contract"], anchor["tx_hash"], anchor["block_number"])
    assert out["confirmations"] >= 1 and out["anchored_at"] and out["issued"] == "2024-05-01T07:30:00Z"
    assert {"leaf-hash", "inclusion", "anchor-root", "on-chain-proof", "anchor-block"} <= \
        {c["name"] for c in out["checks"] if c["ok"]}

    forged = copy.deepcopy(receipt)
    forged["record"]["content"]["observations"][0]["value"] = 9.9
    tampered = verify(api, {"receipt": forged})
    assert tampered["verdict"] == "tampered" and tampered["failed_check"] == "leaf-hash"

    # A receipt re-pointed at a one-leaf "batch" passes offline; the registry's root refutes it.
    forged = copy.deepcopy(receipt)
    forged.update(audit_path=[], leaf={"index": 0, "hash": forged["leaf"]["hash"]})
    forged["batch"].update(size=1, root=forged["leaf"]["hash"])
    assert verify(api, {"receipt": forged})["failed_check"] == "anchor-root"

    # Another registry (anyone can deploy one) does not vouch for this ledger's hospitals.
    elsewhere = copy.deepcopy(receipt)
    elsewhere["anchor"]["contract"] = "0x" + "11" * 20
    other = verify(api, {"receipt": elsewhere})
    assert other["verdict"] == "unknown" and other["failed_check"] == "contract"

    corrected = submit(api, record(1, version=2, value=6.2))
    assert corrected.status_code == 202
    superseded = verify(api, {"receipt": receipt})
    assert superseded["verdict"] == "authentic"
    assert superseded["superseded_by"] == {"version": 2, "status": "corrected", "issued": "2024-05-02T07:30:00Z",
        "batch_seq": None, "anchor_status": "pending", "block_number": None, "tx_hash": None}

    api.rebuild(confirmations=10_000)
    deep = verify(api, {"receipt": receipt})
    assert deep["verdict"] == "pending" and deep["failed_check"] == "anchor-confirmed"
    assert [e.verdict for e in reversed(verify_logs(api))] == \
        ["authentic", "tampered", "tampered", "unknown", "authentic", "pending"]


@pytest.mark.anvil
def test_record_authentic_after_anchoring(chain_api: Api) -> None:
    api = chain_api
    body = {"hospital_id": "gz-001", "result_id": "R1", "record": record(1)}
    submit(api, record(1))
    before = verify(api, body, "doctor")
    assert before["verdict"] == "pending"
    api.anchor_all()
    out = verify(api, body, "doctor")
    assert out["verdict"] == "authentic", out
    receipt = anchored_receipt(api)
    assert (out["chain_id"], out["tx_hash"], out["block_number"]) == \
        (receipt["anchor"]["chain_id"], receipt["anchor"]["tx_hash"], receipt["anchor"]["block_number"])
    assert out["confirmations"] >= 1 and out["anchored_at"] and out["version"] == 1
    tampered = verify(api, {**body, "record": record(1, value=5.5)}, "doctor")
    assert tampered["verdict"] == "tampered" and tampered["failed_check"] == "content"
    submit(api, record(1, version=2, value=6.2))
    later = verify(api, body, "doctor")
    assert later["verdict"] == "authentic" and later["superseded_by"]["version"] == 2
    latest = verify(api, {**body, "version": 2, "record": record(1, version=2, value=6.2)}, "doctor")
    assert latest["verdict"] == "pending" and latest["superseded_by"] is None


@pytest.mark.anvil
def test_a_shallow_receipt_is_read_from_the_node_on_the_loop_and_a_reorg_is_seen_at_once(
        chain_api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A receipt anchored fewer than the final depth of blocks ago: its registry entry and block are read from
    the node for every request (on the event loop, ``CachedReader.fetch``), never cached; so the very next
    verification after a reorg of the anchoring block sees it — no cache has to expire first. A reorg is the
    chain's doing, never the result's: the answer is "anchored again elsewhere" or pending, not tampered."""
    api = chain_api
    submit(api, {"records": [record(1), record(2)]})
    api.anchor_all()
    receipt = anchored_receipt(api)
    assert api.ledger.chain is not None and api.node is not None
    reader = api.ledger.chain.reader
    fetched = []
    real_fetch = reader.fetch

    async def counting(need: Any) -> Any:
        fetched.append(need)
        return await real_fetch(need)

    monkeypatch.setattr(reader, "fetch", counting)
    before = _chain_reads(api)
    for _ in range(3):
        out = verify(api, {"receipt": receipt})
        assert out["verdict"] == "authentic" and out["confirmations"] >= 1, out
    assert len(fetched) == 3 and len(reader._batches) == 0  # asked each time, nothing shallow cached
    # /metrics tells the operator (who may pay the RPC endpoint per call): three reads sent, none shared.
    assert _chain_reads(api) == (before[0] + 3, before[1])
    raw = api.node.rpc("eth_getRawTransactionByHash", receipt["anchor"]["tx_hash"])
    api.node.rpc("anvil_reorg", 1, [[raw, 0]])  # the same anchor, mined again at the same height
    again = verify(api, {"receipt": receipt})  # the registry still holds the root: genuine, in another block
    block = next(c for c in again["checks"] if c["name"] == "anchor-block")
    assert again["verdict"] == "authentic" and "anchored again" in block["detail"], again
    assert again["tx_hash"] is None  # the receipt's transaction is not the one the registry names now
    api.node.rpc("anvil_reorg", 1, [])  # now the anchor is gone altogether: genuine bytes, no anchor (yet)
    gone = verify(api, {"receipt": receipt})
    assert gone["verdict"] == "pending" and gone["failed_check"] == "anchor-confirmed", gone


def _chain_reads(api: Api) -> tuple[float, float]:
    """This process's ``mrledger_chain_verification_reads_total`` and ``…_shared_total`` from /metrics."""
    values = dict(line.rsplit(" ", 1) for line in api.client.get("/metrics").text.splitlines()
                  if line.startswith("mrledger_chain_verification_reads"))
    return (float(values["mrledger_chain_verification_reads_total"]),
            float(values["mrledger_chain_verification_reads_shared_total"]))


@pytest.mark.anvil
def test_impossible_batch_or_block_numbers_are_answered_not_a_500(chain_api: Api) -> None:
    """Numbers no registry entry or block can have (seq -1, beyond uint64) are refused by the receipt format
    before any chain read (found by review: seq -1 was an HTTP 500, seq 2**64 a 503 from web3's encoder)."""
    api = chain_api
    submit(api, {"records": [record(1)]})
    api.anchor_all()
    receipt = anchored_receipt(api)
    for seq, block in ((-1, receipt["anchor"]["block_number"]), (2**64, receipt["anchor"]["block_number"]),
                       (receipt["batch"]["seq"], -3), (receipt["batch"]["seq"], 2**64)):
        odd = copy.deepcopy(receipt)
        odd["batch"]["seq"], odd["anchor"]["block_number"] = seq, block
        got = api.client.post("/v1/verify", json={"receipt": odd})
        assert got.status_code in (200, 422), got.text
        assert got.status_code == 422 or got.json()["verdict"] != "authentic", got.text
