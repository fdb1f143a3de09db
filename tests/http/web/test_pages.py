"""The /verify and /audit pages in a real Chromium against the real app and a real anvil chain.

What matters to a clinician: a real receipt reads AUTHENTIC, a tampered one TAMPERED, the QR code the
app prints decodes on the page, the proof is checked in the browser before the server is asked, and
the page passes an accessibility audit. For an auditor: a batch deleted from the database shows as a gap.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import rfc8785
from playwright.sync_api import Page, Route
from sqlalchemy import text

from mrledger.ledger.canonical import sha256
from mrledger.service import qr
from tests.http.web.conftest import AXE, Served
from tests.store.test_repository import rec

pytestmark = pytest.mark.anvil

HID = "gz-001"
VECTORS = sorted((Path(__file__).parents[2] / "vectors" / "receipt").glob("*.json"))
VERDICT = "#verdict"


def _seed(s: Served, results: int = 3) -> None:
    """One batch per result (R1 in batch 1, …), all anchored and confirmed on anvil."""
    for i in range(1, results + 1):
        s.api.ledger.intake.submit(HID, [rec(i)])
        s.api.ledger.store.seal(HID, 100)
    s.api.anchor_all()


def _receipt(s: Served, rid: str = "R1") -> dict[str, Any]:
    found, status = s.api.ledger.results.receipt(HID, rid)
    assert found is not None, status
    obj: dict[str, Any] = found.to_obj()
    return obj


def _verdict(page: Page, kind: str) -> None:
    page.wait_for_selector(f"{VERDICT}[data-verdict={kind}]", timeout=15_000)


def _axe(page: Page) -> list[dict[str, Any]]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("""async () => (await axe.run(document, {runOnly: {type: 'tag',
        values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})).violations
        .map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 3)}))""")
    return [v for v in result if v["impact"] in ("serious", "critical")]


def test_real_receipt_is_authentic_and_checked_offline_first(served: Served, page: Page, shots: Path,
                                                             tmp_path: Path) -> None:
    _seed(served, 1)
    receipt = _receipt(served)
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt, indent=2))
    held: list[Route] = []
    # Hold the server's answer until the offline result has been asserted on the page.
    page.route("**/v1/verify", lambda route: held.append(route))
    page.goto(f"{served.url}/verify")
    page.click("details:has(#rpc) summary")  # the settings are folded away by default
    page.fill("#rpc", served.api.node.rpc_url if served.api.node else "")
    page.dispatch_event("#rpc", "change")
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#step-offline[data-state=valid]")
    assert page.text_content("#offline-status") == \
        "Passed: the record, its salt and the Merkle proof give the batch root."
    page.wait_for_function("() => true")  # let the pending fetch reach the route handler
    assert len(held) == 1, "the page did not ask the server after the offline check"
    assert page.get_attribute(VERDICT, "data-verdict") == "working"  # server not answered yet
    held[0].continue_()
    _verdict(page, "authentic")
    assert page.text_content("#verdict-word") == "AUTHENTIC"
    page.wait_for_selector("#step-chain.s-ok")
    facts = page.text_content("#facts") or ""
    assert "Guangzhou First People's Hospital" in facts and "R1" in facts and "Confirmations" in facts
    page.screenshot(path=str(shots / "verify-authentic-en.png"), full_page=True)
    serious = _axe(page)
    assert not serious, serious


def test_tampered_receipt_is_tampered_without_asking_the_server(served: Served, page: Page, shots: Path) -> None:
    _seed(served, 1)
    receipt = copy.deepcopy(_receipt(served))
    receipt["record"]["content"]["observations"][0]["value"] = 9.9
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/v1/verify" in r.url else None)
    page.goto(f"{served.url}/verify")
    page.fill("#paste", json.dumps(receipt))
    page.focus("#paste")
    page.keyboard.press("Tab")  # keyboard only: Tab to "Check receipt", Enter
    assert page.evaluate("document.activeElement.id") == "go"
    page.keyboard.press("Enter")
    _verdict(page, "tampered")
    assert "leaf-hash" in (page.text_content("#offline-status") or "")
    assert not asked
    page.screenshot(path=str(shots / "verify-tampered-en.png"), full_page=True)


@pytest.mark.parametrize(("name", "spoil"), [
    ("duplicate-key", lambda text: text.replace(b'"format": "mrl-receipt/1"',
                                                b'"format": "mrl-receipt/1", "format": "mrl-receipt/1"')),
    ("byte-order-mark", lambda text: b"\xef\xbb\xbf" + text),
    ("invalid-utf8", lambda text: text.replace(b'"format"', b'"x\xff": 1, "format"')),
])
def test_a_receipt_file_the_node_would_refuse_is_refused_on_the_page(served: Served, page: Page, tmp_path: Path,
                                                                     name: str, spoil: Any) -> None:
    """The page read files with JSON.parse, which keeps the last of two equal keys, and file.text(), which drops
    a byte order mark and turns invalid UTF-8 into U+FFFD: it judged bytes the node refuses (issue 14 #14)."""
    _seed(served, 1)
    path = tmp_path / f"{name}.json"
    path.write_bytes(spoil(json.dumps(_receipt(served), indent=2).encode()))
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/v1/verify" in r.url else None)
    page.goto(f"{served.url}/verify")
    page.set_input_files("#file", str(path))
    _verdict(page, "unknown")
    assert "This is not valid JSON." in (page.text_content("#verdict-sub") or "")
    assert not asked


@pytest.mark.parametrize("form", ["auto", "ref"])
def test_qr_png_from_the_app_decodes_on_the_page(served: Served, page: Page, shots: Path, tmp_path: Path,
                                                 form: str) -> None:
    _seed(served, 1)
    r = httpx.get(f"{served.url}/v1/hospitals/{HID}/results/R1/receipt.png", params={"form": form},
                  headers=served.api.auth(f"hospital:{HID}"))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
    assert r.headers["x-mrl-qr-form"] == ("full" if form == "auto" else "ref")
    png = tmp_path / "receipt-qr.png"
    png.write_bytes(r.content)
    page.goto(f"{served.url}/verify")
    page.set_input_files("#file", str(png))
    _verdict(page, "authentic")
    if form == "ref":
        assert "reference" in (page.text_content("#qr-status") or "")
    page.screenshot(path=str(shots / f"verify-qr-{form}.png"), full_page=True)


def test_auditor_sees_a_gap(served: Served, page: Page, shots: Path) -> None:
    _seed(served, 3)
    with served.api.ledger.store.engine.begin() as c:  # an insider deletes batch 2 from the database
        for table in ("batch_leaves", "anchors", "batches"):
            c.execute(text(f"DELETE FROM {table} WHERE hospital_id = :h AND seq = 2"), {"h": HID})
    page.goto(f"{served.url}/audit")
    page.fill("#token", served.api.tokens["auditor"])
    page.dispatch_event("#token", "change")
    page.fill("#rpc", served.api.node.rpc_url if served.api.node else "")
    page.dispatch_event("#rpc", "change")
    page.fill("#hospital", HID)
    page.click("#load")
    page.wait_for_selector("#missing-seqs")
    assert "2" in (page.text_content("#missing-seqs") or "")
    assert page.is_visible("tr.missing[data-seq='2']")
    assert page.locator("#batches tbody tr").count() == 3
    page.wait_for_selector("#chart svg circle.delay", timeout=15_000)  # delays from the auditor's own node
    page.fill("#rid", "R1")
    page.click("#lineage-go")
    page.wait_for_selector("#lineage .good")
    page.screenshot(path=str(shots / "audit-gap-en.png"), full_page=True)
    serious = _axe(page)
    assert not serious, serious


def test_chinese_at_200_percent_zoom(served: Served, browser: Any, shots: Path) -> None:
    _seed(served, 1)
    receipt = _receipt(served)
    # 200 % zoom of a 1100-px window: a 550-CSS-px viewport at device scale 2.
    context = browser.new_context(locale="zh-CN", bypass_csp=True, viewport={"width": 550, "height": 900},
                                  device_scale_factor=2)
    page = context.new_page()
    page.goto(f"{served.url}/verify")
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert page.text_content("h1") == "核验检查结果"
    page.fill("#paste", json.dumps(receipt))
    page.click("#go")
    _verdict(page, "authentic")
    assert page.text_content("#verdict-word") == "真实有效"
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    page.screenshot(path=str(shots / "verify-authentic-zh-200pct.png"), full_page=True)
    page.select_option("#lang", "de")
    assert page.text_content("#verdict-word") == "ECHT"
    serious = _axe(page)
    context.close()
    assert not serious, serious


JCS_CASES = r"""[
  {"\u20ac": 1, "\r": 2, "1": 3, "\ud83d\ude00": 4, "\ufb33": 5, "a": [true, false, null]},
  [1e21, 1e-7, 0.30000000000000004, 5.40, -0.0, 100, 1.5e300, 123456789012, 0.000001],
  ["\u0000\u001f\"\\/", "é", "中文", "\u2028"]
]"""


def test_js_agrees_with_python_on_the_vectors(served: Served, page: Page) -> None:
    assert VECTORS, "tests/vectors/receipt is empty"
    page.goto(f"{served.url}/verify")
    vectors = [json.loads(p.read_text()) for p in VECTORS]
    sample = qr.encode(json.loads((VECTORS[0].parent / "ok_anchored.json").read_text())["receipt"])
    out = page.evaluate("""async ([vectors, jcsCases, qrText]) => {
        const m = await import('/web/core.js');
        const res = [];
        for (const v of vectors) {
          const r = await m.verifyOffline(v.receipt);
          const rec = v.receipt.record, salt = v.receipt.salt;
          res.push({failed: r.failed, jcs: m.jcs(rec),
                    leaf: typeof salt === 'string' ? m.hex(await m.leafHash(rec, salt)) : null});
        }
        return {res, jcs: JSON.parse(jcsCases).map(m.jcs), qr: await m.decodeQrText(qrText)};
    }""", [vectors, JCS_CASES, sample])
    wrong = []
    for path, v, got in zip(VECTORS, vectors, out["res"], strict=True):
        if got["failed"] != v["want_error"]:
            wrong.append(f"{path.name}: JS failed at {got['failed']}, want {v['want_error']}")
        rec_ = v["receipt"]["record"]
        if got["jcs"] != rfc8785.dumps(rec_).decode():
            wrong.append(f"{path.name}: JCS differs")
        if got["leaf"] is not None:
            leaf_obj = {"format": "mrl-leaf/1", "hospital_id": rec_["hospital_id"], "result_id": rec_["result_id"],
                        "version": rec_["version"], "salt": v["receipt"]["salt"],
                        "content_digest": sha256(rfc8785.dumps(rec_)).hex()}
            if got["leaf"] != sha256(b"\x00" + rfc8785.dumps(leaf_obj)).hex():
                wrong.append(f"{path.name}: leaf hash differs")
    for case, got in zip(json.loads(JCS_CASES), out["jcs"], strict=True):
        if got != rfc8785.dumps(case).decode():
            wrong.append(f"JCS of {case!r}: JS {got!r}, Python {rfc8785.dumps(case).decode()!r}")
    assert out["qr"] == json.loads((VECTORS[0].parent / "ok_anchored.json").read_text())["receipt"]
    assert not wrong, "\n".join(wrong)


TEXT_VECTORS = sorted((Path(__file__).parents[2] / "vectors" / "receipt-text").glob("*.json"))


def test_js_reads_receipt_bytes_as_python_does(served: Served, page: Page) -> None:
    """The page parses a receipt file strictly (core.js parseReceiptBytes), as the reference parser does: BOM,
    invalid UTF-8, duplicate keys, lone surrogates, numbers no double holds, depth, trailing data."""
    assert TEXT_VECTORS, "tests/vectors/receipt-text is empty"
    page.goto(f"{served.url}/verify")
    cases = [json.loads(p.read_text()) for p in TEXT_VECTORS]
    got = page.evaluate("""async (cases) => {
        const m = await import('/web/core.js');
        const out = [];
        for (const c of cases) {
          const bytes = Uint8Array.from(atob(c.receipt_base64), (ch) => ch.charCodeAt(0));
          let obj;
          try { obj = m.parseReceiptBytes(bytes); } catch (e) { out.push('format'); continue; }
          out.push((await m.verifyOffline(obj)).failed);
        }
        return out;
    }""", cases)
    assert dict(zip([p.stem for p in TEXT_VECTORS], got, strict=True)) == {
        p.stem: c["want_error"] for p, c in zip(TEXT_VECTORS, cases, strict=True)}
