"""Is this version still current? (issue 18) ``GET …/status-proof`` on a real anvil, checked the way a verifier
does: against the receipt and the chain, never trusting the node — an old receipt of a corrected result reads
``superseded``, of a withdrawn one ``withdrawn``; a node that serves an old map is ``stale`` once the newer batch
has been on chain past the grace; a batch the chain does not hold is ``invalid``; a key nobody was given is a
404 like an unknown result. The CLI (``verify --status``) answers the same over real HTTP. Each runs on a v1 and
a v2 registry; on v2 the map root is the chain's too, so a node that makes up a map is caught."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from mrledger.anchoring.contract_v2 import registry_version
from mrledger.cli.main import app
from mrledger.ledger import Receipt
from mrledger.ledger.receipt import STATUS_SECRET_EXTENSION
from mrledger.ledger.status_check import StatusDocument, check_status, receipt_status_key
from mrledger.ledger.statusmap import StatusMap, StatusValue
from mrledger.service.status import verify_status
from tests.harness import Api, chain_api_on, serve_in_thread
from tests.http.test_results import record, submit

pytestmark = pytest.mark.anvil
H = "gz-001"


@pytest.fixture(params=[1, 2], ids=["registry-v1", "registry-v2"])
def chain_any(request: pytest.FixtureRequest, engine: Engine) -> Iterator[Api]:
    with chain_api_on(engine, request.param) as api:
        yield api


def version_of(api: Api) -> int:
    assert api.ledger.chain is not None
    return registry_version(api.ledger.chain.w3, api.ledger.chain.contract)


def receipt(api: Api, rid: str, version: int) -> Receipt:
    got = api.client.get(f"/v1/hospitals/{H}/results/{rid}/receipt", params={"version": version},
                         headers=api.auth(f"hospital:{H}"))
    assert got.status_code == 200, got.text
    return Receipt.from_json(got.content)


def status_doc(api: Api, rid: str, key: bytes) -> Any:
    return api.client.get(f"/v1/hospitals/{H}/results/{rid}/status-proof", params={"key": key.hex()})


def document(api: Api, r: Receipt) -> StatusDocument:
    key = receipt_status_key(r)
    assert key is not None
    got = status_doc(api, r.record.result_id, key)
    assert got.status_code == 200, got.text
    assert got.headers["cache-control"] == "no-store"
    return StatusDocument.from_obj(got.json())


def corrected_history(api: Api) -> tuple[Receipt, Receipt, StatusDocument]:
    """R1 and R2 anchored; the node's answer for R1 then; R1 corrected and R2 withdrawn, anchored."""
    assert submit(api, {"records": [record(1), record(2)]}).status_code == 202
    api.anchor_all()
    r1, r2 = receipt(api, "R1", 1), receipt(api, "R2", 1)
    before = document(api, r1)
    assert submit(api, {"records": [record(1, version=2, value=6.2),
                                    record(2, version=2, status="entered-in-error")]}).status_code == 202
    api.anchor_all()
    return r1, r2, before


def test_an_old_receipt_reads_superseded_or_withdrawn_from_the_chain(chain_any: Api) -> None:
    api = chain_any
    v2 = version_of(api) == 2
    assert api.ledger.chain is not None
    w3 = api.ledger.chain.w3
    r1, r2, before = corrected_history(api)
    # Before the correction the node answered "current", and the chain agreed.
    verdict, binding = verify_status(w3, r1, before)
    assert verdict.kind == "current" and binding is not None and binding.on_chain and binding.map_root_bound == v2
    assert r1.format == ("mrl-receipt/2" if v2 else "mrl-receipt/1")
    # Now: the old receipts (the patient's paper QR) are superseded / withdrawn, by the chain-checked batch.
    verdict, binding = verify_status(w3, r1, document(api, r1))
    assert (verdict.kind, verdict.version) == ("superseded", 2) and binding is not None and binding.on_chain
    verdict, _ = verify_status(w3, r2, document(api, r2))
    assert (verdict.kind, verdict.version) == ("withdrawn", 2)
    # The new version's receipt names the same entry through its status_secret, and is current.
    new = receipt(api, "R1", 2)
    assert STATUS_SECRET_EXTENSION in new.extensions and receipt_status_key(new) == receipt_status_key(r1)
    current = verify_status(w3, new, document(api, new))[0]
    assert current.kind == "current" and " ago; the chain holds no later batch" in current.detail


def test_a_node_serving_its_old_map_is_stale_not_current(chain_any: Api) -> None:
    api = chain_any
    assert api.ledger.chain is not None and api.node is not None
    w3 = api.ledger.chain.w3
    r1, _, before = corrected_history(api)
    assert check_status(r1, before).kind == "current"  # the stale document alone still reads current ...
    # ... within the grace a newer batch may still be gathering confirmations ...
    assert verify_status(w3, r1, before)[0].kind == "current"
    # ... and once the next batch has been on chain past it, the old answer is stale.
    w3.provider.make_request("evm_increaseTime", [601])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    verdict, _ = verify_status(w3, r1, before)
    assert verdict.kind == "stale" and "hides a newer status" in verdict.detail
    assert verify_status(w3, r1, before, grace=timedelta(hours=1))[0].kind == "current"


def test_a_batch_the_chain_does_not_hold_is_invalid(chain_any: Api) -> None:
    api = chain_any
    assert api.ledger.chain is not None
    assert submit(api, {"records": [record(1)]}).status_code == 202
    api.anchor_all()
    r1 = receipt(api, "R1", 1)
    doc = document(api, r1)
    forged = dataclasses.replace(doc, batch=dataclasses.replace(doc.batch, size=doc.batch.size + 1))
    verdict, binding = verify_status(api.ledger.chain.w3, r1, forged)
    assert verdict.kind == "invalid" and binding is not None and not binding.on_chain
    other = dataclasses.replace(doc, map_root=bytes(31) + b"\x01")
    assert verify_status(api.ledger.chain.w3, r1, other)[0].kind == "invalid"  # the proof no longer checks


def test_only_a_holder_of_the_key_gets_an_answer(chain_api: Api) -> None:
    api = chain_api
    assert submit(api, {"records": [record(1)]}).status_code == 202
    wrong = status_doc(api, "R1", bytes(32))
    never = status_doc(api, "R-never-stored", bytes(32))
    assert wrong.status_code == never.status_code == 404
    assert wrong.json()["type"] == never.json()["type"] and wrong.json()["title"] == never.json()["title"]
    # Sealed but not anchored: the right key waits for a confirmed batch (409), it is never answered unbound.
    api.ledger.store.seal(H, 100)
    key = api.ledger.store.status_key_of(H, "R1")
    assert key is not None
    pending = status_doc(api, "R1", key)
    assert pending.status_code == 409 and pending.json()["type"].endswith("status-pending")
    assert status_doc(api, "R1", key).status_code == 409
    bad = api.client.get(f"/v1/hospitals/{H}/results/R1/status-proof", params={"key": "XY" * 32})
    assert bad.status_code == 422


def test_the_cli_says_superseded_with_exit_5(chain_any: Api, tmp_path: Path) -> None:
    api = chain_any
    assert api.node is not None
    r1, _, _ = corrected_history(api)
    old = tmp_path / "r1-v1.json"
    old.write_text(r1.to_json())
    new = tmp_path / "r1-v2.json"
    new.write_text(json.dumps(receipt(api, "R1", 2).to_obj()))
    runner = CliRunner()
    with serve_in_thread(api.client.app) as url:  # type: ignore[arg-type]
        got = runner.invoke(app, ["verify", str(old), "--rpc", api.node.rpc_url, "--status", url])
        assert got.exit_code == 5, got.output
        assert "status superseded: superseded by version 2" in got.output
        got = runner.invoke(app, ["verify", str(new), "--rpc", api.node.rpc_url, "--status", url, "--json"])
        assert got.exit_code == 0, got.output
        current = json.loads(got.output)["current"]
        assert current["status"] == "current" and current["chain"]["on_chain"] is True
    # The node gone: the receipt is still valid, its status unverified (exit 6), never "current".
    got = runner.invoke(app, ["verify", str(old), "--rpc", api.node.rpc_url, "--status", url])
    assert got.exit_code == 6, got.output
    assert "status unknown" in got.output


def test_a_made_up_map_is_caught_on_v2_only(chain_any: Api) -> None:
    """The node hides a correction behind a map of its own making, in which the old version is still current,
    served with the real latest batch. The proof checks against the made-up root, so only the chain can tell:
    a v1 registry stores no map root (the node's word: "current", the gap v2 closes), a v2 registry's commitment
    binds the real one (invalid)."""
    api = chain_any
    assert api.ledger.chain is not None
    w3 = api.ledger.chain.w3
    r1, _, _ = corrected_history(api)
    real = document(api, r1)
    assert verify_status(w3, r1, real)[0].kind == "superseded"
    key = receipt_status_key(r1)
    assert key is not None
    lie = StatusMap({key: StatusValue(1, "current", r1.leaf_hash)})
    forged = dataclasses.replace(real, map_root=lie.root, proof=lie.prove(key),
                                 anchor=None if real.anchor is None else dataclasses.replace(
                                     real.anchor, map_root=None if real.anchor.map_root is None else lie.root))
    assert check_status(r1, forged).kind == "current"  # the document alone is consistent
    verdict, binding = verify_status(w3, r1, forged)
    if version_of(api) == 2:
        assert verdict.kind == "invalid" and binding is not None and not binding.on_chain
    else:
        assert verdict.kind == "current" and binding is not None and not binding.map_root_bound
