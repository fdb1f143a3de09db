"""The /verify page, FHIR form: a doctor pastes the FHIR resource another hospital sent (real Chromium, real
app, real anvil chain). The resource goes in through the hospital's intake route, is anchored, and is then
pasted pretty-printed as the doctor holds it: AUTHENTIC; with a changed value: TAMPERED."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page

from tests.http.web.conftest import Served
from tests.http.web.test_pages import VERDICT, _axe, _verdict
from tests.ledger.formats.test_fhir import EXAMPLES
from tests.service.test_intake import needs_examples

pytestmark = [pytest.mark.anvil, needs_examples]

HID = "gz-001"


def test_pasted_fhir_resource_authentic_then_tampered(served: Served, page: Page, shots: Path) -> None:
    data = (EXAMPLES / "Observation-f001.json").read_bytes()
    r = httpx.post(f"{served.url}/v1/hospitals/{HID}/fhir", content=data,
                   headers={"content-type": "application/fhir+json", **served.api.auth(f"hospital:{HID}")})
    assert r.status_code == 202, r.text
    served.api.anchor_all()
    resource = json.loads(data)

    page.goto(f"{served.url}/verify")
    page.click("details:has(#token) summary")  # settings: the doctor token, kept for this tab
    page.fill("#token", served.api.tokens["doctor"])
    page.dispatch_event("#token", "change")
    page.click("#fhir-box summary")
    page.fill("#fhir-hid", HID)
    page.fill("#fhir", json.dumps(resource, indent=2))
    page.click("#go-fhir")
    _verdict(page, "authentic")
    assert page.text_content("#verdict-word") == "AUTHENTIC"
    facts = page.text_content("#facts") or ""
    assert "Guangzhou First People's Hospital" in facts and "6323" in facts and "Confirmations" in facts
    assert "✔ fhir" in facts
    page.screenshot(path=str(shots / "verify-fhir-authentic-en.png"), full_page=True)
    serious = _axe(page)
    assert not serious, serious

    # The changed copy pasted into the receipt box: the page recognises FHIR and checks it in the FHIR form.
    resource["valueQuantity"]["value"] = 9.3
    page.fill("#paste", json.dumps(resource, indent=2))
    page.click("#go")
    _verdict(page, "tampered")
    assert page.text_content("#verdict-word") == "TAMPERED — do not use"
    assert "FHIR resource" in (page.text_content("#qr-status") or "")
    assert "9.3" in page.input_value("#fhir")
    assert "✘ content" in (page.text_content("#facts") or "")
    page.screenshot(path=str(shots / "verify-fhir-tampered-en.png"), full_page=True)

    # Without a hospital id the page asks for one instead of calling the ledger.
    page.fill("#fhir-hid", "")
    page.click("#go-fhir")
    assert page.evaluate("document.activeElement.id") == "fhir-hid"
    assert "hospital id" in (page.text_content("#fhir-status") or "")
    assert page.get_attribute(VERDICT, "data-verdict") == "tampered"  # the last verdict stays on screen


def test_a_report_held_with_observations_never_committed_reads_cannot_match(served: Served, page: Page,
                                                                            shots: Path) -> None:
    """Issue 16, point 5: the report alone was committed; the doctor pastes the Bundle with its Observations.
    Their values cannot be checked: the page says CANNOT MATCH with the reason, not TAMPERED."""
    bundle = json.loads((EXAMPLES / "Bundle-lipids.json").read_bytes())
    r = httpx.post(f"{served.url}/v1/hospitals/{HID}/fhir", content=json.dumps(bundle["entry"][0]["resource"]),
                   headers={"content-type": "application/fhir+json", **served.api.auth(f"hospital:{HID}")})
    assert r.status_code == 202, r.text
    served.api.anchor_all()
    page.goto(f"{served.url}/verify")
    page.click("details:has(#token) summary")
    page.fill("#token", served.api.tokens["doctor"])
    page.dispatch_event("#token", "change")
    page.click("#fhir-box summary")
    page.fill("#fhir-hid", HID)
    page.fill("#fhir", json.dumps(bundle, indent=2))
    page.click("#go-fhir")
    _verdict(page, "cannot-match")
    assert page.text_content("#verdict-word") == "CANNOT MATCH — not decidable, not a sign of tampering"
    assert "were committed neither with it nor as results of their own" in (page.text_content("#verdict") or "")
    page.screenshot(path=str(shots / "verify-fhir-cannot-match-en.png"), full_page=True)
    serious = _axe(page)
    assert not serious, serious
