"""What differs between a held record and one submitted again under the same (hospital, result, version): the
words of a 409, so that a sender can tell a PACS that sent a fragment from one that sent another study.

Pure record logic, no database. Patient identifiers are never repeated (the answer may be logged by the
sender's engine); codes, instance UIDs and counts are.
"""

from __future__ import annotations

from typing import Any

from mrledger.ledger import ResultRecord

#: At most this many instance UIDs are named per kind of difference.
_SHOWN = 3
_FIELDS = ("kind", "code", "effective", "issued", "status", "supersedes")


def _uids(uids: list[str]) -> str:
    shown = ", ".join(uids[:_SHOWN])
    return shown + (f" and {len(uids) - _SHOWN} more" if len(uids) > _SHOWN else "")


def _study(held: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = [f"{key} differs" for key in ("study_instance_uid", "modality", "body_part", "accession")
           if held.get(key) != new.get(key)]
    before = {i["sop_instance_uid"]: i for i in held.get("instances", [])}
    after = {i["sop_instance_uid"]: i for i in new.get("instances", [])}
    if removed := sorted(set(before) - set(after)):
        out.append(f"{len(removed)} instance(s) held are missing ({_uids(removed)})")
    if added := sorted(set(after) - set(before)):
        out.append(f"{len(added)} instance(s) are new ({_uids(added)}): send a study once it is complete")
    both = sorted(set(before) & set(after))
    scheme = [u for u in both if ("frames_sha256" in before[u]) != ("frames_sha256" in after[u])]
    if scheme:
        out.append(f"{len(scheme)} instance(s) were fingerprinted by the earlier scheme (pixel_sha256, PixelData "
                   "bytes as stored) and now by their decoded pixels (frames_sha256): the study is already "
                   "committed; nothing needs to be sent again")
    changed = [u for u in both if u not in scheme and before[u] != after[u]]
    if changed:
        frames = [u for u in changed if len(before[u].get("frames_sha256") or []) !=
                  len(after[u].get("frames_sha256") or [])]
        out.append(f"{len(changed)} instance(s) have other pixels ({_uids(changed)}; pixel fingerprint differs"
                   + (f", {len(frames)} with another number of frames" if frames else "")
                   + "): another image, or a lossy re-encoding — lossless transfer syntaxes give equal "
                   "fingerprints")
    return out


def describe(held: ResultRecord, new: ResultRecord) -> str:
    """What ``new`` changes of ``held`` in words, e.g. ``2 instance(s) have other pixels (…)``."""
    a, b = held.to_obj(), new.to_obj()
    out = [f"{key} differs" for key in _FIELDS if a.get(key) != b.get(key)]
    if a["subject"] != b["subject"]:
        out.append("the patient identifier differs")
    ca, cb = a["content"], b["content"]
    if ca.get("type") != cb.get("type"):
        out.append(f"content is {cb.get('type')}, held {ca.get('type')}")
    elif ca.get("type") == "imaging-study":
        out += _study(ca, cb)
    elif ca != cb:
        out.append("content differs")
    return "; ".join(out) or "the encoding differs"


IDENTITY_WORDS = {"subject": "another patient", "code": "another test"}


def identity_differs(first: ResultRecord, later: ResultRecord) -> list[str]:
    """Which of ``subject`` (the patient) and ``code`` (the test: system and code) ``later`` changes from
    ``first``. Shared by the store's submission check and intake's lineage (service/intake.py)."""
    out = []
    if first.subject != later.subject:
        out.append("subject")
    if (first.code.system, first.code.code) != (later.code.system, later.code.code):
        out.append("code")
    return out


def identity_detail(field: str, first: ResultRecord | None, later: ResultRecord) -> str:
    """What differs, in words an integrator can check. The patient's identifiers are not repeated (the answer
    may be logged by the sender's engine); the test codes are not patient data and are shown."""
    if field == "subject" or first is None:
        return "the patient identifier differs"
    return f"test {first.code.system}|{first.code.code} held, {later.code.system}|{later.code.code} received"
