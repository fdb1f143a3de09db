"""Receipt verification against the chain: what a doctor checks with nothing but a receipt and any
JSON-RPC endpoint (her own node, a public one), so she need not trust the hospital's server.

Adds to the offline checks (mrledger.ledger.verify_receipt): the endpoint is the receipt's chain, the registry
holds this batch's root and size for (hospital, seq) — on a v2 registry, the one commitment word that hashes
them with the receipt's map root (mrl-receipt/2) — the proof holds against that on-chain root (by
default with the registry's own RFC 9162 verifier, one eth_call), and the anchoring block is still
canonical. Reports the confirmations.

Where the chain is read from is pluggable (``mrledger.anchoring.chain.ChainReader``): the CLI asks the node
every time (``DirectReader``); the API uses the node's ``CachedReader``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from web3 import Web3

from mrledger.anchoring import contract as reg
from mrledger.anchoring import contract_v2 as reg2
from mrledger.anchoring.chain import ChainReader, DirectReader, registry_holds
from mrledger.anchoring.contract import BatchRecord
from mrledger.anchoring.contract_v2 import CommitRecord
from mrledger.ledger import Check, Receipt, SignatureResult, TrustStore, Verdict, hospital_key, verify_receipt
from mrledger.ledger.errors import MrLedgerError
from mrledger.ledger.merkle import verify_inclusion
from mrledger.ledger.signing import MAX_SEALING_DELAY, SigningTimeError, check_signing_time

ONCHAIN_CHECKS = ("chain-id", "anchor-root", "on-chain-proof", "anchor-block")
#: After them, for a signed receipt verified with a trust store: its sealing time against the block's.
SIGNATURE_TIME = "signature-time"


def verify_on_chain(receipt: Receipt | bytes | str | dict[str, Any], w3: Web3, *,
                    reader: ChainReader | None = None, onchain_proof: bool = True,
                    offline: Verdict | None = None, trust: TrustStore | None = None,
                    max_sealing_delay: timedelta = MAX_SEALING_DELAY) -> Verdict:
    """Offline checks first (a tampered receipt fails without touching the network), then the chain.

    ``reader``: where chain state comes from (default: ask ``w3`` every time). ``onchain_proof``: check
    the inclusion proof with the registry's own verifier (an eth_call: a second, independent RFC 9162
    implementation, worth it for a one-off check); with False the proof is checked locally against the
    root and size the registry holds — equivalent, since the contract's verifier agreeing with ``ledger``
    is proven by the test suite, and one round trip cheaper. Either way the root comes from the chain.
    ``offline``: the caller's own ``verify_receipt(receipt)`` verdict, so a service that has just run the
    offline checks does not pay for them twice (a sixth of a verification's time) — and the way to have
    the hospital's signature checked: pass the verdict computed with ``trust``; its ``signature`` result is
    kept in the verdict returned here. ``trust`` (the one the offline verdict was computed with): also check
    the signed ``sealed_at`` against the anchoring block's time (``mrledger.ledger.signing.check_signing_time``, the
    ``signature-time`` check); a failure is ``invalid`` with ``extra["signature_time"]`` ``after-anchor`` (no
    genuine batch does that) or ``before-anchor`` (sealed more than ``max_sealing_delay`` earlier, certificate
    no longer valid when anchored: not corroborated, which a service should not call tampered).
    """
    if offline is None:
        offline = verify_receipt(receipt)
    r = offline.receipt
    if offline.status == "invalid" or r is None or r.anchor is None:
        return offline
    anchor, checks = r.anchor, list(offline.checks)
    chain = reader if reader is not None else DirectReader(w3)

    # The offline verdict's signature result stands: the chain neither strengthens nor weakens it.
    signature = offline.signature

    def fail(name: str, detail: str) -> Verdict:
        checks.append(Check(name, False, detail))
        return Verdict("invalid", tuple(checks), r, {"on_chain": True}, signature)

    chain_id = chain.chain_id()
    if chain_id != anchor.chain_id:
        return fail("chain-id", f"endpoint serves chain {chain_id}, the receipt was anchored on {anchor.chain_id}")
    checks.append(Check("chain-id", True))

    hk = hospital_key(r.batch.hospital_id)
    version = chain.version(anchor.contract)
    if version != anchor.registry_version:
        # An mrl-receipt/1 carries no map root, which a v2 commitment binds; an mrl-receipt/2 names a commitment
        # a v1 registry does not store. Neither is a receipt any node issues for that registry.
        return fail("anchor-root", f"the receipt is {r.format} but registry {anchor.contract} is a "
                                   f"v{version} registry")
    holding = registry_holds(chain, anchor.contract, r.batch, anchor.map_root, near=anchor.block_number)
    stored = holding.entry
    if stored is None:
        # Not "invalid": with nothing but the receipt, a batch the registry does not hold (yet) cannot be told
        # from one whose anchor a reorganisation removed while the ledger anchors it again. Not "valid" either:
        # the hospital's node, which knows what it sealed, can say which (service/verification.py).
        checks.append(Check("anchor-root", False, f"the registry holds no batch {r.batch.seq} for "
                            f"{r.batch.hospital_id}: not anchored, or its anchor was removed by a chain "
                            "reorganisation and is being anchored again; ask the hospital's node"))
        return Verdict("unanchored", tuple(checks), r, {"on_chain": True}, signature)
    if not holding.holds:
        return fail("anchor-root", f"the registry holds {holding.what} for this batch")
    checks.append(Check("anchor-root", True))

    if onchain_proof:
        if not _registry_verifies(w3, anchor.contract, hk, r, stored):
            return fail("on-chain-proof", "the registry's RFC 9162 verifier rejects the proof")
        checks.append(Check("on-chain-proof", True))
    else:
        # The registry holds this batch's (root, size) — or, on v2, a commitment that hashes them: either way
        # the receipt's root and size are the chain's.
        try:
            verify_inclusion(r.leaf_index, r.batch.size, r.leaf_hash, r.audit_path, r.batch.root)
        except MrLedgerError as exc:
            return fail("on-chain-proof", f"the proof does not lead to the registry's root: {exc}")
        checks.append(Check("on-chain-proof", True, "checked against the registry's root and size"))

    head = chain.head()
    block = chain.block(anchor.block_number)
    if block is not None:
        head = max(head, block.number)  # a cached head may lag the block we were just given
    number, tx = anchor.block_number, cast(str | None, anchor.tx_hash)
    if block is None or block.hash != anchor.block_hash.lower() or stored.anchored_block != anchor.block_number:
        # The registry holds this very root and size (checked above), in another block than the receipt names:
        # the chain reorganised and the batch was anchored again (or its transaction mined again). What the
        # registry holds is what vouches for the result, so it stands, counted from the registry's block.
        # Read again: the head read above may have found a reorg deeper than the cached entries (tripwire).
        holding = registry_holds(chain, anchor.contract, r.batch, anchor.map_root)
        stored = holding.entry
        if stored is None:
            checks.append(Check("anchor-root", False, f"the registry holds no batch {r.batch.seq} for "
                                f"{r.batch.hospital_id} any more (a chain reorganisation); ask the hospital's node"))
            return Verdict("unanchored", tuple(checks), r, {"on_chain": True}, signature)
        if not holding.holds:
            return fail("anchor-root", f"the registry holds {holding.what} for this batch")
        number, tx = stored.anchored_block, None
        head = max(head, number)
        confirmations = head - number + 1
        checks.append(Check("anchor-block", True, f"block {anchor.block_number} is no longer the receipt's block "
                            f"(a chain reorganisation); the registry holds this batch's root since block {number} "
                            f"(anchored again), {confirmations} confirmation(s): ask for a fresh receipt"))
        block = chain.block(number)  # the block that anchors it now: its time is what the signature is held to
    else:
        confirmations = head - number + 1
        checks.append(Check("anchor-block", True, f"{confirmations} confirmation(s)"))
    if trust is not None and r.signature is not None and signature.status == "valid" and block is not None:
        block_time = datetime.fromtimestamp(block.timestamp, UTC)
        try:
            check_signing_time(r.batch, r.signature, block_time, trust, max_sealing_delay)
        except SigningTimeError as exc:
            checks.append(Check(SIGNATURE_TIME, False, str(exc)))
            return Verdict("invalid", tuple(checks), r, {
                "on_chain": True, "confirmations": confirmations,
                "signature_time": "after-anchor" if exc.after_anchor else "before-anchor"},
                SignatureResult("signature-time", signature.alg))
        checks.append(Check(SIGNATURE_TIME, True, "sealed_at fits the anchoring block's time"))
    return Verdict("valid", tuple(checks), r, {"on_chain": True, "confirmations": confirmations,
                                                "chain_id": chain_id, "block_number": number,
                                                "tx_hash": tx, "contract": anchor.contract}, signature)


def _registry_verifies(w3: Web3, contract: str, hk: bytes, r: Receipt, stored: BatchRecord | CommitRecord) -> bool:
    """The registry's own verifier, one eth_call: v1 ``verifyReceipt`` against its (root, size); v2
    ``verifyReceipt`` against the commitment, at the place the chain holds it (a hub found by its logs: a
    receipt whose batch a reorg moved into another hub still names the old one, and is no less genuine)."""
    if isinstance(stored, CommitRecord):
        assert r.anchor is not None and r.anchor.map_root is not None
        hub = stored.hub
        where = reg2.DIRECT if hub is None else reg2.HubProof(hub.hub_id, hub.index, hub.path)
        return reg2.registry_verifies_receipt(w3, contract, hk, r.batch.seq, r.leaf_hash, r.leaf_index, r.batch.size,
                                              r.audit_path, r.anchor.map_root, where)
    return reg.registry_verifies_proof(w3, contract, hk, r.batch.seq, r.leaf_hash, r.leaf_index, r.batch.size,
                                       r.audit_path)
