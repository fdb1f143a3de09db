"""The error tree. One root so callers can catch everything mrledger raises; one subtree per concern.

Builtins are mixed in where they fit (a bad encoding *is* a ValueError) so generic code that catches
ValueError keeps working.
"""

from __future__ import annotations

from typing import Literal, get_args

#: Why a batch signature failed, one stable string per failure (docs/signatures.md §4). The first eight
#: come from ``verify_batch_signature``; the last two only from ``verify_receipt``, which also sees the
#: anchor and whether a signature was required.
SignatureReason = Literal[
    "signature-malformed",
    "signature-algorithm",
    "signature-invalid",
    "certificate-untrusted",
    "certificate-key-usage",
    "certificate-expired",
    "certificate-revoked",
    "certificate-hospital-mismatch",
    "signature-anchor-mismatch",
    "signature-missing",
    "signature-time",
]
SIGNATURE_REASONS: tuple[SignatureReason, ...] = get_args(SignatureReason)


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


class SignatureError(VerificationError):
    """A batch signature that does not verify. ``reason`` is one stable, machine-readable string from
    ``SIGNATURE_REASONS`` above (``certificate-expired``, ``signature-invalid`` …): verdicts,
    logs and the API report it as is, so it must never be reworded; ``detail`` is for humans."""

    def __init__(self, reason: SignatureReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SigningError(MrLedgerError, ValueError):
    """A signing key, certificate or trust configuration that cannot be used (wrong passphrase, key and
    certificate that do not match, a CRL no configured CA signed). Raised when configuring, never as the
    result of verifying a signature, and never carries key material."""
