"""What every case of scripts/attack.py shares: the node as a target (``Target``), one answer as the attacker
saw it (``Answer``), the seeded canaries and the leak check. Split from attack.py to keep each module short."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from attack_seed import World
    from bench_api import Server

CANARY_PATIENT = "SYNTH-CANARY-PATIENT-9317"
CANARY_RESULT = "CANARY-RESULT-5521"
#: A second result of the seeded hospital, later withdrawn (``entered-in-error``): its revocation is stored data.
CANARY_REVOKED = "CANARY-REVOKED-7730"
HID = "atk-001"
HOSPITAL_NAME = "Attack Canary Hospital"
#: A second hospital: its doctors are the low-privilege callers of the cases that need a token.
OTHER_HID = "atk-002"
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
    #: What the request carried: a secret the caller sent itself is not a leak when echoed.
    sent: bytes = b""
    #: Why the answer is not the right one (wrong status, a verdict it must not give), None when it is.
    wrong: str | None = None
    #: Stored facts the case found in the answer that the caller was not entitled to (counted as leaks).
    disclosed: list[str] = field(default_factory=list)

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def expect(self, *statuses: int) -> Answer:
        """Mark the answer wrong unless its status is one of ``statuses``; returns it, for chaining."""
        if self.wrong is None and self.status not in statuses:
            detail = self.body[:160].decode("utf-8", "replace")
            self.wrong = f"status {self.status}, expected {' or '.join(map(str, statuses))}: {detail}"
        return self


class Target:
    """The running node, and the two ways of talking to it a case needs."""

    def __init__(self, server: Server, world: World | None = None) -> None:
        self.server, self.world = server, world
        self.port = server.port
        self.base = f"http://127.0.0.1:{server.port}"
        self.client = httpx.Client(base_url=self.base, timeout=30)

    def http(self, method: str, path: str, body: bytes | None = None, headers: dict[str, Any] | None = None,
             timeout: float = 30) -> Answer:
        label = f"{method} {path[:80]}"
        try:
            r = self.client.request(method, path, content=body, headers=headers, timeout=timeout)
        except httpx.TransportError as exc:
            return Answer(f"{label} ({type(exc).__name__})", None, sent=path.encode() + (body or b""))
        return Answer(label, r.status_code, r.content, dict(r.headers), sent=path.encode() + (body or b""))

    def raw(self, data: bytes | Iterator[bytes], label: str, timeout: float = 10) -> Answer:
        """Bytes on a fresh socket (an iterator is sent piece by piece, stopping once the server answers);
        then the answer, read until the server closes or its Content-Length is in."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        try:
            pieces = [data] if isinstance(data, bytes) else data
            for piece in pieces:
                if answered(sock):
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

    def as_(self, token: str, method: str, path: str, obj: Any = None, label: str = "") -> Answer:
        """A request with a token (the low-privilege cases); ``label`` says who, in the report."""
        body = None if obj is None else json.dumps(obj).encode()
        headers = {"Authorization": f"Bearer {token}"} | ({"Content-Type": "application/json"} if body else {})
        answer = self.http(method, path, body, headers)
        answer.request = f"{label or 'token'}: {answer.request}"
        return answer


def answered(sock: socket.socket) -> bool:
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


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk_frames(size: int, total: int, byte: bytes = b"[") -> Iterator[bytes]:
    frame = f"{size:x}\r\n".encode() + byte * size + b"\r\n"
    for _ in range(total // size):
        yield frame


#: A traceback or an internal path, as text or inside a JSON string (where its quotes are escaped).
_TRACE = re.compile(rb'Traceback \(most recent call last\)|File \\?"[^"\\]+\\?", line \d+|site-packages|\.venv/')


def leaks(answer: Answer, secrets: list[bytes]) -> list[str]:
    """What in an answer the caller did not send: the seeded canaries (stored data), a stack trace, an internal
    path, a token; and whatever stored fact the case itself found disclosed (``Answer.disclosed``)."""
    text = answer.body + b"\n" + json.dumps(answer.headers).encode()
    found = [s.decode(errors="replace") for s in secrets if s and s in text and s not in answer.sent]
    if _TRACE.search(text):
        found.append("stack trace or internal path")
    if re.search(rb"mrl_[A-Za-z0-9_-]{20,}", text):
        found.append("a token")
    return found + answer.disclosed
