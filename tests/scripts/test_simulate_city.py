"""The city simulation (scripts/simulate_city.py) at a tiny scale against a real node: its numbers must add up,
the node must decide every scenario as the programme's rules say, and a seed must reproduce every count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.anvil

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "simulate_city.py"
#: Raised fate rates so that 120 results hold every scenario; the seed fixes which.
ARGS = ["--hospitals", "4", "--results-per-hospital", "30", "--verifications", "200", "--pool", "120",
        "--seed", "7", "--amend-rate", "0.1", "--revoke-rate", "0.1", "--expire-rate", "0.2", "--json"]
#: Timings and the node's exit status: everything else must be identical for the same seed.
TIMING = {"verify_p99_ms", "verify_p50_ms", "decide_p50_ms", "decide_p99_ms", "wall_s", "verify_rate_per_s",
          "ingest_per_s", "phases_s", "machine_busy", "cpu_ms_per_verification", "cpu_bound_rate_per_s",
          "unexpected_examples", "error_examples", "core_speed"}


@pytest.fixture(scope="module")
def runs() -> list[dict[str, Any]]:
    """Two runs with the same seed, side by side (each starts its own node on its own port and data dir)."""
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), *ARGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=240)
        assert p.returncode == 0, stderr[-3000:]
        out.append(json.loads(stdout))
    return out


def test_every_submitted_version_is_anchored(runs: list[dict[str, Any]]) -> None:
    r = runs[0]
    fates = r["fates"]
    assert r["result_ids"] == 4 * 30 == sum(fates.values())
    assert r["results"] == r["result_ids"] + fates["amended"] + fates["revoked"]  # version 2 of each
    assert r["anchored"] == r["results"]
    assert sum(r["categories"].values()) == r["result_ids"]


def test_every_verification_got_a_verdict(runs: list[dict[str, Any]]) -> None:
    r = runs[0]
    assert r["errors"] == 0, r["error_examples"]
    assert r["verifications"] == 200 == sum(r["verdicts"].values()) == sum(r["decisions"].values())
    assert sum(r["forms"].values()) == 200 and r["forms"]["record"] > 0 and r["forms"]["receipt"] > 0
    assert sum(s["verifications"] for s in r["by_scenario"].values()) == 200
    assert r["unexpected"] == 0, r["unexpected_examples"]  # the node decided every case as predicted


def test_revoked_and_expired_results(runs: list[dict[str, Any]]) -> None:
    scenarios = runs[0]["by_scenario"]
    revoked = scenarios["revoked"]
    assert revoked["verifications"] > 0
    assert revoked["verdicts"] == {"revoked": revoked["verifications"]}
    assert revoked["reasons"]["revoked"] == revoked["verifications"]
    expired = scenarios["expired"]
    assert expired["verifications"] > 0
    assert expired["decisions"] == {"reorder": expired["verifications"]}
    assert expired["reasons"]["too-old"] == expired["verifications"]
    stale = scenarios["amended-superseded"]
    assert stale["verifications"] > 0 and stale["reasons"]["superseded"] == stale["verifications"]
    assert stale["verdicts"] == {"authentic": stale["verifications"]}


def test_recognition_rate_is_recognised_over_authentic(runs: list[dict[str, Any]]) -> None:
    r = runs[0]
    assert r["authentic"] == r["verdicts"]["authentic"]
    assert r["recognised"] == r["decisions"]["recognise"] > 0
    assert r["recognition_rate"] == round(r["recognised"] / r["authentic"], 4)
    assert r["recognised"] <= r["authentic"] < r["verifications"]  # revoked ones are not authentic
    assert r["reorders_avoided"] >= r["recognised"]  # at least one item per recognised result


def test_same_seed_same_counts(runs: list[dict[str, Any]]) -> None:
    first, second = ({k: v for k, v in r.items() if k not in TIMING} for r in runs)
    assert first == second


def test_decisions_are_recorded_and_the_kpis_match_the_api(runs: list[dict[str, Any]]) -> None:
    r = runs[0]
    k, c = r["kpis"], r["kpi_counts"]
    assert set(k) == {"retrieval_rate", "recognition_rate", "tests_avoided", "money_saved", "matches_api"}
    assert k["matches_api"] is True  # GET /v1/kpis says exactly what the simulation sent
    assert c["errors"] == 0, c["error_examples"]
    assert c["decisions"] == r["verifications"] == c["retrieved"] <= c["encounters"]  # one per verification
    assert c["recognisable"] == r["recognised"]  # the programme's "recognise" verdicts
    assert c["recognised"] + c["reordered"] == c["decisions"] and sum(c["reorder_reasons"].values()) == c["reordered"]
    assert k["retrieval_rate"] == round(c["retrieved"] / c["encounters"], 6)
    assert k["recognition_rate"] == round(c["recognised"] / c["recognisable"], 6)
    assert 0 < k["tests_avoided"] <= r["reorders_avoided"] and k["money_saved"] > 0
    # Every decision and encounter is anchored, and the KPI tables agree with the anchored records.
    assert c["anchored_records"] == c["decisions"] + c["encounters"]
    assert r["decision_audit"] == {"ok": True, "records": c["decisions"] + c["encounters"], "problems": 0,
                                   "chain_checked": True}


def test_the_run_says_how_fast_its_cores_were(runs: list[dict[str, Any]]) -> None:
    """scripts/core_speed.py sampled during the verifications: the probe's spread, and its windows' rates add up
    to about the phase's rate (the windows cover the phase but its first and last seconds)."""
    speed = runs[0]["core_speed"]
    verify, run = speed["verify"], speed["run"]
    assert run["samples"] >= verify["samples"] >= 1
    assert 0 < run["probe_ms_min"] <= verify["probe_ms_min"] <= verify["probe_ms_median"] <= verify["probe_ms_max"]
