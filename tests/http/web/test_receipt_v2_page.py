"""Issue 18 on a v2 registry, in the browser: the /verify page reads ``mrl-receipt/2`` as Python does (format and
on chain: the commitment of root, size and map root, at the receipt's hub position, in the receipt's block), binds
the status document by that commitment — so the map root is the chain's, not the node's word — and follows an
in-place upgrade (a v2 successor of the receipt's v1 registry is accepted; a status bound to the paused v1 is never
"current"). Real anvil, real Chromium; Python is the reference every answer is compared with."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from eth_account import Account
from playwright.sync_api import Page
from web3 import Web3

from mrledger.anchoring import contract as reg
from mrledger.anchoring import contract_v2 as reg2
from mrledger.anchoring.deploy import ensure_hospital_on_chain, upgrade_in_place
from mrledger.anchoring.verify import verify_on_chain
from mrledger.anchoring.worker import AnchorWorker
from mrledger.ledger import Anchor, hospital_key, verify_receipt
from mrledger.ledger.status_check import StatusDocument, check_status, receipt_status_key
from mrledger.ledger.statusmap import StatusMap, StatusValue, batch_commitment_v2
from mrledger.service.status import verify_status
from tests.harness import HOSPITALS, Api, serve_in_thread, status_doc
from tests.http.web.conftest import Served
from tests.http.web.test_pages import HID, VERDICT, _verdict
from tests.http.web.test_status_page import _check, _corrected
from tests.store.test_repository import rec

pytestmark = pytest.mark.anvil
SCHEMA = jsonschema.Draft202012Validator(json.loads(
    (Path(__file__).parents[3] / "docs" / "receipt.schema.json").read_text()))
LIAR = "_later"  # where /v1/verify's superseded_by comes from: patched to say "no later version"


@pytest.fixture
def served_v2(chain_api_v2: Api) -> Iterator[Served]:
    with serve_in_thread(chain_api_v2.client.app) as url:
        yield Served(chain_api_v2, url)


def _w3(s: Served) -> Web3:
    assert s.api.ledger.chain is not None
    return s.api.ledger.chain.w3


def _rpc(s: Served) -> str:
    assert s.api.node is not None
    return s.api.node.rpc_url


# ---- the status page on a v2 registry ------------------------------------------------------------------------


def test_an_old_v2_receipt_reads_superseded_with_the_map_root_bound_on_chain(
        served_v2: Served, page: Page, shots: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    receipt, _ = _corrected(served_v2)
    assert receipt["format"] == "mrl-receipt/2" and receipt["anchor"]["hub"] is None
    monkeypatch.setattr(served_v2.api.ledger.verification.verifier, LIAR, lambda *a, **k: (None, None))
    _check(served_v2, page, receipt)
    _verdict(page, "superseded")
    page.wait_for_selector("#step-status[data-state=superseded][data-map-root-bound=true]")
    status = page.text_content("#status-status") or ""
    assert "superseded by version 2" in status and "map root bound on chain (v2 registry)" in status
    assert page.text_content("#verdict-sub") == "superseded by version 2"
    page.wait_for_selector("#step-chain.s-ok")  # the receipt's own commitment, stored alone, in its block
    page.screenshot(path=str(shots / "verify-superseded-by-map-v2-en.png"), full_page=True)


def test_a_withdrawn_result_reads_revoked_on_a_v2_registry(served_v2: Served, page: Page,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    api = served_v2.api
    api.ledger.intake.submit(HID, [rec(2)])
    api.anchor_all()
    found, _ = api.ledger.results.receipt(HID, "R2", 1)
    assert found is not None and found.format == "mrl-receipt/2"
    api.ledger.intake.submit(HID, [rec(2, version=2, status="entered-in-error")])
    api.anchor_all()
    monkeypatch.setattr(api.ledger.verification.verifier, LIAR, lambda *a, **k: (None, None))
    _check(served_v2, page, found.to_obj())
    _verdict(page, "revoked")
    page.wait_for_selector("#step-status[data-state=withdrawn][data-map-root-bound=true]")
    assert "withdrawn (entered in error) by version 2" in (page.text_content("#verdict-sub") or "")


def test_a_v2_node_serving_its_old_map_is_caught_by_the_logs(served_v2: Served, page: Page,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A v2 registry keeps no block per batch: the next batch's age comes from its BatchAnchored log."""
    receipt, before = _corrected(served_v2)
    monkeypatch.setattr(served_v2.api.ledger.verification.verifier, LIAR, lambda *a, **k: (None, None))
    monkeypatch.setattr(served_v2.api.ledger.results, "status_document", lambda *a: before)  # the old map
    w3 = _w3(served_v2)
    w3.provider.make_request("evm_increaseTime", [601])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    _check(served_v2, page, receipt)
    _verdict(page, "unknown")
    page.wait_for_selector("#step-status[data-state=stale]")
    assert "batch 2 has been on chain for" in (page.text_content("#status-status") or "")
    assert page.get_attribute(VERDICT, "data-verdict") != "authentic"


def test_a_reference_qr_of_a_v2_receipt_is_rebuilt_as_mrl_receipt_2(served_v2: Served, page: Page,
                                                                     tmp_path: Path) -> None:
    """The page rebuilds a receipt from a reference QR and the public proof: with a v2 anchor that is a /2."""
    served_v2.api.ledger.intake.submit(HID, [rec(1)])
    served_v2.api.anchor_all()
    r = httpx.get(f"{served_v2.url}/v1/hospitals/{HID}/results/R1/receipt.png", params={"form": "ref"},
                  headers=served_v2.api.auth(f"hospital:{HID}"))
    assert r.status_code == 200, r.text
    png = tmp_path / "receipt-qr.png"
    png.write_bytes(r.content)
    page.goto(f"{served_v2.url}/verify")
    page.set_input_files("#file", str(png))
    _verdict(page, "authentic")


# ---- format and on-chain check against Python, on real receipts -------------------------------------------------


def _anchored_pair(api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    """A receipt whose commitment is stored alone (R1, one batch in its transaction) and one in a hub (R2, anchored
    with a batch of the other hospital in one transaction)."""
    api.ledger.intake.submit(HID, [rec(1)])
    api.anchor_all()
    api.ledger.intake.submit(HID, [rec(2)])
    other = next(h for h in HOSPITALS if h != HID)
    api.ledger.intake.submit(other, [rec(3, hospital=other)])
    api.anchor_all()
    out = []
    for rid in ("R1", "R2"):
        found, _ = api.ledger.results.receipt(HID, rid)
        assert found is not None and found.format == "mrl-receipt/2"
        out.append(found.to_obj())
    direct, hub = out
    assert direct["anchor"]["hub"] is None and hub["anchor"]["hub"] is not None, "no hub was anchored"
    return direct, hub


def _js_check(page: Page, rpc: str, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return page.evaluate("""async ([rpc, cases]) => {
        const m = await import('/web/core.js');
        const out = [];
        for (const r of cases) {
          const off = await m.verifyOffline(r);
          let chain = null, anchored = null;
          if (!off.failed) {
            const c = await m.checkRootOnChain(rpc, r);
            chain = {ok: c.ok, conflict: c.conflict, detail: c.detail, block: c.anchoredBlock ?? null};
            if (r.format === m.RECEIPT_V2) {
              const key = await m.hospitalKey(r.batch.hospital_id);
              const commitment = await m.batchCommitment(r.batch.root, r.batch.size, r.anchor.map_root);
              anchored = await m.isAnchored(rpc, r.anchor.contract, key, r.batch.seq, commitment,
                                            r.anchor.hub || m.DIRECT).catch((e) => e.message);
            }
          }
          out.push({failed: off.failed, chain, anchored});
        }
        return out;
    }""", [rpc, cases])


def _py_anchored(w3: Web3, r: dict[str, Any]) -> bool:
    a, b = r["anchor"], r["batch"]
    hub = a["hub"]
    where = reg2.DIRECT if hub is None else reg2.HubProof(hub["id"], hub["index"],
                                                          tuple(bytes.fromhex(p) for p in hub["path"]))
    commitment = reg2.batch_commitment(w3, a["contract"], bytes.fromhex(b["root"]), b["size"],
                                       bytes.fromhex(a["map_root"]))
    return reg2.is_anchored(w3, a["contract"], hospital_key(b["hospital_id"]), b["seq"], commitment, where)


def test_js_checks_real_v2_receipts_as_python_does(served_v2: Served, page: Page) -> None:
    w3, rpc = _w3(served_v2), _rpc(served_v2)
    direct, hub = _anchored_pair(served_v2.api)
    page.goto(f"{served_v2.url}/verify")

    def spoil(base: dict[str, Any], fn: Any) -> dict[str, Any]:
        r = copy.deepcopy(base)
        fn(r)
        return r

    admin = served_v2.api.ledger.chain.admin  # type: ignore[union-attr]
    v1 = reg.deploy_registry(w3, admin)  # a v1 registry on the same chain: a /2 receipt cannot name it
    flip = 1 - hub["anchor"]["hub"]["index"]  # a hub of two: the other item's place
    hub_tx = hub["anchor"]["tx_hash"]

    def earlier(r: dict[str, Any]) -> None:
        r["anchor"]["block_number"] -= 1
    # (name, receipt, Python/JS offline failure, on chain: JS ok, JS conflict, Python's verdict or None)
    cases: list[tuple[str, dict[str, Any], str | None, tuple[bool, bool, str | None] | None]] = [
        ("direct", direct, None, (True, False, "valid")),
        ("hub", hub, None, (True, False, "valid")),
        ("map_root changed, direct", spoil(direct, lambda r: r["anchor"].update(map_root="5e" * 32)), None,
         (False, True, "invalid")),
        ("map_root changed, hub", spoil(hub, lambda r: r["anchor"].update(map_root="00" * 32)), None,
         (False, True, "invalid")),
        # isAnchored is false at a wrong place; the registry does hold this commitment (in its hub, by the logs),
        # so it is no conflict. Python's verify_on_chain checks at the place the chain holds: not compared here.
        ("hub.index changed", spoil(hub, lambda r: r["anchor"]["hub"].update(index=flip)), None,
         (False, False, None)),
        # The anchoring block must be the receipt's: the hub's own record, or the receipt's transaction and its log.
        ("block_number changed, direct", spoil(direct, earlier), None, (False, False, None)),
        ("block_number changed, hub", spoil(hub, earlier), None, (False, False, None)),
        ("tx_hash of another transaction", spoil(direct, lambda r: r["anchor"].update(tx_hash=hub_tx)), None,
         (False, False, None)),
        ("a v1 registry", spoil(hub, lambda r: r["anchor"].update(contract=v1)), None, (False, True, "invalid")),
        ("v1 anchor keys under /2", spoil(direct, lambda r: [r["anchor"].pop(k) for k in ("map_root", "hub")]),
         "format", None),
        ("v2 anchor under /1", spoil(hub, lambda r: r.update(format="mrl-receipt/1")), "format", None),
        ("/2 without anchor", spoil(hub, lambda r: r.update(anchor=None)), "format", None),
        ("unknown anchor key", spoil(hub, lambda r: r["anchor"].update(hub_root="ab" * 32)), "format", None),
        ("hub.id 0", spoil(hub, lambda r: r["anchor"]["hub"].update(id=0)), "format", None),
        ("hub.path of 13", spoil(hub, lambda r: r["anchor"]["hub"].update(path=["ab" * 32] * 13)), "format", None),
        ("hub.path upper case", spoil(hub, lambda r: r["anchor"]["hub"].update(path=["AB" * 32])), "format", None),
        ("hub without path", spoil(hub, lambda r: r["anchor"]["hub"].pop("path")), "format", None),
    ]
    got = _js_check(page, rpc, [c[1] for c in cases])
    wrong = []
    for (name, receipt, want_failed, want_chain), js in zip(cases, got, strict=True):
        py_failed = verify_receipt(receipt).failed
        schema_refuses = bool(list(SCHEMA.iter_errors(receipt)))
        if js["failed"] != want_failed or py_failed != want_failed or schema_refuses != (want_failed == "format"):
            wrong.append(f"{name}: offline JS {js['failed']}, Python {py_failed}, schema refuses {schema_refuses}")
        if want_chain is None:
            continue
        ok, conflict, py_status = want_chain
        if (js["chain"]["ok"], js["chain"]["conflict"]) != (ok, conflict):
            wrong.append(f"{name}: on chain JS {js['chain']}, want ok={ok} conflict={conflict}")
        if py_status is not None and verify_on_chain(receipt, w3).status != py_status:
            wrong.append(f"{name}: Python says {verify_on_chain(receipt, w3).status}, want {py_status}")
        if receipt["anchor"]["contract"] == v1:
            if js["anchored"] != "execution reverted":  # a v1 registry has no isAnchored
                wrong.append(f"{name}: isAnchored on a v1 registry answered {js['anchored']}")
        elif js["anchored"] != _py_anchored(w3, receipt):
            wrong.append(f"{name}: isAnchored JS {js['anchored']}, Python {_py_anchored(w3, receipt)}")
        if ok and js["chain"]["block"] != receipt["anchor"]["block_number"]:
            wrong.append(f"{name}: anchoring block JS {js['chain']['block']}")
    assert not wrong, "\n".join(wrong)


def test_js_encodes_is_anchored_as_web3_does(served_v2: Served, page: Page) -> None:
    """The HubProof tuple holds a dynamic array: head and tail offsets, checked against web3's encoder."""
    page.goto(f"{served_v2.url}/verify")
    key, commitment = "11" * 32, "22" * 32
    hubs = [{"id": 0, "index": 0, "path": []}, {"id": 3, "index": 5, "path": ["a1" * 32, "a2" * 32, "a3" * 32]},
            {"id": 2**40, "index": 4095, "path": ["ff" * 32] * 12}]
    got = page.evaluate("""async ([key, c, hubs]) => {
        const m = await import('/web/core.js');
        return hubs.map((h) => m.isAnchoredData(key, 2 ** 40 + 7, c, h));
    }""", [key, commitment, hubs])
    contract = reg2.registry(_w3(served_v2), served_v2.api.ledger.chain.contract)  # type: ignore[union-attr]
    want = [contract.encode_abi("isAnchored", [bytes.fromhex(key), 2**40 + 7, bytes.fromhex(commitment),
                                               (h["id"], h["index"], [bytes.fromhex(p) for p in h["path"]])])
            for h in hubs]
    assert got == want


# ---- across an in-place upgrade -------------------------------------------------------------------------------


def _js_status(page: Page, rpc: str, receipt: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    return page.evaluate("""async ([rpc, receipt, doc]) => {
        const s = await import('/web/status.js');
        const v = await s.checkStatusOnChain(rpc, receipt, doc, await s.checkStatus(receipt, doc));
        return {status: v.status, detail: v.detail, chain: v.chain};
    }""", [rpc, receipt, doc])


def test_the_page_follows_an_upgrade_and_never_calls_a_paused_v1_current(served: Served, page: Page) -> None:
    """A v1 receipt's status answered from the v2 successor (its predecessor() is the receipt's registry) is bound
    with its map root; the answer bound in the paused v1 registry is stale, however current it reads."""
    api, w3, rpc = served.api, _w3(served), _rpc(served)
    chain = api.ledger.chain
    assert chain is not None and chain.admin is not None and chain.submitter is not None
    api.ledger.intake.submit(HID, [rec(1)])
    api.anchor_all()
    old = api.ledger.store.receipt(HID, "R1")
    assert old is not None and old.format == "mrl-receipt/1"
    before = status_doc(api.ledger.store, old)

    v2 = upgrade_in_place(api.ledger.store, w3, chain.admin).contract
    assert ensure_hospital_on_chain(w3, v2, chain.admin, HID, HOSPITALS[HID], [chain.submitter.address])
    api.ledger.intake.submit(HID, [rec(1, version=2, value=6.2)])  # R1 corrected, in batch 2, on v2
    api.ledger.store.seal(HID, 100)
    worker = AnchorWorker(api.ledger.store, w3, v2, chain.submitter)
    for _ in range(6):
        worker.step()
        if api.ledger.outbox.unconfirmed() == 0:
            break
    after = status_doc(api.ledger.store, old)
    assert after.anchor is not None and after.anchor.contract == v2 and after.map_root is not None

    page.goto(f"{served.url}/verify")
    receipt = old.to_obj()
    succ = _js_status(page, rpc, receipt, after.to_obj())
    verdict, binding = verify_status(w3, old, after)
    assert binding is not None and (verdict.kind, binding.map_root_bound, binding.registry) == ("superseded", True, v2)
    assert succ["status"] == "superseded" and succ["chain"]["map_root_bound"] is True, succ
    assert succ["chain"]["registry"].lower() == v2.lower()

    stale = _js_status(page, rpc, receipt, before.to_obj())
    assert verify_status(w3, old, before)[0].kind == "stale"
    assert stale["status"] == "stale" and "paused" in stale["detail"], stale

    # A v2 registry that does not name the receipt's as its predecessor is any registry: refused.
    stranger = reg2.deploy_registry(w3, chain.admin)
    doc = after.to_obj()
    doc["anchor"]["contract"] = stranger
    assert _js_status(page, rpc, receipt, doc)["status"] == "invalid"
    assert verify_status(w3, old, StatusDocument.from_obj(doc))[0].kind == "invalid"

    # One that names it, holds the hospital (its deployer registered it) and a made-up map in which R1 is still
    # current, anchored by its deployer's key: not a submitter the v1 registry lists, so not the successor.
    assert served.api.node is not None
    rogue = Account.from_key(served.api.node.private_keys[7])
    fake = reg2.deploy_registry(w3, rogue, predecessor=chain.contract)
    reg2.register_hospital(w3, fake, rogue, hospital_key(HID), bytes(32), [rogue.address])
    key = receipt_status_key(old)
    assert key is not None
    lie = StatusMap({key: StatusValue(1, "current", old.leaf_hash)})
    head = dataclasses.replace(after.batch, root=b"\x33" * 32, size=1)
    sent = reg2.anchor(w3, fake, rogue, hospital_key(HID), head.seq, batch_commitment_v2(head.root, 1, lie.root))
    block = "0x" + bytes(w3.eth.get_block(sent.block_number)["hash"]).hex()
    forged = StatusDocument(HID, key, head, lie.root, lie.prove(key), Anchor(
        after.anchor.chain_id, fake, sent.tx_hash, sent.block_number, block, map_root=lie.root))
    assert check_status(old, forged).kind == "current"  # consistent in itself
    js = _js_status(page, rpc, receipt, forged.to_obj())
    assert js["status"] == "invalid" and "not its successor" in js["detail"], js
    assert verify_status(w3, old, forged)[0].kind == "invalid"
