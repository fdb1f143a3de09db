"""Bearer tokens and the access log.

Tokens are random (256 bits), shown once at creation and stored only as SHA-256: a stolen database or
backup yields no usable token. Roles: ``admin``, ``hospital:<id>``, ``doctor``, ``auditor``.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, insert, select

from store.errors import NotFoundError, SubmissionError
from store.models import AccessLog, ApiToken, Hospital
from store.repository import Store

log = logging.getLogger("mrledger.access")
TOKEN_PREFIX = "mrl_"
ROLE_PATTERN = re.compile(r"^(admin|doctor|auditor|hospital:[A-Za-z0-9][A-Za-z0-9._-]{0,63})$")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's id and role (``hospital`` set for hospital tokens)."""

    token_id: int | None
    role: str

    @property
    def kind(self) -> str:
        return self.role.split(":", 1)[0]

    @property
    def hospital(self) -> str | None:
        return self.role.split(":", 1)[1] if self.role.startswith("hospital:") else None


ANONYMOUS = Principal(None, "anonymous")


_TOKEN = select(ApiToken.id, ApiToken.role).where(ApiToken.token_hash == bindparam("hash"),
                                                  ApiToken.revoked_at.is_(None))


@dataclass(frozen=True, slots=True)
class AccessEntry:
    at: datetime
    role: str | None
    action: str
    hospital_id: str | None
    result_id: str | None
    version: int | None
    verdict: str | None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class Access:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[dict[str, object]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flush_lock = threading.Lock()

    def create_token(self, role: str, label: str, now: datetime) -> str:
        """A new token for ``role``; the clear token is returned once and never stored."""
        if not ROLE_PATTERN.match(role):
            raise SubmissionError("role must be admin, doctor, auditor or hospital:<id>")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._store._unit(write=True) as s:
            hospital = role.split(":", 1)[1] if role.startswith("hospital:") else None
            if hospital is not None and s.get(Hospital, hospital) is None:
                raise NotFoundError(f"unknown hospital {hospital!r}")
            s.add(ApiToken(token_hash=_digest(token), role=role, label=label[:128], created_at=now))
        return token

    def authenticate(self, token: str) -> Principal | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            return None
        with self._store._read() as conn:  # every authenticated request asks: the plain-connection path
            row = conn.execute(_TOKEN, {"hash": _digest(token)}).first()
        return None if row is None else Principal(row.id, row.role)

    def count_tokens(self, role: str) -> int:
        with self._store._unit() as s:
            return int(s.scalar(select(func.count()).select_from(ApiToken)
                                .where(ApiToken.role == role, ApiToken.revoked_at.is_(None))) or 0)

    def log(self, who: Principal, action: str, now: datetime, *, hospital_id: str | None = None,
            result_id: str | None = None, version: int | None = None, verdict: str | None = None) -> None:
        row: dict[str, object] = {"at": now, "token_id": who.token_id, "role": who.role, "action": action,
                                  "hospital_id": hospital_id, "result_id": result_id, "version": version,
                                  "verdict": verdict}
        if self._queue is not None:
            self._queue.put(row)
            return
        self._write([row])

    def _write(self, rows: list[dict[str, object]]) -> None:
        with self._store._unit(write=True) as s:
            s.execute(insert(AccessLog), rows)

    # -- buffered mode (mrledger serve) ------------------------------------------------------------------
    # Why: one committed insert per verification took 37 % of a verification's time under load, mostly
    # waiting for SQLite's single write lock against ingest (scripts/bench_api.py, py-spy). Buffered, a
    # background thread writes the entries in one transaction every ``interval`` seconds. The price, stated
    # in docs/anchoring.md: a crash (not a clean stop, which flushes) can lose the last interval's entries.

    def start_buffering(self, interval: float = 0.1) -> None:
        if self._queue is not None:
            return
        self._queue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain_loop, args=(interval,), name="access-log", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        rows: list[dict[str, object]] = []
        assert self._queue is not None
        while True:
            try:
                rows.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if rows:
            self._write(rows)

    def _drain_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self._drain()
            except Exception:  # the database is busy or down: keep the entries for the next round
                log.warning("access log write failed; retrying", exc_info=True)

    def flush(self) -> None:
        """Write what is buffered now (readers of the log call this, so they see their own requests)."""
        if self._queue is not None:
            with self._flush_lock:
                self._drain()

    def close(self) -> None:
        """Stop buffering and write everything still queued (clean shutdown loses nothing)."""
        if self._queue is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()
        self._queue = None

    def entries(self, *, hospital_id: str | None = None, limit: int = 100, offset: int = 0) -> list[AccessEntry]:
        self.flush()
        with self._store._unit() as s:
            q = select(AccessLog).order_by(AccessLog.id.desc()).limit(limit).offset(offset)
            if hospital_id is not None:
                q = q.where(AccessLog.hospital_id == hospital_id)
            return [AccessEntry(a.at, a.role, a.action, a.hospital_id, a.result_id, a.version, a.verdict)
                    for a in s.scalars(q)]
