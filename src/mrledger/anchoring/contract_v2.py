"""Every ABI call of ``MrLedgerRegistryV2`` (one word per batch, hub anchoring, status proofs; issue 18).

Why a second module rather than a flag in ``contract.py``: v1 registries stay deployed and readable (old
receipts are verified against them forever), and the two ABIs differ in what a batch is (root and size vs
one commitment). The plumbing — local signing, simulation first, revert decoding — is ``contract.py``'s,
reused as is, so both registries fail the same way. Not wired into the worker or the receipts yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from mrledger.anchoring.contract import TxResult, _b32, _call, _send
from mrledger.anchoring.errors import AnchoringError
from mrledger.contracts import V2_CONTRACT_NAME, load_artefact
from mrledger.ledger.merkle import MerkleTree
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


def deploy_registry(w3: Web3, admin_account: LocalAccount, *, admin: str | None = None) -> str:
    artefact = load_artefact(V2_CONTRACT_NAME)
    factory = w3.eth.contract(abi=artefact["abi"], bytecode=artefact["bytecode"])
    owner = to_checksum_address(admin or admin_account.address)
    _, receipt = _send(w3, factory.constructor(owner), admin_account)
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


def commitment_of(w3: Web3, address: str, hospital_key: bytes, seq: int) -> bytes | None:
    """The commitment ``anchor`` stored, or None (never anchored, or anchored in a hub)."""
    value = bytes(_call(registry(w3, address).functions.commitmentOf(_b32(hospital_key, "hospital key"), seq)))
    return None if value == bytes(32) else value


def hub_of(w3: Web3, address: str, hub_id: int) -> HubRecord | None:
    root, count, block = _call(registry(w3, address).functions.hubOf(hub_id))
    return None if bytes(root) == bytes(32) else HubRecord(bytes(root), int(count), int(block))


def last_seq(w3: Web3, address: str, hospital_key: bytes) -> int:
    return int(_call(registry(w3, address).functions.lastSeq(_b32(hospital_key, "hospital key"))))


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
