"""Attack a real ``mrledger serve`` as an anonymous client would, and count what went wrong. Not a test.

Usage:  python scripts/attack.py [--json] [--keep] [--only NAME ...]

Starts ``mrledger serve`` on a temp data dir (as scripts/bench_api.py does; ``MRL_METRICS_TOKEN`` set, as
a deployment that cares would run it), seeds one hospital with one result whose patient id and result id
are canaries, then runs every case of ``CASES`` in turn. After each case it checks that the node is still
alive and answering; throughout, a sampler records the API process's resident memory.

Counted, over every answer to every request a case sends:

* ``crashes``: the serve process died, or stopped answering ``/healthz`` within 5 s, after a case;
* ``5xx``: any answer with a status of 500 or more;
* ``leaks``: any answer to an anonymous request that carries what the caller did not send: the seeded
  canaries (stored data), a stack trace, an internal path (the data dir, the virtualenv, site-packages),
  or a token;
* ``max_rss_mb``: the API process's peak resident memory (its ``VmHWM``), next to ``rss_limit_mb``: the
  baseline after seeding plus ``--rss-growth`` MB; above it counts as unbounded memory (exit 1 too).

The last line of output is one JSON object ``{"cases": N, "crashes": 0, "5xx": 0, "leaks": 0, "max_rss_mb":
…}``; the exit status is 1 if crashes, 5xx, leaks or unbounded memory are above zero.

Adding a case: write a function ``(t: Target) -> list[Answer]`` that sends anonymous requests and returns
their answers (``t.http(...)`` for ordinary requests, ``t.raw(...)`` for bytes on a socket), and add
``Case("name", function)`` to ``CASES`` below. A case that expects the server to drop the connection
returns an ``Answer`` with ``status=None``: that is neither a crash nor a 5xx (the liveness check after
the case decides whether the node survived).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_api import Server  # noqa: E402

CANARY_PATIENT = "SYNTH-CANARY-PATIENT-9317"
CANARY_RESULT = "CANARY-RESULT-5521"
HID = "atk-001"
METRICS_TOKEN = "attack-script-metrics-token-0b7f"
MIB = 1024 * 1024

#: Every route that reads a body, with the method: each body case is sent to all of them.
BODY_ROUTES = [("POST", "/v1/verify"), ("POST", "/v1/decisions"), ("POST", "/v1/encounters"),
               ("POST", "/v1/hospitals"), ("POST", f"/v1/hospitals/{HID}/results"),
               ("POST", f"/v1/hospitals/{HID}/fhir"), ("POST", f"/v1/hospitals/{HID}/hl7v2"),
               ("PUT", f"/v1/hospitals/{HID}/eligibility/ct")]


@dataclass
class Answer:
    """One answer as the attacker saw it; ``status`` None: no HTTP answer (connection closed or timed out)."""

    request: str
    status: int | None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: The node did not serve others while this request was being made: counted with the crashes.
    unavailable: bool = False


class Target:
    """The running node, and the two ways of talking to it a case needs."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.port = server.port
        self.base = f"http://127.0.0.1:{server.port}"
        self.client = httpx.Client(base_url=self.base, timeout=30)

    def http(self, method: str, path: str, body: bytes | None = None, headers: dict[str, Any] | None = None,
             timeout: float = 30) -> Answer:
        label = f"{method} {path[:80]}"
        try:
            r = self.client.request(method, path, content=body, headers=headers, timeout=timeout)
        except httpx.TransportError as exc:
            return Answer(f"{label} ({type(exc).__name__})", None)
        return Answer(label, r.status_code, r.content, dict(r.headers))

    def raw(self, data: bytes | Iterator[bytes], label: str, timeout: float = 10) -> Answer:
        """Bytes on a fresh socket (an iterator is sent piece by piece, stopping once the server answers);
        then the answer, read until the server closes or its Content-Length is in."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        try:
            pieces = [data] if isinstance(data, bytes) else data
            for piece in pieces:
                if _answered(sock):
                    break
                try:
                    sock.sendall(piece)
                except OSError:
                    break
            return _read_answer(sock, label, timeout)
        finally:
            sock.close()

    def json_post(self, path: str, body: bytes, content_type: str = "application/json",
                  method: str = "POST") -> Answer:
        return self.http(method, path, body, {"Content-Type": content_type})


def _answered(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def _read_answer(sock: socket.socket, label: str, timeout: float) -> Answer:
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/"):
            return Answer(label, None, data[:2000])
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0") or 0)
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return Answer(label, int(lines[0].split()[1]), body, headers)
    except (TimeoutError, OSError):
        return Answer(f"{label} (no answer)", None, data[:2000])


def _head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunks(size: int, total: int, byte: bytes = b"[") -> Iterator[bytes]:
    frame = f"{size:x}\r\n".encode() + byte * size + b"\r\n"
    for _ in range(total // size):
        yield frame


# -- the cases ------------------------------------------------------------------------------------------------
# Each sends anonymous requests only (no token), as an attacker without credentials would.


def deep_json_every_route(t: Target) -> list[Answer]:
    """~80,000 nested arrays or objects (160 KB): the C decoder segfaulted (issue 14 #1)."""
    out = []
    for method, path in BODY_ROUTES:
        for body in (b"[" * 80_000, b'{"a":' * 80_000, b'[{"a":' * 40_000):
            out.append(t.json_post(path, body, method=method))
        out.append(t.http(method, path, b"[" * 80_000))  # no Content-Type: FastAPI decodes JSON anyway
        out.append(t.json_post(path, b"[" * 80_000, "application/fhir+json", method))
    return out


def oversized_declared(t: Target) -> list[Answer]:
    """A Content-Length over the limit is refused before a byte is read."""
    return [t.raw(_head(m, p, {"Content-Type": "application/json", "Content-Length": str(17 * MIB)}) + b"{",
                  f"{m} {p} CL 17 MiB") for m, p in BODY_ROUTES]


def oversized_chunked(t: Target) -> list[Answer]:
    """300 MiB chunked, no Content-Length (issue 14 #2): refused once 16 MiB are in, not read whole."""
    return [t.raw(_chunk_stream(m, p, 300 * MIB), f"{m} {p} chunked 300 MiB") for m, p in BODY_ROUTES[:3]]


def _chunk_stream(method: str, path: str, total: int) -> Iterator[bytes]:
    yield _head(method, path, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    yield from _chunks(256 * 1024, total)


def content_length_smaller_than_body(t: Target) -> list[Answer]:
    """Content-Length 10, then 2 MiB: the rest must not become a second request the node acts on."""
    smuggled = b"[" * 10 + _head("POST", f"/v1/hospitals/{HID}/results", {"Content-Length": "2"}) + b"{}"
    return [t.raw(_head("POST", "/v1/verify", {"Content-Type": "application/json", "Content-Length": "10"})
                  + smuggled + b"x" * (2 * MIB), "CL 10 + smuggled request + 2 MiB")]


def both_length_and_chunked(t: Target) -> list[Answer]:
    """Request smuggling's classic: Content-Length and Transfer-Encoding together."""
    return [t.raw(_head("POST", "/v1/verify", {"Content-Length": "4", "Transfer-Encoding": "chunked"})
                  + b"5\r\n[[[[[\r\n0\r\n\r\n", "CL + TE")]


def partial_body_slowloris(t: Target) -> list[Answer]:
    """Bodies announced and never finished, on many connections at once (a client-side timeout of 2 s): the
    node must keep answering others meanwhile."""
    socks = []
    for i in range(64):
        s = socket.create_connection(("127.0.0.1", t.port), timeout=5)
        if i % 2:
            s.sendall(_head("POST", "/v1/verify", {"Content-Type": "application/json", "Content-Length": "100000"})
                      + b'{"receipt": ')
        else:
            s.sendall(b"POST /v1/verify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")  # headers never end
        socks.append(s)
    try:
        start = time.monotonic()
        health = t.http("GET", "/healthz", timeout=5)
        slow = time.monotonic() - start
        out = [health if slow < 2 and health.status == 200 else
               Answer(f"GET /healthz took {slow:.1f} s with 64 slow clients", health.status, unavailable=True)]
        time.sleep(2)  # the attacker's patience: the node owes them nothing yet
        for s in socks[1::2]:
            _answered(s)
        return out
    finally:
        for s in socks:
            s.close()


def invalid_utf8(t: Target) -> list[Answer]:
    out = []
    for method, path in BODY_ROUTES:
        for body in (b'{"a": "\xff\xfe"}', b'{"\xc0\xaf": 1}', b'"\xed\xa0\x80"', b"\xef\xbb\xbf{}"):
            out.append(t.json_post(path, body, method=method))
    return out


def malformed_json(t: Target) -> list[Answer]:
    bodies = [b"", b"null", b"{", b'{"a": 1} {"b": 2}', b'{"a": 1, "a": 2}', b"NaN", b'{"a": Infinity}',
              b'{"a": "\\ud800"}', b'{"\\udc00": 1}', b"[" + b"0," * (4 * MIB) + b"0]", b'"' + b"x" * (8 * MIB) + b'"',
              b'{"receipt": ' + b"[" * 127 + b"]" * 127 + b"}"]
    return [t.json_post(p, b, method=m) for m, p in BODY_ROUTES for b in bodies]


def number_edge_cases(t: Target) -> list[Answer]:
    """Numbers no double holds (issue 14 #12) in a receipt, a record and a decision."""
    out = []
    for number in (b"1e400", b"-1e400", b"1e-400", b"1" + b"0" * 5000, b"1.7976931348623159e308", b"-0",
                   b"0." + b"0" * 400 + b"1", b"1E+99999999999"):
        out.append(t.json_post("/v1/verify", b'{"receipt": {"format": "mrl-receipt/1", "leaf": {"index": '
                               + number + b"}}}"))
        out.append(t.json_post(f"/v1/hospitals/{HID}/results", b'{"version": ' + number + b"}"))
        out.append(t.json_post("/v1/decisions", b'{"verification_id": ' + number + b"}"))
    return out


def huge_headers(t: Target) -> list[Answer]:
    """httptools buffered a head of any size (a 64 MiB header: +64 MB, then a 200); now a 431 past 64 KiB."""
    return [t.raw(_head("GET", "/healthz", {"X-Big": "a" * (1 * MIB)}), "GET 1 MiB header"),
            t.raw(_head("GET", "/healthz", {f"X-{i}": "b" for i in range(20_000)}), "GET 20,000 headers"),
            t.raw(_head("POST", "/v1/verify", {"Authorization": "Bearer " + "m" * (256 * 1024)}), "256 KiB token"),
            t.raw(b"GET /" + b"a" * (1 * MIB) + b" HTTP/1.1\r\nHost: x\r\n\r\n", "1 MiB request line"),
            t.raw(_endless_header(512 * MIB), "512 MiB header, streamed")]


def _endless_header(total: int) -> Iterator[bytes]:
    yield b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: "
    piece = b"e" * (256 * 1024)
    for _ in range(total // len(piece)):
        yield piece


def many_connections(t: Target) -> list[Answer]:
    """400 connections opened and left silent (or mid-head) at once: others are still served."""
    socks = []
    try:
        for i in range(400):
            try:
                s = socket.create_connection(("127.0.0.1", t.port), timeout=5)
            except OSError:
                break
            if i % 2:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        start = time.monotonic()
        health = t.http("GET", "/healthz", timeout=5)
        slow = time.monotonic() - start
        return [health if slow < 2 and health.status == 200 else
                Answer(f"GET /healthz took {slow:.1f} s beside {len(socks)} idle connections", health.status,
                       unavailable=True)]
    finally:
        for s in socks:
            s.close()


def hostile_tokens(t: Target) -> list[Answer]:
    """Bearer values a tolerant client would not send (so on a raw socket): empty, huge, UTF-8, SQL, two."""
    out = []
    for auth in (b"Bearer ", b"Bearer mrl_" + b"x" * 4000, "Bearer \u00e9t\u00e9".encode(), b"Basic YWRtaW46YWRtaW4=",
                 b"Bearer mrl_' OR 1=1 --", b"bearer  mrl_a mrl_b", b"Bearer \x00mrl_", b"Bearer\tmrl_x"):
        for path in (f"/v1/hospitals/{HID}/results/R1".encode(), b"/v1/hospitals", b"/metrics"):
            head = b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + auth + b"\r\n\r\n"
            out.append(t.raw(head, f"GET {path.decode()} Authorization: {auth[:24]!r}"))
    return out


def unicode_ids_in_paths(t: Target) -> list[Answer]:
    """Ids as an attacker spells them (issue 14 #6, #7): invisible, bidi, NFD, CJK, broken percent-encoding,
    traversal — a 4xx every time, never a 500."""
    ids = ["LAB\u200b-1", "LAB-\u202e1", "A\u030asa", "检验-2024-0001", "\ufeffx", "a\u2028b", "x" * 4000]
    paths = [f"/v1/hospitals/{HID}/results/{quote(i)}{suffix}" for i in ids
             for suffix in ("", "/receipt", "/receipt.png", "/receipt.svg", "/proof?leaf_hash=" + "0" * 64)]
    paths += [f"/v1/audit/hospitals/{HID}/results/{quote(i)}/lineage" for i in ids]
    paths += [f"/v1/hospitals/{HID}/results/%FF%FE", f"/v1/hospitals/{HID}/results/%C0%AF",
              f"/v1/hospitals/{HID}/results/..%2F..%2F..%2Fetc%2Fpasswd", f"/v1/hospitals/{HID}/results/%00",
              "/v1/hospitals/%E2%80%8Batk-001/results/R1", "/web/..%2F..%2Fsettings.py", "/web/%2e%2e/%2e%2e/app.py",
              f"/v1/hospitals/{HID}/results/R1/proof?leaf_hash=zz&version=99999999999999999999"]
    return [t.http("GET", p) for p in paths]


def strange_methods(t: Target) -> list[Answer]:
    out = [t.http(m, p) for m in ("TRACE", "OPTIONS", "PATCH", "DELETE", "PUT", "PROPFIND")
           for p in ("/v1/verify", f"/v1/hospitals/{HID}/results", "/metrics")]
    out.append(t.raw(b"GARBAGE / HTTP/1.1\r\nHost: x\r\n\r\n", "unknown method"))
    out.append(t.raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64), "TLS hello on plain HTTP"))
    out.append(t.raw(b"GET / HTTP/9.9\r\n\r\n", "HTTP/9.9"))
    return out


def metrics_anonymous(t: Target) -> list[Answer]:
    """With MRL_METRICS_TOKEN set (as this node runs), /metrics names no hospital to an anonymous caller."""
    return [t.http("GET", "/metrics"), t.http("GET", "/metrics", headers={"Authorization": "Bearer guess"})]


def receipts_anonymous(t: Target) -> list[Answer]:
    """A forged receipt naming the seeded result, and the public proof route guessed at."""
    forged = {"receipt": {"format": "mrl-receipt/1", "record": {"hospital_id": HID, "result_id": "R-guess"},
                          "salt": "00" * 16, "leaf": {"index": 0, "hash": "00" * 32}, "audit_path": [],
                          "batch": {}, "anchor": None}}
    return [t.json_post("/v1/verify", json.dumps(forged).encode()),
            t.http("GET", f"/v1/hospitals/{HID}/results/R-guess/proof?leaf_hash={'0' * 64}")]


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[Target], list[Answer]]


# ==== CASES: add new cases here (one Case per attack; each sends anonymous requests only) ====================
CASES: list[Case] = [
    Case("deep-json-every-route", deep_json_every_route),
    Case("oversized-declared", oversized_declared),
    Case("oversized-chunked", oversized_chunked),
    Case("content-length-smaller-than-body", content_length_smaller_than_body),
    Case("content-length-and-chunked", both_length_and_chunked),
    Case("partial-bodies-slowloris", partial_body_slowloris),
    Case("invalid-utf8", invalid_utf8),
    Case("malformed-json", malformed_json),
    Case("number-edge-cases", number_edge_cases),
    Case("huge-headers", huge_headers),
    Case("many-idle-connections", many_connections),
    Case("hostile-tokens", hostile_tokens),
    Case("unicode-ids-in-paths", unicode_ids_in_paths),
    Case("strange-methods", strange_methods),
    Case("metrics-anonymous", metrics_anonymous),
    Case("receipts-anonymous", receipts_anonymous),
]
# ==== end of CASES ===========================================================================================


# -- the harness -----------------------------------------------------------------------------------------------

_TRACE = re.compile(rb"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|site-packages|\.venv/")


def leaks(answer: Answer, secrets: list[bytes]) -> list[str]:
    """What in an anonymous answer the caller did not send (the cases never send the canaries)."""
    text = answer.body + b"\n" + json.dumps(answer.headers).encode()
    found = [s.decode(errors="replace") for s in secrets if s and s in text]
    if _TRACE.search(text):
        found.append("stack trace or internal path")
    if re.search(rb"mrl_[A-Za-z0-9_-]{20,}", text):
        found.append("a token")
    return found


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


def seed(server: Server, client: httpx.Client) -> None:
    """One hospital and one result holding the canaries, so an answer that echoes stored data shows."""
    admin = (server.data_dir / "admin-token").read_text().strip()
    r = client.post(f"{server.api}/hospitals", json={"id": HID, "name": "Attack Canary Hospital"},
                    headers={"Authorization": f"Bearer {admin}"})
    if r.status_code != 201:
        raise SystemExit(f"cannot register {HID}: {r.status_code} {r.text}")
    token = server.token(f"hospital:{HID}")
    rec = {"hospital_id": HID, "result_id": CANARY_RESULT, "version": 1, "kind": "lab",
           "code": {"system": "http://loinc.org", "code": "2345-7"},
           "subject": {"system": "urn:mrledger:attack:synthetic-patient", "value": CANARY_PATIENT},
           "effective": "2024-05-01T07:00:00Z", "issued": "2024-05-01T07:30:00Z", "status": "final",
           "content": {"type": "observations", "observations": [
               {"code": {"system": "http://loinc.org", "code": "2345-7"}, "value": 5.1, "unit": "mmol/L"}]}}
    r = client.post(f"{server.api}/hospitals/{HID}/results", json=rec, headers={"Authorization": f"Bearer {token}"})
    if r.status_code != 202:
        raise SystemExit(f"cannot seed: {r.status_code} {r.text}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="only the final JSON line")
    ap.add_argument("--keep", action="store_true", help="keep the temp data dir")
    ap.add_argument("--only", nargs="*", default=None, help="run only these cases (by name)")
    ap.add_argument("--rss-growth", type=float, default=256.0,
                    help="MB the API process may grow above its baseline before memory counts as unbounded")
    args = ap.parse_args()
    cases = [c for c in CASES if args.only is None or c.name in args.only]

    tmp = Path(tempfile.mkdtemp(prefix="mrl-attack-"))
    server = Server(tmp / "data", batch_interval=1.0)
    server.env["MRL_METRICS_TOKEN"] = METRICS_TOKEN
    totals = {"cases": len(cases), "requests": 0, "crashes": 0, "5xx": 0, "leaks": 0}
    report: list[dict[str, Any]] = []
    try:
        server.start()
        assert server.proc is not None
        pid = server.proc.pid
        with httpx.Client(timeout=60) as client:
            seed(server, client)
        target = Target(server)
        secrets = [CANARY_PATIENT.encode(), CANARY_RESULT.encode(), str(tmp).encode(), str(ROOT).encode(),
                   METRICS_TOKEN.encode(), (server.data_dir / "admin-token").read_bytes().strip()]
        baseline_kb = _status_kb(pid, "VmRSS")
        sampler = RssSampler(pid)
        sampler.start()
        for case in cases:
            start = time.monotonic()
            try:
                answers = case.run(target)
                error = None
            except Exception as exc:  # a case that cannot even talk to the node: the liveness check decides
                answers, error = [], f"{type(exc).__name__}: {exc}"
            up = alive(target)
            bad5xx = [a.request for a in answers if a.status is not None and a.status >= 500]
            leaked = {a.request: found for a in answers if (found := leaks(a, secrets))}
            totals["requests"] += len(answers)
            totals["crashes"] += 0 if up and not any(a.unavailable for a in answers) else 1
            totals["5xx"] += len(bad5xx)
            totals["leaks"] += len(leaked)
            statuses = sorted({str(a.status) for a in answers})
            entry = {"case": case.name, "requests": len(answers), "alive": up, "statuses": statuses,
                     "seconds": round(time.monotonic() - start, 2), "rss_mb": round(_status_kb(pid, "VmRSS") / 1024)}
            if bad5xx:
                entry["5xx"] = bad5xx[:5]
            if leaked:
                entry["leaks"] = dict(list(leaked.items())[:5])
            if error:
                entry["error"] = error
            report.append(entry)
            if not args.json:
                print(json.dumps(entry), file=sys.stderr)
            if not up:
                break  # nothing left to attack
        sampler.stopped.set()
        peak_kb = max(sampler.peak_kb, _status_kb(pid, "VmHWM"))
        limit_mb = baseline_kb / 1024 + args.rss_growth
        result = {**totals, "max_rss_mb": round(peak_kb / 1024, 1), "baseline_rss_mb": round(baseline_kb / 1024, 1),
                  "rss_limit_mb": round(limit_mb, 1), "rss_bounded": peak_kb / 1024 <= limit_mb}
    finally:
        server.stop()
        if args.keep:
            print(f"data dir kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))
    failed = result["crashes"] or result["5xx"] or result["leaks"] or not result["rss_bounded"]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
