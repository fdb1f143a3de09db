"""The id, record and token cases of scripts/attack.py: ids reachable whatever their characters (issue 16 #1),
QR receipts of non-Latin ids (issue 14 #6), NFD / invisible / bidi ids (#7), RFC 8785 key edge cases (#13),
revoked and expired tokens (#5), and the data dir's file modes seen from outside (#15).

Ids and records are sent with the seeded hospital's token (only a hospital may submit); everything else as the
lowest role that can ask. Each answer's status is checked, and what it says where that is the finding.
"""

from __future__ import annotations

import copy
import json
import os
import re
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

from attack_seed import AWKWARD_IDS, World, record
from attack_target import CANARY_PATIENT, CANARY_RESULT, HID, OTHER_HID, Answer, Target
from bench_api import COMMAND

from mrledger.ledger import Receipt
from mrledger.ledger.status_check import receipt_status_key


def _world(t: Target) -> World:
    if t.world is None:
        raise RuntimeError("this case needs the seeded world")
    return t.world


def _own(a: Answer) -> Answer:
    """An answer to the hospital (or auditor) that holds the result: entitled to it, not searched for leaks."""
    a.body = b"(the holder's own answer)" if a.status == 200 else a.body
    return a


def ids_reachable(t: Target) -> list[Answer]:
    """Issue 16 #1: a result whose id holds ``/ % ? # space`` or non-Latin characters got a 202; its versions,
    receipt, QR (PNG, SVG), proof, status proof and lineage answer 200 for it, and ``mrledger receipt`` prints it."""
    w = _world(t)
    out: list[Answer] = []
    hospital, auditor = w.tokens["hospital"], w.tokens["auditor"]
    for rid in AWKWARD_IDS:
        q = quote(rid, safe="")
        receipt = w.receipts.get((rid, 1))
        if receipt is None:
            out.append(Answer(f"receipt of {rid!r}", None, wrong="accepted, but its receipt never answered 200"))
            continue
        base = f"/v1/hospitals/{HID}/results/{q}"
        versions = t.as_(hospital, "GET", base, label="hospital").expect(200)
        if versions.wrong is None and (versions.json() or {}).get("result_id") != rid:
            versions.wrong = f"versions of {(versions.json() or {}).get('result_id')!r}, asked for {rid!r}"
        out.append(_own(versions))
        # The smallest QR form: reachability is the question here (receipt-qr-non-latin renders the full one).
        out += [_own(t.as_(hospital, "GET", base + suffix, label="hospital").expect(200))
                for suffix in ("/receipt", "/receipt.png?form=ref-min", "/receipt.svg?form=ref-min")]
        out.append(_own(t.as_(auditor, "GET", f"/v1/audit/hospitals/{HID}/results/{q}/lineage", label="auditor")
                        .expect(200)))
        proof = t.http("GET", f"{base}/proof?leaf_hash={receipt['leaf']['hash']}").expect(200)
        proof.body = b"(the proof of a leaf the caller holds)"
        out.append(proof)
        key = receipt_status_key(Receipt.from_obj(receipt))
        status = t.http("GET", f"{base}/status-proof?key={key.hex() if key else ''}").expect(200)
        status.body = b"(the status proof of a result the caller holds)"
        out.append(status)
    with ThreadPoolExecutor(4) as pool:  # the CLI's start-up is most of its time
        out += pool.map(lambda rid: _cli_receipt(t, rid, hospital), [r for r in AWKWARD_IDS if (r, 1) in w.receipts])
    return out


def _cli_receipt(t: Target, rid: str, token: str) -> Answer:
    env = {**t.server.env, "MRL_TOKEN": token}
    run = subprocess.run([*COMMAND, "receipt", HID, rid, "--api", t.server.api], env=env, capture_output=True,
                         text=True, timeout=120)
    a = Answer(f"mrledger receipt {HID} {rid!r}", 200 if run.returncode == 0 else 404)
    try:
        got = json.loads(run.stdout)["record"]["result_id"]
    except (ValueError, KeyError, TypeError):
        got = None
    if got != rid:
        a.wrong = f"exit {run.returncode}, receipt of {got!r}: {run.stderr.strip()[:160]}"
    return a


def receipt_qr_non_latin(t: Target) -> list[Answer]:
    """Issue 14 #6: receipt.png / receipt.svg of a Chinese id answered 500 (a header outside Latin-1); now 200
    with an RFC 6266 ``filename*``."""
    w = _world(t)
    out = []
    for rid in ("检验-2024-0001", "Åsa-1"):
        for kind, media in (("png", "image/png"), ("svg", "image/svg+xml")):
            a = t.as_(w.tokens["hospital"], "GET", f"/v1/hospitals/{HID}/results/{quote(rid, safe='')}/receipt.{kind}",
                      label="hospital").expect(200)
            disposition = a.headers.get("content-disposition", "")
            want = f"filename*=UTF-8''{quote(f'receipt-{rid}.{kind}', safe='')}"
            if a.wrong is None and (not a.headers.get("content-type", "").startswith(media)
                                    or want not in disposition):
                a.wrong = f"{a.headers.get('content-type')!r}, Content-Disposition {disposition!r}"
            out.append(_own(a))
    return out


def _submit(t: Target, token: str, rec: dict[str, Any], label: str) -> Answer:
    return t.as_(token, "POST", f"/v1/hospitals/{HID}/results", rec, label)


#: Zero-width space, right-to-left override, left-to-right isolate, BOM, soft hyphen, word joiner, zero-width joiner.
INVISIBLE_IDS = ("LAB\u200b-9", "LAB-\u202e9", "\u2066LAB-9", "\ufeffLAB-9", "LAB\u00ad-9", "LAB\u2060-9",
                 "LAB-9\u200d")


def invisible_and_nfd_ids(t: Target) -> list[Answer]:
    """Issue 14 #7: ids with zero-width, bidi-control or other invisible characters are refused (422) at
    submission and in URLs; the NFD spelling of a stored NFC id finds it, and re-submitted is a duplicate."""
    w = _world(t)
    hospital = w.tokens["hospital"]
    out = []
    for rid in INVISIBLE_IDS:
        out.append(_submit(t, hospital, record(rid), f"submit {rid!a}").expect(422))
        out.append(t.as_(hospital, "GET", f"/v1/hospitals/{HID}/results/{quote(rid, safe='')}", label="hospital")
                   .expect(422))
    nfd = "A\u030asa-1"
    out.append(_own(t.as_(hospital, "GET", f"/v1/hospitals/{HID}/results/{quote(nfd, safe='')}/receipt",
                          label="hospital, NFD id").expect(200)))
    again = _submit(t, hospital, record(nfd), "hospital re-submits in NFD").expect(202)
    result = ((again.json() or {}).get("results") or [{}])[0]
    if again.wrong is None and (result.get("status"), result.get("result_id")) != ("duplicate", "Åsa-1"):
        again.wrong = f"the NFD spelling was taken as {result!r}, not as a duplicate of the NFC id"
    return [*out, again]


def numbers_in_records(t: Target) -> list[Answer]:
    """Issue 14 #12 behind the hospital's token (anonymously the node answers 401 first): a value no double holds
    (``1e-400`` was stored as 0 with a 202, ``1e400`` parsed to inf) is refused at parse time, nothing stored."""
    w = _world(t)
    out = []
    template = json.dumps(record("NUM-1", value=12345.5))
    for number in ("1e400", "-1e400", "1e-400", "-1e-400", "1E+99999999999", "1" + "0" * 400, "0." + "0" * 400 + "1"):
        a = t.http("POST", f"/v1/hospitals/{HID}/results", template.replace("12345.5", number).encode(),
                   {"Authorization": f"Bearer {w.tokens['hospital']}", "Content-Type": "application/json"})
        a.request = f"hospital submits the value {number[:24]}"
        out.append(a.expect(400, 422))
    out.append(t.as_(w.tokens["hospital"], "GET", f"/v1/hospitals/{HID}/results/NUM-1", label="hospital, after")
               .expect(404))
    return out


#: Object keys RFC 8785 cannot hash faithfully (issue 14 #13), as JSON text so the escapes reach the node.
HOSTILE_KEYS = {"lone surrogate": '"\\ud800"', "lone low surrogate": '"a\\udc00"',
                "control character": '"a\\u0001"', "DEL": '"a\\u007f"'}


def json_key_edge_cases(t: Target) -> list[Answer]:
    """Issue 14 #13: a committed FHIR projection whose keys hold a lone surrogate or a control character, or two
    keys equal once NFC-normalised, is refused (400/422) — never a 500 and never committed rewritten; the same
    keys in a receipt make it tampered or not-a-receipt, never a crash of the verifier."""
    w = _world(t)
    out = []
    rec = record("KEYS-1")
    rec["content"] = {"type": "fhir-resource", "resource_type": "Observation",
                      "resource": {"resourceType": "Observation", "status": "final", "KEY": 1}}
    template = json.dumps(rec)
    bodies = {name: template.replace('"KEY"', key) for name, key in HOSTILE_KEYS.items()}
    bodies["NFC collision"] = template.replace('"KEY": 1', '"\\u00c5": 1, "A\\u030a": 2')
    for name, body in bodies.items():
        a = t.http("POST", f"/v1/hospitals/{HID}/results", body.encode(),
                   {"Authorization": f"Bearer {w.tokens['hospital']}", "Content-Type": "application/json"})
        a.request = f"hospital submits a key with a {name}"
        out.append(a.expect(400, 422))
    out.append(t.as_(w.tokens["hospital"], "GET", f"/v1/hospitals/{HID}/results/KEYS-1", label="hospital, after")
               .expect(404))
    genuine = w.receipts.get((CANARY_RESULT, 1))
    if genuine is not None:
        for name, key in {**HOSTILE_KEYS, "NFC collision": '"\\u00c5"'}.items():
            forged = copy.deepcopy(genuine)
            forged["record"]["content"]["observations"][0]["KEY"] = 1
            text = json.dumps({"receipt": forged}).replace('"KEY"', key)
            if name == "NFC collision":
                text = text.replace(f'{key}: 1', f'{key}: 1, "A\\u030a": 2')
            a = t.json_post("/v1/verify", text.encode())
            a.request = f"anonymous verify, a key with a {name}"
            if a.status == 200 and (a.json() or {}).get("verdict") != "tampered":
                a.wrong = f"verdict {(a.json() or {}).get('verdict')!r} for a receipt with a {name} in a key"
            out.append(a.expect(200, 400, 422))
    return out


def revoked_and_expired_tokens(t: Target) -> list[Answer]:
    """Issue 14 #5: a token that expired (made with ``expires_in`` 2 s at seeding) and one revoked through the
    admin API are refused (401) on the very next request; the revoked hospital token submits nothing. Tokens are
    no business of a doctor or a hospital (403), and the API makes no admin token (403)."""
    w = _world(t)
    held = w.records[CANARY_RESULT, 1]
    verify = {"hospital_id": HID, "result_id": CANARY_RESULT, "version": 1, "record": held}
    out = [_own(t.as_(w.tokens["revoked"], "POST", "/v1/verify", verify, "doctor, before revocation").expect(200))]
    for name in ("revoked", "revoked-hospital"):
        out.append(t.as_(w.tokens["admin"], "POST", f"/v1/tokens/{w.token_ids[name]}/revoke", {}, "admin revokes")
                   .expect(200))
    out.append(t.as_(w.tokens["revoked"], "POST", "/v1/verify", verify, "revoked doctor").expect(401))
    time.sleep(max(0.0, w.expired_after - time.monotonic()))  # long past already, unless run with --only
    out.append(t.as_(w.tokens["expiring"], "POST", "/v1/verify", verify, "expired doctor").expect(401))
    out.append(_submit(t, w.tokens["revoked-hospital"], record("AFTER-REVOKE-1"), "revoked hospital").expect(401))
    out.append(t.as_(w.tokens["hospital"], "GET", f"/v1/hospitals/{HID}/results/AFTER-REVOKE-1", label="hospital")
               .expect(404))
    for who in ("doctor", "doctor-other", "hospital", "auditor"):
        out.append(t.as_(w.tokens[who], "GET", "/v1/tokens", label=who).expect(403))
        out.append(t.as_(w.tokens[who], "POST", "/v1/tokens", {"role": f"hospital:{OTHER_HID}"}, who).expect(403))
        out.append(t.as_(w.tokens[who], "POST", f"/v1/tokens/{w.token_ids['doctor']}/revoke", {}, who).expect(403))
    out.append(t.as_(w.tokens["admin"], "POST", "/v1/tokens", {"role": "admin"}, "admin makes an admin").expect(403))
    return out


#: Files of the data dir whose contents are secrets (keys, tokens) or patients' results (the database).
SECRET_FILES = re.compile(r"(\.key|\.key\.pem|-token|^mrledger\.db(-wal|-shm|-journal)?)$")


def data_dir_modes(t: Target) -> list[Answer]:
    """Issue 14 #15, from outside: every key, token and database file the running node made under its data dir
    is its owner's alone (no group or other bits); nothing there is writable by others; and no file others may
    read (the chain's state and log, serve.json) holds a canary (patient data never goes on chain)."""
    out = []
    canaries = (CANARY_PATIENT.encode(), CANARY_RESULT.encode())
    for root, _dirs, files in os.walk(t.server.data_dir):
        for name in files:
            path = Path(root, name)
            mode = stat.S_IMODE(path.lstat().st_mode)
            rel = path.relative_to(t.server.data_dir)
            a = Answer(f"stat {rel} ({mode:o})", 200)
            if (SECRET_FILES.search(name) and mode & 0o077) or mode & 0o002:
                a.wrong = f"{rel} is {mode:o}"
            elif mode & 0o044 and path.stat().st_size < 64 * 1024 * 1024:
                found = [c.decode() for c in canaries if c in path.read_bytes()]
                a.disclosed += [f"{c} in {rel}, readable by others" for c in found]
            out.append(a)
    return out


__all__ = ["data_dir_modes", "ids_reachable", "invisible_and_nfd_ids", "json_key_edge_cases", "numbers_in_records",
           "receipt_qr_non_latin", "revoked_and_expired_tokens"]
