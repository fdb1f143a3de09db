"""A doctor holding unchanged data is never told ``tampered`` (issue 16, point 5).

Built on ``hl7.fhir.r4.examples@4.0.1``: ``Bundle-lipids`` (a lipid report and its four Observations, which
intake folds into the report) and ``Observation-f001`` (a glucose, times in ``+01:00``). The doctor holds the same
result (a) grouped differently — the report alone, one Observation alone, or the Bundle where the hospital had
committed the report alone — (b) with its instants written in UTC, (c) with a date-only time the hospital read in
its own zone. Each must verify; where the answer cannot be decided it says ``cannot-match``, never tampered.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.harness import Api
from tests.http.test_verify_fhir import FHIR, HID, check, example, ok
from tests.service.test_intake import needs_examples, post

pytestmark = [needs_examples, pytest.mark.anvil]


def _lipids() -> dict[str, Any]:
    return example("Bundle-lipids.json")


def _entry(bundle: dict[str, Any], n: int) -> dict[str, Any]:
    resource: dict[str, Any] = copy.deepcopy(bundle["entry"][n]["resource"])
    return resource


def _submit(api: Api, resource: dict[str, Any], hospital: str = HID, **params: str) -> list[dict[str, Any]]:
    got = post(api, "fhir", json.dumps(resource).encode(), FHIR, hospital=hospital, params=params or None)
    assert got.status_code == 202, got.text
    results: list[dict[str, Any]] = got.json()["results"]
    return results


def _checks(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in answer["checks"]}


def test_a_report_and_an_observation_verify_however_they_are_grouped(chain_api: Api) -> None:
    api = chain_api
    bundle = _lipids()
    [report] = _submit(api, bundle)
    assert report["result_id"] == "5234342"
    api.anchor_all()

    whole = ok(api, bundle)
    assert whole["verdict"] == "authentic"
    alone = ok(api, _entry(bundle, 0))  # the report as its server returns it: references, no values
    assert alone["verdict"] == "authentic", alone
    assert (alone["result_id"], alone["version"]) == ("5234342", 1)
    assert "are committed inside it" in _checks(alone)["grouping"]["detail"]
    cholesterol = _entry(bundle, 1)  # an Observation alone: no time of its own, committed inside the report
    one = ok(api, cholesterol)
    assert one["verdict"] == "authentic", one
    assert one["result_id"] == "5234342"
    assert "inside report 5234342 version 1" in _checks(one)["grouping"]["detail"]
    # A value changed is still caught, alone or in the report.
    changed = copy.deepcopy(cholesterol)
    changed["valueQuantity"]["value"] = 9.9
    caught = ok(api, changed)
    assert (caught["verdict"], caught["failed_check"]) == ("tampered", "content")
    changed_bundle = copy.deepcopy(bundle)
    changed_bundle["entry"][1]["resource"] = changed
    assert ok(api, changed_bundle)["verdict"] == "tampered"
    report_changed = _entry(bundle, 0)
    report_changed["conclusion"] = "Normal"
    assert ok(api, report_changed)["verdict"] == "tampered"


def test_a_report_committed_alone_held_with_its_observations(chain_api: Api) -> None:
    """The reverse: the hospital committed the report alone. Held in a Bundle with Observations the ledger never
    received, their values cannot be checked: cannot-match, not tampered. Committed as results of their own
    (here with the times they lack in the example), they are checked and the report verifies."""
    api = chain_api
    bundle = _lipids()
    _submit(api, _entry(bundle, 0), hospital="qd-002")
    timed = copy.deepcopy(bundle)
    for entry in timed["entry"][1:]:
        entry["resource"]["effectiveDateTime"] = "2011-03-04T08:30:00+11:00"
    api.anchor_all()
    answer = check(api, bundle, hospital_id="qd-002")
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert (got["verdict"], got["failed_check"]) == ("cannot-match", "grouping"), got
    assert "4 of the Observations you hold" in _checks(got)["grouping"]["detail"]
    assert got["recognition"]["decision"] == "reorder"
    for entry in timed["entry"][1:]:
        _submit(api, entry["resource"], hospital="qd-002")
    api.anchor_all()
    got = check(api, timed, hospital_id="qd-002").json()
    assert got["verdict"] == "authentic", got
    assert "each of its 4 Observation(s) matches" in _checks(got)["grouping"]["detail"]
    one_changed = copy.deepcopy(timed)
    one_changed["entry"][2]["resource"]["valueQuantity"]["value"] = 0.1
    assert check(api, one_changed, hospital_id="qd-002").json()["verdict"] == "tampered"


def test_equal_instants_and_date_only_times_are_the_same_result(chain_api: Api) -> None:
    api = chain_api
    glucose = example("Observation-f001.json")
    assert glucose["effectivePeriod"]["start"] == "2013-04-02T09:30:10+01:00"
    _submit(api, glucose)
    dated = copy.deepcopy(glucose)
    dated["identifier"][0]["value"] = "6324"
    dated["effectivePeriod"] = {"start": "2013-04-02"}  # a date only, which the hospital read in Amsterdam
    _submit(api, dated, tz="Europe/Amsterdam")
    api.anchor_all()

    utc = copy.deepcopy(glucose)
    utc["effectivePeriod"] = {"start": "2013-04-02T08:30:10Z"}
    utc["issued"] = "2013-04-03T14:30:10.000Z"
    same = ok(api, utc)
    assert same["verdict"] == "authentic", same
    assert (same["result_id"], same["version"]) == ("6323", 1)
    later = copy.deepcopy(glucose)
    later["issued"] = "2013-04-03T14:30:11Z"  # another instant: not the same result
    assert ok(api, later)["verdict"] == "tampered"
    # The doctor does not know the hospital's zone: without tz the date is read in UTC, and still matches.
    for tz in (None, "UTC", "Asia/Shanghai"):
        answer = ok(api, dated, **({"tz": tz} if tz else {}))
        assert answer["verdict"] == "authentic", (tz, answer)
    other_day = copy.deepcopy(dated)
    other_day["effectivePeriod"] = {"start": "2013-04-01"}
    assert ok(api, other_day)["verdict"] == "tampered"
