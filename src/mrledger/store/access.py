"""Bearer tokens and the access log.

Tokens are random (256 bits), shown once at creation and stored only as SHA-256: a stolen database or
backup yields no usable token. Roles: ``admin``, ``hospital:<id>``, ``doctor``, ``doctor:<id>``, ``auditor``.
A ``doctor:<id>`` token is a doctor affiliated with hospital ``<id>``: it may do what any doctor token may, and
its recognition decisions count for that hospital (docs/kpis.md); a plain ``doctor`` token cannot record them.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, bindparam, func, or_, select

from mrledger.store.buffer import BufferedRows
from mrledger.store.bulk import delete_in_chunks
from mrledger.store.crypto import ACCESS_RESULT_ID, access_context
from mrledger.store.errors import NotFoundError, SubmissionError
from mrledger.store.events import is_event_stream
from mrledger.store.models import AccessLog, ApiToken, Hospital
from mrledger.store.repository import Store

TOKEN_PREFIX = "mrl_"
ROLE_PATTERN = re.compile(r"^(admin|doctor|auditor|(hospital|doctor):[A-Za-z0-9][A-Za-z0-9._-]{0,63})$")


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

    @property
    def affiliation(self) -> str | None:
        """The hospital a ``doctor:<id>`` token belongs to (None for any other token)."""
        return self.role.split(":", 1)[1] if self.role.startswith("doctor:") else None


ANONYMOUS = Principal(None, "anonymous")


#: Every request with a token runs this (no cache: a revocation or an expiry takes effect on the very next
#: request, on every node of the database). One lookup by the unique hash; the rest is a filter on one row.
_TOKEN = select(ApiToken.id, ApiToken.role).where(
    ApiToken.token_hash == bindparam("hash"), ApiToken.revoked_at.is_(None),
    or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > bindparam("now")))


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as an administrator sees it: never the token, never its hash."""

    id: int
    role: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> str:
        """``revoked``, ``expired`` or ``active``."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at is not None and self.expires_at <= now else "active"


def _info(t: ApiToken) -> TokenInfo:
    return TokenInfo(t.id, t.role, t.label, t.created_at, t.expires_at, t.revoked_at)


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


#: The access log's columns, in the order rows are handed to the driver.
_COLUMNS = ("at", "token_id", "role", "action", "hospital_id", "result_hmac", "result_enc", "version", "verdict")


class Access(BufferedRows):
    def __init__(self, store: Store) -> None:
        self._store = store
        super().__init__(store.unit_of_work, cast(Table, AccessLog.__table__), _COLUMNS, "access-log")

    def create_token(self, role: str, label: str, now: datetime, expires_at: datetime | None = None) -> str:
        """A new token for ``role``; the clear token is returned once and never stored. ``expires_at``: refused
        from then on (None: until revoked)."""
        return self.issue_token(role, label, now, expires_at)[0]

    def issue_token(self, role: str, label: str, now: datetime,
                    expires_at: datetime | None = None) -> tuple[str, TokenInfo]:
        """``create_token`` with the stored token's description (its id names it for ``revoke_token``)."""
        if expires_at is not None and (expires_at.tzinfo is None or expires_at <= now):
            raise SubmissionError("a token's expiry must be a time with a UTC offset, in the future")
        if not ROLE_PATTERN.match(role):
            raise SubmissionError("role must be admin, doctor, doctor:<id>, auditor or hospital:<id>")
        hospital = role.split(":", 1)[1] if ":" in role else None
        if hospital is not None and is_event_stream(hospital):
            # An event stream is written by the node only (decisions, encounters); a token acting for it
            # could add records the KPI index does not hold.
            raise SubmissionError(f"{hospital!r} is an event stream, not a hospital")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._store.unit_of_work() as s:
            if hospital is not None and s.get(Hospital, hospital) is None:
                raise NotFoundError(f"unknown hospital {hospital!r}")
            row = ApiToken(token_hash=_digest(token), role=role, label=label[:128], created_at=now,
                           expires_at=expires_at)
            s.add(row)
            s.flush()
            info = _info(row)
        return token, info

    def authenticate(self, token: str, now: datetime | None = None) -> Principal | None:
        """The caller of a token, or None when it is unknown, revoked or expired at ``now`` (default: the
        clock). Read from the database on every call: there is no cache a revocation would have to outlive."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            return None
        at = now if now is not None else datetime.now(UTC)
        rows = self._store.fetch(_TOKEN, {"hash": _digest(token), "now": at})  # every authenticated request asks
        return Principal(*rows[0]) if rows else None

    def count_tokens(self, role: str, now: datetime | None = None) -> int:
        """Tokens of ``role`` that still work (neither revoked nor expired)."""
        at = now if now is not None else datetime.now(UTC)
        with self._store.read() as s:
            return int(s.scalar(select(func.count()).select_from(ApiToken).where(
                ApiToken.role == role, ApiToken.revoked_at.is_(None),
                or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > at))) or 0)

    def tokens(self, *, limit: int = 1000, offset: int = 0) -> list[TokenInfo]:
        """Every token ever made, oldest first (revoked and expired ones included: they are the audit trail)."""
        with self._store.read() as s:
            return [_info(t) for t in s.scalars(select(ApiToken).order_by(ApiToken.id).limit(limit).offset(offset))]

    def revoke_token(self, token_id: int, now: datetime) -> TokenInfo:
        """Revoke a token from ``now`` on (NotFoundError if there is none). Idempotent: a revoked token keeps
        its first revocation time."""
        with self._store.unit_of_work() as s:
            row = s.get(ApiToken, token_id)
            if row is None:
                raise NotFoundError(f"no token {token_id}")
            if row.revoked_at is None:
                row.revoked_at = now
                s.flush()
            return _info(row)

    def log(self, who: Principal, action: str, now: datetime, *, hospital_id: str | None = None,
            result_id: str | None = None, version: int | None = None, verdict: str | None = None) -> None:
        """Record an access. A result id is stored as its keyed hash (the one ``record_versions`` holds, so
        the log joins the records) plus a ciphertext for auditors: it can embed a patient identifier."""
        result_hmac = result_enc = None
        if result_id is not None:
            keys = self._store.keys
            result_hmac = keys.index(hospital_id or "", result_id)
            result_enc = keys.encrypt(ACCESS_RESULT_ID, access_context(hospital_id, result_hmac),
                                      result_id.encode("utf-8"))
        row: dict[str, object] = {"at": now, "token_id": who.token_id, "role": who.role, "action": action,
                                  "hospital_id": hospital_id, "result_hmac": result_hmac, "result_enc": result_enc,
                                  "version": version, "verdict": verdict}
        self._buffer.put(row)


    def prune(self, before: datetime, chunk: int = 10_000) -> int:
        """Delete the entries older than ``before`` (``MRL_ACCESS_LOG_RETENTION_DAYS``), ``chunk`` per
        transaction; the number deleted. Buffered entries are written first, so none escapes its deadline."""
        self.flush()
        return delete_in_chunks(self._store.unit_of_work, select(AccessLog.id).where(AccessLog.at < before),
                                AccessLog.id, chunk)

    def entries(self, *, hospital_id: str | None = None, result_id: str | None = None, limit: int = 100,
                offset: int = 0) -> list[AccessEntry]:
        """Newest first, result ids decrypted (DecryptionError if one was altered). ``result_id`` (clear; it
        needs ``hospital_id``) filters by its keyed hash: the auditor names the result, the log never did."""
        self.flush()
        q = select(AccessLog).order_by(AccessLog.id.desc()).limit(limit).offset(offset)
        if hospital_id is not None:
            q = q.where(AccessLog.hospital_id == hospital_id)
        if result_id is not None:
            if hospital_id is None:
                raise SubmissionError("filtering the access log by result id needs the hospital id")
            q = q.where(AccessLog.result_hmac == self._store.result_key(hospital_id, result_id))
        with self._store.read() as s:
            rows = list(s.scalars(q))
        return [AccessEntry(a.at, a.role, a.action, a.hospital_id, self._result_id(a), a.version, a.verdict)
                for a in rows]

    def _result_id(self, entry: AccessLog) -> str | None:
        if entry.result_hmac is None or entry.result_enc is None:
            return None
        return self._store._decrypt(ACCESS_RESULT_ID, access_context(entry.hospital_id, entry.result_hmac),
                                    entry.result_enc).decode("utf-8")
