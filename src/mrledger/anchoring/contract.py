"""Every ABI call of ``MrLedgerRegistry``, in one module.

Why one module: the contract's ABI is a wire format; keeping all encoding, signing and revert decoding
here means a contract change touches one Python file, and the rest of mrledger (worker, CLI, tests) deals
in bytes, ints and typed errors, never in web3 objects. ``Web3`` is injected so the same code runs against
anvil, eth-tester and a real node.

Transactions are signed locally (``LocalAccount``), never by the node: production nodes hold no keys.
Each one is simulated first (``eth_estimateGas``), so a rule violation surfaces as ``ContractRevert`` with
the Solidity error name before anything is broadcast; a transaction that still fails on chain (the state
moved between simulation and inclusion) is replayed with ``eth_call`` to recover the reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError

from mrledger.anchoring.errors import AnchoringError, ContractRevert, TransactionFailed
from mrledger.contracts import CONTRACT_NAMES, load_artefact

#: Head-room over the simulated gas: a concurrent anchor of another hospital can warm/cool slots.
GAS_MARGIN = 1.2
RECEIPT_TIMEOUT = 120.0
_ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
_PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)


@dataclass(frozen=True, slots=True)
class TxResult:
    """What callers keep of a mined transaction (the worker stores tx hash and block)."""

    tx_hash: str
    block_number: int
    gas_used: int
    effective_gas_price: int


@dataclass(frozen=True, slots=True)
class AnchorItem:
    """One batch to anchor: the arguments of ``anchor`` and one element of ``anchorMany``."""

    hospital_key: bytes
    seq: int
    root: bytes
    size: int


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """What the registry stored for (hospital, seq)."""

    root: bytes
    size: int
    anchored_block: int


@dataclass(frozen=True, slots=True)
class HospitalRecord:
    registered: bool
    name_hash: bytes
    registered_block: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class AnchoredEvent:
    hospital_key: bytes
    seq: int
    root: bytes
    size: int
    submitter: str
    block_number: int
    tx_hash: str


# ------------------------------------------------------------------ plumbing


def registry(w3: Web3, address: str) -> Contract:
    """A web3 contract object for the deployed registry (ABI from the committed artefact).

    Cached per (w3, address): building the object parses and validates the whole ABI, ~5 ms of CPU — more
    than the eth_call it serves on a local node — and every function in this module needs one. The object
    is never mutated after construction (``functions.x(...)`` returns a copy), so sharing it between
    threads is safe. The cache keys on the ``Web3`` instance itself (identity hash) and therefore keeps it
    alive while cached, so a recycled ``id()`` can never return another client's contract; it is bounded,
    so test suites creating thousands of clients do not accumulate them.
    """
    return _registry(w3, address)


@lru_cache(maxsize=64)
def _registry(w3: Web3, address: str) -> Contract:
    return w3.eth.contract(address=to_checksum_address(address), abi=load_artefact()["abi"])


def _b32(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise ValueError(f"{what} must be 32 bytes")
    return bytes(value)


@cache
def _error_table() -> dict[bytes, tuple[str, list[str], list[str]]]:
    table: dict[bytes, tuple[str, list[str], list[str]]] = {}
    # Both registries' errors (v2 adds a few): one decoder serves contract.py and contract_v2.py.
    for entry in (e for name in CONTRACT_NAMES for e in load_artefact(name)["abi"]):
        if entry["type"] != "error":
            continue
        types = [i["type"] for i in entry["inputs"]]
        names = [i["name"] or f"arg{n}" for n, i in enumerate(entry["inputs"])]
        selector = keccak(text=f"{entry['name']}({','.join(types)})")[:4]
        table[selector] = (entry["name"], types, names)
    return table


def decode_revert(data: bytes | str | None, tx_hash: str | None = None) -> ContractRevert:
    """Turn raw revert data into a ContractRevert carrying the custom error's name and arguments."""
    if isinstance(data, str):
        data = bytes.fromhex(data.removeprefix("0x")) if data else b""
    raw = data or b""
    selector, body = raw[:4], raw[4:]
    known = _error_table().get(selector)
    if selector == _ERROR_SELECTOR:
        known = ("Error", ["string"], ["message"])
    elif selector == _PANIC_SELECTOR:
        known = ("Panic", ["uint256"], ["code"])
    name, args = "unknown", {}
    if known is not None:
        try:
            values = [
                to_checksum_address(v) if t == "address" else v
                for t, v in zip(known[1], abi_decode(known[1], body), strict=True)
            ]
            args = dict(zip(known[2], values, strict=True))
            name = known[0]
        except Exception:  # a malformed payload: still report the raw data
            pass
    return ContractRevert(name, args, data="0x" + raw.hex(), tx_hash=tx_hash)


def _revert_data(exc: ContractLogicError) -> str | bytes | None:
    """The revert's return data. anvil and geth give it as the JSON-RPC error's ``data`` (a hex string), which
    web3 hands on as is; Hardhat Network nests it, ``{"message": ..., "data": "0x..."}``, and web3 hands on the
    object (without this, every custom error from Hardhat read ``unknown``: docs/anchoring.md, "EVM clients")."""
    data: Any = exc.data
    if isinstance(data, dict):
        data = data.get("data")
    return data if isinstance(data, str | bytes) else None


def _revert_from(exc: ContractLogicError, tx_hash: str | None = None) -> ContractRevert:
    data = _revert_data(exc)
    revert = decode_revert(data, tx_hash)
    if revert.name == "unknown" and not data:
        revert = ContractRevert("unknown", {"message": str(exc)}, tx_hash=tx_hash)
    return revert


def _tester_revert(exc: Exception) -> ContractRevert | None:
    """eth-tester (the in-process py-evm chain used by the fast tests) raises its own TransactionFailed,
    with custom-error data rendered as the repr of a bytes object; recover the bytes from it."""
    if type(exc).__module__.split(".")[0] != "eth_tester":
        return None
    message = str(exc.args[0]) if exc.args else ""
    payload = message.removeprefix("execution reverted: ")
    if payload.startswith(("b'", 'b"')):
        try:
            data = ast.literal_eval(payload)
        except (ValueError, SyntaxError):
            data = None
        if isinstance(data, bytes):
            return decode_revert(data)
    return ContractRevert("Error" if payload != message else "unknown", {"message": payload})


@contextmanager
def _reverts(tx_hash: str | None = None) -> Iterator[None]:
    """Re-raise any flavour of EVM revert as ContractRevert."""
    try:
        yield
    except ContractLogicError as exc:
        raise _revert_from(exc, tx_hash) from exc
    except Exception as exc:
        revert = _tester_revert(exc)
        if revert is None:
            raise
        raise revert from exc


def _fees(w3: Web3) -> dict[str, int]:
    """EIP-1559 fees: tip as the node suggests, cap at twice the base fee so a few full blocks in a row
    do not strand the transaction."""
    base_fee = int(w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0)
    tip = int(w3.eth.max_priority_fee)
    return {"maxFeePerGas": 2 * base_fee + tip, "maxPriorityFeePerGas": tip}


def _send(w3: Web3, fn: Any, account: LocalAccount, *, timeout: float = RECEIPT_TIMEOUT) -> tuple[TxResult, Any]:
    """Simulate, sign locally, broadcast, wait; raise ContractRevert on any revert."""
    sender = account.address
    with _reverts():
        estimate = int(fn.estimate_gas({"from": sender}))
    tx = fn.build_transaction(
        {
            "from": sender,
            "nonce": w3.eth.get_transaction_count(sender, "pending"),
            "gas": int(estimate * GAS_MARGIN),
            "chainId": w3.eth.chain_id,
            "type": 2,
            **_fees(w3),
        }
    )
    signed = account.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.05)
    hexhash = "0x" + bytes(tx_hash).hex()
    if receipt["status"] != 1:
        with _reverts(hexhash):  # replay on the parent state to learn why; best effort
            fn.call({"from": sender}, block_identifier=receipt["blockNumber"] - 1)
        raise TransactionFailed(hexhash)
    result = TxResult(
        tx_hash=hexhash,
        block_number=int(receipt["blockNumber"]),
        gas_used=int(receipt["gasUsed"]),
        effective_gas_price=int(receipt.get("effectiveGasPrice", 0) or 0),
    )
    return result, receipt


def _call(fn: Any) -> Any:
    with _reverts():
        return fn.call()


# ------------------------------------------------------------------ deployment and administration


def deploy_registry(w3: Web3, admin_account: LocalAccount, *, admin: str | None = None) -> str:
    """Deploy the committed bytecode; ``admin`` (default: the deployer) gets DEFAULT_ADMIN_ROLE."""
    artefact = load_artefact()
    factory = w3.eth.contract(abi=artefact["abi"], bytecode=artefact["bytecode"])
    owner = to_checksum_address(admin or admin_account.address)
    _, receipt = _send(w3, factory.constructor(owner), admin_account)
    address = receipt.get("contractAddress")
    if not address:
        raise AnchoringError("deployment receipt has no contract address")
    return str(to_checksum_address(address))


def register_hospital(
    w3: Web3,
    address: str,
    admin_account: LocalAccount,
    hospital_key: bytes,
    name_hash: bytes,
    submitters: Sequence[str] = (),
) -> TxResult:
    fn = registry(w3, address).functions.registerHospital(
        _b32(hospital_key, "hospital key"),
        _b32(name_hash, "name hash"),
        [to_checksum_address(s) for s in submitters],
    )
    return _send(w3, fn, admin_account)[0]


def add_submitter(w3: Web3, address: str, admin_account: LocalAccount, hospital_key: bytes, submitter: str) -> TxResult:
    fn = registry(w3, address).functions.addSubmitter(
        _b32(hospital_key, "hospital key"), to_checksum_address(submitter)
    )
    return _send(w3, fn, admin_account)[0]


def revoke_submitter(
    w3: Web3, address: str, admin_account: LocalAccount, hospital_key: bytes, submitter: str
) -> TxResult:
    fn = registry(w3, address).functions.revokeSubmitter(
        _b32(hospital_key, "hospital key"), to_checksum_address(submitter)
    )
    return _send(w3, fn, admin_account)[0]


def pause(w3: Web3, address: str, admin_account: LocalAccount) -> TxResult:
    return _send(w3, registry(w3, address).functions.pause(), admin_account)[0]


def unpause(w3: Web3, address: str, admin_account: LocalAccount) -> TxResult:
    return _send(w3, registry(w3, address).functions.unpause(), admin_account)[0]


# ------------------------------------------------------------------ anchoring


def anchor(
    w3: Web3,
    address: str,
    submitter_account: LocalAccount,
    hospital_key: bytes,
    seq: int,
    root: bytes,
    size: int,
) -> TxResult:
    """Anchor batch ``seq`` (must be last_seq + 1) of one hospital."""
    fn = registry(w3, address).functions.anchor(_b32(hospital_key, "hospital key"), seq, _b32(root, "root"), size)
    return _send(w3, fn, submitter_account)[0]


def anchor_many(w3: Web3, address: str, submitter_account: LocalAccount, items: Sequence[AnchorItem]) -> TxResult:
    """Anchor several batches in one transaction; all of them or none."""
    encoded = [(_b32(i.hospital_key, "hospital key"), i.seq, _b32(i.root, "root"), i.size) for i in items]
    fn = registry(w3, address).functions.anchorMany(encoded)
    return _send(w3, fn, submitter_account)[0]


def build_anchor_tx(
    w3: Web3, address: str, sender: str, items: Sequence[AnchorItem], *, nonce: int, fees: dict[str, int]
) -> dict[str, Any]:
    """The unsigned transaction anchoring ``items`` (``anchor`` for one, ``anchorMany`` for several),
    simulated first so a rule violation raises ContractRevert before anything is signed. The worker
    signs it, persists it, and only then broadcasts it (anchoring/worker.py)."""
    reg = registry(w3, address).functions
    if len(items) == 1:
        i = items[0]
        fn = reg.anchor(_b32(i.hospital_key, "hospital key"), i.seq, _b32(i.root, "root"), i.size)
    else:
        fn = reg.anchorMany([(_b32(i.hospital_key, "hospital key"), i.seq, _b32(i.root, "root"), i.size)
                             for i in items])
    with _reverts():
        estimate = int(fn.estimate_gas({"from": sender}))
    params: dict[str, Any] = {
        "from": sender, "nonce": nonce, "gas": int(estimate * GAS_MARGIN), "chainId": w3.eth.chain_id,
        "type": 2, **fees,
    }
    return dict(fn.build_transaction(params))  # type: ignore[arg-type]


def suggested_fees(w3: Web3) -> dict[str, int]:
    return _fees(w3)


# ------------------------------------------------------------------ reads (eth_call, free)


def batch_of(w3: Web3, address: str, hospital_key: bytes, seq: int) -> BatchRecord | None:
    """The anchored batch, or None if (hospital, seq) was never anchored."""
    root, size, block = _call(registry(w3, address).functions.batchOf(_b32(hospital_key, "hospital key"), seq))
    if bytes(root) == bytes(32):
        return None
    return BatchRecord(root=bytes(root), size=int(size), anchored_block=int(block))


def last_seq(w3: Web3, address: str, hospital_key: bytes) -> int:
    return int(_call(registry(w3, address).functions.lastSeq(_b32(hospital_key, "hospital key"))))


def is_submitter(w3: Web3, address: str, hospital_key: bytes, account: str) -> bool:
    fn = registry(w3, address).functions.isSubmitter(_b32(hospital_key, "hospital key"), to_checksum_address(account))
    return bool(_call(fn))


def hospital_of(w3: Web3, address: str, hospital_key: bytes) -> HospitalRecord:
    registered, name_hash, block, last = _call(
        registry(w3, address).functions.hospitalOf(_b32(hospital_key, "hospital key"))
    )
    return HospitalRecord(bool(registered), bytes(name_hash), int(block), int(last))


def is_admin(w3: Web3, address: str, account: str) -> bool:
    """Whether ``account`` holds the registry's admin role (``DEFAULT_ADMIN_ROLE``, OpenZeppelin AccessControl)."""
    return bool(_call(registry(w3, address).functions.hasRole(bytes(32), to_checksum_address(account))))


def is_paused(w3: Web3, address: str) -> bool:
    return bool(_call(registry(w3, address).functions.paused()))


def verify_inclusion(
    w3: Web3,
    address: str,
    leaf_hash: bytes,
    index: int,
    size: int,
    path: Sequence[bytes],
    root: bytes,
) -> bool:
    """The contract's RFC 9162 verifier; False for malformed proofs, never an exception."""
    fn = registry(w3, address).functions.verifyInclusion(
        _b32(leaf_hash, "leaf hash"), index, size, [_b32(p, "path entry") for p in path], _b32(root, "root")
    )
    return bool(_call(fn))


def registry_verifies_proof(
    w3: Web3,
    address: str,
    hospital_key: bytes,
    seq: int,
    leaf_hash: bytes,
    index: int,
    size: int,
    path: Sequence[bytes],
) -> bool:
    """Whether the registry's own RFC 9162 verifier (``verifyReceipt``) accepts this inclusion proof against the
    root and size it stores for (hospital, seq), with one eth_call. Not a receipt verification: that is
    ``mrledger.ledger.verify_receipt`` (offline) and ``mrledger.anchoring.verify.verify_on_chain``."""
    fn = registry(w3, address).functions.verifyReceipt(
        _b32(hospital_key, "hospital key"),
        seq,
        _b32(leaf_hash, "leaf hash"),
        index,
        size,
        [_b32(p, "path entry") for p in path],
    )
    return bool(_call(fn))


@dataclass(frozen=True, slots=True)
class ChainView:
    """What ``read_many`` read, all at block ``head``: ``last_seq`` per hospital key, registry entries per
    (hospital key, seq) (None: not anchored), block hashes per number (None: no such block)."""

    head: int
    head_hash: str
    last_seq: dict[bytes, int]
    batches: dict[tuple[bytes, int], BatchRecord | None]
    block_hashes: dict[int, str | None]


#: Requests per JSON-RPC batch: 1,000 ``eth_call``s took 42 ms on anvil; providers cap batches at 100-1,000.
READ_CHUNK = 250


def read_many(w3: Web3, address: str, *, hospitals: Sequence[bytes] = (), batches: Sequence[tuple[bytes, int]] = (),
              blocks: Sequence[int] = (), chunk: int = READ_CHUNK) -> ChainView:
    """Many registry reads and block hashes in JSON-RPC batches, pinned to one head block so they agree.

    Why raw batches rather than web3's ``batch_requests``: there a single missing block raises for the
    whole batch, and a missing block is an answer here (a chain that went backwards). Why: reconciling the
    registry with the database for every hospital is one ``lastSeq`` per hospital each round; one round
    trip per read would make a round of a thousand hospitals take seconds on a remote node."""
    reg_ = registry(w3, address)
    head_block = w3.eth.get_block("latest")
    head, at = int(head_block["number"]), hex(int(head_block["number"]))
    to = reg_.address
    calls: list[tuple[str, list[Any]]] = []
    for hk in hospitals:
        calls.append(("eth_call", [{"to": to, "data": reg_.encode_abi("lastSeq", [_b32(hk, "hospital key")])}, at]))
    for hk, seq in batches:
        calls.append(("eth_call", [{"to": to, "data": reg_.encode_abi("batchOf", [_b32(hk, "hospital key"), seq])},
                                   at]))
    for number in blocks:
        calls.append(("eth_getBlockByNumber", [hex(number), False]))
    answers: list[Any] = []
    for i in range(0, len(calls), chunk):
        part = calls[i:i + chunk]
        replies = w3.provider.make_batch_request(part)  # type: ignore[attr-defined]
        if not isinstance(replies, list):  # a provider that answers a batch with one error object
            raise AnchoringError(f"the node refused a JSON-RPC batch: {replies}")
        by_id = sorted(replies, key=lambda r: int(r.get("id", 0)))
        for reply in by_id:
            if "error" in reply:
                raise AnchoringError(f"node error in a batched read: {reply['error']}")
            answers.append(reply.get("result"))
    if len(answers) != len(calls):
        raise AnchoringError(f"the node answered {len(answers)} of {len(calls)} batched reads")
    it = iter(answers)
    last = {bytes(hk): int(abi_decode(["uint64"], _raw(next(it)))[0]) for hk in hospitals}
    found: dict[tuple[bytes, int], BatchRecord | None] = {}
    for hk, seq in batches:
        root, size, block = abi_decode(["bytes32", "uint64", "uint64"], _raw(next(it)))
        found[bytes(hk), seq] = None if bytes(root) == bytes(32) else BatchRecord(bytes(root), int(size), int(block))
    hashes: dict[int, str | None] = {}
    for number in blocks:
        b = next(it)
        hashes[number] = None if b is None or int(b["number"], 16) > head else str(b["hash"]).lower()
    return ChainView(head, "0x" + bytes(head_block["hash"]).hex(), last, found, hashes)


def _raw(value: Any) -> bytes:
    if value == "0x":
        raise AnchoringError("the registry has no code on this chain (was the chain reset?)")
    if not isinstance(value, str) or not value.startswith("0x"):
        raise AnchoringError(f"unexpected eth_call answer {value!r}")
    return bytes.fromhex(value[2:])


def anchored_in(w3: Web3, address: str, receipt: Any) -> list[AnchoredEvent]:
    """The BatchAnchored events of one mined transaction, from its receipt (no further round trip)."""
    logs = [log for log in receipt["logs"] if str(log["address"]).lower() == address.lower()]
    event = registry(w3, address).events.BatchAnchored()
    out = []
    for log in logs:
        try:
            decoded = event.process_log(log)
        except Exception:  # another event of the registry
            continue
        out.append(AnchoredEvent(hospital_key=bytes(decoded["args"]["hospitalKey"]), seq=int(decoded["args"]["seq"]),
                                 root=bytes(decoded["args"]["root"]), size=int(decoded["args"]["size"]),
                                 submitter=str(decoded["args"]["submitter"]), block_number=int(receipt["blockNumber"]),
                                 tx_hash="0x" + bytes(receipt["transactionHash"]).hex()))
    return out


def anchored_events(
    w3: Web3,
    address: str,
    *,
    from_block: int = 0,
    to_block: int | str = "latest",
    hospital_key: bytes | None = None,
) -> list[AnchoredEvent]:
    """BatchAnchored logs in a block range, e.g. for the worker to reconcile after a crash or reorg."""
    event = registry(w3, address).events.BatchAnchored
    filters: dict[str, Any] = {}
    if hospital_key is not None:
        filters["hospitalKey"] = _b32(hospital_key, "hospital key")
    logs = event.get_logs(from_block=from_block, to_block=to_block, argument_filters=filters or None)
    return [
        AnchoredEvent(
            hospital_key=bytes(log["args"]["hospitalKey"]),
            seq=int(log["args"]["seq"]),
            root=bytes(log["args"]["root"]),
            size=int(log["args"]["size"]),
            submitter=str(log["args"]["submitter"]),
            block_number=int(log["blockNumber"]),
            tx_hash="0x" + bytes(log["transactionHash"]).hex(),
        )
        for log in logs
    ]
