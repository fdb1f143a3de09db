"""Issue 18 in the browser: the /verify page asks the node for the receipt's status proof, checks it in the page
(core.js mirrors ledger/status_check.py) and binds it to the doctor's own chain endpoint. A corrected result's
old receipt reads SUPERSEDED even when the node's database answer is made to lie (no ``superseded_by``); a node
that serves its old map is caught as stale once the newer batch has been on chain past the grace; and the page's
map-proof verifier agrees with Python on every vector of tests/vectors/statusmap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from mrledger.ledger import verify_receipt
from mrledger.ledger.status_check import StatusDocument
from tests.http.web.conftest import Served
from tests.http.web.test_pages import HID, VERDICT, _verdict
from tests.store.test_repository import rec

pytestmark = pytest.mark.anvil
MAP_VECTORS = [p for p in sorted((Path(__file__).parents[2] / "vectors" / "statusmap").glob("*.json"))
               if {"key", "proof", "root"} <= set(json.loads(p.read_text()))]


def _corrected(s: Served) -> tuple[dict[str, Any], StatusDocument]:
    """R1 v1 anchored, its receipt and the node's status document then; R1 v2 (a correction) anchored after."""
    s.api.ledger.intake.submit(HID, [rec(1)])
    s.api.anchor_all()
    found, _ = s.api.ledger.results.receipt(HID, "R1", 1)
    assert found is not None
    key = s.api.ledger.store.status_key_of(HID, "R1")
    assert key is not None
    before = s.api.ledger.results.status_document(HID, "R1", key)
    s.api.ledger.intake.submit(HID, [rec(1, version=2, value=7.5)])
    s.api.anchor_all()
    return found.to_obj(), before


def _check(s: Served, page: Page, receipt: dict[str, Any], *, rpc: bool = True) -> None:
    page.goto(f"{s.url}/verify")
    page.click("details:has(#rpc) summary")
    page.fill("#rpc", s.api.node.rpc_url if rpc and s.api.node else "")
    page.dispatch_event("#rpc", "change")
    page.fill("#paste", json.dumps(receipt))
    page.click("#go")


def test_an_old_receipt_reads_superseded_although_the_nodes_database_says_current(
        served: Served, page: Page, shots: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    receipt, _ = _corrected(served)
    # The node's database answer lies: no later version (what /v1/verify's superseded_by comes from).
    monkeypatch.setattr(served.api.ledger.verification.verifier, "_later", lambda *a, **k: (None, None))
    _check(served, page, receipt)
    _verdict(page, "superseded")
    page.wait_for_selector("#step-status[data-state=superseded][data-map-root-bound=false]")  # v1: the node's word
    assert "superseded by version 2" in (page.text_content("#status-status") or "")
    assert "checked on your chain endpoint" in (page.text_content("#status-status") or "")
    assert "map root as the node states it (v1 registry)" in (page.text_content("#status-status") or "")
    assert page.text_content("#verdict-sub") == "superseded by version 2"
    page.screenshot(path=str(shots / "verify-superseded-by-map-en.png"), full_page=True)


def test_a_withdrawn_result_reads_revoked_from_the_map(served: Served, page: Page,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    served.api.ledger.intake.submit(HID, [rec(2)])
    served.api.anchor_all()
    found, _ = served.api.ledger.results.receipt(HID, "R2", 1)
    assert found is not None
    served.api.ledger.intake.submit(HID, [rec(2, version=2, status="entered-in-error")])
    served.api.anchor_all()
    monkeypatch.setattr(served.api.ledger.verification.verifier, "_later", lambda *a, **k: (None, None))
    _check(served, page, found.to_obj())
    _verdict(page, "revoked")
    page.wait_for_selector("#step-status[data-state=withdrawn]")
    assert "withdrawn (entered in error) by version 2" in (page.text_content("#verdict-sub") or "")


def test_a_node_serving_its_old_map_is_not_believed(served: Served, page: Page,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    receipt, before = _corrected(served)
    monkeypatch.setattr(served.api.ledger.verification.verifier, "_later", lambda *a, **k: (None, None))
    monkeypatch.setattr(served.api.ledger.results, "status_document", lambda *a: before)  # the old map
    assert served.api.node is not None
    w3 = served.api.ledger.chain.w3  # type: ignore[union-attr]
    w3.provider.make_request("evm_increaseTime", [601])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    _check(served, page, receipt)
    _verdict(page, "unknown")
    page.wait_for_selector("#step-status[data-state=stale]")
    assert "hides a newer status" in (page.text_content("#status-status") or "")
    assert page.get_attribute(VERDICT, "data-verdict") != "authentic"
    # Without a chain endpoint the page can only repeat the node's word, and says so.
    _check(served, page, receipt, rpc=False)
    page.wait_for_selector("#step-status[data-state=current]")
    assert "the node's word" in (page.text_content("#status-status") or "")


def test_js_map_proofs_agree_with_python_on_the_vectors(served: Served, page: Page) -> None:
    assert len(MAP_VECTORS) >= 10, "tests/vectors/statusmap lost its proof vectors"
    page.goto(f"{served.url}/verify")
    vectors = [json.loads(p.read_text()) for p in MAP_VECTORS]
    inputs = json.loads((MAP_VECTORS[0].parent / "root_from_entries.json").read_text())["key_inputs"]
    key = page.evaluate("""async (k) => {
        const m = await import('/web/status.js'), c = await import('/web/core.js');
        return c.hex(await m.statusKey(k.hospital_id, k.result_id, c.unhex(k.secret)));
    }""", inputs)
    assert key == inputs["key"]
    got = page.evaluate("""async (vectors) => {
        const m = await import('/web/status.js'), c = await import('/web/core.js');
        const out = [];
        for (const v of vectors) {
          const a = await m.verifyStatusProof(c.unhex(v.root), c.unhex(v.key), c.unhex(v.proof));
          out.push({kind: a.kind, version: a.version ?? null, leaf: a.leafHash ? c.hex(a.leafHash) : null});
        }
        return out;
    }""", vectors)
    wrong = [f"{p.name}: JS {g}, want {v['want']}" for p, v, g in zip(MAP_VECTORS, vectors, got, strict=True)
             if g["kind"] != v["want"] or g["version"] != v.get("want_version")
             or g["leaf"] != v.get("want_leaf_hash")]
    assert not wrong, "\n".join(wrong)


def test_js_parses_the_status_secret_as_python_does(served: Served, page: Page) -> None:
    page.goto(f"{served.url}/verify")
    vector = Path(__file__).parents[2] / "vectors" / "receipt" / "ok_anchored.json"
    receipt = json.loads(vector.read_text())["receipt"]
    cases = [("ab" * 16, None), ("AB" * 16, "format"), ("ab" * 15, "format"), (5, "format")]
    got = page.evaluate("""async ([receipt, cases]) => {
        const m = await import('/web/core.js');
        const out = [];
        for (const [secret] of cases) {
          out.push((await m.verifyOffline({...receipt, extensions: {status_secret: secret}})).failed);
        }
        return out;
    }""", [receipt, cases])
    assert got == [want for _, want in cases]
    assert [verify_receipt({**receipt, "extensions": {"status_secret": s}}).failed for s, _ in cases] == got
