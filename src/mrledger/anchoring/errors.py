"""Errors of the anchoring layer, rooted in ``MrLedgerError`` so callers can catch all of mrledger at once.

Why typed reverts: the worker must tell "this batch is already anchored" (safe to treat as done after a
crash) from "gap in the sequence" (a bug or a lost batch) from "paused" (wait and retry). Matching on
web3's exception text would break with every web3 release; the custom error *name* is part of our ABI.
"""

from __future__ import annotations

from typing import Any

from mrledger.ledger.errors import MrLedgerError


class AnchoringError(MrLedgerError):
    """Root of everything the anchoring layer raises on purpose."""


class ContractRevert(AnchoringError):
    """The registry reverted. ``name`` is the Solidity custom error (``SeqGap``, ``EnforcedPause``, ...),
    ``"Error"`` for a revert string, ``"Panic"`` for an assertion, or ``"unknown"``; ``error_args`` holds
    its decoded arguments by parameter name (``argN`` when the ABI has no names). Not ``args``: that name
    belongs to ``BaseException``."""

    def __init__(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        data: str | None = None,
        tx_hash: str | None = None,
    ) -> None:
        self.name = name
        self.error_args = dict(args or {})
        self.data = data
        self.tx_hash = tx_hash
        rendered = ", ".join(f"{k}={_render(v)}" for k, v in self.error_args.items())
        where = f" (tx {tx_hash})" if tx_hash else ""
        super().__init__(f"registry reverted: {name}({rendered}){where}")


class AnchorConflict(AnchoringError):
    """The registry holds a different root for a (hospital, seq) than this database: the ledger and the
    chain disagree. Never resolved automatically; an operator must look."""


class TransactionFailed(AnchoringError):
    """A transaction was mined with status 0 and the reason could not be recovered."""

    def __init__(self, tx_hash: str, message: str = "transaction reverted") -> None:
        super().__init__(f"{message} (tx {tx_hash})")
        self.tx_hash = tx_hash


def _render(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    return str(value)
