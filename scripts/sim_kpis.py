"""The city simulation's doctors after a verification: they record a decision (``POST /v1/decisions``) and their
hospitals report the encounter (``POST /v1/encounters``); the simulation counts what it sent and compares its
own KPI figures with ``GET /v1/kpis`` (docs/kpis.md). Kept apart from scripts/simulate_city.py, which calls it.

Doctors' behaviour (seeded per verification, so every count is reproducible):

* the programme says ``recognise``: the doctor recognises the result with probability ``RECOGNISE``; otherwise she
  reorders it with a reason drawn from ``REASONS`` (``other`` with a detail);
* the programme says ``reorder``: she reorders, giving the reason that matches the programme's when there is one
  (``too-old`` → ``result-too-old``, ``not-in-catalogue`` → ``not-in-catalogue``), none otherwise;
* every verified result is a retrieved encounter of the doctor's hospital; with probability ``UNRETRIEVED`` the
  same hospital also saw a patient with recognisable results that nobody retrieved.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scripts import httpload

RECOGNISE = 0.96
UNRETRIEVED = 0.03
REASONS = ("condition-changed", "quality-doubt", "emergency", "patient-request", "other")
#: The programme's reason → the doctor's, for reorders the programme itself asked for.
RULE_REASON = {"too-old": "result-too-old", "not-in-catalogue": "not-in-catalogue"}
FLUSH = 500  # encounters per report request (the API takes up to 1,000)


@dataclass
class KpiTally:
    """What the doctors recorded and their hospitals reported, as the simulation counts it."""

    decisions: int = 0
    recognisable: int = 0
    recognised: int = 0
    reordered: int = 0
    tests: int = 0
    money_minor: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    encounters: int = 0
    retrieved: int = 0
    records: Counter[int] = field(default_factory=Counter)  # per doctor's hospital index: decisions + encounters
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)

    def merge(self, other: KpiTally) -> None:
        for name in ("decisions", "recognisable", "recognised", "reordered", "tests", "money_minor", "encounters",
                     "retrieved", "errors"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.reasons.update(other.reasons)
        self.records.update(other.records)
        self.error_examples = (self.error_examples + other.error_examples)[:5]

    def fail(self, what: str) -> None:
        self.errors += 1
        if len(self.error_examples) < 5:
            self.error_examples.append(what)


def choose(answer: dict[str, Any], u: float) -> dict[str, Any]:
    """The decision body (without the verification id) a doctor sends after ``answer``."""
    recognition = answer.get("recognition") or {}
    if recognition.get("decision") == "recognise":
        if u < RECOGNISE:
            return {"decision": "recognised"}
        reason = REASONS[int((u - RECOGNISE) / (1 - RECOGNISE) * len(REASONS)) % len(REASONS)]
        return {"decision": "reordered", "reason": reason,
                **({"detail": "simulated: clinical judgement"} if reason == "other" else {})}
    codes = [r["code"] for r in recognition.get("reasons", [])]
    reason = next((RULE_REASON[c] for c in codes if c in RULE_REASON), None)
    return {"decision": "reordered", **({"reason": reason} if reason else {})}


async def decide(client: httpload.Conn, tally: KpiTally, answer: dict[str, Any], token: str, u: float,
                 hospital: int, prices: dict[str, int]) -> bool:
    """Record the doctor's decision; count it as sent when the node took it (201, or 200 for a retry)."""
    body = {"verification_id": answer["verification_id"], **choose(answer, u)}
    for _ in range(3):
        try:
            r = await client.post("/decisions", json=body, headers={"authorization": f"Bearer {token}"})
        except httpload.TRANSPORT_ERRORS as exc:
            problem = f"{type(exc).__name__}: {exc}"
            continue
        if r.status_code in (200, 201):
            break
        problem = f"decision {r.status_code} {r.text[:200]}"
    else:
        tally.fail(problem)
        return False
    recognition = answer.get("recognition") or {}
    tally.decisions += 1
    tally.records[hospital] += 1
    tally.recognisable += recognition.get("decision") == "recognise"
    if body["decision"] == "recognised":
        items = recognition.get("items") or []
        tally.recognised += 1
        tally.tests += len(items)
        tally.money_minor += sum(prices.get(i["code"], 0) for i in items)
    else:
        tally.reordered += 1
        tally.reasons[body.get("reason", "unspecified")] += 1
    return True


def encounters(answer: dict[str, Any], index: int, seed: int, u: float,
               patient: dict[str, str]) -> list[dict[str, Any]]:
    """The encounters a verification stands for: the retrieved one, and now and then one nobody retrieved."""
    categories = sorted({i["category"] for i in (answer.get("recognition") or {}).get("items") or []})
    seen = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    out = [{"encounter_id": f"sim{seed}-{index}", "patient": patient, "seen_at": seen, "retrieved": True,
            "categories": categories}]
    if u < UNRETRIEVED:
        out.append({"encounter_id": f"sim{seed}-{index}-n", "patient": {**patient, "value": patient["value"] + "-b"},
                    "seen_at": seen, "retrieved": False, "categories": categories})
    return out


async def report(client: httpload.Conn, tally: KpiTally, hospital_id: str, hospital: int, token: str,
                 items: list[dict[str, Any]]) -> None:
    """One encounter report of a hospital (idempotent: a retry of a report that arrived is all duplicates)."""
    for _ in range(3):
        try:
            r = await client.post("/encounters", json={"hospital_id": hospital_id, "encounters": items},
                                  headers={"authorization": f"Bearer {token}"})
        except httpload.TRANSPORT_ERRORS as exc:
            problem = f"{type(exc).__name__}: {exc}"
            continue
        if r.status_code == 202:
            tally.encounters += len(items)
            tally.retrieved += sum(1 for i in items if i["retrieved"])
            tally.records[hospital] += len(items)
            return
        problem = f"encounters {r.status_code} {r.text[:200]}"
    tally.fail(problem)


def figures(t: KpiTally) -> dict[str, Any]:
    """The simulation's own KPI figures, rounded as the API rounds them (6 decimals, money in currency units)."""
    return {"retrieval_rate": round(t.retrieved / t.encounters, 6) if t.encounters else None,
            "recognition_rate": round(t.recognised / t.recognisable, 6) if t.recognisable else None,
            "tests_avoided": t.tests, "money_saved": t.money_minor / 100}


def matches(mine: dict[str, Any], report_: dict[str, Any]) -> bool:
    """Whether ``GET /v1/kpis`` says exactly what the simulation sent (totals of the period)."""
    now = report_["totals"]["current"]
    theirs = {"retrieval_rate": now["retrieval_rate"]["value"], "recognition_rate": now["recognition_rate"]["value"],
              "tests_avoided": now["tests_avoided"], "money_saved": now["money_saved"]}
    return theirs == mine


def prices(catalogue: dict[str, Any]) -> dict[str, int]:
    """Item code → price in minor units, from ``GET /v1/catalogue``."""
    return {i["code"]: round(i["price"] * 100) for i in catalogue["items"] if i.get("price") is not None}
