"""Institution eligibility for mutual recognition: which hospital may have its results recognised in which
category (clinical biochemistry, CT, …), because it passed external quality assessment (EQA) or the
authority accredited it otherwise.

Append-only like the rest of the store: a grant inserts a row, a revocation or a later grant closes the open
row with ``revoked_at``; nothing is updated otherwise or deleted, so an auditor can reconstruct who was
eligible at any moment (``is_eligible(..., at)``). Time is passed in (``now``), never read here.
"""

from __future__ import annotations

import re
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from mrledger.store.errors import NotFoundError, SubmissionError, UnknownHospitalError
from mrledger.store.hospitals import lock_hospital
from mrledger.store.models import Hospital, HospitalEligibility
from mrledger.store.repository import Store

#: A category id as catalogues name them (``clinical-biochemistry``, ``ct``).
CATEGORY_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
MAX_REFERENCE = 256


@dataclass(frozen=True, slots=True)
class Grant:
    hospital_id: str
    category: str
    reference: str
    granted_at: datetime
    valid_until: datetime | None
    revoked_at: datetime | None

    def active(self, at: datetime) -> bool:
        """Eligible at ``at``: granted by then, not revoked by then, not past ``valid_until`` (inclusive)."""
        return (self.granted_at <= at and (self.revoked_at is None or at < self.revoked_at)
                and (self.valid_until is None or at <= self.valid_until))


def _grant(row: HospitalEligibility) -> Grant:
    return Grant(row.hospital_id, row.category, row.reference, row.granted_at, row.valid_until, row.revoked_at)


_E = HospitalEligibility
#: Built once: composing the statement per call cost more than running it. Every grant of the hospital, past
#: ones included (a handful per category over years): the cached rows answer for any ``at`` (``Grant.active``).
_GRANTS = select(_E.category, _E.granted_at, _E.valid_until, _E.revoked_at).where(_E.hospital_id == bindparam("hid"))

#: How long a process answers from the grants it read (seconds). A grant or revocation made in this process is
#: seen at once (it clears the cache); one made by another process of the node or another node is seen within
#: this time. Why a cache: the verifier asks on every verification, and the read was 5 % of an API process's
#: CPU in a city replay (py-spy, issue 20) for rows the authority changes a few times a year.
GRANTS_TTL = 1.0
#: Per store (the grants of one database), shared by every ``Eligibility`` over it: the routes that grant and
#: revoke make their own instance, and the verifier's must see what they wrote. (read at, the hospital's grants)
_CACHES: weakref.WeakKeyDictionary[Store, dict[str, tuple[float, tuple[Grant, ...]]]] = weakref.WeakKeyDictionary()


class Eligibility:
    """Grants, revocations and the question the verifier asks on every verification."""

    def __init__(self, store: Store, *, ttl: float = GRANTS_TTL) -> None:
        self._store, self._ttl = store, ttl
        self._cache = _CACHES.setdefault(store, {})

    def grant(self, hospital_id: str, category: str, reference: str, now: datetime,
              valid_until: datetime | None = None) -> Grant:
        """Make ``hospital_id`` eligible for ``category`` from ``now`` (until ``valid_until`` if given). A grant
        replaces the open one (say, a renewed EQA certificate): the old row is closed at ``now``."""
        if not CATEGORY_PATTERN.match(category):
            raise SubmissionError("category must be 1-64 characters of a-z 0-9 - starting with a letter")
        if not reference.strip() or len(reference) > MAX_REFERENCE:
            raise SubmissionError(f"reference (e.g. the EQA certificate id) must be 1-{MAX_REFERENCE} characters")
        if valid_until is not None and valid_until <= now:
            raise SubmissionError("valid_until must be in the future")
        # Handed back in UTC, as they read back from the database.
        now, valid_until = now.astimezone(UTC), None if valid_until is None else valid_until.astimezone(UTC)
        with self._store.unit_of_work() as s:
            lock_hospital(s, hospital_id)  # two concurrent grants cannot both leave an open row
            for row in self._open(s, hospital_id, category):
                row.revoked_at = now
            row = HospitalEligibility(hospital_id=hospital_id, category=category, reference=reference,
                                      granted_at=now, valid_until=valid_until)
            s.add(row)
            s.flush()
            granted = _grant(row)
        self._cache.pop(hospital_id, None)  # after the commit: a read in between would cache the old rows
        return granted

    def revoke(self, hospital_id: str, category: str, now: datetime) -> Grant:
        """End the open grant at ``now``; NotFoundError when there is none (revoking twice is a mistake to
        report, not to hide)."""
        with self._store.unit_of_work() as s:
            lock_hospital(s, hospital_id)
            rows = self._open(s, hospital_id, category)
            if not rows:
                raise NotFoundError(f"{hospital_id!r} holds no eligibility for {category!r}")
            for row in rows:
                row.revoked_at = now
            revoked = _grant(rows[-1])
        self._cache.pop(hospital_id, None)
        return revoked

    def grants(self, hospital_id: str, *, history: bool = False) -> list[Grant]:
        """Open grants (including expired ones: ``valid_until`` shows it), or every row with ``history``;
        ordered by category, then time."""
        with self._store.read() as s:
            if s.get(Hospital, hospital_id) is None:
                raise UnknownHospitalError(f"unknown hospital {hospital_id!r}")
            q = select(HospitalEligibility).where(HospitalEligibility.hospital_id == hospital_id)
            if not history:
                q = q.where(HospitalEligibility.revoked_at.is_(None))
            q = q.order_by(HospitalEligibility.category, HospitalEligibility.id)
            return [_grant(r) for r in s.scalars(q)]

    def categories(self, hospital_id: str, at: datetime) -> frozenset[str]:
        """Every category ``hospital_id`` is eligible for at ``at``, from its grants as read at most ``ttl``
        seconds ago (``GRANTS_TTL``): one statement on the DB-API cursor when they are older (``Store.fetch``)."""
        now = time.monotonic()
        hit = self._cache.get(hospital_id)
        if hit is None or now - hit[0] >= self._ttl:
            grants = tuple(Grant(hospital_id, c, "", g, v, r)
                           for c, g, v, r in self._store.fetch(_GRANTS, {"hid": hospital_id}))
            hit = self._cache[hospital_id] = (now, grants)
        return frozenset(g.category for g in hit[1] if g.active(at))

    def is_eligible(self, hospital_id: str, category: str, at: datetime) -> bool:
        return category in self.categories(hospital_id, at)

    @staticmethod
    def _open(s: Session, hospital_id: str, category: str) -> list[HospitalEligibility]:
        return list(s.scalars(select(HospitalEligibility).where(
            HospitalEligibility.hospital_id == hospital_id, HospitalEligibility.category == category,
            HospitalEligibility.revoked_at.is_(None)).order_by(HospitalEligibility.id)))
