"""City simulation: a regional mutual-recognition programme (Guangzhou's 270 institutions, Qingdao's 32
hospitals and 1.16 M retrievals) played against a REAL node, end to end. Not a test; a reproducible scenario.

Usage:  python scripts/simulate_city.py [--hospitals 12] [--results-per-hospital 200] [--verifications 2000]
        [--db postgresql+psycopg://postgres@127.0.0.1:5432/test] [--seed 1] [--json]

What happens, in order (a rich progress bar on stderr for each phase):

1. ``mrledger serve`` starts as a subprocess on a temp data dir and a free port, with its managed anvil: SQLite,
   or with ``--db`` a fresh PostgreSQL schema (``?options=-csearch_path%3D<schema>``, dropped afterwards).
2. The authority registers every hospital (``POST /v1/hospitals``) and grants eligibility per catalogue category
   (``PUT /v1/hospitals/{hid}/eligibility/{category}``). Hospitals have tiers: tertiary ones perform all six
   categories, secondary ones rarely MR, community centres no CT/MR. A hospital is eligible for a category it
   performs unless it failed that category's external quality assessment (``--eqa-fail``, 7 %), so most
   hospitals are eligible for most categories and a minority is not for some.
3. Each hospital's LIS/RIS submits its results through ``POST /v1/hospitals/{hid}/results`` in 1,000-record
   requests: clinical biochemistry, immunology and hematology by catalogue LOINC codes with UCUM units,
   reference ranges and plausible values (single tests and panels; a few tests outside the catalogue), and
   DX/CR, CT and MR imaging studies with modality and body part. Each result has one fate: current; amended
   (version 2, status ``corrected``, superseding 1); entered-in-error (version 2 revokes 1); or expired (issued
   so long ago that its catalogue window has passed). Corrections and revocations are sent after the
   originals, as a second pass, like a LIS correcting results later.
4. The sealer batches, the worker anchors; the run waits until the audit API
   (``GET /v1/audit/hospitals/{hid}/batches``) shows every submitted version in a confirmed batch, then mines
   12 empty blocks (a real chain keeps producing blocks; the managed anvil mines only on transactions).
5. A pool of ``--pool`` patient-held receipts is fetched from the node (each hospital's own token; version 1
   of half the amended results, i.e. a patient holding the superseded report). Doctors at OTHER hospitals
   then verify from a separate process pool (``--workers`` processes x ``--concurrency`` connections, closed
   loop): ``POST /v1/verify`` with the receipt form (no token: anyone holding a receipt may check it) or, for
   ``--record-form`` of them, the record form with the verifying doctor's token. Verifications draw receipts
   from the pool with replacement, so a receipt is verified many times, as a patient shows one result to
   several doctors.

Definitions of the printed numbers (``--json``):

* ``results``: result versions accepted (originals + corrections + revocations); ``result_ids``: distinct
  results. ``anchored``: versions in confirmed batches according to the audit API; must equal ``results``.
* ``verifications``: requests answered 200 (``errors`` counts the rest after 3 tries); each has a verdict.
* ``authentic``: verdict ``authentic``. ``recognised``: recognition decision ``recognise`` (which implies
  authentic). ``recognition_rate`` = recognised / authentic: of the genuine, current-or-superseded results
  shown to a doctor, the share the doctor may accept instead of repeating the test.
* ``reorders_avoided``: catalogue items (tests and exams) not repeated: per recognised verification, the
  number of items its recognition names (one for a single test, a study or the CBC panel item; one per test
  for a lipid or liver panel made of catalogue tests). Every recognised verification avoids at least one.
* ``verify_p99_ms``: 99th percentile of request latency (send to full response, closed loop, 1 % buckets).
  ``verify_rate_per_s``: verifications per second of the verification phase. ``wall_s``: the whole run,
  server start to shutdown. ``ingest_per_s``: versions accepted per second of the two submission passes.
  ``decide_p50_ms``/``decide_p99_ms``: the same for the decision that follows each verification (with
  ``--decisions``); a loop's time per verification is about the two together, so with ``concurrency`` (processes
  x connections) loops the rate is about concurrency / (verify + decide latency). ``api_processes``: the node's
  ``MRL_API_PROCESSES`` (``--api-processes``, default one per core: the production layout, docs/scaling.md).
* ``machine_busy``: the share of the machine's CPU (all cores, every process) busy during the verification
  phase; ``cpu_ms_per_verification``: those busy CPU-ms per verification (with its decision and encounter share:
  node, PostgreSQL, anvil and the generator together); ``cpu_bound_rate_per_s`` = cores / that: the rate at which
  this machine's CPU would be the limit. A run on a shared machine counts its neighbours too.
* ``kpis`` (docs/kpis.md; doctors' behaviour in scripts/sim_kpis.py): ``retrieval_rate`` = retrieved /
  encounters the doctors' hospitals reported; ``recognition_rate`` = recognised / decisions on results the
  programme recognised (post-retrieval recognition rate); ``tests_avoided``: catalogue items of recognised
  results; ``money_saved``: their catalogue prices (CNY); ``matches_api``: true only if these four equal what
  ``GET /v1/kpis`` returns for the run's days, after every decision and encounter is in a confirmed batch.
  ``kpi_counts``: what was sent; ``decision_audit``: the audit job (``POST /v1/audit/decisions/jobs``, polled:
  KPI tables vs anchors).
* ``by_scenario``: what each kind of receipt got (current, amended-current, amended-superseded, revoked,
  expired, not-in-catalogue). ``unexpected``: verifications whose verdict or set of reasons differs from what
  the simulation itself predicts from the hospital's eligibility, the catalogue and the result's fate; 0 means
  the node decided every case as the programme's rules say.

Reproducibility: ``--seed`` fixes every random choice (hospitals, eligibility, categories, tests, values, fates,
the receipt pool, which receipt each verification uses, its form and its doctor's hospital; the verification
schedule is split into 1,000-request chunks with their own seeded generators, so the counts do not depend on
``--workers`` either). Salts are the node's and times are relative to the start of the run, so leaves and
receipts differ between runs, but every count (everything except timings, rates and latencies) is identical
for the same seed and arguments.

Memory: nothing grows with ``--verifications``. Records are generated per 1,000-record chunk from a seeded
generator (and generated again for the correction pass rather than kept); only the receipt pool (``--pool``
receipts) is held, and latencies go into a fixed histogram. ``--hospitals 32 --verifications 1160000``
replays Qingdao's 1.16 M retrievals in bounded memory; its wall time is dominated by the verification rate
this machine sustains (see the docstring of ``_verify_worker``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import queue
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import zip_longest
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mrledger.node.settings import Settings  # noqa: E402
from scripts import httpload, sim_kpis  # noqa: E402
from scripts.bench_api import Server  # noqa: E402

CHUNK = 1000  # records per submission request (the API's maximum) and verifications per seeded chunk
FINAL_DEPTH = 12  # blocks mined after anchoring (mrledger.anchoring.chain.FINAL_DEPTH: the node caches final blocks)
LOINC = "http://loinc.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
SNOMED = "http://snomed.info/sct"
CATEGORIES = ("clinical-biochemistry", "clinical-immunology", "clinical-hematology", "radiography", "ct", "mr")
#: Share of each category in a hospital's output (re-weighted over the categories it performs).
MIX = {"clinical-biochemistry": 0.38, "clinical-hematology": 0.27, "clinical-immunology": 0.15,
       "radiography": 0.11, "ct": 0.06, "mr": 0.03}
#: (share of hospitals, categories performed; MR in secondary hospitals only with probability 0.4).
TIERS = {"tertiary": (0.35, CATEGORIES), "secondary": (0.5, CATEGORIES),
         "community": (0.15, CATEGORIES[:4])}
SCENARIOS = ("current", "amended-current", "amended-superseded", "revoked", "expired", "not-in-catalogue")

# -------------------------------------------------------------------------------- what hospitals measure


@dataclass(frozen=True, slots=True)
class Test:
    """A quantitative lab test (value drawn around its reference range) or, with ``qual``, a qualitative one
    (negative, positive with probability ``high``)."""

    loinc: str
    display: str
    unit: str = ""
    low: float = 0.0
    high: float = 0.0
    decimals: int = 1
    qual: bool = False


T = Test
# Tests that appear in more than one panel below, defined once.
ALT = T("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L", 9, 50, 0)
AST = T("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L", 15, 40, 0)
POTASSIUM = T("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.3)
SODIUM = T("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 137, 147, 0)
WBC = T("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*9/L", 3.5, 9.5, 2)
BIOCHEMISTRY = [
    T("14749-6", "Glucose [Moles/volume] in Serum or Plasma", "mmol/L", 3.9, 6.1),
    T("14682-9", "Creatinine [Moles/volume] in Serum or Plasma", "umol/L", 57, 111, 0),
    T("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", 7, 20, 0),
    T("14933-6", "Urate [Moles/volume] in Serum or Plasma", "umol/L", 208, 428, 0),
    ALT,
    AST,
    POTASSIUM,
    SODIUM,
    T("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.0, 6.0),
    T("2157-6", "Creatine kinase [Enzymatic activity/volume] in Serum or Plasma", "U/L", 50, 310, 0),
    T("17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL", 8.6, 10.3),
]
LIPIDS = [T("14647-2", "Cholesterol [Moles/volume] in Serum or Plasma", "mmol/L", 2.8, 5.2, 2),
          T("14927-8", "Triglyceride [Moles/volume] in Serum or Plasma", "mmol/L", 0.45, 1.7, 2),
          T("14646-4", "Cholesterol in HDL [Moles/volume] in Serum or Plasma", "mmol/L", 1.04, 1.55, 2),
          T("22748-8", "Cholesterol in LDL [Moles/volume] in Serum or Plasma", "mmol/L", 1.5, 3.4, 2)]
LIVER = [ALT,
         AST,
         T("6768-6", "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma", "U/L", 45, 125, 0),
         T("2324-2", "Gamma glutamyl transferase [Enzymatic activity/volume] in Serum or Plasma", "U/L", 10, 60, 0),
         T("14631-6", "Bilirubin.total [Moles/volume] in Serum or Plasma", "umol/L", 3.4, 20.5),
         T("2885-2", "Protein [Mass/volume] in Serum or Plasma", "g/L", 65, 85, 0),
         T("1751-7", "Albumin [Mass/volume] in Serum or Plasma", "g/L", 40, 55, 0)]
ELECTROLYTES = [POTASSIUM,
                SODIUM,
                T("2075-0", "Chloride [Moles/volume] in Serum or Plasma", "mmol/L", 99, 110, 0)]
IMMUNOLOGY = [
    T("5196-1", "Hepatitis B virus surface Ag [Presence] in Serum or Plasma by Immunoassay", high=0.06, qual=True),
    T("16128-1", "Hepatitis C virus Ab [Presence] in Serum", high=0.01, qual=True),
    T("7918-6", "HIV 1+2 Ab [Presence] in Serum", high=0.002, qual=True),
    T("20507-0", "Reagin Ab [Presence] in Serum by RPR", high=0.005, qual=True),
    T("16935-9", "Hepatitis B virus surface Ab [Units/volume] in Serum", "m[IU]/mL", 10, 1000, 0),
    T("1988-5", "C reactive protein [Mass/volume] in Serum or Plasma", "mg/L", 0.0, 10.0),
    T("1834-1", "Alpha-1-Fetoprotein [Mass/volume] in Serum or Plasma", "ng/mL", 0.0, 7.0, 2),
    T("2039-6", "Carcinoembryonic Ag [Mass/volume] in Serum or Plasma", "ng/mL", 0.0, 5.0, 2),
    T("2857-1", "Prostate specific Ag [Mass/volume] in Serum or Plasma", "ng/mL", 0.0, 4.0, 2),
    T("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", "m[IU]/L", 0.27, 4.2, 2),
    T("3024-7", "Thyroxine (T4) free [Mass/volume] in Serum or Plasma", "ng/dL", 0.93, 1.7, 2),
]
HEMATOLOGY = [
    T("718-7", "Hemoglobin [Mass/volume] in Blood", "g/L", 130, 175, 0),
    WBC,
    T("777-3", "Platelets [#/volume] in Blood by Automated count", "10*9/L", 125, 350, 0),
    T("5902-2", "Prothrombin time (PT)", "s", 11, 14.5),
    T("6301-6", "INR in Platelet poor plasma by Coagulation assay", "{INR}", 0.8, 1.2, 2),
    T("14979-9", "aPTT in Platelet poor plasma by Coagulation assay", "s", 25, 37),
    T("3255-7", "Fibrinogen [Mass/volume] in Platelet poor plasma by Coagulation assay", "g/L", 2, 4, 2),
]
CBC = [WBC,
       T("789-8", "Erythrocytes [#/volume] in Blood by Automated count", "10*12/L", 4.3, 5.8, 2),
       T("718-7", "Hemoglobin [Mass/volume] in Blood", "g/L", 130, 175, 0),
       T("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "%", 40, 50),
       T("787-2", "MCV [Entitic volume] by Automated count", "fL", 82, 100),
       T("785-6", "MCH [Entitic mass] by Automated count", "pg", 27, 34),
       T("786-4", "MCHC [Mass/volume] by Automated count", "g/L", 316, 354, 0),
       T("777-3", "Platelets [#/volume] in Blood by Automated count", "10*9/L", 125, 350, 0),
       T("751-8", "Neutrophils [#/volume] in Blood by Automated count", "10*9/L", 1.8, 6.3, 2),
       T("731-0", "Lymphocytes [#/volume] in Blood by Automated count", "10*9/L", 1.1, 3.2, 2)]
#: Tests hospitals run that the default catalogue does not recognise (a programme never covers everything).
OUTSIDE = {"clinical-biochemistry": [T("2276-4", "Ferritin [Mass/volume] in Serum or Plasma", "ng/mL", 30, 400, 0),
                                     T("1989-3", "25-Hydroxyvitamin D3+D2 [Mass/volume] in Serum or Plasma",
                                       "ng/mL", 30, 100, 0)],
           "clinical-immunology": [T("2458-8", "IgA [Mass/volume] in Serum", "g/L", 0.7, 4.0, 2)],
           "clinical-hematology": [T("4537-7", "Erythrocyte sedimentation rate by Westergren method", "mm/h", 0, 15,
                                     0)]}
#: Lab orders per category: (weight, record code and display, observations). A panel's own code need not be a
#: catalogue item: it is recognised when every observation is (docs/recognition.md).
ORDERS: dict[str, list[tuple[float, tuple[str, str] | None, list[Test]]]] = {
    "clinical-biochemistry": [(0.55, None, BIOCHEMISTRY), (0.2, ("24331-1", "Lipid 1996 panel - Serum or Plasma"),
                                                           LIPIDS),
                              (0.15, ("24325-3", "Hepatic function 2000 panel - Serum or Plasma"), LIVER),
                              (0.1, ("24326-1", "Electrolytes 1998 panel - Serum or Plasma"), ELECTROLYTES)],
    "clinical-immunology": [(1.0, None, IMMUNOLOGY)],
    "clinical-hematology": [(0.45, ("58410-2", "CBC panel - Blood by Automated count"), CBC), (0.55, None, HEMATOLOGY)],
}
OUTSIDE_SHARE = 0.04  # of lab results: a test outside the catalogue

#: Imaging exams per category: (weight, modalities with weights, BodyPartExamined, catalogue item id or None).
EXAMS: dict[str, list[tuple[float, tuple[tuple[str, float], ...], str, str | None]]] = {
    "radiography": [(0.62, (("DX", 0.8), ("CR", 0.2)), "CHEST", "xr-chest"),
                    (0.12, (("DX", 1.0),), "LSPINE", "xr-spine"), (0.1, (("DX", 1.0),), "KNEE", "xr-knee"),
                    (0.08, (("DX", 1.0),), "PELVIS", "xr-pelvis"), (0.05, (("DX", 1.0),), "HAND", None),
                    (0.03, (("CR", 1.0),), "ANKLE", None)],
    "ct": [(0.35, (("CT", 1.0),), "HEAD", "ct-head"), (0.35, (("CT", 1.0),), "CHEST", "ct-chest"),
           (0.2, (("CT", 1.0),), "ABDOMEN", "ct-abdomen"), (0.1, (("CT", 1.0),), "LSPINE", "ct-spine")],
    "mr": [(0.35, (("MR", 1.0),), "BRAIN", "mr-head"), (0.3, (("MR", 1.0),), "LSPINE", "mr-spine"),
           (0.2, (("MR", 1.0),), "KNEE", "mr-knee"), (0.15, (("MR", 1.0),), "ABDOMEN", "mr-abdomen")],
}
FINDINGS = ("No acute abnormality.", "Findings within normal limits.", "Mild degenerative change.",
            "Small nodule, follow-up advised.", "Findings as described; clinical correlation advised.")
INSTANCES = {"DX": (1, 2), "CR": (1, 2), "CT": (8, 24), "MR": (8, 24)}  # fingerprints per study (kept small)
MODALITY_DISPLAY = {"DX": "Digital Radiography", "CR": "Computed Radiography", "CT": "Computed Tomography",
                    "MR": "Magnetic Resonance"}


# -------------------------------------------------------------------------------- the city (pure, seeded)


@dataclass(frozen=True, slots=True)
class Hospital:
    id: str
    name: str
    tier: str
    performs: tuple[str, ...]
    eligible: frozenset[str]


@dataclass(frozen=True, slots=True)
class Catalogue:
    """The node's catalogue as ``GET /v1/catalogue`` serves it: (category, window days) per item."""

    lab: dict[str, tuple[str, int]]
    imaging: dict[str, tuple[str, int]]


@dataclass(frozen=True, slots=True)
class Rates:
    amend: float
    revoke: float
    expire: float
    eqa_fail: float


@dataclass(slots=True)
class Result:
    """One result of a chunk: its versions as JSON objects, its fate and what the programme should say."""

    index: int
    category: str
    fate: str  # current | amended | revoked | expired
    v1: dict[str, Any]
    v2: dict[str, Any] | None
    items: tuple[tuple[str, str], ...]  # (item code, item category) the catalogue matches


def plan_city(seed: int, count: int, eqa_fail: float) -> list[Hospital]:
    """The hospitals, their tiers, what they perform and what they are eligible for."""
    rng = random.Random(f"{seed}:city")
    out = []
    for k in range(1, count + 1):
        tier = rng.choices(list(TIERS), [w for w, _ in TIERS.values()])[0]
        performs = tuple(c for c in TIERS[tier][1] if not (tier == "secondary" and c == "mr" and rng.random() > 0.4))
        eligible = frozenset(c for c in performs if rng.random() >= eqa_fail)
        kind = {"tertiary": "People's Hospital", "secondary": "District Hospital",
                "community": "Community Health Centre"}[tier]
        out.append(Hospital(f"h-{k:03d}", f"Simulated {kind} No. {k}", tier, performs, eligible))
    return out


def _value(rng: random.Random, t: Test) -> dict[str, Any]:
    code = {"system": LOINC, "code": t.loinc, "display": t.display}
    if t.qual:
        positive = rng.random() < t.high
        answer = {"system": SNOMED, "code": "10828004", "display": "Positive"} if positive else \
            {"system": SNOMED, "code": "260385009", "display": "Negative"}
        return {"code": code, "value": answer, "reference_range": {"text": "Negative"},
                "interpretation": "A" if positive else "N"}
    r = rng.random()
    span = t.high - t.low
    if r < 0.08 and t.low > 0:
        v, flag = rng.uniform(t.low * 0.7, t.low), "L"
    elif r < 0.2:
        v, flag = rng.uniform(t.high, t.high + span * 0.8), "H"
    else:
        v, flag = rng.uniform(t.low, t.high), "N"
    value: float | int = round(v, t.decimals) if t.decimals else round(v)
    return {"code": code, "value": value, "unit": t.unit, "reference_range": {"low": t.low, "high": t.high},
            "interpretation": flag}


def _pick(rng: random.Random, weighted: list[Any]) -> Any:
    return rng.choices(weighted, [w[0] for w in weighted])[0]


def make_chunk(seed: int, hospital: Hospital, chunk: int, per_hospital: int, now: datetime,
               catalogue: Catalogue, rates: Rates) -> list[Result]:
    """Results ``chunk * CHUNK`` .. of one hospital. Deterministic in (seed, hospital, chunk): the correction
    pass calls it again instead of keeping records in memory. ``now`` shifts times, never choices."""
    rng = random.Random(f"{seed}:results:{hospital.id}:{chunk}")
    weights = [MIX[c] for c in hospital.performs]
    patients = max(20, per_hospital // 3)
    out = []
    for i in range(chunk * CHUNK, min(per_hospital, (chunk + 1) * CHUNK)):
        category = rng.choices(hospital.performs, weights)[0]
        u = rng.random()
        fate = ("amended" if u < rates.amend else "revoked" if u < rates.amend + rates.revoke
                else "expired" if u < rates.amend + rates.revoke + rates.expire else "current")
        subject = {"system": f"urn:mrledger:sim:{hospital.id}:mrn", "value": f"SYN-{rng.randrange(patients):06d}"}
        if category in EXAMS:
            record, items, window = _imaging(rng, hospital.id, i, category, catalogue)
        else:
            record, items, window = _lab(rng, hospital.id, i, category, catalogue)
        record["subject"] = subject
        # Fresh results are at most half their window old (so they stay fresh for a long run); expired ones are
        # past it by at least a day. The windows are the node's (GET /v1/catalogue), outside ones 30 days.
        age = (window + rng.uniform(1, 2 * window)) if fate == "expired" else rng.uniform(0.05, 0.5) * window
        issued = now - timedelta(days=age)
        effective = issued - timedelta(hours=rng.uniform(0.5, 8))
        record.update(effective=_time(effective), issued=_time(issued))
        v2 = None
        if fate in ("amended", "revoked"):
            later = issued + (now - issued) * rng.uniform(0.2, 0.8)
            v2 = {**record, "version": 2, "supersedes": 1, "issued": _time(later)}
            if fate == "revoked":
                v2["status"] = "entered-in-error"
            else:
                v2["status"] = "corrected"
                v2["content"] = _corrected(rng, record["content"])
        out.append(Result(i, category, fate, record, v2, items))
    return out


def _time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lab(rng: random.Random, hid: str, i: int, category: str, catalogue: Catalogue
         ) -> tuple[dict[str, Any], tuple[tuple[str, str], ...], float]:
    if rng.random() < OUTSIDE_SHARE:
        tests, code = [rng.choice(OUTSIDE[category])], None
    else:
        _, code, pool = _pick(rng, ORDERS[category])
        tests = pool if code is not None else [rng.choice(pool)]
    observations = [_value(rng, t) for t in tests]
    coding = ({"system": LOINC, "code": code[0], "display": code[1]} if code is not None
              else dict(observations[0]["code"]))
    # The programme's rule (service/recognition.py), restated independently: the record's code if it is an item,
    # else every observation's code if all are items, else nothing.
    if coding["code"] in catalogue.lab:
        codes = [coding["code"]]
    elif all(o["code"]["code"] in catalogue.lab for o in observations):
        codes = list(dict.fromkeys(o["code"]["code"] for o in observations))
    else:
        codes = []
    items = tuple((c, catalogue.lab[c][0]) for c in codes)
    window = min((catalogue.lab[c][1] for c in codes), default=30)
    record = {"hospital_id": hid, "result_id": f"LAB-{i:07d}", "version": 1, "kind": "lab", "code": coding,
              "status": "final", "content": {"type": "observations", "observations": observations}}
    return record, items, window


def _imaging(rng: random.Random, hid: str, i: int, category: str, catalogue: Catalogue
             ) -> tuple[dict[str, Any], tuple[tuple[str, str], ...], float]:
    _, modalities, body_part, item = _pick(rng, EXAMS[category])
    modality = rng.choices([m for m, _ in modalities], [w for _, w in modalities])[0]
    lo, hi = INSTANCES[modality]
    study = f"2.25.{rng.getrandbits(100)}"
    instances = [{"sop_instance_uid": f"{study}.{n}", "pixel_sha256": f"{rng.getrandbits(256):064x}"}
                 for n in range(1, rng.randint(lo, hi) + 1)]
    known = item is not None and item in catalogue.imaging
    items = ((item, catalogue.imaging[item][0]),) if known and item else ()
    window = catalogue.imaging[item][1] if known and item else 30
    record = {"hospital_id": hid, "result_id": f"RIS-{i:07d}", "version": 1, "kind": "imaging",
              "code": {"system": DCM, "code": modality, "display": MODALITY_DISPLAY[modality]}, "status": "final",
              "content": {"type": "imaging-study", "study_instance_uid": study, "modality": modality,
                          "body_part": body_part, "accession": f"ACC{i:08d}", "instances": instances,
                          "conclusion": rng.choice(FINDINGS)}}
    return record, items, window


def _corrected(rng: random.Random, content: dict[str, Any]) -> dict[str, Any]:
    """Version 2's content: a re-measured first value, or an imaging report with an addendum."""
    if content["type"] == "imaging-study":
        return {**content, "conclusion": content["conclusion"] + " Addendum: report corrected after review."}
    first = dict(content["observations"][0])
    value = first.get("value")
    if isinstance(value, int | float) and not isinstance(value, bool):
        first["value"] = round(value * rng.uniform(1.05, 1.3), 2)
    first["note"] = "Corrected result; the previous value was reported in error."
    return {**content, "observations": [first, *content["observations"][1:]]}


def expectation(result: Result, version: int, hospital: Hospital) -> tuple[str, str, frozenset[str]]:
    """(scenario, verdict, reason codes) the programme's rules give a receipt of ``version`` of ``result``."""
    reasons: set[str] = set()
    if not result.items:
        reasons.add("not-in-catalogue")
    else:
        if result.fate == "expired":
            reasons.add("too-old")
        if {c for _, c in result.items} - hospital.eligible:
            reasons.add("hospital-not-eligible")
    if result.fate == "revoked":
        return "revoked", "revoked", frozenset(reasons | {"revoked", "superseded"})
    if result.fate == "amended":
        if version == 1:
            return "amended-superseded", "authentic", frozenset(reasons | {"superseded"})
        return "amended-current", "authentic", frozenset(reasons)
    if not result.items:
        return "not-in-catalogue", "authentic", frozenset(reasons)
    return ("expired" if result.fate == "expired" else "current"), "authentic", frozenset(reasons)


# -------------------------------------------------------------------------------- verification (own processes)


class Histogram:
    """Latencies in 1 % log buckets: constant memory for any number of requests."""

    STEP = math.log(1.01)

    def __init__(self, counts: dict[int, int] | None = None) -> None:
        self.counts: Counter[int] = Counter(counts or {})

    def add(self, ms: float) -> None:
        self.counts[round(math.log(max(ms, 0.01)) / self.STEP)] += 1

    def quantile(self, q: float) -> float | None:
        total = sum(self.counts.values())
        if not total:
            return None
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= q * total:
                return round(math.exp(bucket * self.STEP), 2)
        return None


@dataclass
class Tally:
    """What the doctors were told; every field but ``latency`` and ``errors`` is identical for a seed."""

    verdicts: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    forms: Counter[str] = field(default_factory=Counter)
    scenarios: dict[str, dict[str, Counter[str]]] = field(default_factory=dict)
    items_recognised: int = 0
    unexpected: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    latency: Histogram = field(default_factory=Histogram)
    #: Each decision's round trip (``POST /v1/decisions``), retries included: in the loop's time per verification.
    decide_latency: Histogram = field(default_factory=Histogram)
    #: Decisions recorded and encounters reported after the verifications (scripts/sim_kpis.py).
    kpi: sim_kpis.KpiTally = field(default_factory=sim_kpis.KpiTally)

    def merge(self, other: Tally) -> None:
        for mine, theirs in ((self.verdicts, other.verdicts), (self.decisions, other.decisions),
                             (self.reasons, other.reasons), (self.forms, other.forms)):
            mine.update(theirs)
        for name, counters in other.scenarios.items():
            into = self.scenarios.setdefault(name, {k: Counter() for k in counters})
            for k, c in counters.items():
                into[k].update(c)
        self.items_recognised += other.items_recognised
        self.unexpected += other.unexpected
        self.examples = (self.examples + other.examples)[:5]
        self.errors += other.errors
        self.error_examples = (self.error_examples + other.error_examples)[:5]
        self.latency.counts.update(other.latency.counts)
        self.decide_latency.counts.update(other.decide_latency.counts)
        self.kpi.merge(other.kpi)


@dataclass(frozen=True, slots=True)
class _Entry:
    receipt_body: bytes
    record_body: bytes
    hospital_index: int
    scenario: str
    verdict: str
    reasons: frozenset[str]
    label: str
    patient: dict[str, str]  # the record's subject: what the doctor's hospital reports (hashed by the node)


def _schedule(seed: int, chunk: int, count: int, pool: int, hospitals: int, record_share: float,
              issuer: list[int]) -> Iterator[tuple[int, bool, int]]:
    """Verifications ``chunk * CHUNK`` ..: (pool entry, record form?, doctor's hospital index), seeded per
    chunk so the schedule does not depend on how chunks are spread over processes."""
    rng = random.Random(f"{seed}:verify:{chunk}")
    for _ in range(chunk * CHUNK, min(count, (chunk + 1) * CHUNK)):
        entry = rng.randrange(pool)
        record_form = rng.random() < record_share
        doctor = rng.randrange(hospitals - 1)
        yield entry, record_form, doctor + (doctor >= issuer[entry])


def _verify_worker(wid: int, workers: int, api: str, pool_path: str, doctor_tokens: list[str], seed: int,
                   count: int, concurrency: int, record_share: float, progress: Any,
                   kpi: tuple[list[str], list[str], dict[str, int]] | None = None) -> None:
    """One load process: ``concurrency`` connections, closed loop (a request is sent when one is answered),
    over the chunks ``wid, wid + workers, …`` of the schedule. A separate process so the generator's CPU is
    not the parent's, and several of them so one Python event loop is not the bottleneck. On a 2-core machine
    the server, anvil and the generator share the cores, so the measured rate is a floor for a real node.

    With ``kpi`` (hospital ids, hospital tokens, item prices) each answered verification is followed by the
    doctor's decision and its encounter report (scripts/sim_kpis.py), in the same closed loop: the verification
    rate then includes that traffic, as a node in service would carry it; the latencies are the verifications'."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    entries = []
    with open(pool_path, "rb") as handle:
        for line in handle:
            e = json.loads(line)
            r = e["receipt"]
            rec = r["record"]
            entries.append(_Entry(
                json.dumps({"receipt": r}, separators=(",", ":")).encode(),
                json.dumps({"hospital_id": rec["hospital_id"], "result_id": rec["result_id"],
                            "version": rec["version"], "record": rec}, separators=(",", ":")).encode(),
                e["hospital_index"], e["scenario"], e["verdict"], frozenset(e["reasons"]),
                f"{rec['hospital_id']}/{rec['result_id']} v{rec['version']}",
                {k: v for k, v in rec["subject"].items() if k in ("system", "value")}))
    issuer = [e.hospital_index for e in entries]
    tally = Tally()
    done = 0

    async def run() -> None:
        nonlocal done
        work: asyncio.Queue[tuple[int, bool, int, int, float, float] | None] = asyncio.Queue(maxsize=concurrency * 4)
        reports: dict[int, list[dict[str, Any]]] = {}  # encounters waiting to be reported, per doctor's hospital
        conns = [httpload.Conn(api) for _ in range(concurrency)]  # one keep-alive connection per sender
        async def sender(client: httpload.Conn) -> None:
            nonlocal done
            while (item := await work.get()) is not None:
                index, record_form, doctor, number, u, v = item
                entry = entries[index]
                headers = {"content-type": "application/json"}
                if record_form:
                    headers["authorization"] = f"Bearer {doctor_tokens[doctor]}"
                body = entry.record_body if record_form else entry.receipt_body
                answer = None
                for attempt in range(3):
                    t0 = time.perf_counter()
                    try:
                        r = await client.post("/verify", content=body, headers=headers)
                    except httpload.TRANSPORT_ERRORS as exc:
                        problem = f"{type(exc).__name__}: {exc}"
                    else:
                        if r.status_code == 200:
                            tally.latency.add((time.perf_counter() - t0) * 1000)
                            answer = r.json()
                            break
                        problem = f"{r.status_code} {r.text[:200]}"
                    await asyncio.sleep(0.2 * (attempt + 1))
                done += 1
                if answer is None:
                    tally.errors += 1
                    if len(tally.error_examples) < 5:
                        tally.error_examples.append(problem)
                    continue
                _count(tally, entry, "record" if record_form else "receipt", answer)
                if kpi is not None:
                    t0 = time.perf_counter()
                    await sim_kpis.decide(client, tally.kpi, answer, doctor_tokens[doctor], u, doctor, kpi[2])
                    tally.decide_latency.add((time.perf_counter() - t0) * 1000)
                    waiting = reports.setdefault(doctor, [])
                    waiting += sim_kpis.encounters(answer, number, seed, v, entry.patient)
                    if len(waiting) >= sim_kpis.FLUSH:
                        batch, reports[doctor] = waiting, []
                        await sim_kpis.report(client, tally.kpi, kpi[0][doctor], doctor, kpi[1][doctor], batch)

        senders = [asyncio.create_task(sender(c)) for c in conns]
        for chunk in range(wid, math.ceil(count / CHUNK), workers):
            # The doctors' decisions draw from their own generator: the verification schedule stays as it was.
            decide = random.Random(f"{seed}:decide:{chunk}")
            for k, item in enumerate(_schedule(seed, chunk, count, len(entries), len(doctor_tokens), record_share,
                                               issuer)):
                await work.put((*item, chunk * CHUNK + k, decide.random(), decide.random()))
        for _ in senders:
            await work.put(None)
        await asyncio.gather(*senders)
        if kpi is not None:
            for doctor, batch in sorted(reports.items()):
                if batch:
                    await sim_kpis.report(conns[0], tally.kpi, kpi[0][doctor], doctor, kpi[1][doctor], batch)
        for c in conns:
            c.close()

    stop = threading.Event()

    def report() -> None:
        sent = 0
        while not stop.wait(0.25):
            now = done
            progress.put(("progress", wid, now - sent))
            sent = now

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        asyncio.run(run())
    finally:
        stop.set()
        reporter.join()
    progress.put(("done", wid, done, tally))


def _count(tally: Tally, entry: _Entry, form: str, answer: dict[str, Any]) -> None:
    verdict = answer["verdict"]
    recognition = answer.get("recognition") or {}
    decision = recognition.get("decision", "none")
    codes = frozenset(r["code"] for r in recognition.get("reasons", []))
    tally.verdicts[verdict] += 1
    tally.decisions[decision] += 1
    tally.reasons.update(codes)
    tally.forms[form] += 1
    s = tally.scenarios.setdefault(entry.scenario, {"verifications": Counter(), "verdicts": Counter(),
                                                    "decisions": Counter(), "reasons": Counter()})
    s["verifications"]["n"] += 1
    s["verdicts"][verdict] += 1
    s["decisions"][decision] += 1
    s["reasons"].update(codes)
    if decision == "recognise":
        tally.items_recognised += len(recognition.get("items") or [])
    if verdict != entry.verdict or codes != entry.reasons:
        tally.unexpected += 1
        if len(tally.examples) < 5:
            tally.examples.append({"result": entry.label, "form": form, "verdict": verdict,
                                   "failed_check": answer.get("failed_check"),
                                   "detail": next((c["detail"] for c in answer.get("checks", []) if not c["ok"]), None),
                                   "expected_verdict": entry.verdict, "reasons": sorted(codes),
                                   "expected_reasons": sorted(entry.reasons)})


# -------------------------------------------------------------------------------- the run


def _progress(console: Console) -> Progress:
    # Redrawn twice a second, not rich's ten: the bars share the cores with the node under test (the parent drew
    # at 15 % of a core during the verifications).
    return Progress(TextColumn("[bold]{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
                    refresh_per_second=2)


class City:
    """One simulation run against one node; phases are methods so each can be timed."""

    def __init__(self, args: argparse.Namespace, server: Server, console: Console) -> None:
        self.args, self.server, self.console = args, server, console
        self.rates = Rates(args.amend_rate, args.revoke_rate, args.expire_rate, args.eqa_fail)
        self.hospitals = plan_city(args.seed, args.hospitals, args.eqa_fail)
        self.admin = (server.data_dir / "admin-token").read_text().strip()
        self.tokens: dict[str, str] = {}
        self.doctors: list[str] = []
        self.now = datetime.now(UTC)
        self.submitted: Counter[str] = Counter()
        self.fates: Counter[str] = Counter()
        self.categories: Counter[str] = Counter()
        self.phases: dict[str, float] = {}
        #: The machine's (busy, total) CPU seconds when the verifications began and ended (``_machine_cpu``).
        self.cpu: tuple[tuple[float, float] | None, tuple[float, float] | None] = (None, None)
        self.catalogue = Catalogue({}, {})
        self.prices: dict[str, int] = {}
        self.pool_meta: dict[tuple[int, int], dict[str, Any]] = {}
        self.client = httpx.Client(base_url=server.api, timeout=120)

    def _admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"}

    def register(self, db_url: str) -> None:
        """Hospitals and eligibility through the API (admin token); tokens in the node's database."""
        cat = self.client.get("/catalogue").raise_for_status().json()
        self.prices = sim_kpis.prices(cat)
        self.catalogue = Catalogue(
            {i["code"]: (i["category"], i["window_days"]) for i in cat["items"] if i["system"] == LOINC},
            {i["code"]: (i["category"], i["window_days"]) for i in cat["items"] if i["system"] != LOINC})
        grants = sum(len(h.eligible) for h in self.hospitals)
        with _progress(self.console) as bar:
            task = bar.add_task("register hospitals", total=len(self.hospitals))
            for h in self.hospitals:
                r = self.client.post("/hospitals", json={"id": h.id, "name": h.name}, headers=self._admin())
                if r.status_code != 201:
                    raise SystemExit(f"cannot register {h.id}: {r.status_code} {r.text[:300]}")
                bar.advance(task)
            task = bar.add_task("grant eligibility", total=grants)
            for h in self.hospitals:
                for c in sorted(h.eligible):
                    r = self.client.put(f"/hospitals/{h.id}/eligibility/{c}", headers=self._admin(),
                                        json={"reference": f"EQA-{self.now.year}-{h.id}-{c}"})
                    if r.status_code != 200:
                        raise SystemExit(f"cannot grant {h.id} {c}: {r.status_code} {r.text[:300]}")
                    bar.advance(task)
        # `mrledger token create` costs a process start (~2 s) per token; 270 hospitals would spend minutes on
        # it, so hospital and doctor tokens are made in-process exactly as that command makes them. The
        # auditor's goes through the CLI (bench_api's helper) so that path is exercised too.
        from mrledger.store import Store
        from mrledger.store.access import Access

        store = Store.open(db_url, master_key=self.server.data_dir / "master.key")  # the node's, made by serve
        try:
            access = Access(store)
            self.tokens = {h.id: access.create_token(f"hospital:{h.id}", "simulated LIS/RIS upload", self.now)
                           for h in self.hospitals}
            # Affiliated doctors (doctor:<hid>): their decisions count for their hospital (docs/kpis.md).
            self.doctors = [access.create_token(f"doctor:{h.id}", f"simulated doctor at {h.id}", self.now)
                            for h in self.hospitals]
        finally:
            store.engine.dispose()
        self.auditor = self.server.token("auditor")

    def _post(self, local: threading.local, hid: str, records: list[dict[str, Any]]) -> int:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=self.server.api, timeout=300)
        body = json.dumps({"records": records}, separators=(",", ":")).encode()
        for attempt in range(3):
            try:
                r = client.post(f"/hospitals/{hid}/results", content=body,
                                headers={"Authorization": f"Bearer {self.tokens[hid]}",
                                         "content-type": "application/json"})
            except httpx.TransportError:
                time.sleep(1 + attempt)  # submission is idempotent: resending is safe
                continue
            if r.status_code != 202:
                raise SystemExit(f"submission to {hid} failed: {r.status_code} {r.text[:300]}")
            answer = r.json()
            return int(answer["accepted"]) + int(answer["duplicates"])
        raise SystemExit(f"submission to {hid} failed three times")

    def ingest(self, pool_index: dict[tuple[int, int], int]) -> None:
        """Originals, then corrections and revocations, each hospital in 1,000-record requests interleaved
        across hospitals (many LIS uploading at once)."""
        per = self.args.results_per_hospital
        chunks = math.ceil(per / CHUNK)
        local = threading.local()
        lock = threading.Lock()
        corrections: dict[tuple[int, int], int] = {}

        def originals(job: tuple[int, int]) -> int:
            h, chunk = job
            hospital = self.hospitals[h]
            results = make_chunk(self.args.seed, hospital, chunk, per, self.now, self.catalogue, self.rates)
            accepted = self._post(local, hospital.id, [r.v1 for r in results])
            with lock:
                self.submitted[hospital.id] += accepted
                for r in results:
                    self.fates[r.fate] += 1
                    self.categories[r.category] += 1
                    if (h, r.index) in pool_index:
                        version = 2 if r.fate == "amended" and pool_index[(h, r.index)] % 2 else 1
                        scenario, verdict, reasons = expectation(r, version, hospital)
                        self.pool_meta[(h, r.index)] = {
                            "hospital_index": h, "result_id": r.v1["result_id"], "version": version,
                            "scenario": scenario, "verdict": verdict, "reasons": sorted(reasons)}
                n2 = sum(r.v2 is not None for r in results)
                if n2:
                    corrections[job] = n2
            return len(results)

        def amendments(job: tuple[int, int]) -> int:
            h, chunk = job
            hospital = self.hospitals[h]
            results = make_chunk(self.args.seed, hospital, chunk, per, self.now, self.catalogue, self.rates)
            v2 = [r.v2 for r in results if r.v2 is not None]
            accepted = self._post(local, hospital.id, v2)
            with lock:
                self.submitted[hospital.id] += accepted
            return len(v2)

        jobs = [job for row in zip_longest(*[[(h, c) for c in range(chunks)] for h in range(len(self.hospitals))])
                for job in row if job is not None]
        t0 = time.perf_counter()
        with _progress(self.console) as bar, ThreadPoolExecutor(self.args.ingest_clients) as pool:
            task = bar.add_task("submit results", total=per * len(self.hospitals))
            for n in pool.map(originals, jobs):
                bar.advance(task, n)
            second = sorted(corrections, key=lambda j: (j[1], j[0]))
            task = bar.add_task("submit corrections", total=sum(corrections.values()))
            for n in pool.map(amendments, second):
                bar.advance(task, n)
        self.phases["ingest"] = time.perf_counter() - t0

    def _confirmed(self, hid: str) -> int:
        anchored: int = 0
        after = 0
        while True:
            r = self.client.get(f"/audit/hospitals/{hid}/batches", params={"after_seq": after, "limit": 1000},
                                headers={"Authorization": f"Bearer {self.auditor}"}).raise_for_status().json()
            anchored += sum(int(b["size"]) for b in r["batches"] if b["anchor_status"] == "confirmed")
            if r["next_after_seq"] is None:
                return anchored
            after = r["next_after_seq"]

    def wait_anchored(self, timeout: float) -> int:
        """Poll the audit API until every hospital's submitted versions sit in confirmed batches; the count."""
        anchored: dict[str, int] = {}
        total = sum(self.submitted.values())
        deadline = time.monotonic() + timeout
        with _progress(self.console) as bar:
            task = bar.add_task("seal and anchor", total=total)
            while True:
                for h in self.hospitals:
                    if anchored.get(h.id, -1) < self.submitted[h.id]:
                        anchored[h.id] = self._confirmed(h.id)
                bar.update(task, completed=sum(anchored.values()))
                if all(anchored[h.id] >= self.submitted[h.id] for h in self.hospitals):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"anchoring incomplete after {timeout:.0f} s: {sum(anchored.values())} of {total}")
                time.sleep(0.5)
        rpc = json.loads((self.server.data_dir / "serve.json").read_text())["rpc_url"]
        httpx.post(rpc, json={"jsonrpc": "2.0", "id": 1, "method": "anvil_mine", "params": [hex(FINAL_DEPTH)]},
                   timeout=30).raise_for_status()
        time.sleep(1.0)  # the node caches the chain head for 0.5 s
        return sum(anchored.values())

    def fetch_pool(self, path: Path) -> int:
        """The patient-held receipts, written to ``path`` (JSON lines) for the verification processes."""
        local = threading.local()

        def get(key: tuple[int, int]) -> str:
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = httpx.Client(base_url=self.server.api, timeout=60)
            meta = self.pool_meta[key]
            hid = self.hospitals[meta["hospital_index"]].id
            r = client.get(f"/hospitals/{hid}/results/{meta['result_id']}/receipt",
                           params={"version": meta["version"]}, headers={"Authorization": f"Bearer {self.tokens[hid]}"})
            if r.status_code != 200:
                raise SystemExit(f"receipt {hid}/{meta['result_id']}: {r.status_code} {r.text[:300]}")
            return json.dumps({**meta, "receipt": r.json()}, separators=(",", ":"))

        keys = sorted(self.pool_meta)
        with _progress(self.console) as bar, ThreadPoolExecutor(4) as pool, open(path, "w") as out:
            task = bar.add_task("fetch receipts", total=len(keys))
            for line in pool.map(get, keys):
                out.write(line + "\n")
                bar.advance(task)
        return len(keys)

    def _warm_up(self, path: Path) -> None:
        """One uncounted verification of each form, one after the other, before the load starts. The node
        caches the chain head and, while one request refreshes it, lets concurrent ones use the old number
        however old it is: after the idle minutes of ingest the first burst of record-form verifications
        saw a head from before the anchors and answered ``pending`` (0 confirmations) for confirmed results.
        A node in service is never idle that long; the warm-up keeps the counts reproducible."""
        with open(path) as handle:
            receipt = json.loads(handle.readline())["receipt"]
        rec = receipt["record"]
        self.client.post("/verify", json={"receipt": receipt}).raise_for_status()
        self.client.post("/verify", json={"hospital_id": rec["hospital_id"], "result_id": rec["result_id"],
                                          "record": rec},
                         headers={"Authorization": f"Bearer {self.doctors[0]}"}).raise_for_status()

    def check_kpis(self, k: sim_kpis.KpiTally, timeout: float) -> dict[str, Any]:
        """Once every decision and encounter is anchored (the event streams' batches confirmed), compare the
        simulation's own figures with ``GET /v1/kpis`` for the run's days and run the audit check."""
        streams = {f"{self.hospitals[h].id}.events": n for h, n in k.records.items()}
        deadline = time.monotonic() + timeout
        with _progress(self.console) as bar:
            task = bar.add_task("anchor decisions", total=sum(streams.values()))
            while True:
                done = {s: self._confirmed(s) for s in streams}
                bar.update(task, completed=sum(done.values()))
                if all(done[s] >= n for s, n in streams.items()):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"decisions not anchored after {timeout:.0f} s: {done} of {streams}")
                time.sleep(0.5)
        auditor = {"Authorization": f"Bearer {self.auditor}"}
        period = {"from": self.now.date().isoformat(), "to": datetime.now(UTC).date().isoformat()}
        api = self.client.get("/kpis", params=period, headers=auditor).raise_for_status().json()
        mine = sim_kpis.figures(k)
        audit = self.audit_job(auditor, timeout)
        return {
            "kpis": {**mine, "matches_api": sim_kpis.matches(mine, api)},
            "kpi_counts": {"decisions": k.decisions, "recognisable": k.recognisable, "recognised": k.recognised,
                           "reordered": k.reordered, "reorder_reasons": dict(sorted(k.reasons.items())),
                           "encounters": k.encounters, "retrieved": k.retrieved,
                           "anchored_records": api["sources"]["confirmed"], "errors": k.errors,
                           "error_examples": k.error_examples},
            "decision_audit": {"ok": audit["ok"], "records": audit["checked_records"],
                               "problems": audit["problem_count"],
                               "chain_checked": all(x["chain_checked"] for x in audit["streams"])},
        }

    def audit_job(self, auditor: dict[str, str], timeout: float) -> dict[str, Any]:
        """The KPI audit as a job (``POST /v1/audit/decisions/jobs``, docs/kpis.md §6): started (or, if one runs
        already, that one), polled until done, with a progress bar; its final state."""
        r = self.client.post("/audit/decisions/jobs", headers=auditor)
        job_id = r.json()["job_id"] if r.status_code == 409 else r.raise_for_status().json()["id"]
        deadline = time.monotonic() + timeout
        with _progress(self.console) as bar:
            task = bar.add_task("audit decisions", total=None)
            while True:
                job = self.client.get(f"/audit/decisions/jobs/{job_id}", headers=auditor).raise_for_status().json()
                bar.update(task, total=job["progress"]["records_total"], completed=job["progress"]["records_checked"])
                if job["state"] == "done":
                    return dict(job)
                if job["state"] != "running":
                    raise SystemExit(f"audit job {job_id} {job['state']}: {job['error']}")
                if time.monotonic() > deadline:
                    raise SystemExit(f"audit job {job_id} not done after {timeout:.0f} s: {job['progress']}")
                time.sleep(0.5)

    def verify(self, path: Path) -> Tally:
        """Doctors verify from ``--workers`` processes; the parent only draws the progress bar and merges."""
        ctx = mp.get_context("spawn")
        progress: Any = ctx.Queue()
        workers = max(1, min(self.args.workers, math.ceil(self.args.verifications / CHUNK)))
        kpi = ([h.id for h in self.hospitals], [self.tokens[h.id] for h in self.hospitals], self.prices) \
            if self.args.decisions else None
        procs = [ctx.Process(target=_verify_worker, daemon=True, args=(
            w, workers, self.server.api, str(path), self.doctors, self.args.seed, self.args.verifications,
            self.args.concurrency, self.args.record_form, progress, kpi)) for w in range(workers)]
        self._warm_up(path)
        tally = Tally()
        finished = 0
        before = _machine_cpu()
        with _progress(self.console) as bar:
            task = bar.add_task("doctors verify", total=self.args.verifications)
            for p in procs:
                p.start()
            while finished < workers:
                try:
                    msg = progress.get(timeout=1.0)
                except queue.Empty:
                    if any(p.exitcode not in (None, 0) for p in procs):
                        raise SystemExit("a verification process failed") from None
                    continue
                if msg[0] == "progress":
                    bar.advance(task, msg[2])
                else:
                    finished += 1
                    tally.merge(msg[3])
            bar.update(task, completed=self.args.verifications)
        self.cpu = (before, _machine_cpu())
        for p in procs:
            p.join()
        return tally


def _machine_cpu() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine so far, all cores (Linux ``/proc/stat``), or None.

    Why the whole machine: the node is several processes (API, sealer and anchoring, anvil) and PostgreSQL's
    backends, and the generator runs beside them; what one verification with its decision costs all of them
    together is what bounds the rate on these cores (``cpu_ms_per_verification``)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / hz, sum(fields[:8]) / hz


def _pg_schema(url: str) -> tuple[str, str]:
    """A fresh schema in the PostgreSQL at ``url`` and the URL that puts the node in it (tests/conftest.py)."""
    from sqlalchemy import create_engine, text

    schema = f"sim_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    return schema, f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


def _drop_schema(url: str, schema: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


def simulate(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="mrl-city-"))
    server = Server(tmp / "data", args.batch_interval, api_processes=args.api_processes, anchor_every=args.anchor_every)
    if args.api_threads is not None:
        server.env["MRL_API_THREADS"] = str(args.api_threads)
    # The simulated doctors of a whole city verify receipts anonymously from this one address, closed loop:
    # the per-address limit of anonymous verification is switched off here, not in the node's defaults.
    server.env["MRL_VERIFY_RATE_LIMIT"] = "0"
    schema = None
    db_url = f"sqlite:///{(tmp / 'data' / 'mrledger.db').resolve()}"
    if args.db:
        schema, db_url = _pg_schema(args.db)
        server.env["MRL_DATABASE_URL"] = db_url
        # A node on PostgreSQL must be given the region's key (docs/kpis.md §4): a fresh one for this run.
        server.env["MRL_REGIONAL_KEY"] = uuid.uuid4().hex * 2
    try:
        t = time.perf_counter()
        with console.status("starting mrledger serve (API, sealer, worker, anvil)"):
            server.start()
        city = City(args, server, console)
        city.phases["start"] = time.perf_counter() - t
        t = time.perf_counter()
        city.register(db_url)
        city.phases["register"] = time.perf_counter() - t
        total = args.hospitals * args.results_per_hospital
        rng = random.Random(f"{args.seed}:pool")
        picks = rng.sample(range(total), min(args.pool, total))
        per = args.results_per_hospital
        city.ingest({(p // per, p % per): n for n, p in enumerate(picks)})
        t = time.perf_counter()
        anchored = city.wait_anchored(timeout=600 + total / 50)
        city.phases["anchor"] = time.perf_counter() - t
        t = time.perf_counter()
        pool = city.fetch_pool(tmp / "pool.jsonl")
        city.phases["receipts"] = time.perf_counter() - t
        t = time.perf_counter()
        tally = city.verify(tmp / "pool.jsonl")
        city.phases["verify"] = time.perf_counter() - t
        kpis: dict[str, Any] | None = None
        if args.decisions:
            t = time.perf_counter()
            # The audit job checks two records per verification (decision, encounter) at >= 1,000 records/s
            # on the slowest day measured here (docs/scaling.md): 300 s plus that, so a full replay can finish.
            kpis = city.check_kpis(tally.kpi, timeout=300 + 2 * args.verifications / 1000)
            city.phases["kpis"] = time.perf_counter() - t
    finally:
        code = server.stop()
        if schema is not None and args.db:
            _drop_schema(args.db, schema)
        if args.keep:
            console.print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if code not in (0, None):
        console.print(f"[yellow]serve exited with {code}")
    verified = sum(tally.verdicts.values())
    cpu: dict[str, Any] = {}
    before, after = city.cpu
    if before is not None and after is not None and verified and after[1] > before[1]:
        busy = after[0] - before[0]
        per = busy / verified * 1000
        cpu = {"machine_busy": round(busy / (after[1] - before[1]), 3), "cpu_ms_per_verification": round(per, 2),
               "cpu_bound_rate_per_s": round((os.cpu_count() or 1) * 1000 / per, 1)}
    authentic, recognised = tally.verdicts["authentic"], tally.decisions["recognise"]
    results = sum(city.submitted.values())
    scenarios = {name: {"verifications": c["verifications"]["n"], "verdicts": dict(sorted(c["verdicts"].items())),
                        "decisions": dict(sorted(c["decisions"].items())),
                        "reasons": dict(sorted(c["reasons"].items()))}
                 for name, c in sorted(tally.scenarios.items(), key=lambda kv: SCENARIOS.index(kv[0]))}
    return {
        "hospitals": args.hospitals, "results": results, "anchored": anchored, "verifications": verified,
        "authentic": authentic, "recognised": recognised,
        "recognition_rate": round(recognised / authentic, 4) if authentic else None,
        "reorders_avoided": tally.items_recognised, "verify_p99_ms": tally.latency.quantile(0.99),
        "wall_s": round(time.perf_counter() - start, 1),
        "verify_p50_ms": tally.latency.quantile(0.50),
        "decide_p50_ms": tally.decide_latency.quantile(0.50), "decide_p99_ms": tally.decide_latency.quantile(0.99),
        "verify_rate_per_s":
            round(verified / city.phases["verify"], 1) if city.phases["verify"] else None,
        "ingest_per_s": round(results / city.phases["ingest"], 1), **cpu,
        "result_ids": total, "fates": dict(sorted(city.fates.items())),
        "categories": {c: city.categories[c] for c in CATEGORIES},
        "eligibility": {"grants": sum(len(h.eligible) for h in city.hospitals),
                        "performed_not_eligible": sum(len(set(h.performs) - h.eligible) for h in city.hospitals),
                        "hospitals_not_eligible_somewhere": sum(bool(set(h.performs) - h.eligible)
                                                                for h in city.hospitals)},
        "pool": pool, "verdicts": dict(sorted(tally.verdicts.items())),
        "decisions": dict(sorted(tally.decisions.items())), "reasons": dict(sorted(tally.reasons.items())),
        "forms": dict(sorted(tally.forms.items())), "by_scenario": scenarios,
        **(kpis or {}),
        "unexpected": tally.unexpected, "unexpected_examples": tally.examples,
        "errors": tally.errors, "error_examples": tally.error_examples,
        "phases_s": {k: round(v, 1) for k, v in city.phases.items()},
        "database": "postgresql" if args.db else "sqlite", "seed": args.seed, "cores": os.cpu_count(),
        "api_processes": args.api_processes, "concurrency": args.workers * args.concurrency,
        "serve_exit": code,
    }


def _table(result: dict[str, Any]) -> Table:
    table = Table(title="City simulation", show_header=True)
    table.add_column("measure", style="bold")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if isinstance(value, dict | list):
            value = json.dumps(value) if len(json.dumps(value)) < 100 else json.dumps(value, indent=1)
        table.add_row(key, str(value))
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--hospitals", type=int, default=12)
    ap.add_argument("--results-per-hospital", type=int, default=200)
    ap.add_argument("--verifications", type=int, default=2000)
    ap.add_argument("--db", default=None, help="PostgreSQL URL (a fresh schema is created and dropped); "
                                               "default: SQLite in the temp data dir")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--pool", type=int, default=2000, help="patient-held receipts fetched and verified repeatedly")
    ap.add_argument("--record-form", type=float, default=0.2, help="share of verifications by the record form")
    ap.add_argument("--amend-rate", type=float, default=0.03)
    ap.add_argument("--revoke-rate", type=float, default=0.01)
    ap.add_argument("--expire-rate", type=float, default=0.12)
    ap.add_argument("--eqa-fail", type=float, default=0.07, help="chance a hospital is not eligible for a "
                                                                 "category it performs")
    ap.add_argument("--workers", type=int, default=2, help="verification processes")
    ap.add_argument("--concurrency", type=int, default=8, help="connections per verification process")
    ap.add_argument("--ingest-clients", type=int, default=4)
    ap.add_argument("--batch-interval", type=float, default=Settings.model_fields["batch_interval"].default,
                    help="MRL_BATCH_INTERVAL of the node (default: the node's own)")
    ap.add_argument("--anchor-every", type=float, default=None,
                    help="MRL_ANCHOR_EVERY of the node (default: the node's own)")
    ap.add_argument("--api-processes", type=int, default=os.cpu_count() or 1,
                    help="MRL_API_PROCESSES of the node: one per core, the production layout (docs/scaling.md)")
    ap.add_argument("--api-threads", type=int, default=None, help="MRL_API_THREADS of the node (default: its own)")
    ap.add_argument("--keep", action="store_true", help="keep the temp data dir")
    ap.add_argument("--decisions", action=argparse.BooleanOptionalAction, default=True,
                    help="doctors record a decision and hospitals report the encounter after each verification "
                         "(scripts/sim_kpis.py); the JSON gets kpis, kpi_counts and decision_audit")
    args = ap.parse_args()
    if args.hospitals < 2:
        ap.error("--hospitals must be at least 2 (doctors verify other hospitals' results)")
    if min(args.results_per_hospital, args.verifications, args.pool) < 1:
        ap.error("--results-per-hospital, --verifications and --pool must be positive")
    if args.amend_rate + args.revoke_rate + args.expire_rate > 1:
        ap.error("the fate rates add up to more than 1")
    console = Console(stderr=True)
    result = simulate(args, console)
    if args.json:
        print(json.dumps(result))
    else:
        Console().print(_table(result))


if __name__ == "__main__":
    main()
