"""Ids as people type them (issue 14 #6, #7): any spelling of a stored id finds it, ids nobody can read apart
are refused, and ids outside Latin-1 (Chinese ones will be common) work everywhere, QR downloads included."""

from __future__ import annotations

import unicodedata
from typing import Any
from urllib.parse import quote, unquote

import pytest

from tests.harness import Api
from tests.http.test_results import record, submit

NFC_ID = "LAB-Åsa-é-1"  # precomposed: as ingest stores it
NFD_ID = unicodedata.normalize("NFD", NFC_ID)
CHINESE_ID = "检验-2024-0001"


def test_the_nfd_spelling_of_a_stored_id_finds_it_on_every_route(api: Api) -> None:
    assert NFD_ID != NFC_ID
    leaf = submit(api, record(1, result_id=NFD_ID)).json()["results"][0]["leaf_hash"]  # ingest: NFC
    url = f"/v1/hospitals/gz-001/results/{quote(NFD_ID)}"
    versions = api.client.get(url, headers=api.auth("auditor"))  # doctors may not list versions (docs/access.md)
    assert versions.status_code == 200, versions.text
    assert versions.json()["result_id"] == NFC_ID
    lineage = api.client.get(f"/v1/audit/hospitals/gz-001/results/{quote(NFD_ID)}/lineage",
                             headers=api.auth("auditor"))
    assert lineage.status_code == 200 and lineage.json()["result_id"] == NFC_ID
    pending = api.client.get(f"{url}/receipt", headers=api.auth("hospital:gz-001"))
    assert pending.status_code == 409  # found, not yet anchored (a 404 before)
    proof = api.client.get(f"{url}/proof", params={"leaf_hash": leaf})
    assert proof.status_code == 409
    held = record(1, result_id=NFC_ID)
    answer = api.client.post("/v1/verify", json={"hospital_id": "gz-001", "result_id": NFD_ID, "record": held},
                             headers=api.auth("doctor"))
    assert answer.status_code == 200 and answer.json()["verdict"] != "unknown", answer.json()


INVISIBLE = [("LAB\u200b-1", "U+200B ZERO WIDTH SPACE"), ("LAB-\u202e1-BAL", "U+202E RIGHT-TO-LEFT OVERRIDE"),
             ("LAB\u2066-1", "U+2066 LEFT-TO-RIGHT ISOLATE"), ("LAB\u00ad-1", "U+00AD SOFT HYPHEN"),
             ("\ufeffLAB-1", "U+FEFF ZERO WIDTH NO-BREAK SPACE"), ("LAB-1\u2028", "U+2028 LINE SEPARATOR")]


@pytest.mark.parametrize(("rid", "named"), INVISIBLE, ids=[n.split()[0] for _, n in INVISIBLE])
def test_ids_with_invisible_characters_are_refused_at_ingest(api: Api, rid: str, named: str) -> None:
    r = submit(api, record(1, result_id=rid))
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["type"] == "urn:mrledger:problem:invalid-record"
    assert problem["field"] == "result_id" and named in problem["detail"]
    many = submit(api, {"records": [record(2), record(3, subject={"value": f"P-{rid}"})]})
    assert many.status_code == 422 and many.json()["field"] == "records[1].subject.value"
    assert api.client.get("/v1/hospitals/gz-001/results/R2", headers=api.auth("auditor")).status_code == 404


@pytest.mark.parametrize(("rid", "named"), INVISIBLE, ids=[n.split()[0] for _, n in INVISIBLE])
def test_ids_with_invisible_characters_in_a_url_are_a_422_naming_the_parameter(api: Api, rid: str,
                                                                                named: str) -> None:
    """Documented choice (docs/formats.md): 422, not 404. No stored id holds one, and a 404 would leave the
    caller guessing why the id they copied does not exist."""
    for url, role in ((f"/v1/hospitals/gz-001/results/{quote(rid)}", "auditor"),
                      (f"/v1/hospitals/gz-001/results/{quote(rid)}/receipt", "hospital:gz-001"),
                      (f"/v1/audit/hospitals/gz-001/results/{quote(rid)}/lineage", "auditor")):
        r = api.client.get(url, headers=api.auth(role))
        assert r.status_code == 422, (url, r.text)
        problem = r.json()
        assert problem["type"] == "urn:mrledger:problem:validation"
        assert problem["errors"][0]["loc"] == ["path", "result_id"] and named in problem["detail"]


def test_visible_unicode_and_combining_marks_are_ids_like_any_other(api: Api) -> None:
    """What is refused is what cannot be seen: CJK, accents, spaces and variation selectors are ids."""
    for i, rid in enumerate((CHINESE_ID, "Åsa Öberg 7", "葛\U000e0100-1"), start=1):
        assert submit(api, record(i, result_id=rid)).status_code == 202
        got = api.client.get(f"/v1/hospitals/gz-001/results/{quote(rid)}", headers=api.auth("auditor"))
        assert got.status_code == 200 and got.json()["result_id"] == rid


def _disposition_filename(header: str) -> str:
    """The name a browser saves under: RFC 6266 prefers ``filename*`` (RFC 8187, UTF-8'')."""
    params = dict(p.strip().split("=", 1) for p in header.split(";")[1:])
    star = params["filename*"]
    assert star.startswith("UTF-8''")
    assert params["filename"].startswith('"') and params["filename"].isascii()
    return unquote(star.removeprefix("UTF-8''"), encoding="utf-8", errors="strict")


@pytest.mark.anvil
def test_qr_downloads_of_a_chinese_result_id(chain_api: Api) -> None:
    """Submitted, anchored and downloaded as PNG and SVG: the header is Latin-1-safe (it was a 500) and names
    the file with the id as it is."""
    api = chain_api
    assert submit(api, record(1, result_id=CHINESE_ID)).status_code == 202
    api.anchor_all()
    base = f"/v1/hospitals/gz-001/results/{quote(CHINESE_ID)}"
    receipt: dict[str, Any] = api.client.get(f"{base}/receipt", headers=api.auth("hospital:gz-001")).json()
    assert receipt["record"]["result_id"] == CHINESE_ID
    for kind, magic in (("png", b"\x89PNG"), ("svg", b"<svg")):
        r = api.client.get(f"{base}/receipt.{kind}", headers=api.auth("hospital:gz-001"))
        assert r.status_code == 200, r.text
        assert magic in r.content[:200]
        header = r.headers["content-disposition"]
        assert header.startswith("inline;")
        assert _disposition_filename(header) == f"receipt-{CHINESE_ID}.{kind}"
