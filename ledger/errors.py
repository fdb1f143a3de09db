"""The error tree. One root so callers can catch everything mrledger raises; one subtree per concern.

Builtins are mixed in where they fit (a bad encoding *is* a ValueError) so generic code that catches
ValueError keeps working.
"""

from __future__ import annotations


class MrLedgerError(Exception):
    """Root of every error mrledger raises on purpose."""


class EncodingError(MrLedgerError, ValueError):
    """Bytes or JSON that are not a valid canonical encoding (bad JSON, trailing data, wrong version tag)."""


class RecordError(MrLedgerError, ValueError):
    """A result record that fails validation. ``field`` names the first offending field (dotted path)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message


class VerificationError(MrLedgerError):
    """A proof or receipt that does not verify."""


class ProofError(VerificationError, ValueError):
    """A proof that is malformed for its claimed tree (index out of range, path of the wrong length)."""


class RootMismatchError(VerificationError):
    """A proof that is well-formed but leads to another root than the one it claims."""

    def __init__(self, *, expected: bytes, calculated: bytes) -> None:
        super().__init__(f"root mismatch: expected {expected.hex()}, calculated {calculated.hex()}")
        self.expected = expected
        self.calculated = calculated
