"""The /verify page and hospital signatures: a signed receipt is accepted by the page's own checks, the
node's signature result (the signer, or the failure's reason) is shown in all three languages, and the page
says that the node — not the browser — checked the certificate."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Page

from mrledger.ledger import sign_batch
from tests.http.web.conftest import Served
from tests.pki import Leaf, Pki
from tests.store.test_repository import rec

pytestmark = pytest.mark.anvil

HID = "gz-001"
WINDOW = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2034, 1, 1, tzinfo=UTC))
VECTORS = sorted((Path(__file__).parents[2] / "vectors" / "signature").glob("*.json"))


def _check(page: Page, receipt: dict[str, object], verdict: str) -> None:
    page.fill("#paste", json.dumps(receipt))
    page.click("#go")
    page.wait_for_selector(f"#verdict[data-verdict={verdict}]", timeout=15_000)


def test_the_nodes_signature_result_is_shown(served: Served, page: Page, shots: Path) -> None:
    api, pki = served.api, Pki("web")
    chain = api.ledger.chain
    assert chain is not None
    api.rebuild(trust=pki.trust(), require_signatures=True)

    def seal(i: int, leaf: Leaf) -> None:
        api.ledger.intake.submit(HID, [rec(i)])
        api.ledger.store.seal(HID, 100, sign=lambda h: sign_batch(h, chain.chain_id, chain.contract, leaf.key,
                                                                  leaf.chain))

    seal(1, pki.hospital(HID, window=WINDOW))
    seal(2, pki.hospital("qd-002", window=WINDOW))  # another hospital's certificate on gz-001's batch
    api.anchor_all()
    receipts = {}
    for rid in ("R1", "R2"):
        found, _ = api.ledger.results.receipt(HID, rid)
        assert found is not None and found.signature is not None
        receipts[rid] = found.to_obj()

    page.goto(f"{served.url}/verify")
    _check(page, receipts["R1"], "authentic")  # a signed receipt passes the page's own format check
    assert page.get_attribute("#step-offline", "data-state") == "valid"
    facts = page.text_content("#facts") or ""
    assert f"Signed by CN={HID} batch signing" in facts and "checked by the ledger node" in facts
    page.screenshot(path=str(shots / "verify-signed-en.png"), full_page=True)

    _check(page, receipts["R2"], "tampered")  # the proof holds; the node refuses the signature
    assert page.get_attribute("#step-offline", "data-state") == "valid"
    assert "certificate-hospital-mismatch" in (page.text_content("#verdict-sub") or "")
    assert "Signature not valid: certificate-hospital-mismatch" in (page.text_content("#facts") or "")
    page.select_option("#lang", "zh-CN")
    assert "签名无效" in (page.text_content("#verdict-sub") or "")
    assert "由账本节点核验" in (page.text_content("#facts") or "")
    page.select_option("#lang", "de")
    assert "Signatur ungültig" in (page.text_content("#facts") or "")
    page.screenshot(path=str(shots / "verify-signature-mismatch-de.png"), full_page=True)


def test_page_format_check_agrees_on_the_signature_vectors(served: Served, page: Page) -> None:
    """Signed receipts pass the page's shape check; a malformed signature section fails it as ``format``,
    like the reference parser. Everything else about the signature is the node's job."""
    assert VECTORS, "tests/vectors/signature is empty"
    cases = [json.loads(p.read_text()) for p in VECTORS]
    page.goto(f"{served.url}/verify")
    got = page.evaluate("""async (receipts) => {
        const m = await import('/web/core.js');
        return Promise.all(receipts.map(async (r) => (await m.verifyOffline(r)).failed));
    }""", [c["receipt"] for c in cases])
    want = ["format" if c["want_error"] == "format" else None for c in cases]
    assert dict(zip([p.stem for p in VECTORS], got, strict=True)) == dict(zip([p.stem for p in VECTORS], want,
                                                                              strict=True))
