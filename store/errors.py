"""Store errors. Each maps to one client-visible problem type in the API (4xx), never a 500."""

from __future__ import annotations

from ledger.errors import MrLedgerError


class StoreError(MrLedgerError):
    """Root of the store's errors."""


class NotFoundError(StoreError, LookupError):
    """No such hospital, result, version or batch."""


class UnknownHospitalError(NotFoundError):
    """A write names a hospital that was never registered."""


class ConflictError(StoreError):
    """The same (hospital, result_id, version) was submitted before with other content, or a hospital id
    is registered under another name. ``keys`` lists the conflicting identities."""

    def __init__(self, message: str, keys: list[tuple[str, str, int]] | None = None) -> None:
        super().__init__(message)
        self.keys = keys or []


class LineageError(StoreError, ValueError):
    """A version supersedes a version the ledger does not hold."""


class SubmissionError(StoreError, ValueError):
    """A submission that is malformed as a whole (records of another hospital, too many records)."""
