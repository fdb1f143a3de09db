"""The city that ``scripts/simulate_city.py`` replays: its hospitals (tiers, what they perform, what they are eligible
for), the national catalogue's tests and studies with plausible values, each result's fate (current, amended,
revoked, expired, outside the catalogue) and what the programme's rules should answer for a receipt of it.

Apart from the replay's machinery (server, load processes, checks) so each stays readable; pure and seeded: the same
seed gives the same city, chunk by chunk, in any process.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

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
