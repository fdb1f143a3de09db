"""Receipt verification against the chain: what a doctor checks with nothing but a receipt and any
JSON-RPC endpoint (her own node, a public one), so she need not trust the hospital's server.

Adds to the offline checks (ledger.verify_receipt): the endpoint is the receipt's chain, the registry
holds this batch's root and size for (hospital, seq), the registry's own RFC 9162 verifier accepts the
proof (one eth_call), and the anchoring block is still canonical. Reports the confirmations.
"""

from __future__ import annotations

from typing import Any

from web3 import Web3

from anchoring import contract as reg
from ledger import Check, Receipt, Verdict, hospital_key, verify_receipt

ONCHAIN_CHECKS = ("chain-id", "anchor-root", "on-chain-proof", "anchor-block")


def verify_on_chain(receipt: Receipt | bytes | str | dict[str, Any], w3: Web3) -> Verdict:
    """Offline checks first (a tampered receipt fails without touching the network), then the chain."""
    offline = verify_receipt(receipt)
    r = offline.receipt
    if offline.status == "invalid" or r is None or r.anchor is None:
        return offline
    anchor, checks = r.anchor, list(offline.checks)

    def fail(name: str, detail: str) -> Verdict:
        checks.append(Check(name, False, detail))
        return Verdict("invalid", tuple(checks), r, {"on_chain": True})

    chain_id = int(w3.eth.chain_id)
    if chain_id != anchor.chain_id:
        return fail("chain-id", f"endpoint serves chain {chain_id}, the receipt was anchored on {anchor.chain_id}")
    checks.append(Check("chain-id", True))

    hk = hospital_key(r.batch.hospital_id)
    stored = reg.batch_of(w3, anchor.contract, hk, r.batch.seq)
    if stored is None:
        return fail("anchor-root", f"the registry holds no batch {r.batch.seq} for {r.batch.hospital_id}")
    if stored.root != r.batch.root or stored.size != r.batch.size:
        return fail("anchor-root", f"the registry holds root {stored.root.hex()} size {stored.size} for this batch")
    checks.append(Check("anchor-root", True))

    if not reg.verify_receipt(w3, anchor.contract, hk, r.batch.seq, r.leaf_hash, r.leaf_index, r.batch.size,
                              r.audit_path):
        return fail("on-chain-proof", "the registry's RFC 9162 verifier rejects the proof")
    checks.append(Check("on-chain-proof", True))

    head = int(w3.eth.block_number)
    block = w3.eth.get_block(anchor.block_number) if anchor.block_number <= head else None
    block_hash = "0x" + bytes(block["hash"]).hex() if block is not None else None
    if block_hash is None or block_hash.lower() != anchor.block_hash.lower() \
            or stored.anchored_block != anchor.block_number:
        return fail("anchor-block", f"block {anchor.block_number} is not the receipt's block (reorg?)")
    confirmations = head - anchor.block_number + 1
    checks.append(Check("anchor-block", True, f"{confirmations} confirmation(s)"))
    return Verdict("valid", tuple(checks), r, {"on_chain": True, "confirmations": confirmations,
                                                "chain_id": chain_id, "block_number": anchor.block_number,
                                                "tx_hash": anchor.tx_hash, "contract": anchor.contract})
