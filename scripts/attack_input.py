"""The input cases of scripts/attack.py: bodies, heads, connections, encodings, numbers and ids as an anonymous
attacker sends them (issue 14 findings 1, 2, 6, 7, 12 and the hardening around them). Each function takes the
``Target`` and returns the answers it got; ``CASES`` lists them in the order attack.py runs them."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from attack_target import (
    BODY_ROUTES,
    HID,
    METRICS_TOKEN,
    MIB,
    Answer,
    Target,
    answered,
    chunk_frames,
    request_head,
)


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
    return [t.raw(request_head(m, p, {"Content-Type": "application/json", "Content-Length": str(17 * MIB)}) + b"{",
                  f"{m} {p} CL 17 MiB") for m, p in BODY_ROUTES]


def oversized_chunked(t: Target) -> list[Answer]:
    """300 MiB chunked, no Content-Length (issue 14 #2): refused once 16 MiB are in, not read whole."""
    return [t.raw(_chunk_stream(m, p, 300 * MIB), f"{m} {p} chunked 300 MiB") for m, p in BODY_ROUTES[:3]]


def _chunk_stream(method: str, path: str, total: int) -> Iterator[bytes]:
    yield request_head(method, path, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    yield from chunk_frames(256 * 1024, total)


def content_length_smaller_than_body(t: Target) -> list[Answer]:
    """Content-Length 10, then 2 MiB: the rest must not become a second request the node acts on."""
    smuggled = b"[" * 10 + request_head("POST", f"/v1/hospitals/{HID}/results", {"Content-Length": "2"}) + b"{}"
    return [t.raw(request_head("POST", "/v1/verify", {"Content-Type": "application/json", "Content-Length": "10"})
                  + smuggled + b"x" * (2 * MIB), "CL 10 + smuggled request + 2 MiB")]


def both_length_and_chunked(t: Target) -> list[Answer]:
    """Request smuggling's classic: Content-Length and Transfer-Encoding together."""
    return [t.raw(request_head("POST", "/v1/verify", {"Content-Length": "4", "Transfer-Encoding": "chunked"})
                  + b"5\r\n[[[[[\r\n0\r\n\r\n", "CL + TE")]


def partial_body_slowloris(t: Target) -> list[Answer]:
    """Bodies announced and never finished, on many connections at once (a client-side timeout of 2 s): the
    node must keep answering others meanwhile."""
    socks = []
    for i in range(64):
        s = socket.create_connection(("127.0.0.1", t.port), timeout=5)
        if i % 2:
            s.sendall(request_head("POST", "/v1/verify", {"Content-Type": "application/json",
                                                          "Content-Length": "100000"}) + b'{"receipt": ')
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
            answered(s)
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
    return [t.raw(request_head("GET", "/healthz", {"X-Big": "a" * (1 * MIB)}), "GET 1 MiB header"),
            t.raw(request_head("GET", "/healthz", {f"X-{i}": "b" for i in range(20_000)}), "GET 20,000 headers"),
            t.raw(request_head("POST", "/v1/verify", {"Authorization": "Bearer " + "m" * (256 * 1024)}),
                  "256 KiB token"),
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
    """Issue 14 #16: with MRL_METRICS_TOKEN set (as this node runs), /metrics answers 401 to anyone without that
    token — an API token (even the admin's) is not it — and names no hospital; the scraper's token gets 200."""
    w = t.world
    out = [t.http("GET", "/metrics").expect(401), t.http("GET", "/metrics", headers={"Authorization": "Bearer guess"})
           .expect(401)]
    if w is not None:
        out += [t.as_(w.tokens[who], "GET", "/metrics", label=who).expect(401) for who in ("admin", "hospital")]
    for a in out:
        if HID.encode() in a.body or b"mrledger_" in a.body:
            a.disclosed.append("metrics content without the metrics token")
    scraper = t.http("GET", "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).expect(200)
    scraper.body = b"(the scraper's own metrics)"  # entitled to them: not searched for leaks
    return [*out, scraper]


def receipts_anonymous(t: Target) -> list[Answer]:
    """A forged receipt naming a result id nobody stored, and the public proof route guessed at: 422 / 404."""
    forged: dict[str, Any] = {"receipt": {
        "format": "mrl-receipt/1", "record": {"hospital_id": HID, "result_id": "R-guess"}, "salt": "00" * 16,
        "leaf": {"index": 0, "hash": "00" * 32}, "audit_path": [], "batch": {}, "anchor": None}}
    return [t.json_post("/v1/verify", json.dumps(forged).encode()).expect(422),
            t.http("GET", f"/v1/hospitals/{HID}/results/R-guess/proof?leaf_hash={'0' * 64}").expect(404)]


INPUT_CASES: list[tuple[str, Callable[[Target], list[Answer]]]] = [
    ("deep-json-every-route", deep_json_every_route),
    ("oversized-declared", oversized_declared),
    ("oversized-chunked", oversized_chunked),
    ("content-length-smaller-than-body", content_length_smaller_than_body),
    ("content-length-and-chunked", both_length_and_chunked),
    ("partial-bodies-slowloris", partial_body_slowloris),
    ("invalid-utf8", invalid_utf8),
    ("malformed-json", malformed_json),
    ("number-edge-cases", number_edge_cases),
    ("huge-headers", huge_headers),
    ("many-idle-connections", many_connections),
    ("hostile-tokens", hostile_tokens),
    ("unicode-ids-in-paths", unicode_ids_in_paths),
    ("strange-methods", strange_methods),
    ("metrics-token", metrics_anonymous),
    ("receipts-anonymous", receipts_anonymous),
]
