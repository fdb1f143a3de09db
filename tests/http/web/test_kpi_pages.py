"""The doctor's decision buttons on /verify and the auditor's KPI chart and ranking on /audit, in a real
Chromium against the real app and a real anvil chain; and every UI string in all three languages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page

from mrledger.service.decisions import new_id, result_ref
from mrledger.store.decisions import VerificationRow
from mrledger.store.eligibility import Eligibility
from mrledger.store.events import ItemRef
from tests.http.web.conftest import Served
from tests.http.web.test_pages import _axe, _verdict
from tests.store.test_repository import rec

I18N = Path(__file__).parents[3] / "src" / "mrledger" / "http" / "web" / "static" / "i18n.js"


def _fresh_receipt(s: Served) -> dict[str, object]:
    """An anchored glucose result of gz-001, issued now by an eligible hospital: the programme recognises it."""
    ledger = s.api.ledger
    Eligibility(ledger.store).grant("gz-001", "clinical-biochemistry", "EQA-1", ledger.clock())
    now = ledger.clock().isoformat()
    ledger.intake.submit("gz-001", [rec(1, issued=now, effective=now)])
    ledger.store.seal("gz-001", 100)
    s.api.anchor_all()
    assert s.api.node is not None
    s.api.node.rpc("anvil_mine", "0x2")
    receipt, status = ledger.results.receipt("gz-001", "R1")
    assert receipt is not None, status
    return receipt.to_obj()


@pytest.mark.anvil
def test_a_doctor_records_her_decision_on_the_verify_page(served: Served, page: Page, shots: Path) -> None:
    receipt = _fresh_receipt(served)
    page.goto(f"{served.url}/verify")
    page.fill("#paste", json.dumps(receipt))
    page.click("#go")
    _verdict(page, "authentic")
    page.wait_for_selector("#decision-box:not([hidden])")
    # Without a token the page still verifies, and says how to record a decision.
    assert page.is_disabled("#dec-recognise") and page.is_disabled("#dec-reorder")
    assert "doctor token" in (page.text_content("#decision-hint") or "")
    token = served.api.ledger.access.create_token("doctor:qd-002", "doctor", served.api.ledger.clock())
    page.click("details:has(#token) summary")
    page.fill("#token", token)
    page.dispatch_event("#token", "change")
    page.wait_for_selector("#dec-recognise:not([disabled])")
    assert page.locator("#reason option").count() == 8  # "no reason" + the catalogue's seven
    page.click("#dec-reorder")  # the programme recognises it: a reorder needs a reason
    page.wait_for_selector("#decision-status.alert")
    assert "say why" in (page.text_content("#decision-status") or "")
    page.click("#dec-recognise")
    page.wait_for_function("document.querySelector('#decision-status').textContent.startsWith('Decision recorded')")
    assert page.is_disabled("#dec-recognise") and page.is_disabled("#dec-reorder")
    rep = served.api.client.get("/v1/kpis", headers=served.api.auth("auditor")).json()
    assert rep["totals"]["current"]["recognised"] == 1 and rep["by_hospital"][0]["hospital_id"] == "qd-002"
    page.screenshot(path=str(shots / "verify-decision-en.png"), full_page=True)
    serious = _axe(page)
    assert not serious, serious


@pytest.mark.anvil
def test_the_auditor_sees_both_rates_and_the_ranking(served: Served, page: Page, shots: Path) -> None:
    ledger = served.api.ledger
    glucose = ItemRef("http://loinc.org", "2345-7", "clinical-biochemistry")
    for hospital, decisions in (("qd-002", ["recognised", "recognised"]), ("gz-001", ["recognised", "reordered"])):
        token = ledger.access.create_token(f"doctor:{hospital}", "doctor", ledger.clock())
        for decision in decisions:
            now = ledger.clock()
            vid = new_id(now)
            ledger.events.remember(VerificationRow(vid, now, None, None, "xx", result_ref(ledger.regional_key, "xx",
                                                                                          vid), 1, "authentic",
                                                   "recognise", (), "clinical-biochemistry", (glucose,)))
            body = {"verification_id": vid, "decision": decision, **({"reason": "emergency"}
                                                                     if decision == "reordered" else {})}
            r = served.api.client.post("/v1/decisions", json=body,
                                       headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 201, r.text
    page.goto(f"{served.url}/audit")
    page.fill("#token", served.api.tokens["auditor"])
    page.dispatch_event("#token", "change")
    page.click("#kpi-load")
    page.wait_for_selector("#kpi-results:not([hidden])")
    assert page.locator("#kpi-chart-recognition_rate circle.kpi-point").count() == 2
    ranked = page.locator("#kpi-ranking tbody tr")
    assert ranked.count() == 2
    assert "Post-retrieval recognition rate" in (page.text_content("#kpi-summary") or "")
    assert "75.0 %" in (page.text_content("#kpi-summary") or "")
    page.screenshot(path=str(shots / "audit-kpis-en.png"), full_page=True)
    serious = _axe(page)
    assert not serious, serious
    page.select_option("#lang", "zh-CN")
    assert page.text_content("#kpi-title") == "互认指标"
    assert "调阅后互认率" in (page.text_content("#kpi-summary") or "")


def test_every_ui_string_exists_in_every_language() -> None:
    text = I18N.read_text(encoding="utf-8")
    blocks = re.split(r'\n  (?:"zh-CN"|en|de): \{\n', text)[1:]
    keys = [set(re.findall(r'"([a-z][a-z0-9.-]*)":', block.split("\n  },")[0])) for block in blocks]
    assert len(keys) == 3 and keys[0], "could not read the three language tables"
    assert keys[0] == keys[1] == keys[2], {"missing in de": keys[0] - keys[1], "missing in zh-CN": keys[0] - keys[2]}
    assert {"dec.title", "kpi.recognition", "reason.other"} <= keys[0]
