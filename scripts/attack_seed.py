"""What scripts/attack.py puts in the node before attacking it (``seed``), and what the cases may use (``World``).

Two hospitals; the first holds the canaries — a result later corrected (so its first version has a
``superseded_by``), a result later withdrawn (``revoked_by``) — and one result per awkward id (issue 16 #1: ``/``,
``%``, space, ``?``, ``#``, non-Latin, NFC). Tokens are made through the admin API, as an operator would: the
hospital's, a doctor's without a hospital, a doctor's of the second hospital, an auditor's, one that expires two
seconds after it is made and one the revocation case revokes. Every result is waited for until its receipt is
confirmed, so the receipt cases work on real, anchored receipts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from attack_target import CANARY_PATIENT, CANARY_RESULT, CANARY_REVOKED, HID, HOSPITAL_NAME, OTHER_HID
from bench_api import Server

#: Result ids an integrator's messages really carry (issue 16 #1): each must be reachable by every endpoint.
AWKWARD_IDS = ["Observation/atk-1", "50%-atk", "a b atk", "q?x#y", "检验-2024-0001", "Åsa-1", "Ω/%20?#&=+;"]
#: Seconds the ``expiring`` token lives: expired long before any case uses it.
EXPIRES_IN = 2


@dataclass
class World:
    tokens: dict[str, str] = field(default_factory=dict)
    token_ids: dict[str, int] = field(default_factory=dict)
    #: (result id, version) -> the record as submitted
    records: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    #: (result id, version) -> its confirmed receipt
    receipts: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    #: ``time.monotonic()`` after which the ``expiring`` token has expired
    expired_after: float = 0.0


def record(rid: str, version: int = 1, status: str = "final", value: float = 5.1,
           patient: str = "SYNTH-PATIENT-1") -> dict[str, Any]:
    rec: dict[str, Any] = {
        "hospital_id": HID, "result_id": rid, "version": version, "kind": "lab",
        "code": {"system": "http://loinc.org", "code": "2345-7"},
        "subject": {"system": "urn:mrledger:attack:synthetic-patient", "value": patient},
        "effective": "2024-05-01T07:00:00Z", "issued": f"2024-05-0{version}T07:30:00Z", "status": status,
        "content": {"type": "observations", "observations": [
            {"code": {"system": "http://loinc.org", "code": "2345-7"}, "value": value, "unit": "mmol/L"}]}}
    if version > 1:
        rec["supersedes"] = version - 1
    return rec


def seed(server: Server, client: httpx.Client) -> World:
    """Hospitals, tokens, results; then every receipt, once confirmed."""
    w = World()
    api = server.api
    w.tokens["admin"] = (server.data_dir / "admin-token").read_text().strip()
    admin = {"Authorization": f"Bearer {w.tokens['admin']}"}
    for hid, name in ((HID, HOSPITAL_NAME), (OTHER_HID, "Attack Other Hospital")):
        r = client.post(f"{api}/hospitals", json={"id": hid, "name": name}, headers=admin)
        if r.status_code != 201:
            raise SystemExit(f"cannot register {hid}: {r.status_code} {r.text}")
    roles = {"hospital": f"hospital:{HID}", "doctor": "doctor", "doctor-other": f"doctor:{OTHER_HID}",
             "auditor": "auditor", "revoked": f"doctor:{OTHER_HID}", "revoked-hospital": f"hospital:{HID}",
             "expiring": f"doctor:{OTHER_HID}"}
    for name, role in roles.items():
        body: dict[str, Any] = {"role": role, "label": f"attack {name}"}
        if name == "expiring":
            body["expires_in"] = EXPIRES_IN
            w.expired_after = time.monotonic() + EXPIRES_IN + 1
        r = client.post(f"{api}/tokens", json=body, headers=admin)
        if r.status_code != 201:
            raise SystemExit(f"cannot create a {role} token: {r.status_code} {r.text}")
        w.tokens[name], w.token_ids[name] = r.json()["token"], r.json()["id"]
    hospital = {"Authorization": f"Bearer {w.tokens['hospital']}"}
    batches = [[record(CANARY_RESULT, patient=CANARY_PATIENT), record(CANARY_REVOKED, patient=CANARY_PATIENT),
                *(record(rid) for rid in AWKWARD_IDS)],
               [record(CANARY_RESULT, 2, "corrected", 5.3, CANARY_PATIENT),
                record(CANARY_REVOKED, 2, "entered-in-error", patient=CANARY_PATIENT)]]
    for batch in batches:
        r = client.post(f"{api}/hospitals/{HID}/results", json={"records": batch}, headers=hospital)
        if r.status_code != 202:
            raise SystemExit(f"cannot seed: {r.status_code} {r.text}")
        w.records.update({(rec["result_id"], rec["version"]): rec for rec in batch})
    deadline = time.monotonic() + 120
    for rid, version in w.records:
        url = f"{api}/hospitals/{HID}/results/{quote(rid, safe='')}/receipt?version={version}"
        while True:
            r = client.get(url, headers=hospital)
            if r.status_code == 200:
                w.receipts[rid, version] = r.json()
                break
            if r.status_code != 409 or time.monotonic() > deadline:
                break  # unreachable: the case that needs it says so
            time.sleep(0.2)
    return w
