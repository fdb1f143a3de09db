"""A genuine result is never called ``tampered`` because of the chain (issue 15, point 2), against a real anvil
on SQLite and PostgreSQL: a receipt whose anchor a reorg removed verifies ``pending`` with the reason while
the worker anchors it again, and ``authentic`` once the registry holds its root again (in another block);
receipts are not issued while the worker knows the anchor is gone; and a receipt naming a root this ledger
did not seal — a forgery — still fails as tampered.

Before: the removed anchor made every such receipt, issued before or after, verify ``tampered``
(``anchor-root``), by receipt and by record alike.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.harness import Api
from tests.http.test_results import record, submit
from tests.http.test_verify import anchored_receipt, verify

pytestmark = pytest.mark.anvil


def _remove_the_anchor(api: Api, snapshot: str) -> None:
    """Take the chain back to before the anchor and past its old height with empty blocks: a reorg deeper
    than the (one) confirmation the receipt was issued at."""
    assert api.node is not None and api.ledger.chain is not None
    head = int(api.ledger.chain.w3.eth.block_number)
    assert api.node.rpc("evm_revert", snapshot) is True
    while int(api.ledger.chain.w3.eth.block_number) <= head + 2:
        api.node.rpc("evm_mine")


def test_receipt_of_a_reorged_anchor_is_pending_then_authentic_never_tampered(chain_api: Api) -> None:
    api = chain_api
    assert api.node is not None
    assert submit(api, {"records": [record(1), record(2)]}).status_code == 202
    for h in ("gz-001", "qd-002"):
        while api.ledger.store.seal(h, 10_000) is not None:
            pass
    snapshot = api.node.rpc("evm_snapshot")
    api.anchor_all()
    receipt = anchored_receipt(api)
    assert verify(api, {"receipt": receipt})["verdict"] == "authentic"
    body = {"hospital_id": "gz-001", "result_id": "R1", "record": record(1)}
    assert verify(api, body, "doctor")["verdict"] == "authentic"

    _remove_the_anchor(api, snapshot)
    gone = verify(api, {"receipt": receipt})
    assert gone["verdict"] == "pending" and gone["failed_check"] == "anchor-confirmed", gone
    assert "genuine" in gone["checks"][-1]["detail"] and gone["block_number"] is None
    by_record = verify(api, body, "doctor")
    assert by_record["verdict"] == "pending" and by_record["failed_check"] == "anchor-confirmed", by_record

    # Forgeries still fail: a root this ledger never sealed, or a seq it never sealed with this root.
    forged = copy.deepcopy(receipt)
    forged.update(audit_path=[], leaf={"index": 0, "hash": forged["leaf"]["hash"]})
    forged["batch"].update(size=1, root=forged["leaf"]["hash"])
    assert verify(api, {"receipt": forged})["verdict"] == "tampered"
    elsewhere = copy.deepcopy(receipt)
    elsewhere["batch"]["seq"] = 7
    out = verify(api, {"receipt": elsewhere})
    assert out["verdict"] == "tampered", out

    # The worker finds the loss: the receipt is no longer issued, and the answer says why.
    assert api.ledger.chain is not None and api.ledger.chain.submitter is not None
    from mrledger.anchoring.worker import AnchorWorker, WorkerConfig

    worker = AnchorWorker(api.ledger.store, api.ledger.chain.w3, api.ledger.chain.contract,
                          api.ledger.chain.submitter, WorkerConfig())
    worker.reconciler.run()
    assert api.ledger.outbox.alarms(), "no alarm raised"
    # The operator sees it: /readyz detail (still ready: the node accepts and verifies) and /metrics.
    ready = api.client.get("/readyz")
    anchoring = ready.json()["checks"]["anchoring"]
    assert ready.status_code == 200 and anchoring["status"] == "re-anchoring", ready.text
    alarms = [(a["kind"], a["hospital_id"], a["first_seq"]) for a in anchoring["alarms"]]
    assert alarms == [("anchors-lost", "gz-001", 1)]
    metrics = api.client.get("/metrics").text
    assert "mrledger_anchor_alarms_open 1.0" in metrics and "mrledger_anchor_alarms_raised 1.0" in metrics
    again = api.client.get("/v1/hospitals/gz-001/results/R1/receipt", headers=api.auth("hospital:gz-001"))
    assert again.status_code == 409, again.text
    known = verify(api, {"receipt": receipt})
    assert known["verdict"] == "pending" and "anchoring it again" in known["checks"][-1]["detail"], known

    api.anchor_all()  # anchored again, in another block
    assert not api.ledger.outbox.alarms()
    assert "mrledger_anchor_alarms_open 0.0" in api.client.get("/metrics").text
    old = verify(api, {"receipt": receipt})
    assert old["verdict"] == "authentic", old
    block = next(c for c in old["checks"] if c["name"] == "anchor-block")
    assert block["ok"] and "anchored again" in block["detail"]
    fresh: dict[str, Any] = anchored_receipt(api)
    assert fresh["anchor"]["block_hash"] != receipt["anchor"]["block_hash"]
    assert old["block_number"] == fresh["anchor"]["block_number"]
    assert verify(api, {"receipt": fresh})["verdict"] == "authentic"
    assert verify(api, body, "doctor")["verdict"] == "authentic"
