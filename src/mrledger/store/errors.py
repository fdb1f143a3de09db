"""Store errors. Each maps to one client-visible problem type in the API (4xx), never a 500."""

from __future__ import annotations

from mrledger.ledger.errors import MrLedgerError


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


class IdentityChangeError(ConflictError):
    """A later version names another patient or another test than version 1 of its result: not a version of
    that result but a different result reusing its id. ``differs`` names the fields (``subject``, ``code``)."""

    def __init__(self, message: str, keys: list[tuple[str, str, int]], differs: list[str]) -> None:
        super().__init__(message, keys)
        self.differs = differs


class LineageError(StoreError, ValueError):
    """A version supersedes a version the ledger does not hold."""


class SubmissionError(StoreError, ValueError):
    """A submission that is malformed as a whole (records of another hospital, too many records)."""


class EncryptionError(StoreError):
    """Root of the encryption-at-rest errors (docs/encryption.md). Unlike the errors above these are not the
    client's doing: the API answers them 500/503, never with data."""


class MasterKeyError(EncryptionError, ValueError):
    """The master key is missing, malformed, or not the one that wraps this database's data keys."""


class KeysUnavailableError(EncryptionError):
    """Records were asked of a store opened without a master key (e.g. by the anchoring worker alone)."""


class DecryptionError(EncryptionError):
    """A stored ciphertext failed authentication: altered, or moved from another row or column. Raised
    instead of returning anything, so tampered data never reads as a record."""


class UnknownDataKeyError(DecryptionError):
    """A ciphertext names a data key this process has not loaded (one made by a rotation after it started)."""

    def __init__(self, message: str, key_id: int) -> None:
        super().__init__(message)
        self.key_id = key_id


class ReadOnlyError(MrLedgerError, RuntimeError):
    """A write was attempted inside ``Store.read()`` (store/unit.py): a programming error, neither bad input
    nor an unavailable database, so deliberately outside ``StoreError`` (which the API answers with 503 and a
    retry): it surfaces as a plain 500."""
