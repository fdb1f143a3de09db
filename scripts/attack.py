"""Attack a real ``mrledger serve`` as an anonymous (or low-privilege) client would, and count what went wrong.
Not a test.

Usage:  python scripts/attack.py [--json] [--keep] [--only NAME ...]

Starts ``mrledger serve`` on a temp data dir (as scripts/bench_api.py does; ``MRL_METRICS_TOKEN`` set, as a
deployment that cares would run it, and the anonymous verification limit at 20/s, bursts of 100), seeds two
hospitals, tokens and results holding canaries (scripts/attack_seed.py), waits for their receipts, then runs
every case of ``CASES`` in turn. After each case it checks that the node is still alive and answering;
throughout, a sampler records the API process's resident memory. At the end serve is killed with SIGKILL and
every process it started must die with it (issue 14 #17: a managed anvil left running as an orphan).

Every case of issue 14 is tried: findings 1, 2, 12 and the request-level hardening (attack_input.py: deep JSON
on every body route, declared and chunked oversize, smuggling, slow bodies and heads, huge heads, invalid UTF-8,
numbers no double holds, hostile tokens, unicode ids in paths, strange methods), 16 (``metrics-token``), 3, 8
and 9 (attack_disclosure.py: forged receipts, doctors probing, forged verifications decided, the anonymous
rate limit), 5, 6, 7, 12, 13 and 15 (attack_ids.py: tokens revoked and expired, QR of non-Latin ids, NFD and
invisible ids, JSON key edge cases, numbers in records behind a hospital's token, the data dir's file modes),
17 (the SIGKILL above), and issue 16 #1 (every receipt endpoint and ``mrledger receipt`` for ids with
``/ % ? # space`` and non-Latin characters). What no request reaches is covered by tests instead: 1's
recursion limit restored after imports by tests/anchoring/test_recursion_limit.py; 4 (the
regional key survives a restart; refused start on PostgreSQL without one) by tests/node/test_serve.py; 10 (X.509
EKU and name constraints) by tests/ledger/test_x509_usage.py and tests/service/test_dev_pki_eku.py; 11 (signing
time against the block) by tests/service/test_signing_time.py; 14 (the receipt spec) by the vectors in
tests/vectors/receipt*; 15's refusal of a loose key file by tests/node/test_keyfiles.py; 17 for every child by
tests/node/test_serve_faults.py.

Counted, over every answer to every request a case sends:

* ``crashes``: the serve process died, or stopped answering ``/healthz`` within 5 s, after a case;
* ``5xx``: any answer with a status of 500 or more;
* ``leaks``: any answer that carries what its caller did not send and may not hear: the seeded canaries (stored
  data), a stack trace, an internal path (the data dir, the virtualenv, site-packages), a token, or a stored fact
  the case looks for (``hospital_name``, ``superseded_by``, ``revoked_by``, a stored ``issued`` told to who does
  not hold the result; a different answer for a stored id than for a never-stored one);
* ``wrong``: answers that are not the right one: a status other than the case expects (a 401 for a revoked
  token, a 429 under a flood, a 200 for every receipt endpoint of an awkward id…), a verdict it must not give, a
  ``verification_id`` for a forgery, a key file others may read;
* ``orphans``: processes serve started that outlived its SIGKILL by 15 s;
* ``max_rss_mb``: the API process's peak resident memory (its ``VmHWM``), next to ``rss_limit_mb``: the
  baseline after seeding plus ``--rss-growth`` MB; above it counts as unbounded memory (exit 1 too).

The last line of output is one JSON object ``{"cases": N, "requests": …, "crashes": 0, "5xx": 0, "leaks": 0,
"wrong": 0, "orphans": 0, "max_rss_mb": …}``; the exit status is 1 if any count is above zero or memory is
unbounded.

Adding a case: write a function ``(t: Target) -> list[Answer]`` that sends requests and returns their answers
(``t.http(...)`` for ordinary requests, ``t.raw(...)`` for bytes on a socket, ``t.as_(token, ...)`` with one of
``t.world.tokens``), mark what is not right with ``Answer.expect(status…)``, ``answer.wrong`` or
``answer.disclosed``, and add ``Case("name", function)`` to ``CASES`` below. A case that expects the server to
drop the connection returns an ``Answer`` with ``status=None``: neither a crash nor a 5xx (the liveness check
after the case decides whether the node survived).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from attack_disclosure import anonymous_rate_limit, doctor_probing, forged_receipts  # noqa: E402
from attack_ids import (  # noqa: E402
    data_dir_modes,
    ids_reachable,
    invisible_and_nfd_ids,
    json_key_edge_cases,
    numbers_in_records,
    receipt_qr_non_latin,
    revoked_and_expired_tokens,
)
from attack_input import INPUT_CASES  # noqa: E402
from attack_seed import seed  # noqa: E402
from attack_target import CANARY_PATIENT, CANARY_RESULT, CANARY_REVOKED, METRICS_TOKEN, Answer, Target, leaks  # noqa: E402
from bench_api import Server  # noqa: E402

#: The anonymous verification limit the node runs with: low enough for a flood to reach it, high enough that the
#: other cases' anonymous verifications (about 100, spread over the run) are not refused before being read.
VERIFY_RATE, VERIFY_BURST = 20, 100


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[Target], list[Answer]]


# ==== CASES: add new cases here (one Case per attack) ========================================================
CASES: list[Case] = [
    *(Case(name, run) for name, run in INPUT_CASES),
    Case("data-dir-modes", data_dir_modes),
    Case("forged-receipts", forged_receipts),
    Case("doctor-probing", doctor_probing),
    Case("revoked-and-expired-tokens", revoked_and_expired_tokens),
    Case("receipt-qr-non-latin", receipt_qr_non_latin),
    Case("invisible-and-nfd-ids", invisible_and_nfd_ids),
    Case("json-key-edge-cases", json_key_edge_cases),
    Case("numbers-in-records", numbers_in_records),
    Case("ids-reachable-everywhere", ids_reachable),
    Case("anonymous-rate-limit", anonymous_rate_limit),
]
# ==== end of CASES ===========================================================================================


# -- the harness -----------------------------------------------------------------------------------------------


class RssSampler(threading.Thread):
    """Resident memory of one process every 20 ms (VmHWM, the kernel's own peak, is read at the end too)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self.stopped = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.02):
            self.peak_kb = max(self.peak_kb, _status_kb(self.pid, "VmRSS"))


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def alive(t: Target) -> bool:
    proc = t.server.proc
    if proc is None or proc.poll() is not None:
        return False
    try:
        return httpx.get(f"{t.base}/healthz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_and_count_orphans(server: Server, grace: float = 15.0) -> list[int]:
    """Issue 14 #17 from outside: SIGKILL serve (as the crash of finding 1 would), then every process it had
    started (its anvil, its sealer) must be gone within ``grace`` seconds. Returns those still running (and
    kills them, so the run leaves nothing behind)."""
    assert server.proc is not None
    children = descendants(server.proc.pid)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    deadline = time.monotonic() + grace
    while (left := [p for p in children if running(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    return left


def run_case(case: Case, target: Target, secrets: list[bytes], pid: int) -> dict[str, Any]:
    """One case, and what it counted; ``alive`` False ends the run."""
    start = time.monotonic()
    try:
        answers = case.run(target)
        error = None
    except Exception as exc:  # a case that cannot even talk to the node: the liveness check decides
        answers, error = [], f"{type(exc).__name__}: {exc}"
    up = alive(target)
    bad5xx = [a.request for a in answers if a.status is not None and a.status >= 500]
    leaked = {a.request: found for a in answers if (found := leaks(a, secrets))}
    wrong = {a.request: a.wrong for a in answers if a.wrong}
    entry: dict[str, Any] = {
        "case": case.name, "requests": len(answers), "alive": up, "statuses": sorted({str(a.status) for a in answers}),
        "seconds": round(time.monotonic() - start, 2), "rss_mb": round(_status_kb(pid, "VmRSS") / 1024),
        "n_crashes": 0 if up and not any(a.unavailable for a in answers) else 1, "n_5xx": len(bad5xx),
        "n_leaks": len(leaked), "n_wrong": len(wrong) + (error is not None)}
    if bad5xx:
        entry["5xx"] = bad5xx[:5]
    if leaked:
        entry["leaks"] = dict(list(leaked.items())[:5])
    if wrong:
        entry["wrong"] = dict(list(wrong.items())[:5])
    if error:
        entry["error"] = error
    return entry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true",
                    help="only the final JSON line on stdout (and the cases that found something, on stderr)")
    ap.add_argument("--keep", action="store_true", help="keep the temp data dir")
    ap.add_argument("--only", nargs="*", default=None, help="run only these cases (by name)")
    ap.add_argument("--rss-growth", type=float, default=256.0,
                    help="MB the API process may grow above its baseline before memory counts as unbounded")
    args = ap.parse_args()
    cases = [c for c in CASES if args.only is None or c.name in args.only]

    tmp = Path(tempfile.mkdtemp(prefix="mrl-attack-"))
    server = Server(tmp / "data", batch_interval=1.0)
    server.env.update(MRL_METRICS_TOKEN=METRICS_TOKEN, MRL_VERIFY_RATE_LIMIT=str(VERIFY_RATE),
                      MRL_VERIFY_BURST=str(VERIFY_BURST))
    totals = {"cases": len(cases), "requests": 0, "crashes": 0, "5xx": 0, "leaks": 0, "wrong": 0, "orphans": 0}
    try:
        try:
            server.start()
        except SystemExit:  # serve did not come up: its log goes with the temp dir, so show its end first
            if server.log.exists():
                print(server.log.read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
        assert server.proc is not None
        pid = server.proc.pid
        with httpx.Client(timeout=60) as client:
            world = seed(server, client)
        target = Target(server, world)
        secrets = [CANARY_PATIENT.encode(), CANARY_RESULT.encode(), CANARY_REVOKED.encode(), str(tmp).encode(),
                   str(ROOT).encode(), METRICS_TOKEN.encode(), *(tok.encode() for tok in world.tokens.values())]
        baseline_kb = _status_kb(pid, "VmRSS")
        sampler = RssSampler(pid)
        sampler.start()
        for case in cases:
            entry = run_case(case, target, secrets, pid)
            totals["requests"] += entry["requests"]
            for key in ("crashes", "5xx", "leaks", "wrong"):
                totals[key] += entry.pop(f"n_{key}")
            if not args.json or set(entry) & {"5xx", "leaks", "wrong", "error"} or not entry["alive"]:
                print(json.dumps(entry, ensure_ascii=False), file=sys.stderr)  # with --json: what went wrong
            if not entry["alive"]:
                break  # nothing left to attack
        sampler.stopped.set()
        peak_kb = max(sampler.peak_kb, _status_kb(pid, "VmHWM"))
        limit_mb = baseline_kb / 1024 + args.rss_growth
        orphans = kill_and_count_orphans(server)
        totals["orphans"] = len(orphans)
        if orphans and not args.json:
            print(json.dumps({"orphans": orphans}), file=sys.stderr)
        result = {**totals, "max_rss_mb": round(peak_kb / 1024, 1), "baseline_rss_mb": round(baseline_kb / 1024, 1),
                  "rss_limit_mb": round(limit_mb, 1), "rss_bounded": peak_kb / 1024 <= limit_mb}
    finally:
        server.stop()
        if args.keep:
            print(f"data dir kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))
    failed = any(result[k] for k in ("crashes", "5xx", "leaks", "wrong", "orphans")) or not result["rss_bounded"]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
