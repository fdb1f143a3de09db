"""MrLedgerRegistryV2 (issue 18): one word per batch, gap-free sequences on chain whichever way a batch comes
(alone or in a hub), and receipts and status proofs verified against the stored commitment with eth_call —
on a real anvil and on eth-tester, plus the gas targets on anvil."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from registry_chain import Chain, h32, hkey

from mrledger.anchoring import contract_v2 as v2
from mrledger.anchoring.errors import ContractRevert
from mrledger.ledger import build_batch, leaf_hash
from mrledger.ledger.statusmap import StatusMap, StatusValue, batch_commitment_v2, status_key

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "statusmap"
SEALED = datetime(2024, 5, 1, 2, 5, tzinfo=UTC)
SINGLE_ANCHOR_BUDGET = 55_000
HUB_PER_BATCH_BUDGET = 15_000


def deploy(c: Chain, *hospitals: str) -> tuple[str, list[bytes]]:
    address = v2.deploy_registry(c.w3, c.admin)
    keys = [hkey(h) for h in hospitals]
    for k in keys:
        v2.register_hospital(c.w3, address, c.admin, k, h32("name"), [c.submitter.address])
    return address, keys


def reverts(name: str, fn: object, *args: object) -> None:
    with pytest.raises(ContractRevert) as info:
        fn(*args)  # type: ignore[operator]
    assert info.value.name == name, info.value


def test_commitment_matches_the_ledger(chain: Chain) -> None:
    address, _ = deploy(chain)
    for size in (1, 7, 2**64 - 1):
        want = batch_commitment_v2(h32("root"), size, h32("map"))
        assert v2.batch_commitment(chain.w3, address, h32("root"), size, h32("map")) == want


def test_single_anchor_rules(chain: Chain) -> None:
    c = chain
    address, (key,) = deploy(c, "v2-rules")
    com = [h32(f"c{i}") for i in range(4)]
    v2.anchor(c.w3, address, c.submitter, key, 1, com[1])
    assert v2.commitment_of(c.w3, address, key, 1) == com[1]
    assert v2.commitment_of(c.w3, address, key, 2) is None
    reverts("BatchAlreadyAnchored", v2.anchor, c.w3, address, c.submitter, key, 1, com[2])
    reverts("SeqGap", v2.anchor, c.w3, address, c.submitter, key, 3, com[3])
    reverts("ZeroCommitment", v2.anchor, c.w3, address, c.submitter, key, 2, bytes(32))
    reverts("NotSubmitter", v2.anchor, c.w3, address, c.outsider, key, 2, com[2])
    reverts("HospitalNotRegistered", v2.anchor, c.w3, address, c.submitter, hkey("nobody"), 1, com[2])
    hosp = v2.hospital_of(c.w3, address, key)
    assert (hosp.registered, hosp.last_seq) == (True, 1) and hosp.last_anchored_at > 0
    v2.pause(c.w3, address, c.admin)
    reverts("EnforcedPause", v2.anchor, c.w3, address, c.submitter, key, 2, com[2])


Info = list[tuple[bytes, bytes, int, list[bytes]]]


def _batch(hospital: str, seq: int, m: StatusMap,
           results: list[tuple[str, int, str]]) -> tuple[bytes, int, bytes, Info]:
    """Seal one batch of (result id, version, record status) and apply it to the map; returns (root, size,
    map root, [(status key, leaf hash, index, path)])."""
    leaves = [leaf_hash(f"{hospital}/{rid}/v{v}".encode()) for rid, v, _ in results]
    head, tree = build_batch(hospital, seq, leaves, SEALED)
    keys = [status_key(hospital, rid, rid.encode().ljust(16, b".")[:16]) for rid, _, _ in results]
    m.apply({k: StatusValue.for_record(v, st, lf) for k, (_, v, st), lf in zip(keys, results, leaves, strict=True)})
    info = [(k, lf, i, tree.inclusion_proof(i)) for i, (k, lf) in enumerate(zip(keys, leaves, strict=True))]
    return head.root, head.size, m.root, info


def test_receipt_and_status_verified_against_the_commitment(chain: Chain) -> None:
    c = chain
    address, (key,) = deploy(c, "v2-verify")
    m = StatusMap()
    root1, size1, map1, info1 = _batch("v2-verify", 1, m, [("LAB-1", 1, "final"), ("LAB-2", 1, "final"),
                                                            ("LAB-3", 1, "final")])
    v2.anchor(c.w3, address, c.submitter, key, 1, batch_commitment_v2(root1, size1, map1))
    k1, leaf1, idx1, path1 = info1[0]
    assert v2.registry_verifies_receipt(c.w3, address, key, 1, leaf1, idx1, size1, path1, map1)
    assert not v2.registry_verifies_receipt(c.w3, address, key, 1, leaf1, idx1, size1, path1, h32("other map"))
    assert not v2.registry_verifies_receipt(c.w3, address, key, 1, leaf1, idx1, size1 + 1, path1, map1)
    assert not v2.registry_verifies_receipt(c.w3, address, key, 2, leaf1, idx1, size1, path1, map1)
    assert not v2.registry_verifies_receipt(c.w3, address, key, 1, h32("forged"), idx1, size1, path1, map1)
    stale_proof = m.prove(k1).to_bytes()

    # batch 2 corrects LAB-1 and withdraws LAB-2
    root2, size2, map2, info2 = _batch("v2-verify", 2, m, [("LAB-1", 2, "corrected"), ("LAB-2", 2, "entered-in-error")])
    v2.anchor(c.w3, address, c.submitter, key, 2, batch_commitment_v2(root2, size2, map2))
    got = v2.verify_status(c.w3, address, key, 2, root2, size2, map2, k1, m.prove(k1).to_bytes())
    assert (got.answer.kind, got.answer.version, got.answer.leaf_hash, got.latest_seq) == (
        "current", 2, info2[0][1], 2)
    got = v2.verify_status(c.w3, address, key, 2, root2, size2, map2, info2[1][0], m.prove(info2[1][0]).to_bytes())
    assert (got.answer.kind, got.answer.version) == ("withdrawn", 2)
    absent = status_key("v2-verify", "LAB-404", b"x" * 16)
    got = v2.verify_status(c.w3, address, key, 2, root2, size2, map2, absent, m.prove(absent).to_bytes())
    assert got.answer.kind == "absent"
    # a node serving the old map: its proof fails against the latest commitment; against batch 1 it holds but
    # latest_seq tells the caller it is stale
    assert v2.verify_status(c.w3, address, key, 2, root2, size2, map2, k1, stale_proof).answer.kind == "invalid"
    old = v2.verify_status(c.w3, address, key, 1, root1, size1, map1, k1, stale_proof)
    assert (old.answer.kind, old.answer.version, old.latest_seq) == ("current", 1, 2)
    # a map root that is not the anchored one is refused before the proof is looked at
    forged = StatusMap({k1: StatusValue(9, "current", h32("x"))})
    assert v2.verify_status(c.w3, address, key, 2, root2, size2, forged.root, k1,
                            forged.prove(k1).to_bytes()).answer.kind == "invalid"


def test_hub_anchors_many_hospitals_with_sequences_checked(chain: Chain) -> None:
    c = chain
    names = [f"v2-hub-{i}" for i in range(5)]
    address, keys = deploy(c, *names)
    v2.anchor(c.w3, address, c.submitter, keys[0], 1, h32("alone"))
    items = [v2.HubItem(keys[0], 2, h32("a2")), v2.HubItem(keys[0], 3, h32("a3"))]
    items += [v2.HubItem(k, 1, h32(f"b{i}")) for i, k in enumerate(keys[1:])]
    _, hub_id = v2.anchor_hub(c.w3, address, c.submitter, items)
    hub = v2.hub_of(c.w3, address, hub_id)
    assert hub is not None and (hub.root, hub.count) == (v2.hub_root(items), len(items))
    proofs = v2.hub_proofs(hub_id, items)
    for it, proof in zip(items, proofs, strict=True):
        assert v2.is_anchored(c.w3, address, it.hospital_key, it.seq, it.commitment, proof)
        assert v2.commitment_of(c.w3, address, it.hospital_key, it.seq) is None  # no per-batch word in a hub
    assert v2.last_seq(c.w3, address, keys[0]) == 3
    wrong_index = v2.HubProof(hub_id, proofs[1].index, proofs[0].path)
    assert not v2.is_anchored(c.w3, address, items[0].hospital_key, 2, items[0].commitment, wrong_index)
    assert not v2.is_anchored(c.w3, address, keys[1], 2, h32("b0"), proofs[2])  # another seq
    assert not v2.is_anchored(c.w3, address, keys[1], 1, h32("b0"), v2.HubProof(hub_id + 1, 0, ()))
    # all or nothing: one gap in the list and no hospital of it advances
    bad = [v2.HubItem(keys[1], 2, h32("ok")), v2.HubItem(keys[2], 3, h32("gap"))]
    reverts("SeqGap", v2.anchor_hub, c.w3, address, c.submitter, bad)
    assert v2.last_seq(c.w3, address, keys[1]) == 1
    reverts("HubSize", v2.anchor_hub, c.w3, address, c.submitter, [])
    reverts("NotSubmitter", v2.anchor_hub, c.w3, address, c.outsider, [v2.HubItem(keys[1], 2, h32("x"))])


def test_receipt_of_a_hub_anchored_batch(chain: Chain) -> None:
    c = chain
    address, keys = deploy(c, "v2-hr-0", "v2-hr-1")
    m = StatusMap()
    root, size, map_root, info = _batch("v2-hr-1", 1, m, [("R-1", 1, "final"), ("R-2", 1, "final")])
    items = [v2.HubItem(keys[0], 1, h32("other")), v2.HubItem(keys[1], 1, batch_commitment_v2(root, size, map_root))]
    _, hub_id = v2.anchor_hub(c.w3, address, c.submitter, items)
    where = v2.hub_proofs(hub_id, items)[1]
    k, leaf, index, path = info[1]
    assert v2.registry_verifies_receipt(c.w3, address, keys[1], 1, leaf, index, size, path, map_root, where)
    # Not stored alone: a hub batch needs its place in the hub's commitment.
    assert not v2.registry_verifies_receipt(c.w3, address, keys[1], 1, leaf, index, size, path, map_root)
    got = v2.verify_status(c.w3, address, keys[1], 1, root, size, map_root, k, m.prove(k).to_bytes(), where)
    assert (got.answer.kind, got.answer.version, got.answer.leaf_hash) == ("current", 1, leaf)


_PROOF_VECTORS = [v for v in (json.loads(f.read_text()) for f in sorted(VECTORS.glob("*.json"))) if "proof" in v]


@pytest.mark.anvil
def test_solidity_status_verifier_agrees_with_every_vector(anvil_chain: Chain) -> None:
    assert len(_PROOF_VECTORS) >= 15
    address, _ = deploy(anvil_chain)
    for vec in _PROOF_VECTORS:
        answer = v2.verify_status_proof(anvil_chain.w3, address, bytes.fromhex(vec["root"]),
                                        bytes.fromhex(vec["key"]), bytes.fromhex(vec["proof"]))
        got = (answer.kind, answer.version, answer.leaf_hash.hex() if answer.leaf_hash else None)
        assert got == (vec["want"], vec["want_version"], vec["want_leaf_hash"]), vec["desc"]


@pytest.mark.anvil
def test_gas_single_anchor_and_hub_of_100(anvil_chain: Chain) -> None:
    c = anvil_chain
    names = [f"v2-gas-{i}" for i in range(100)]
    address, keys = deploy(c, *names)
    first = v2.anchor(c.w3, address, c.submitter, keys[0], 1, h32("g1")).gas_used
    steady = v2.anchor(c.w3, address, c.submitter, keys[0], 2, h32("g2")).gas_used
    assert max(first, steady) <= SINGLE_ANCHOR_BUDGET, (first, steady)
    items = [v2.HubItem(k, 3 if i == 0 else 1, h32(f"h{i}")) for i, k in enumerate(keys)]
    tx, _ = v2.anchor_hub(c.w3, address, c.submitter, items)
    assert tx.gas_used / len(items) <= HUB_PER_BATCH_BUDGET, tx.gas_used


def test_locate_reads_the_newest_blocks_first_and_still_finds_an_old_batch(chain: Chain,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``locate`` searches the logs newest first in windows growing eightfold: a batch anchored lately costs one
    small log read (not every log of its hospital in 10,000 blocks), one anchored long before is still found, and
    one never anchored is answered from ``lastSeq`` without a log read."""
    c = chain
    address, (key,) = deploy(c, "v2-locate")
    monkeypatch.setattr(v2, "FIRST_LOG_WINDOW", 2)
    v2.anchor(c.w3, address, c.submitter, key, 1, h32("c1"))
    for _ in range(40):
        c.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    v2.anchor(c.w3, address, c.submitter, key, 2, h32("c2"))
    asked: list[tuple[int, int]] = []
    get_logs = c.w3.eth.get_logs

    def spy(params: Any) -> Any:
        asked.append(tuple(int(params[k], 16) if isinstance(params[k], str) else int(params[k])
                           for k in ("fromBlock", "toBlock")))  # type: ignore[arg-type]
        return get_logs(params)

    monkeypatch.setattr(c.w3.eth, "get_logs", spy)
    head = int(c.w3.eth.block_number)
    recent = v2.locate(c.w3, address, key, 2)
    assert recent is not None and recent.commitment == h32("c2")
    assert asked == [(head - 1, head)]
    asked.clear()
    old = v2.locate(c.w3, address, key, 1)
    assert old is not None and old.commitment == h32("c1") and old.anchored_block < head - 40
    assert asked[:3] == [(head - 1, head), (head - 17, head - 2), (max(0, head - 145), head - 18)]
    asked.clear()
    assert v2.locate(c.w3, address, key, 3) is None and asked == []
