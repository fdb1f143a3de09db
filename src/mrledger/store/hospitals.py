"""Hospitals: the registry every result, batch and anchor hangs off (one row per hospital id)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mrledger.ledger.records import HOSPITAL_ID_PATTERN
from mrledger.store.errors import ConflictError, SubmissionError, UnknownHospitalError
from mrledger.store.models import Hospital
from mrledger.store.vault import Vault


@dataclass(frozen=True)
class Registration:
    """A hospital as the leader puts it on chain: its name and the accounts asked to anchor for it."""

    hospital_id: str
    name: str
    submitters: tuple[str, ...]


class Hospitals(Vault):
    """Registration and listing of hospitals (a mixin of ``Store``)."""

    def register_hospital(self, hospital_id: str, name: str, submitters: Sequence[str] = ()) -> None:
        """Register a hospital; repeating the same registration is a no-op, another name a conflict. Submitter
        accounts asked for again are added to those stored (the leader adds them on chain too)."""
        if not re.fullmatch(HOSPITAL_ID_PATTERN, hospital_id):
            raise SubmissionError("hospital id must be 1-64 characters of A-Z a-z 0-9 . _ - (not starting with . _ -)")
        if not name.strip() or len(name) > 256:
            raise SubmissionError("hospital name must be 1-256 characters")
        with self.unit_of_work() as s:
            existing = s.get(Hospital, hospital_id)
            if existing is not None:
                if existing.name != name:
                    raise ConflictError(f"hospital {hospital_id!r} is registered under another name")
                held = _split(existing.submitters)
                if any(a not in held for a in submitters):
                    existing.submitters = ",".join(held + tuple(a for a in submitters if a not in held))
                return
            s.add(Hospital(id=hospital_id, name=name, created_at=self._clock(),
                           submitters=",".join(dict.fromkeys(submitters))))

    def hospitals(self) -> list[tuple[str, str]]:
        with self.read() as s:
            return [(h.id, h.name) for h in s.scalars(select(Hospital).order_by(Hospital.id))]

    def registrations(self) -> list[Registration]:
        """Every hospital with the submitters its registration asked for, for the leader to put on chain."""
        with self.read() as s:
            return [Registration(h.id, h.name, _split(h.submitters))
                    for h in s.scalars(select(Hospital).order_by(Hospital.id))]


def _split(submitters: str) -> tuple[str, ...]:
    return tuple(a for a in submitters.split(",") if a)


def lock_hospital(s: Session, hospital_id: str) -> None:
    """Take the hospital's row lock for the rest of ``s``'s transaction (PostgreSQL; SQLite has one writer anyway):
    the writers of one hospital's batches, or of its grants, take turns on it. ``FOR NO KEY UPDATE``, not ``FOR
    UPDATE``, which also blocks the ``FOR KEY SHARE`` of every foreign-key check: each submission, decision and
    encounter of the hospital waited for a whole seal (issue 20). UnknownHospitalError if there is no such row."""
    if s.scalar(select(Hospital.id).where(Hospital.id == hospital_id).with_for_update(key_share=True)) is None:
        raise UnknownHospitalError(f"unknown hospital {hospital_id!r}")
