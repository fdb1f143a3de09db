"""Every ABI call of ``MrLedgerRegistryV2`` (one word per batch, hub anchoring, status proofs; issue 18).

Why a second module rather than a flag in ``contract.py``: v1 registries stay deployed and readable (old
receipts are verified against them forever), and the two ABIs differ in what a batch is (root and size vs
one commitment). The plumbing — local signing, simulation first, revert decoding — is ``contract.py``'s,
reused as is, so both registries fail the same way.

What a v2 registry does not store, and how it is found instead: the block of a batch anchored alone (one word
per batch is the point; its block is in its ``BatchAnchored`` log) and the position of a batch in a hub (the
hub's items are the logs of its transaction, in order). ``locate`` reads both from the logs, bounded by the
hospital's ``lastSeq`` so a batch the registry does not hold is never searched for.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import BadFunctionCallOutput
from web3.logs import DISCARD

from mrledger.anchoring.contract import GAS_MARGIN, TxResult, _b32, _call, _reverts, _send
from mrledger.anchoring.errors import AnchoringError, ContractRevert
from mrledger.contracts import V2_CONTRACT_NAME, load_artefact
from mrledger.ledger.merkle import MerkleTree
from mrledger.ledger.receipt import HubPosition as LedgerHubPosition
from mrledger.ledger.statusmap import StatusAnswer, hub_leaf_hash

_KINDS = {0: "invalid", 1: "absent", 2: "current", 3: "withdrawn"}


@dataclass(frozen=True, slots=True)
class HubItem:
    """One batch of ``anchorHub``: its hospital, sequence number and v2 commitment."""

    hospital_key: bytes
    seq: int
    commitment: bytes


@dataclass(frozen=True, slots=True)
class HubProof:
    """Where a batch's commitment lives: ``hub_id`` 0 for a batch anchored alone (stored per batch),
    otherwise its hub and the RFC 9162 path of its hub leaf."""

    hub_id: int = 0
    index: int = 0
    path: tuple[bytes, ...] = field(default_factory=tuple)

    def as_arg(self) -> tuple[int, int, list[bytes]]:
        return (self.hub_id, self.index, [_b32(p, "hub path entry") for p in self.path])


DIRECT = HubProof()


@dataclass(frozen=True, slots=True)
class HubRecord:
    root: bytes
    count: int
    anchored_block: int


@dataclass(frozen=True, slots=True)
class HospitalRecordV2:
    registered: bool
    name_hash: bytes
    registered_block: int
    last_seq: int
    last_anchored_at: int


@dataclass(frozen=True, slots=True)
class StatusOnChain:
    """``verifyStatus``: the proof's answer, and the hospital's latest anchored seq (an answer about an
    older batch is stale, whatever it says)."""

    answer: StatusAnswer
    latest_seq: int


def hub_proofs(hub_id: int, items: Sequence[HubItem]) -> list[HubProof]:
    """The proof of every item of a hub, in order; what the region node hands each hospital after anchoring.
    Built from the items alone, exactly as the contract builds the hub root."""
    tree = MerkleTree([hub_leaf_hash(i.hospital_key, i.seq, i.commitment) for i in items])
    return [HubProof(hub_id, n, tuple(tree.inclusion_proof(n))) for n in range(len(items))]


def hub_root(items: Sequence[HubItem]) -> bytes:
    return MerkleTree([hub_leaf_hash(i.hospital_key, i.seq, i.commitment) for i in items]).root


# ------------------------------------------------------------------ plumbing


def registry(w3: Web3, address: str) -> Contract:
    """A web3 contract object for a deployed v2 registry; cached as ``contract.registry`` is, for the same
    reasons."""
    return _registry(w3, address)


@lru_cache(maxsize=64)
def _registry(w3: Web3, address: str) -> Contract:
    return w3.eth.contract(address=to_checksum_address(address), abi=load_artefact(V2_CONTRACT_NAME)["abi"])


# ------------------------------------------------------------------ deployment and administration


def deploy_registry(w3: Web3, admin_account: LocalAccount, *, admin: str | None = None,
                    predecessor: str | None = None) -> str:
    """Deploy a v2 registry; ``predecessor``: the (paused) v1 registry it succeeds in place, whose hospitals'
    sequences it carries over at their registration."""
    artefact = load_artefact(V2_CONTRACT_NAME)
    factory = w3.eth.contract(abi=artefact["abi"], bytecode=artefact["bytecode"])
    owner = to_checksum_address(admin or admin_account.address)
    before = to_checksum_address(predecessor) if predecessor else "0x" + "00" * 20
    _, receipt = _send(w3, factory.constructor(owner, before), admin_account)
    address = receipt.get("contractAddress")
    if not address:
        raise AnchoringError("deployment receipt has no contract address")
    return str(to_checksum_address(address))


def register_hospital(w3: Web3, address: str, admin_account: LocalAccount, hospital_key: bytes, name_hash: bytes,
                      submitters: Sequence[str] = ()) -> TxResult:
    fn = registry(w3, address).functions.registerHospital(
        _b32(hospital_key, "hospital key"), _b32(name_hash, "name hash"), [to_checksum_address(s) for s in submitters])
    return _send(w3, fn, admin_account)[0]


def add_submitter(w3: Web3, address: str, admin_account: LocalAccount, hospital_key: bytes, submitter: str) -> TxResult:
    fn = registry(w3, address).functions.addSubmitter(_b32(hospital_key, "hospital key"),
                                                      to_checksum_address(submitter))
    return _send(w3, fn, admin_account)[0]


def pause(w3: Web3, address: str, admin_account: LocalAccount) -> TxResult:
    return _send(w3, registry(w3, address).functions.pause(), admin_account)[0]


# ------------------------------------------------------------------ anchoring


def anchor(w3: Web3, address: str, submitter_account: LocalAccount, hospital_key: bytes, seq: int,
           commitment: bytes) -> TxResult:
    """Anchor batch ``seq`` (must be last_seq + 1) of one hospital: one storage word, the commitment."""
    fn = registry(w3, address).functions.anchor(_b32(hospital_key, "hospital key"), seq, _b32(commitment, "commitment"))
    return _send(w3, fn, submitter_account)[0]


def anchor_hub(w3: Web3, address: str, submitter_account: LocalAccount,
               items: Sequence[HubItem]) -> tuple[TxResult, int]:
    """Anchor many batches in one transaction, all or none; returns the transaction and the new hub's id
    (read from the HubAnchored event of its receipt)."""
    args = [(_b32(i.hospital_key, "hospital key"), i.seq, _b32(i.commitment, "commitment")) for i in items]
    reg = registry(w3, address)
    result, receipt = _send(w3, reg.functions.anchorHub(args), submitter_account)
    events = reg.events.HubAnchored().process_receipt(receipt, errors=DISCARD)  # BatchAnchored logs too
    if len(events) != 1:
        raise AnchoringError(f"hub transaction {result.tx_hash} has {len(events)} HubAnchored events")
    return result, int(events[0]["args"]["hubId"])


# ------------------------------------------------------------------ reads and verification (eth_call)


def build_anchor_tx(w3: Web3, address: str, sender: str, items: Sequence[HubItem], *, nonce: int,
                    fees: dict[str, int]) -> dict[str, Any]:
    """The unsigned transaction anchoring ``items``: ``anchor`` for one batch (one word), ``anchorHub`` for
    several (one hub root for all); simulated first, as ``contract.build_anchor_tx`` is, so a sequence the
    registry refuses raises ContractRevert before anything is signed."""
    fns = registry(w3, address).functions
    if len(items) == 1:
        i = items[0]
        fn = fns.anchor(_b32(i.hospital_key, "hospital key"), i.seq, _b32(i.commitment, "commitment"))
    else:
        fn = fns.anchorHub([(_b32(i.hospital_key, "hospital key"), i.seq, _b32(i.commitment, "commitment"))
                            for i in items])
    with _reverts():
        estimate = int(fn.estimate_gas({"from": sender}))
    params: dict[str, Any] = {"from": sender, "nonce": nonce, "gas": int(estimate * GAS_MARGIN),
                              "chainId": w3.eth.chain_id, "type": 2, **fees}
    return dict(fn.build_transaction(params))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class CommitRecord:
    """What a v2 registry holds for (hospital, seq), with where: the commitment, the block and transaction of
    its ``BatchAnchored`` log, and its hub position (None: stored alone)."""

    commitment: bytes
    anchored_block: int
    tx_hash: str
    hub: LedgerHubPosition | None


def anchored_in(w3: Web3, address: str, receipt: Any) -> dict[tuple[bytes, int], CommitRecord]:
    """The batches one mined transaction anchored, by (hospital key, seq), with their hub positions — read from
    its receipt alone: a hub's items are its ``BatchAnchored`` logs in order, and its ``HubAnchored`` log names
    the hub (``hub_proofs`` rebuilds each path exactly as the contract built the root)."""
    reg = registry(w3, address)
    mine = [log for log in receipt["logs"] if str(log["address"]).lower() == address.lower()]
    batches = reg.events.BatchAnchored().process_receipt({**receipt, "logs": mine}, errors=DISCARD)
    hubs = reg.events.HubAnchored().process_receipt({**receipt, "logs": mine}, errors=DISCARD)
    items = [HubItem(bytes(e["args"]["hospitalKey"]), int(e["args"]["seq"]), bytes(e["args"]["commitment"]))
             for e in batches]
    if len(hubs) > 1:
        raise AnchoringError(f"transaction {receipt['transactionHash']!r} has {len(hubs)} HubAnchored events")
    positions: list[LedgerHubPosition | None] = [None] * len(items)
    if hubs:
        hub_id = int(hubs[0]["args"]["hubId"])
        if int(hubs[0]["args"]["count"]) != len(items) or hub_root(items) != bytes(hubs[0]["args"]["root"]):
            raise AnchoringError(f"hub {hub_id}: its BatchAnchored logs do not rebuild its root")
        positions = [LedgerHubPosition(p.hub_id, p.index, p.path) for p in hub_proofs(hub_id, items)]
    block, tx = int(receipt["blockNumber"]), "0x" + bytes(receipt["transactionHash"]).hex()
    return {(i.hospital_key, i.seq): CommitRecord(i.commitment, block, tx, pos)
            for i, pos in zip(items, positions, strict=True)}


def locate(w3: Web3, address: str, hospital_key: bytes, seq: int, *, from_block: int = 0,
           near: int | None = None) -> CommitRecord | None:
    """Where a v2 registry holds (hospital, seq), or None if it does not (``lastSeq`` below seq: never
    anchored, or removed by a reorg). ``near``: the block a receipt or the database names, looked at first (one
    log read); otherwise, or if the batch is not there (a reorg moved it), the logs from ``from_block`` on.
    The answer is the chain's at the moment of reading; a reorg between the reads shows as None here and is
    seen again by the caller's next look."""
    hk = _b32(hospital_key, "hospital key")
    if seq > last_seq(w3, address, hk):
        return None
    event = registry(w3, address).events.BatchAnchored
    head = int(w3.eth.block_number)
    # Newest first, in windows a provider accepts (many cap eth_getLogs at 10,000 blocks): a batch asked about
    # is usually recent, and the hint, when there is one, is one block. The first windows are small and grow
    # eightfold: every log of the hospital in a window is fetched and decoded, and in one 10,000-block window
    # that grew with every batch anchored (a city replay's sealer spent 37 % of its time here at 450,000
    # verifications, py-spy, issue 20). The blocks covered are the same.
    ranges = [(near, near)] if near is not None else []
    top, width = head, FIRST_LOG_WINDOW
    while top >= from_block:
        ranges.append((max(from_block, top - width + 1), top))
        top -= width
        width = min(width * 8, LOG_WINDOW)
    for start, end in ranges:
        logs = [x for x in event.get_logs(from_block=start, to_block=end, argument_filters={"hospitalKey": hk})
                if int(x["args"]["seq"]) == seq]
        if logs:
            mined = anchored_in(w3, address, w3.eth.get_transaction_receipt(logs[-1]["transactionHash"]))
            return mined.get((hk, seq))
    return None


#: Blocks per ``eth_getLogs`` request of ``locate`` (a common provider limit), and of its first request.
LOG_WINDOW = 10_000
FIRST_LOG_WINDOW = 128


_VERSIONS: weakref.WeakKeyDictionary[Web3, dict[str, int]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class AnchoredEventV2:
    hospital_key: bytes
    seq: int
    commitment: bytes
    block_number: int
    tx_hash: str


def anchored_events(w3: Web3, address: str, *, from_block: int = 0, to_block: int | str = "latest",
                    hospital_key: bytes | None = None) -> list[AnchoredEventV2]:
    """BatchAnchored logs of a v2 registry in a block range (an audit's "nothing on chain the database lacks")."""
    filters = None if hospital_key is None else {"hospitalKey": _b32(hospital_key, "hospital key")}
    logs = registry(w3, address).events.BatchAnchored.get_logs(from_block=from_block, to_block=to_block,
                                                               argument_filters=filters)
    return [AnchoredEventV2(bytes(x["args"]["hospitalKey"]), int(x["args"]["seq"]), bytes(x["args"]["commitment"]),
                            int(x["blockNumber"]), "0x" + bytes(x["transactionHash"]).hex()) for x in logs]


def registry_version(w3: Web3, address: str) -> int:
    """2 if ``address`` speaks the v2 ABI (it answers ``hubCount()``), else 1. Cached per client and address
    once the address has code (a chain reset can put another registry at the same address: not cached then)."""
    address = to_checksum_address(address)
    known = _VERSIONS.setdefault(w3, {})
    if address in known:
        return known[address]
    try:
        _call(registry(w3, address).functions.hubCount())
        version = 2
    except (ContractRevert, BadFunctionCallOutput):
        # v1 has no such function: the call reverts; an address with no code answers nothing. Any other failure
        # (a timeout, a refused connection, HTTP 429) says nothing about the ABI and propagates: taken for v1, a
        # genuine v2 receipt would read "tampered" and the worker would stop anchoring.
        version = 1
    if w3.eth.get_code(address):
        known[address] = version
    return version


def commitment_of(w3: Web3, address: str, hospital_key: bytes, seq: int) -> bytes | None:
    """The commitment ``anchor`` stored, or None (never anchored, or anchored in a hub)."""
    value = bytes(_call(registry(w3, address).functions.commitmentOf(_b32(hospital_key, "hospital key"), seq)))
    return None if value == bytes(32) else value


def hub_of(w3: Web3, address: str, hub_id: int) -> HubRecord | None:
    root, count, block = _call(registry(w3, address).functions.hubOf(hub_id))
    return None if bytes(root) == bytes(32) else HubRecord(bytes(root), int(count), int(block))


def last_seq(w3: Web3, address: str, hospital_key: bytes) -> int:
    return int(_call(registry(w3, address).functions.lastSeq(_b32(hospital_key, "hospital key"))))


def is_submitter(w3: Web3, address: str, hospital_key: bytes, account: str) -> bool:
    fn = registry(w3, address).functions.isSubmitter(_b32(hospital_key, "hospital key"), to_checksum_address(account))
    return bool(_call(fn))


def predecessor(w3: Web3, address: str) -> str | None:
    """The v1 registry this one succeeded in place (None: a registry of its own)."""
    value = str(_call(registry(w3, address).functions.predecessor()))
    return None if int(value, 16) == 0 else to_checksum_address(value)


def hospital_of(w3: Web3, address: str, hospital_key: bytes) -> HospitalRecordV2:
    registered, name_hash, block, last, at = _call(
        registry(w3, address).functions.hospitalOf(_b32(hospital_key, "hospital key")))
    return HospitalRecordV2(bool(registered), bytes(name_hash), int(block), int(last), int(at))


def batch_commitment(w3: Web3, address: str, root: bytes, size: int, map_root: bytes) -> bytes:
    """The contract's own ``sha256(0x04 || root || u64be(size) || mapRoot)`` (tests compare it with ledger's)."""
    fn = registry(w3, address).functions.batchCommitment(_b32(root, "root"), size, _b32(map_root, "map root"))
    return bytes(_call(fn))


def is_anchored(w3: Web3, address: str, hospital_key: bytes, seq: int, commitment: bytes,
                where: HubProof = DIRECT) -> bool:
    fn = registry(w3, address).functions.isAnchored(
        _b32(hospital_key, "hospital key"), seq, _b32(commitment, "commitment"), where.as_arg())
    return bool(_call(fn))


def registry_verifies_receipt(w3: Web3, address: str, hospital_key: bytes, seq: int, leaf_hash: bytes, index: int,
                              size: int, path: Sequence[bytes], map_root: bytes, where: HubProof = DIRECT) -> bool:
    """One eth_call: the leaf is in a batch whose (root, size, map root) is the commitment anchored for
    (hospital, seq), directly or in hub ``where``."""
    fn = registry(w3, address).functions.verifyReceipt(
        _b32(hospital_key, "hospital key"), seq, _b32(leaf_hash, "leaf hash"), index, size,
        [_b32(p, "path entry") for p in path], _b32(map_root, "map root"), where.as_arg())
    return bool(_call(fn))


def verify_status(w3: Web3, address: str, hospital_key: bytes, seq: int, batch_root: bytes, size: int,
                  map_root: bytes, status_key: bytes, proof: bytes, where: HubProof = DIRECT) -> StatusOnChain:
    """One eth_call: (batch root, size, map root) is the commitment anchored for (hospital, seq), and the
    mrl-smap/1 proof's answer for ``status_key`` under that map root."""
    fn = registry(w3, address).functions.verifyStatus(
        _b32(hospital_key, "hospital key"), seq, _b32(batch_root, "batch root"), size, _b32(map_root, "map root"),
        where.as_arg(), _b32(status_key, "status key"), bytes(proof))
    kind, version, leaf, latest = _call(fn)
    return StatusOnChain(_answer(int(kind), int(version), bytes(leaf)), int(latest))


def verify_status_proof(w3: Web3, address: str, map_root: bytes, status_key: bytes, proof: bytes) -> StatusAnswer:
    """The contract's mrl-smap/1 verifier alone (``ledger.statusmap.verify_status_proof`` on chain)."""
    fn = registry(w3, address).functions.verifyStatusProof(
        _b32(map_root, "map root"), _b32(status_key, "status key"), bytes(proof))
    kind, version, leaf = _call(fn)
    return _answer(int(kind), int(version), bytes(leaf))


def _answer(kind: int, version: int, leaf: bytes) -> StatusAnswer:
    name = _KINDS.get(kind)
    if name is None:
        raise AnchoringError(f"registry answered status kind {kind}")
    if name in ("current", "withdrawn"):
        return StatusAnswer(name, version, leaf)  # type: ignore[arg-type]
    return StatusAnswer(name)  # type: ignore[arg-type]
