"""The disclosure cases of scripts/attack.py (issue 14 findings 3, 8 and 9): what a caller who does not hold a
result can learn about it, and whether a forgery can become a decision.

Each answer is checked for being *right*, not only for being a 4xx: a forged receipt gets ``tampered`` or
``unknown`` and none of what the database knows (``hospital_name``, ``superseded_by``, ``revoked_by``,
``recognition``, a stored ``issued``) and no ``verification_id``; a result id that exists answers exactly as one
that never did; the genuine receipt (the control) still gets ``authentic`` with all of it.
"""

from __future__ import annotations

import copy
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from attack_seed import World
from attack_target import CANARY_RESULT, CANARY_REVOKED, HID, HOSPITAL_NAME, OTHER_HID, Answer, Target

from mrledger.ledger import ResultRecord
from mrledger.ledger.leaf import commit

#: What only a holder of the committed result may hear (POST /v1/verify's description).
STORED_FACTS = ("hospital_name", "superseded_by", "revoked_by")
#: Recognition reasons that come from the database (later versions, the hospital's eligibility); the others
#: (not-authentic, not-final, not-in-catalogue, too-old, anchor-pending) follow from the caller's own document.
STORED_REASONS = frozenset({"revoked", "superseded", "hospital-not-eligible"})
NEVER_STORED = "NEVER-STORED-4711"
#: A well-formed verification id no verification ever got.
GUESSED_VID = "01JD3S4V6Q8E2N7W0X5K9C1B2A"


def _world(t: Target) -> World:
    if t.world is None:
        raise RuntimeError("this case needs the seeded world")
    return t.world


def _verdict(a: Answer, *verdicts: str) -> Answer:
    """The answer is a 200 verdict among ``verdicts``."""
    a.expect(200)
    body = a.json()
    if a.wrong is None and (not isinstance(body, dict) or body.get("verdict") not in verdicts):
        a.wrong = f"verdict {body.get('verdict') if isinstance(body, dict) else body!r}, expected {verdicts}"
    return a


def _tells_nothing(a: Answer, stored_issued: str | None = None) -> Answer:
    """A caller who does not hold the result learns no stored fact and gets nothing to decide."""
    body = a.json()
    if not isinstance(body, dict):
        return a
    a.disclosed += [f"{k}: {body[k]!r:.60}" for k in STORED_FACTS if body.get(k) is not None]
    reasons = {r.get("code") for r in ((body.get("recognition") or {}).get("reasons") or [])}
    a.disclosed += [f"recognition reason {code} (stored)" for code in sorted(reasons & STORED_REASONS)]
    if HOSPITAL_NAME.encode() in a.body:
        a.disclosed.append("the hospital's name")
    if stored_issued is not None and body.get("issued") == stored_issued:
        a.disclosed.append(f"the stored issued time {stored_issued}")
    if body.get("verification_id") is not None and a.wrong is None:
        a.wrong = "a verification that established nothing got a verification_id (decidable)"
    return a


def _same(a: Answer, b: Answer, ids: tuple[str, str], drop: tuple[str, ...] = ("instance",)) -> None:
    """An id that exists and one that never did (``ids``, in that order) must get the same answer, the ids
    themselves aside (else ids can be enumerated); members in ``drop`` are not compared."""
    texts = [x.body.decode("utf-8", "replace").replace(rid, "<id>") for x, rid in zip((a, b), ids, strict=True)]
    try:
        ja, jb = (json.loads(text) for text in texts)
    except ValueError:
        ja, jb = texts
    if isinstance(ja, dict) and isinstance(jb, dict):
        ja, jb = ({k: v for k, v in j.items() if k not in drop} for j in (ja, jb))
    if a.status != b.status or ja != jb:
        a.disclosed.append(f"answers differently for a stored id ({a.status}) than for a never-stored one "
                           f"({b.status}): {json.dumps(ja)[:160]} vs {json.dumps(jb)[:160]}")


def _verify(t: Target, receipt: dict[str, Any], label: str) -> Answer:
    a = t.json_post("/v1/verify", json.dumps({"receipt": receipt}).encode())
    a.request = f"anonymous verify ({label})"
    return a


def forged_receipts(t: Target) -> list[Answer]:
    """Issue 14 #3 and #9: receipts forged from a genuine one, sent anonymously. The genuine one (the control)
    is authentic and tells its holder the correction; every forgery is tampered/unknown and tells nothing."""
    w = _world(t)
    genuine = w.receipts.get((CANARY_RESULT, 1))
    revoked = w.receipts.get((CANARY_REVOKED, 1))
    if genuine is None or revoked is None:
        return [Answer("seeded receipts", None, wrong="the canary receipts were never confirmed")]
    control = _verdict(_verify(t, genuine, "genuine, superseded"), "authentic")
    if control.wrong is None and (control.json() or {}).get("superseded_by") is None:
        control.wrong = "the holder of a corrected result's receipt is not told of the correction"

    def forge(label: str, change: Any) -> Answer:
        forged = copy.deepcopy(genuine)
        change(forged)
        return _tells_nothing(_verdict(_verify(t, forged, label), "tampered", "unknown"))

    def value(r: dict[str, Any]) -> None:
        r["record"]["content"]["observations"][0]["value"] = 9.9

    def rid(name: str) -> Any:
        return lambda r: r["record"].update(result_id=name)

    def one_leaf(name: str) -> Any:
        def change(r: dict[str, Any]) -> None:
            r["record"]["result_id"] = name
            salt = bytes(range(16))
            leaf = commit(ResultRecord.from_obj(r["record"]), salt).hex()
            r.update(salt=salt.hex(), leaf={"index": 0, "hash": leaf}, audit_path=[])
            r["batch"].update(size=1, root=leaf)
        return change

    def leaf_of_revoked(r: dict[str, Any]) -> None:
        r["leaf"] = revoked["leaf"]

    def other_patient(r: dict[str, Any]) -> None:
        r["record"]["subject"]["value"] = "SYNTH-SOMEONE-ELSE"

    out = [control, forge("value changed", value), forge("leaf of the withdrawn result", leaf_of_revoked),
           forge("another patient", other_patient),
           forge("other hospital", lambda r: r["record"].update(hospital_id=OTHER_HID))]
    existing = forge("names the withdrawn result", rid(CANARY_REVOKED))
    never = forge("names a never-stored result", rid(NEVER_STORED))
    _same(existing, never, (CANARY_REVOKED, NEVER_STORED))
    out += [existing, never]
    # The forger re-commits the relabelled record into a one-leaf batch of their own: every offline check
    # passes, only the signature and the anchor can tell. Still nothing about the result it names.
    existing = forge("own one-leaf batch, names the withdrawn result", one_leaf(CANARY_REVOKED))
    never = forge("own one-leaf batch, names a never-stored result", one_leaf(NEVER_STORED))
    _same(existing, never, (CANARY_REVOKED, NEVER_STORED))
    out += [existing, never]
    # Finding 9: no forged verification can be decided, and a guessed id is no verification.
    doctor = w.tokens["doctor-other"]
    for vid in [GUESSED_VID] + [a.json().get("verification_id") for a in out[1:] if isinstance(a.json(), dict)]:
        if vid:
            out.append(t.as_(doctor, "POST", "/v1/decisions", {"verification_id": vid, "decision": "reordered"},
                             f"doctor:{OTHER_HID} decides {vid}").expect(404))
    return out


def doctor_probing(t: Target) -> list[Answer]:
    """Issue 14 #8: a doctor without a hospital (and one of another hospital) probes the seeded hospital's
    result ids: the same 403 for an id that exists as for one that never did; verify-by-record with a wrong
    record says "does not match" and never the stored ``issued``; the right record (the control) is authentic."""
    w = _world(t)
    out: list[Answer] = []
    for who in ("doctor", "doctor-other"):
        for suffix in ("", "/receipt", "/receipt.png", "/receipt.svg"):
            stored, never = (t.as_(w.tokens[who], "GET", f"/v1/hospitals/{HID}/results/{rid}{suffix}", label=who)
                             .expect(403) for rid in (CANARY_RESULT, NEVER_STORED))
            _same(stored, never, (CANARY_RESULT, NEVER_STORED))
            out += [stored, never]
        stored, never = (t.as_(w.tokens[who], "GET", f"/v1/audit/hospitals/{HID}/results/{rid}/lineage", label=who)
                         .expect(403) for rid in (CANARY_RESULT, NEVER_STORED))
        _same(stored, never, (CANARY_RESULT, NEVER_STORED))
        out += [stored, never]
    leaf = (w.receipts.get((CANARY_RESULT, 1)) or {}).get("leaf", {}).get("hash", "0" * 64)
    stored, never = (t.http("GET", f"/v1/hospitals/{HID}/results/{rid}/proof?leaf_hash={'ab' * 32}").expect(404)
                     for rid in (CANARY_RESULT, NEVER_STORED))
    _same(stored, never, (CANARY_RESULT, NEVER_STORED))
    proof = t.http("GET", f"/v1/hospitals/{HID}/results/{CANARY_RESULT}/proof?leaf_hash={leaf}&version=1").expect(200)
    proof.body = b"(the proof of a leaf the caller holds)"
    out += [stored, never, proof]
    # The status proof (docs/receipt.md §17): a key nobody was given is the 404 of a result never stored; the batch
    # map changes (versions, withdrawals) are for auditors, not for an anonymous caller.
    stored, never = (t.http("GET", f"/v1/hospitals/{HID}/results/{rid}/status-proof?key={'ab' * 32}").expect(404)
                     for rid in (CANARY_RESULT, NEVER_STORED))
    _same(stored, never, (CANARY_RESULT, NEVER_STORED))
    out += [stored, never, t.http("GET", f"/v1/hospitals/{HID}/batches/1/map").expect(401)]
    held = w.records[CANARY_RESULT, 1]
    stored_issued = held["issued"]
    wrong = copy.deepcopy(held)
    wrong["content"]["observations"][0]["value"] = 7.7
    wrong["issued"] = "2030-01-01T00:00:00Z"
    never_rec = {**copy.deepcopy(wrong), "result_id": NEVER_STORED}
    doctor = w.tokens["doctor"]

    def by_record(rec: dict[str, Any], label: str) -> Answer:
        return t.as_(doctor, "POST", "/v1/verify", {"hospital_id": HID, "result_id": rec["result_id"], "version": 1,
                                                    "record": rec}, f"doctor, {label}")

    existing = _tells_nothing(_verdict(by_record(wrong, "wrong record"), "tampered", "unknown"), stored_issued)
    absent = _tells_nothing(_verdict(by_record(never_rec, "never-stored id"), "tampered", "unknown"), stored_issued)
    # "Does not match" (tampered) and "not found" (unknown) may differ, and what follows from the verdict (the
    # checks that say why, recognition's not-authentic detail): a doctor holding a record is told whether the
    # hospital committed that result id (finding 8 allows exactly that); everything else must be the same.
    _same(existing, absent, (CANARY_RESULT, NEVER_STORED),
          ("instance", "verdict", "failed_check", "checks", "recognition"))
    control = _verdict(by_record(held, "the held record"), "authentic")
    if control.wrong is None and (control.json() or {}).get("hospital_name") != HOSPITAL_NAME:
        control.wrong = "the holder of the committed record is not told the hospital's name"
    control.body = b"(the holder's own answer)"  # entitled to it: not searched for leaks
    return [*out, existing, absent, control]


def anonymous_rate_limit(t: Target) -> list[Answer]:
    """Issue 14 #9: a flood of anonymous verifications from one address gets 429 with a Retry-After in whole
    seconds (never a 5xx); a doctor's token is not limited meanwhile. The flood's bodies are empty receipts (422
    not-a-receipt): the limit is spent before a body is read, and cheap requests outrun the limit even on a
    loaded machine. Waits for the bucket to refill after, so later anonymous cases are not refused unread."""
    w = _world(t)
    body = b'{"receipt": {}}'
    flood: list[Answer] = []
    deadline = time.monotonic() + 120
    with ThreadPoolExecutor(16) as pool:
        # Rounds of 200 until the limit shows: a node slowed down by a loaded machine may answer fewer than the
        # limit's rate, and is then not limited until it catches up.
        while not any(a.status == 429 for a in flood) and len(flood) < 4000 and time.monotonic() < deadline:
            flood += pool.map(lambda _: t.json_post("/v1/verify", body), range(200))
    out = [a.expect(422, 429) for a in flood]
    limited = [a for a in flood if a.status == 429]
    for a in limited:
        retry = a.headers.get("retry-after", "")
        if not (retry.isdigit() and int(retry) >= 1) and a.wrong is None:
            a.wrong = f"429 without a Retry-After in whole seconds ({retry!r})"
    if not limited:
        out.append(Answer(f"{len(flood)} anonymous verifications", 200,
                          wrong="no 429: anonymous verification is not limited"))
    held = w.records[CANARY_RESULT, 1]
    doctor = t.as_(w.tokens["doctor"], "POST", "/v1/verify", {"hospital_id": HID, "result_id": CANARY_RESULT,
                                                               "version": 1, "record": held}, "doctor during flood")
    doctor.expect(200)
    doctor.body = b"(the holder's own answer)"
    time.sleep(float(t.server.env["MRL_VERIFY_BURST"]) / float(t.server.env["MRL_VERIFY_RATE_LIMIT"]) + 1)
    return [*out, doctor]


__all__ = ["anonymous_rate_limit", "doctor_probing", "forged_receipts"]
