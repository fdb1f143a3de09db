"""scripts/attack.py's own checks: a count of zero must mean nothing was found, not that nothing was looked for.
Each check is shown catching what it is for — an echoed canary, a stored fact told to a forger, a stored id
answered otherwise than a never-stored one, a loose key file, a child that outlives serve — and letting pass
what is not a finding (what the caller sent itself, the id echoed back)."""

from __future__ import annotations

import importlib
import json
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from scripts import attack  # puts scripts/ on sys.path, where the helpers import each other by bare name

_disclosure = importlib.import_module("attack_disclosure")
_ids = importlib.import_module("attack_ids")
_target = importlib.import_module("attack_target")
Answer, leaks, SECRET_FILES = _target.Answer, _target.leaks, _ids.SECRET_FILES
_same, _tells_nothing = _disclosure._same, _disclosure._tells_nothing
CANARY_PATIENT, HOSPITAL_NAME = _target.CANARY_PATIENT, _target.HOSPITAL_NAME


def _answer(body: Any, status: int = 200, sent: bytes = b"") -> Any:
    return Answer("test", status, json.dumps(body).encode(), sent=sent)


def test_a_canary_is_a_leak_unless_the_caller_sent_it() -> None:
    secrets = [CANARY_PATIENT.encode()]
    assert leaks(_answer({"subject": CANARY_PATIENT}), secrets) == [CANARY_PATIENT]
    assert leaks(_answer({"subject": CANARY_PATIENT}, sent=CANARY_PATIENT.encode()), secrets) == []
    assert leaks(_answer({"detail": 'File "/x/app.py", line 3'}), []) == ["stack trace or internal path"]
    assert leaks(Answer("t", 500, b'File "/x/app.py", line 3'), []) == ["stack trace or internal path"]


def test_a_forger_told_a_stored_fact_or_given_a_verification_id_is_caught() -> None:
    quiet = {"verdict": "tampered", "hospital_name": None, "superseded_by": None, "revoked_by": None,
             "issued": "2030-01-01T00:00:00Z", "verification_id": None,
             "recognition": {"reasons": [{"code": "not-authentic"}]}}
    assert _tells_nothing(_answer(quiet), "2024-05-01T07:30:00Z").disclosed == []
    loud = _tells_nothing(_answer(quiet | {"hospital_name": HOSPITAL_NAME, "superseded_by": {"version": 2},
                                           "issued": "2024-05-01T07:30:00Z",
                                           "recognition": {"reasons": [{"code": "superseded"}]}}),
                          "2024-05-01T07:30:00Z")
    assert len(loud.disclosed) == 5, loud.disclosed  # name (member and text), later version, issued, reason
    assert _tells_nothing(_answer(quiet | {"verification_id": "01J"})).wrong is not None


def test_a_stored_id_answered_otherwise_than_a_never_stored_one_is_caught() -> None:
    stored = _answer({"detail": "no result 'R1' with that leaf", "instance": "/a"}, 404)
    never = _answer({"detail": "no result 'R9' with that leaf", "instance": "/b"}, 404)
    _same(stored, never, ("R1", "R9"))
    assert stored.disclosed == []
    told = _answer({"detail": "no result 'R9' at hospital"}, 404)
    _same(stored, told, ("R1", "R9"))
    assert len(stored.disclosed) == 1


def test_secret_files_are_told_from_public_ones() -> None:
    secret = ["regional.key", "admin-token", "mrledger.db", "mrledger.db-wal", "root.key.pem", "x-1.key.pem"]
    public = ["root.crt.pem", "mrledger.db.8a62.lock", "anvil.log", "serve.json", "anvil-state.json.dump"]
    assert [n for n in secret if not SECRET_FILES.search(n)] == []
    assert [n for n in public if SECRET_FILES.search(n)] == []


def test_a_child_that_outlives_its_killed_parent_is_an_orphan() -> None:
    """A parent that does not tie its child to its life (``sleep`` in the background of a shell): the check
    finds the child alive after the parent's SIGKILL, and kills it."""
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & wait"])
    try:
        deadline = time.monotonic() + 10
        while not attack.descendants(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        children = attack.descendants(proc.pid)
        assert children
        orphans = attack.kill_and_count_orphans(SimpleNamespace(proc=proc), grace=0.5)  # type: ignore[arg-type]
        assert set(orphans) == children
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{p}").exists() and attack.running(p) for p in orphans) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(attack.running(p) for p in orphans)
    finally:
        proc.kill()
        proc.wait()


def test_every_case_has_a_unique_name() -> None:
    names = [c.name for c in attack.CASES]
    assert len(names) == len(set(names)) and len(names) >= 25
