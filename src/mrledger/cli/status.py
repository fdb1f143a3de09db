"""``mrledger verify --status NODE``: is the receipt's version still the current one?

The node is asked for the result's status proof (``mrl-status-proof/1``) and trusted for nothing: the proof is
checked against the receipt (ledger/status_check.py) and, with ``--rpc``, the batch it answers from against the
chain (anchoring/status.py). A node that refuses, serves garbage, serves a batch the chain does not hold, or
hides a newer batch, yields ``unverified`` — never ``current``.

Exit codes on top of ``verify``'s (0 valid and current): 5 valid but superseded or withdrawn; 6 valid but the
status could not be established.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from mrledger.cli.http_client import ApiClient, ApiError, ClientError
from mrledger.ledger.errors import EncodingError
from mrledger.ledger.receipt import Receipt
from mrledger.ledger.status_check import StatusDocument, StatusVerdict, receipt_status_key

EXIT_NOT_CURRENT = 5
EXIT_STATUS_UNVERIFIED = 6


@dataclass(frozen=True, slots=True)
class StatusOutcome:
    verdict: StatusVerdict
    chain: dict[str, Any] | None
    source: str

    @property
    def exit_code(self) -> int | None:
        """None when the status is current (the receipt's own exit code stands)."""
        if self.verdict.kind == "current":
            return None
        return EXIT_NOT_CURRENT if self.verdict.kind in ("superseded", "withdrawn") else EXIT_STATUS_UNVERIFIED

    def to_obj(self) -> dict[str, Any]:
        return {**self.verdict.to_obj(), "chain": self.chain, "source": self.source}

    def line(self) -> str:
        bound = "" if self.chain is None else (" (map root bound on chain)" if self.chain["map_root_bound"] else
                                               " (batch checked on chain; map root: the node's word, v1 registry)")
        return f"status {self.verdict.kind}: {self.verdict.detail}{bound}"


def _unverified(detail: str, node: str) -> StatusOutcome:
    return StatusOutcome(StatusVerdict("unknown", None, None, detail), None, node)


def check(receipt: Receipt, node: str, w3: Any | None, grace: timedelta, *, timeout: float = 10.0) -> StatusOutcome:
    """Ask ``node`` and check its answer; ``w3`` (a Web3 on the receipt's chain) binds it to the chain."""
    key = receipt_status_key(receipt)
    if key is None:
        return _unverified("this receipt cannot name its status key (a later version issued before receipts "
                           "carried status_secret)", node)
    try:
        with ApiClient(node, timeout=timeout) as client:
            obj = client.status_proof(receipt.record.hospital_id, receipt.record.result_id, key)
        doc = StatusDocument.from_obj(obj)
    except ApiError as exc:
        return _unverified(f"the node refused: {exc}", node)
    except (ClientError, ValueError, EncodingError) as exc:
        return _unverified(f"no usable status proof from {node}: {exc}", node)
    if w3 is None:
        from mrledger.ledger.status_check import check_status

        verdict = check_status(receipt, doc)
        return StatusOutcome(verdict, None, node)
    from mrledger.service.status import binding_obj, verify_status

    verdict, binding = verify_status(w3, receipt, doc, grace=grace)
    return StatusOutcome(verdict, binding_obj(binding), node)
