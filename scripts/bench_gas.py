"""Gas of anchoring a batch with MrLedgerRegistry versus one transaction per result and versus the
Ethereum Attestation Service, all measured on one local anvil (receipt gasUsed, 21,000 base included).

``anchor_gas`` and ``hub_gas_per_hospital_batch_100`` are the v2 registry (MrLedgerRegistryV2, issue 18:
one word per batch; targets 55,000 and 15,000); the v1 figures keep their names, with ``v1_anchor_gas`` for
v1's anchor of a 10,000-leaf batch (formerly ``anchor_gas``). ``status_proof_bytes`` and
``status_proof_verify_us`` measure mrl-smap/1 proofs in a map of 10,000 results (median over 1,000 keys; the
time as min/median/max over runs and as a ratio against the floor of the SHA-256 calls it must make).

Why: the project's claim is that a Merkle batch makes the per-result cost of anchoring negligible; this
script produces the numbers behind that claim instead of estimates. EAS is deployed from the compiled
artefacts that its npm package ships (no compiler needed), so the comparison uses EAS's real bytecode.

Usage: ``python scripts/bench_gas.py [--json]`` (needs ``npm ci``). Starts and stops its own anvil.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from eth_account import Account  # noqa: E402
from web3 import Web3  # noqa: E402

from mrledger.anchoring import contract as api  # noqa: E402
from mrledger.anchoring import contract_v2 as api2  # noqa: E402
from mrledger.anchoring.node import AnvilNode  # noqa: E402
from mrledger.ledger.merkle import MerkleTree, leaf_hash  # noqa: E402
from mrledger.ledger.statusmap import StatusMap, StatusProof, StatusValue, verify_status_proof  # noqa: E402

EAS_ARTIFACTS = REPO / "node_modules" / "@ethereum-attestation-service" / "eas-contracts" / "artifacts" / "contracts"
BATCH_SIZES = (1, 100, 10_000)
ZERO_ADDRESS = "0x" + "00" * 20


def _h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def _load_eas(name: str) -> dict[str, Any]:
    path = EAS_ARTIFACTS / f"{name}.sol" / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"EAS artefact {path} missing; run `npm ci`")
    artefact: dict[str, Any] = json.loads(path.read_text())
    return artefact


def _transact(w3: Web3, fn: Any, sender: str) -> Any:
    """EAS calls go through anvil's unlocked dev account: this is a benchmark, not production code."""
    tx_hash = fn.transact({"from": sender})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    if receipt["status"] != 1:
        raise SystemExit(f"transaction {tx_hash.hex()} reverted")
    return receipt


def bench_registry(w3: Web3, admin: Any, submitter: Any) -> dict[str, Any]:
    address = api.deploy_registry(w3, admin)
    key = _h("bench-hospital")
    api.register_hospital(w3, address, admin, key, _h("name"), [submitter.address])
    first = api.anchor(w3, address, submitter, key, 1, _h("warm-up"), 1).gas_used
    seq = 1
    per_batch: dict[str, int] = {}
    for n in BATCH_SIZES:
        seq += 1
        root = MerkleTree([leaf_hash(f"result-{i}".encode()) for i in range(n)]).root
        per_batch[str(n)] = api.anchor(w3, address, submitter, key, seq, root, n).gas_used
    # one transaction per result = every result is its own batch of size 1
    per_result = []
    for i in range(10):
        seq += 1
        per_result.append(api.anchor(w3, address, submitter, key, seq, leaf_hash(f"single-{i}".encode()), 1).gas_used)
    # a hub anchoring 10 hospitals' batches in one transaction
    keys = [_h(f"hub-{i}") for i in range(10)]
    for k in keys:
        api.register_hospital(w3, address, admin, k, _h("n"), [submitter.address])
    many = api.anchor_many(
        w3, address, submitter, [api.AnchorItem(k, 1, _h(f"root-{i}"), 1000) for i, k in enumerate(keys)]
    ).gas_used
    return {
        "first_anchor_gas": first,
        "v1_anchor_gas": per_batch[str(BATCH_SIZES[-1])],
        "anchor_gas_by_batch_size": per_batch,
        "gas_per_result": {n: round(g / int(n), 2) for n, g in per_batch.items()},
        "per_result_tx_gas": round(sum(per_result) / len(per_result)),
        "anchor_many_10_gas": many,
        "anchor_many_gas_per_item": round(many / len(keys)),
    }


def bench_registry_v2(w3: Web3, admin: Any, submitter: Any, hospitals: int = 100) -> dict[str, Any]:
    """The v2 registry: a single anchor (one word per batch), and a hub anchoring ``hospitals`` hospitals'
    batches in one transaction, each sequence checked on chain."""
    address = api2.deploy_registry(w3, admin)
    keys = [_h(f"v2-hospital-{i}") for i in range(hospitals)]
    for k in keys:
        api2.register_hospital(w3, address, admin, k, _h("name"), [submitter.address])
    singles = [api2.anchor(w3, address, submitter, keys[0], s, _h(f"v2-c{s}")).gas_used for s in range(1, 7)]
    items = [api2.HubItem(k, 7 if i == 0 else 1, _h(f"v2-hub-{i}")) for i, k in enumerate(keys)]
    hub, _ = api2.anchor_hub(w3, address, submitter, items)
    ten = [api2.HubItem(k, 2, _h(f"v2-hub10-{i}")) for i, k in enumerate(keys[1:11])]
    hub10, _ = api2.anchor_hub(w3, address, submitter, ten)
    # what a verifier's eth_call of verifyStatusProof costs the node (eth_estimateGas, 21,000 base included)
    m = StatusMap({_h(f"r{i}"): StatusValue(1, "current", _h(f"l{i}")) for i in range(10_000)})
    proof = m.prove(_h("r42")).to_bytes()
    call = api2.registry(w3, address).functions.verifyStatusProof(m.root, _h("r42"), proof)
    return {
        "anchor_gas": sorted(singles)[len(singles) // 2],
        "v2_first_anchor_gas": singles[0],
        "hub_gas_per_hospital_batch_100": round(hub.gas_used / len(items)),
        "hub_100_gas": hub.gas_used,
        "hub_gas_per_hospital_batch_10": round(hub10.gas_used / len(ten)),
        "verify_status_proof_call_gas": int(call.estimate_gas()),
        "anchor_gas_target": 55_000,
        "hub_gas_per_hospital_batch_target": 15_000,
    }


def bench_status_proofs(entries: int = 10_000, keys: int = 1000, runs: int = 7) -> dict[str, Any]:
    """Size and verification time of mrl-smap/1 proofs (pure Python, ledger/statusmap.py)."""
    import statistics
    import time

    m = StatusMap({_h(f"r{i}"): StatusValue(1, "current", _h(f"l{i}")) for i in range(entries)})
    probes = [_h(f"r{i}") for i in range(0, entries, max(1, entries // keys))][:keys]
    proofs = [(k, m.prove(k).to_bytes()) for k in probes]
    sizes = sorted(len(p) for _, p in proofs)
    hashes = sum(len(StatusProof.from_bytes(p).siblings) + 1 for _, p in proofs)
    root = m.root
    per_run, floor_run = [], []
    block = b"\x03" + bytes(64)
    for _ in range(runs):
        started = time.perf_counter()
        for k, p in proofs:
            verify_status_proof(root, k, p)
        per_run.append((time.perf_counter() - started) / len(proofs) * 1e6)
        started = time.perf_counter()
        for _ in range(hashes):
            hashlib.sha256(block).digest()
        floor_run.append((time.perf_counter() - started) / len(proofs) * 1e6)
    median, floor = statistics.median(per_run), statistics.median(floor_run)
    return {
        "status_proof_bytes": sizes[len(sizes) // 2],
        "status_proof_bytes_max": sizes[-1],
        "status_map_entries": entries,
        "status_proof_verify_us": round(median, 1),
        "status_proof_verify_us_runs": {"min": round(min(per_run), 1), "median": round(median, 1),
                                        "max": round(max(per_run), 1)},
        "status_proof_verify_ratio_vs_sha256_floor": round(median / floor, 2),
    }


def bench_eas(w3: Web3, sender: str) -> dict[str, Any]:
    reg_art, eas_art = _load_eas("SchemaRegistry"), _load_eas("EAS")
    receipt = _transact(w3, w3.eth.contract(abi=reg_art["abi"], bytecode=reg_art["bytecode"]).constructor(), sender)
    registry = w3.eth.contract(address=receipt["contractAddress"], abi=reg_art["abi"])
    eas_factory = w3.eth.contract(abi=eas_art["abi"], bytecode=eas_art["bytecode"])
    receipt = _transact(w3, eas_factory.constructor(registry.address), sender)
    eas = w3.eth.contract(address=receipt["contractAddress"], abi=eas_art["abi"])

    schema_text = "bytes32 resultLeafHash"
    schema_uid = registry.functions.register(schema_text, ZERO_ADDRESS, False).call({"from": sender})
    _transact(w3, registry.functions.register(schema_text, ZERO_ADDRESS, False), sender)

    def request(i: int) -> tuple[Any, ...]:
        # (recipient, expirationTime, revocable, refUID, data, value)
        return (ZERO_ADDRESS, 0, False, bytes(32), leaf_hash(f"eas-{i}".encode()), 0)

    _transact(w3, eas.functions.attest((schema_uid, request(-1))), sender)  # warm-up: first-use slots
    attest = [_transact(w3, eas.functions.attest((schema_uid, request(i))), sender)["gasUsed"] for i in range(5)]
    multi = _transact(w3, eas.functions.multiAttest([(schema_uid, [request(1000 + i) for i in range(100)])]), sender)
    stamps = [_transact(w3, eas.functions.timestamp(_h(f"ts-{i}")), sender)["gasUsed"] for i in range(5)]
    return {
        "eas_attest_gas": round(sum(attest) / len(attest)),
        "eas_multi_attest_100_gas": multi["gasUsed"],
        "eas_multi_attest_gas_per_result": round(multi["gasUsed"] / 100),
        "eas_timestamp_gas": round(sum(stamps) / len(stamps)),
    }


def bench_latency(block_time: float | None, records: int = 1000) -> float:
    """Seconds from a batch being SEALED to CONFIRMED at depth 1, through the real anchoring worker
    (write-ahead, broadcast, inclusion via the registry, confirmation), on a fresh anvil that mines on
    every transaction (``block_time`` None) or every ``block_time`` seconds."""
    import tempfile
    import time

    from mrledger.anchoring.deploy import deploy_and_record, ensure_hospital_on_chain
    from mrledger.anchoring.worker import AnchorWorker, WorkerConfig
    from mrledger.store import Store
    from mrledger.store.anchors import Outbox
    from mrledger.store.crypto import MasterKey
    from scripts.bench_store import make_records

    with AnvilNode(block_time=block_time) as node, tempfile.TemporaryDirectory() as tmp:
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        admin, hub = (Account.from_key(k) for k in node.private_keys[:2])
        store = Store.open(f"sqlite:///{tmp}/bench.db", master_key=MasterKey.generate())  # a throwaway database
        contract = deploy_and_record(store, w3, admin).contract
        store.register_hospital("bench-01", "Benchmark Hospital")
        ensure_hospital_on_chain(w3, contract, admin, "bench-01", "Benchmark Hospital", [hub.address])
        store.submit("bench-01", make_records(records, "bench-01"))
        head = store.seal("bench-01", records)
        assert head is not None
        worker, outbox = AnchorWorker(store, w3, contract, hub, WorkerConfig(confirmations=1)), Outbox(store)
        started = time.perf_counter()
        while True:
            worker.step()
            state = outbox.state("bench-01", head.seq)
            if state is not None and state.status == "confirmed":
                return time.perf_counter() - started
            time.sleep(0.01)


def run() -> dict[str, Any]:
    with AnvilNode() as node:
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        admin, submitter = (Account.from_key(k) for k in node.private_keys[:2])
        ours = bench_registry(w3, admin, submitter)
        v2 = bench_registry_v2(w3, admin, submitter)
        eas = bench_eas(w3, node.addresses[2])
        client = node.rpc("web3_clientVersion")
    ratio = {
        n: {
            "attest": round(eas["eas_attest_gas"] / g, 1),
            "multi_attest": round(eas["eas_multi_attest_gas_per_result"] / g, 1),
            "timestamp": round(eas["eas_timestamp_gas"] / g, 1),
        }
        for n, g in ours["gas_per_result"].items()
    }
    latency = {"automine": round(bench_latency(None), 3), "block_time_1s": round(bench_latency(1.0), 3)}
    return {**ours, **v2, **bench_status_proofs(), **eas, "ratio_vs_eas": ratio, "node": client,
            "sealed_to_confirmed_s": latency}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args(argv)
    result = run()
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for key, value in result.items():
            print(f"{key:36} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
