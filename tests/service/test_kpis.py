"""The KPIs (service/kpis.py, GET /v1/kpis and /v1/kpis.csv) from a known set of decisions and encounters, against
values computed by hand below, and their edge cases (nothing to divide by, unknown filters, time zones).

The set (prices from service/catalogue/default.toml: glucose 5, cholesterol and triglycerides 6 each, CT head 200).
May 2024 is the period, the 31 days before it (2024-03-31 .. 2024-04-30) the previous one. Doctors of qd-002 (A)
and gz-001 (B) decide; qd-002 reports encounters.

  current   v1 A recognised  recognise [glucose]              05-03  tests 1  money   5
            v2 A recognised  recognise [chol, trig]           05-10  tests 2  money  12
            v3 A reordered   recognise [ct-head]  emergency   05-20
            v4 A reordered   reorder   [glucose]  (no reason) 05-21
            v5 B recognised  recognise [ct-head]              05-31T23:00Z (June 1st in Shanghai) tests 1 money 200
            E1 retrieved [biochem]  E2 retrieved [biochem, ct]  E3 not retrieved [ct]  E4 retrieved []
  previous  v6 A recognised  recognise [glucose] 04-15;  v7 A reordered recognise [glucose] patient-request 04-16
            P1 retrieved, P2 not retrieved
  outside   v8 B recognised 2024-06-01T00:00Z; an encounter 2024-03-30

Totals now: retrieval 3/4 = 0.75; recognition (recognised / recognisable) 3/4 = 0.75 (v1, v2, v5 of v1, v2, v3,
v5); tests 1+2+1 = 4; money 5+12+200 = 217. Before: 1/2, 1/2, tests 1, money 5. Growth: +0.25, +0.25, tests
(4−1)/1 = 3, money (217−5)/5 = 42.4.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest

from mrledger.service.decisions import new_id, result_ref
from mrledger.service.kpis import rate
from mrledger.store.decisions import VerificationRow
from mrledger.store.events import ItemRef
from tests.harness import Api

GLUCOSE = ItemRef("http://loinc.org", "2345-7", "clinical-biochemistry")
CHOL = ItemRef("http://loinc.org", "14647-2", "clinical-biochemistry")
TRIG = ItemRef("http://loinc.org", "14927-8", "clinical-biochemistry")
CT_HEAD = ItemRef("urn:mrledger:catalogue:imaging", "ct-head", "ct")
MAY = {"from": "2024-05-01", "to": "2024-05-31"}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _doctor(api: Api, hospital: str) -> dict[str, str]:
    role = f"doctor:{hospital}"
    if role not in api.tokens:
        api.tokens[role] = api.ledger.access.create_token(role, "test doctor", api.ledger.clock())
    return api.auth(role)


def decide(api: Api, when: str, hospital: str, recognition: str, items: tuple[ItemRef, ...], decision: str,
           reason: str | None = None) -> None:
    moment = at(when)
    api.clock.now = moment
    vid = new_id(moment)
    api.ledger.events.remember(VerificationRow(
        vid, moment, None, None, "gz-001", result_ref(api.ledger.regional_key, "gz-001", vid), 1, "authentic",
        recognition, () if recognition == "recognise" else ("too-old",), items[0].category, items))
    body: dict[str, Any] = {"verification_id": vid, "decision": decision}
    if reason:
        body["reason"] = reason
    r = api.client.post("/v1/decisions", json=body, headers=_doctor(api, hospital))
    assert r.status_code == 201, r.text


def encounters(api: Api, *items: tuple[str, str, bool, list[str]]) -> None:
    api.clock.now = at("2024-07-01T00:00:00")
    body = {"hospital_id": "qd-002", "encounters": [
        {"encounter_id": eid, "patient": {"value": f"P-{eid}"}, "seen_at": when + "Z", "retrieved": got,
         "categories": cats} for eid, when, got, cats in items]}
    r = api.client.post("/v1/encounters", json=body, headers=api.auth("hospital:qd-002"))
    assert r.status_code == 202, r.text


@pytest.fixture
def city(api: Api) -> Api:
    decide(api, "2024-05-03T10:00:00", "qd-002", "recognise", (GLUCOSE,), "recognised")
    decide(api, "2024-05-10T10:00:00", "qd-002", "recognise", (CHOL, TRIG), "recognised")
    decide(api, "2024-05-20T10:00:00", "qd-002", "recognise", (CT_HEAD,), "reordered", "emergency")
    decide(api, "2024-05-21T10:00:00", "qd-002", "reorder", (GLUCOSE,), "reordered")
    decide(api, "2024-05-31T23:00:00", "gz-001", "recognise", (CT_HEAD,), "recognised")
    decide(api, "2024-04-15T10:00:00", "qd-002", "recognise", (GLUCOSE,), "recognised")
    decide(api, "2024-04-16T10:00:00", "qd-002", "recognise", (GLUCOSE,), "reordered", "patient-request")
    decide(api, "2024-06-01T00:00:00", "gz-001", "recognise", (GLUCOSE,), "recognised")
    encounters(api, ("E1", "2024-05-02T09:00:00", True, ["clinical-biochemistry"]),
               ("E2", "2024-05-09T09:00:00", True, ["clinical-biochemistry", "ct"]),
               ("E3", "2024-05-19T09:00:00", False, ["ct"]), ("E4", "2024-05-25T09:00:00", True, []),
               ("P1", "2024-04-10T09:00:00", True, []), ("P2", "2024-04-11T09:00:00", False, []),
               ("X1", "2024-03-30T09:00:00", True, []))
    return api


def kpis(api: Api, **params: Any) -> dict[str, Any]:
    r = api.client.get("/v1/kpis", params=params, headers=api.auth("auditor"))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_totals_equal_the_hand_computed_values(city: Api) -> None:
    rep = kpis(city, **MAY)
    assert rep["period"] == {"from": "2024-05-01", "to": "2024-05-31", "tz": "UTC", "days": 31}
    assert rep["previous_period"] == {"from": "2024-03-31", "to": "2024-04-30", "tz": "UTC", "days": 31}
    now, before, growth = rep["totals"]["current"], rep["totals"]["previous"], rep["totals"]["growth"]
    assert (now["encounters"], now["retrieved"]) == (4, 3)
    assert now["retrieval_rate"] == {"value": 0.75, "numerator": 3, "denominator": 4, "reason": None}
    assert (now["decisions"], now["recognisable"], now["recognised"], now["reordered"]) == (5, 4, 3, 2)
    assert now["reordered_recognisable"] == 1
    assert now["recognition_rate"] == {"value": 0.75, "numerator": 3, "denominator": 4, "reason": None}
    assert now["reorders_by_reason"]["emergency"] == 1 and now["reorders_by_reason"]["unspecified"] == 1
    assert sum(now["reorders_by_reason"].values()) == 2
    assert (now["tests_avoided"], now["money_saved"], now["money_saved_minor"]) == (4, 217.0, 21700)
    assert before["retrieval_rate"]["value"] == 0.5 and before["recognition_rate"]["value"] == 0.5
    assert (before["tests_avoided"], before["money_saved"]) == (1, 5.0)
    assert before["reorders_by_reason"]["patient-request"] == 1
    assert growth == {"retrieval_rate": {"value": 0.25, "reason": None},
                      "recognition_rate": {"value": 0.25, "reason": None},
                      "tests_avoided": {"value": 3.0, "reason": None}, "money_saved": {"value": 42.4, "reason": None}}


def test_per_hospital_ranked_by_growth(city: Api) -> None:
    rows = {h["hospital_id"]: h for h in kpis(city, **MAY)["by_hospital"]}
    qd, gz = rows["qd-002"], rows["gz-001"]
    # qd-002: 2 of its 3 recognisable recognised (v1, v2 of v1..v3); before 1 of 2.
    assert qd["current"]["recognition_rate"]["value"] == round(2 / 3, 6)
    assert qd["growth"]["recognition_rate"]["value"] == round(2 / 3 - 0.5, 6)
    assert (qd["current"]["tests_avoided"], qd["current"]["money_saved"]) == (3, 17.0)
    assert qd["growth"]["tests_avoided"]["value"] == 2.0
    # gz-001 reported no encounters and decided nothing before: null rates and growth, each with its reason.
    assert gz["current"]["retrieval_rate"] == {"value": None, "numerator": 0, "denominator": 0,
                                               "reason": "no encounters reported"}
    assert gz["current"]["recognition_rate"]["value"] == 1.0
    assert gz["growth"]["recognition_rate"] == {"value": None, "reason": "no value in the previous period"}
    assert gz["growth"]["tests_avoided"] == {"value": None, "reason": "zero in the previous period"}
    assert (qd["rank"], gz["rank"]) == (1, 2)
    assert qd["stream"] == "qd-002.events"


def test_per_category_and_month(city: Api) -> None:
    rep = kpis(city, **MAY)
    cats = {c["category"]: c["current"] for c in rep["by_category"]}
    bio, ct = cats["clinical-biochemistry"], cats["ct"]
    assert (bio["decisions"], bio["recognisable"], bio["recognised"]) == (3, 2, 2)
    assert (bio["tests_avoided"], bio["money_saved"], bio["encounters"], bio["retrieved"]) == (3, 17.0, 2, 2)
    assert (ct["decisions"], ct["recognition_rate"]["value"], ct["money_saved"]) == (2, 0.5, 200.0)
    assert (ct["encounters"], ct["retrieval_rate"]["value"]) == (2, 0.5)  # E2 retrieved, E3 not
    assert [m["month"] for m in rep["by_month"]] == ["2024-05"]
    assert rep["by_month"][0]["figures"] == rep["totals"]["current"]
    assert {(h["hospital_id"], h["month"]) for h in rep["by_hospital_month"]} == {("qd-002", "2024-05"),
                                                                                   ("gz-001", "2024-05")}


def test_filters(city: Api) -> None:
    gz = kpis(city, hospital="gz-001", **MAY)
    assert gz["totals"]["current"]["decisions"] == 1 and [h["hospital_id"] for h in gz["by_hospital"]] == ["gz-001"]
    ct = kpis(city, category="ct", **MAY)["totals"]["current"]
    assert (ct["decisions"], ct["recognised"], ct["tests_avoided"], ct["encounters"]) == (2, 1, 1, 2)


def test_days_and_months_follow_the_time_zone(city: Api) -> None:
    """In Shanghai, v5 (2024-05-31T23:00Z) was decided on June 1st: outside May."""
    now = kpis(city, tz="Asia/Shanghai", **MAY)["totals"]["current"]
    assert (now["decisions"], now["tests_avoided"], now["money_saved"]) == (4, 3, 17.0)


def test_longer_periods_split_into_months(city: Api) -> None:
    rep = kpis(city, **{"from": "2024-04-15", "to": "2024-06-10"})
    assert [(m["month"], m["from"], m["to"]) for m in rep["by_month"]] == [
        ("2024-04", "2024-04-15", "2024-04-30"), ("2024-05", "2024-05-01", "2024-05-31"),
        ("2024-06", "2024-06-01", "2024-06-10")]
    assert [m["figures"]["decisions"] for m in rep["by_month"]] == [2, 5, 1]
    assert rep["previous_period"] == {"from": "2024-02-18", "to": "2024-04-14", "tz": "UTC", "days": 57}


def test_ten_years_far_from_utc(city: Api) -> None:
    """Ten years in Pacific/Kiritimati (+14:00): five pieces a month, over SQLite's 500 terms of one compound
    SELECT — was a 500; the May figures are the same as in a one-month report, counted record by record or
    summed from sealed batches in several statements (kpi_read._sums)."""
    counted_one_by_one = kpis(city, tz="Pacific/Kiritimati", **MAY)["totals"]["current"]
    for stream in ("qd-002.events", "gz-001.events"):
        city.ledger.store.seal(stream, 10_000)
    whole = kpis(city, tz="Pacific/Kiritimati", **{"from": "2015-01-01", "to": "2025-01-07"})
    may = kpis(city, tz="Pacific/Kiritimati", **MAY)
    assert len(whole["by_month"]) == 121
    assert [m["figures"] for m in whole["by_month"] if m["month"] == "2024-05"] == [may["totals"]["current"]]
    assert may["totals"]["current"] == counted_one_by_one and counted_one_by_one["decisions"] > 0
    assert whole["sources"]["unsealed"] == 0


def test_nothing_to_count_gives_null_rates_with_reasons(api: Api) -> None:
    now = kpis(api, **MAY)["totals"]["current"]
    assert now["retrieval_rate"] == {"value": None, "numerator": 0, "denominator": 0,
                                     "reason": "no encounters reported"}
    assert now["recognition_rate"]["value"] is None and now["recognition_rate"]["reason"]
    assert now["tests_avoided"] == 0 and now["money_saved"] == 0.0
    assert rate(0, 0, "why") == {"value": None, "numerator": 0, "denominator": 0, "reason": "why"}


def test_every_figure_names_its_batches(city: Api) -> None:
    rep = kpis(city, **MAY)
    assert rep["sources"]["unsealed"] == rep["sources"]["records"] == 9 and rep["sources"]["batches"] == []
    city.ledger.store.seal("qd-002.events", 10_000)
    rep = kpis(city, **MAY)
    assert rep["sources"]["batches"] == [
        {"stream": "qd-002.events", "first_seq": 1, "last_seq": 1, "anchor_status": "sealed"}]
    assert rep["sources"]["unsealed"] == 1  # gz-001's v5
    assert {h["hospital_id"]: h["batches"] for h in rep["by_hospital"]} == {"qd-002": [[1, 1]], "gz-001": []}
    # Only anchored figures: nothing is confirmed without a chain.
    anchored = kpis(city, anchored_only="true", **MAY)
    assert anchored["totals"]["current"]["decisions"] == 0 and anchored["filters"]["anchored_only"] is True


def test_csv_export(city: Api) -> None:
    city.ledger.store.seal("qd-002.events", 10_000)
    r = city.client.get("/v1/kpis.csv", params=MAY, headers=city.auth("auditor"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "mrledger-kpis-2024-05-01-2024-05-31.csv" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    total = next(row for row in rows if (row["scope"], row["period"]) == ("total", "current"))
    assert (total["retrieval_rate"], total["recognition_rate"], total["tests_avoided"]) == ("0.75", "0.75", "4")
    assert (total["money_saved"], total["currency"], total["growth_money_saved"]) == ("217.00", "CNY", "42.4")
    assert total["reorders_emergency"] == "1" and total["batches"] == "qd-002.events:1"
    gz = next(row for row in rows if (row["scope"], row["hospital_id"], row["period"]) == ("hospital", "gz-001",
                                                                                           "current"))
    assert gz["retrieval_rate"] == "" and gz["retrieval_rate_null_reason"] == "no encounters reported"
    assert gz["rank"] == "2"
    assert {row["scope"] for row in rows} == {"total", "hospital", "category", "month", "hospital-month"}


@pytest.mark.parametrize(("params", "status", "problem"), [
    ({"from": "2024-06-01", "to": "2024-05-01"}, 422, "validation"),
    ({"tz": "Mars/Olympus"}, 422, "validation"),
    ({"from": "2000-01-01", "to": "2024-01-01"}, 422, "validation"),
    ({"to": "9999-12-31"}, 422, "validation"),
    ({"to": "0001-01-01"}, 422, "validation"),  # found by schemathesis: date arithmetic overflowed (a 500)
    ({"hospital": "xx-404"}, 404, "unknown-hospital"),
    ({"hospital": "qd-002.events"}, 404, "unknown-hospital"),
    ({"category": "pet"}, 422, "unknown-category"),
], ids=["from-after-to", "bad-tz", "too-long", "far-future", "year-one", "unknown-hospital", "stream",
        "unknown-category"])
def test_bad_queries_are_problems(api: Api, params: dict[str, str], status: int, problem: str) -> None:
    for path in ("/v1/kpis", "/v1/kpis.csv"):
        r = api.client.get(path, params=params, headers=api.auth("auditor"))
        assert r.status_code == status and r.json()["type"] == f"urn:mrledger:problem:{problem}", r.text


def test_default_period_is_the_last_30_days(api: Api) -> None:
    api.clock.now = at("2024-05-31T12:00:00")
    assert kpis(api)["period"] == {"from": "2024-05-02", "to": "2024-05-31", "tz": "UTC", "days": 30}


def test_kpi_reads_are_access_logged(city: Api) -> None:
    kpis(city, **MAY)
    assert any(e.action == "kpis" for e in city.ledger.access.entries())
