"""The status map (mrl-smap/1): roots against a naive reference recomputed from a dict, proofs of every kind,
strict proof encoding, and hypothesis over random batches of updates."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrledger.ledger.errors import EncodingError, ProofError
from mrledger.ledger.merkle import merkle_root, verify_inclusion
from mrledger.ledger.statusmap import (
    EMPTY,
    StatusMap,
    StatusProof,
    StatusValue,
    batch_commitment_v2,
    hub_leaf_hash,
    status_key,
    verify_status_proof,
)


def naive_root(entries: dict[bytes, StatusValue]) -> bytes:
    """The spec read literally, on bit strings: EMPTY for no key, the leaf for one, else a node over halves.
    Deliberately shares no code with StatusMap (hashlib only)."""

    def sha(b: bytes) -> bytes:
        return hashlib.sha256(b).digest()

    def bits(k: bytes) -> str:
        return "".join(f"{b:08b}" for b in k)

    def sub(items: list[tuple[str, bytes, StatusValue]], depth: int) -> bytes:
        if not items:
            return bytes(32)
        if len(items) == 1:
            _, k, v = items[0]
            return sha(b"\x02" + k + v.version.to_bytes(4, "big") + bytes([1 if v.status == "current" else 2])
                       + v.leaf_hash)
        left = [i for i in items if i[0][depth] == "0"]
        right = [i for i in items if i[0][depth] == "1"]
        return sha(b"\x03" + sub(left, depth + 1) + sub(right, depth + 1))

    return sub([(bits(k), k, v) for k, v in entries.items()], 0)


def h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def val(version: int, status: str = "current", label: str = "") -> StatusValue:
    return StatusValue(version, status, h(f"leaf-{label}-{version}"))  # type: ignore[arg-type]


def test_empty_map_root_is_empty_and_proves_absence() -> None:
    m = StatusMap()
    assert m.root == EMPTY == naive_root({})
    proof = m.prove(h("k"))
    assert proof.to_bytes() == b"\x00\x00\x00"
    assert verify_status_proof(m.root, h("k"), proof).kind == "absent"


def test_one_key_root_is_its_leaf_and_other_keys_are_absent() -> None:
    m = StatusMap({h("a"): val(1)})
    assert m.root == naive_root({h("a"): val(1)})
    assert verify_status_proof(m.root, h("a"), m.prove(h("a"))).kind == "current"
    answer = verify_status_proof(m.root, h("b"), m.prove(h("b")))
    assert answer.kind == "absent"


def test_membership_non_membership_withdrawn_and_stale_root() -> None:
    keys = [h(f"r{i}") for i in range(50)]
    m = StatusMap({k: val(1, label=str(i)) for i, k in enumerate(keys)})
    old_root, old_proof = m.root, m.prove(keys[3])
    m.apply({keys[3]: val(2, "withdrawn", "3"), keys[4]: val(2, label="4")})
    assert m.root == naive_root({k: m.get(k) for k in keys})  # type: ignore[misc]
    a = verify_status_proof(m.root, keys[3], m.prove(keys[3]))
    assert (a.kind, a.version, a.leaf_hash) == ("withdrawn", 2, h("leaf-3-2"))
    a = verify_status_proof(m.root, keys[4], m.prove(keys[4]).to_bytes())
    assert (a.kind, a.version) == ("current", 2)
    assert verify_status_proof(m.root, h("never"), m.prove(h("never"))).kind == "absent"
    # a node serving the old map: its proof holds for the old root only
    assert verify_status_proof(old_root, keys[3], old_proof).kind == "current"
    assert verify_status_proof(m.root, keys[3], old_proof).kind == "invalid"


def test_a_proof_for_one_key_says_nothing_of_another() -> None:
    keys = [h(f"r{i}") for i in range(20)]
    m = StatusMap({k: val(1) for k in keys})
    assert verify_status_proof(m.root, keys[1], m.prove(keys[0])).kind == "invalid"


def test_tampered_proofs_are_invalid() -> None:
    keys = [h(f"r{i}") for i in range(64)]
    m = StatusMap({k: val(1) for k in keys})
    raw = m.prove(keys[7]).to_bytes()
    for i in range(len(raw)):
        for bit in (0, 7):
            bad = bytearray(raw)
            bad[i] ^= 1 << bit
            assert verify_status_proof(m.root, keys[7], bytes(bad)).kind == "invalid", (i, bit)
    assert verify_status_proof(m.root, keys[7], raw + b"\x00").kind == "invalid"
    assert verify_status_proof(m.root, keys[7], raw[:-1]).kind == "invalid"


def test_strict_encoding() -> None:
    with pytest.raises(ProofError):
        StatusProof.from_bytes(b"\x02\x00\x00")
    with pytest.raises(ProofError):
        StatusProof.from_bytes(b"\x00\x00\x01\x01" + h("x"))  # depth 1, a bitmap padding bit set
    with pytest.raises(ProofError):
        StatusProof.from_bytes(b"\x00\x00\x01\x80" + EMPTY)  # EMPTY spelled out as a sibling
    with pytest.raises(ProofError):
        StatusProof.from_bytes(b"\x00\x01\x01" + b"\xff" * 33)  # depth 257: deeper than a key
    assert StatusProof.from_bytes(b"\x00\x00\x01\x80" + h("x")).siblings == (h("x"),)


def test_versions_only_grow_and_a_refused_batch_changes_nothing() -> None:
    m = StatusMap({h("a"): val(2)})
    root = m.root
    with pytest.raises(EncodingError):
        m.apply({h("b"): val(1), h("a"): val(2)})
    assert m.root == root and m.get(h("b")) is None


def test_key_derivation_is_domain_separated_and_length_prefixed() -> None:
    salt = bytes(range(16))
    k = status_key("qd-municipal-01", "LAB-2024-000042", salt)
    # SHA-256("mrl-smap/1 key" || u16be(15) || "qd-municipal-01" || u16be(15) || "LAB-2024-000042" || salt)
    assert k == hashlib.sha256(b"mrl-smap/1 key\x00\x0fqd-municipal-01\x00\x0fLAB-2024-000042" + salt).digest()
    assert status_key("ab", "c", salt) != status_key("a", "bc", salt)
    with pytest.raises(EncodingError):
        status_key("h", "r", b"short")


def test_record_status_maps_to_map_status() -> None:
    assert StatusValue.for_record(2, "entered-in-error", h("l")).status == "withdrawn"
    assert StatusValue.for_record(2, "corrected", h("l")).status == "current"


def test_batch_commitment_v2_known_answer() -> None:
    # SHA-256(0x04 || root || u64be(size) || map_root)
    root, map_root = h("root"), h("map")
    want = hashlib.sha256(b"\x04" + root + (7).to_bytes(8, "big") + map_root).digest()
    assert batch_commitment_v2(root, 7, map_root) == want
    assert batch_commitment_v2(root, 8, map_root) != want
    with pytest.raises(EncodingError):
        batch_commitment_v2(root, 0, map_root)


def test_keys_sharing_long_prefixes() -> None:
    """Keys that differ only in their last bits give deep paths (up to 256): still canonical and provable."""
    base = bytearray(32)
    keys = [bytes(base[:-1] + bytes([b])) for b in (0, 1, 2, 3, 0x80)]
    m = StatusMap({k: val(1, label=k.hex()) for k in keys})
    assert m.root == naive_root({k: val(1, label=k.hex()) for k in keys})
    proof = m.prove(keys[0])
    assert len(proof.siblings) == 256
    assert verify_status_proof(m.root, keys[0], proof).kind == "current"
    missing = bytes(base[:-1] + b"\x04")
    assert verify_status_proof(m.root, missing, m.prove(missing)).kind == "absent"


_keys = st.binary(min_size=32, max_size=32) | st.integers(0, 40).map(lambda i: h(f"k{i}"))
_batches = st.lists(st.lists(st.tuples(_keys, st.sampled_from(["current", "withdrawn"])), max_size=12), max_size=6)


@settings(max_examples=150, deadline=None)
@given(_batches, st.lists(_keys, max_size=5))
def test_matches_the_naive_reference_after_every_batch(batches: list[list[tuple[bytes, str]]],
                                                        probes: list[bytes]) -> None:
    m = StatusMap()
    reference: dict[bytes, StatusValue] = {}
    for batch in batches:
        changes: dict[bytes, StatusValue] = {}
        for key, status in batch:
            prev = changes.get(key) or reference.get(key)
            changes[key] = val((prev.version if prev else 0) + 1, status, key.hex())
        reference.update(changes)
        assert m.apply(changes) == naive_root(reference)
    for key in [*reference, *probes]:
        answer = verify_status_proof(m.root, key, StatusProof.from_bytes(m.prove(key).to_bytes()))
        if key in reference:
            assert (answer.kind, answer.version, answer.leaf_hash) == (
                reference[key].status, reference[key].version, reference[key].leaf_hash)
        else:
            assert answer.kind == "absent"



def test_large_map_with_a_partial_node_cache_matches_the_reference() -> None:
    """Only subtrees of ``CACHE_MIN`` keys or more keep their hash (the memory trade, ledger/statusmap.py): over
    1,540 keys in 12 batches — new keys, new versions, withdrawals, and 40 keys sharing a 250-bit prefix (deep
    paths inside one small subtree) — every root equals the naive reference and a map built at once, every
    probed proof verifies, and the cache holds far fewer nodes than the map has entries."""
    deep = [bytes(31) + bytes([i]) for i in range(40)]
    keys = [h(f"r{i}") for i in range(1500)] + deep
    m, reference = StatusMap(), {}
    for b in range(12):
        changes: dict[bytes, StatusValue] = {}
        for key in keys[b * 130:(b + 1) * 130]:
            changes[key] = val(1, label=key.hex())
        for key in keys[: b * 130: 17]:  # later versions of keys sealed in earlier batches
            prev = reference[key]
            changes[key] = val(prev.version + 1, "withdrawn" if b % 3 == 0 else "current", key.hex())
        reference.update(changes)
        assert m.apply(changes) == naive_root(reference), b
    assert len(m) == len(keys) and m.root == StatusMap(reference).root
    for key in [*keys[::50], *deep[::7], h("absent-1"), bytes(31) + b"\xff"]:
        answer = verify_status_proof(m.root, key, StatusProof.from_bytes(m.prove(key).to_bytes()))
        expected = reference.get(key)
        assert (answer.kind, answer.version) == ((expected.status, expected.version) if expected else ("absent", None))
    assert 0 < len(m._nodes) < len(m) // 2  # every subtree of two keys or more would be ~len(m) nodes


# ------------------------------------------------------------------ conformance vectors (scripts/gen_vectors.py)

_DIR = Path(__file__).resolve().parents[1] / "vectors" / "statusmap"
PROOF_VECTORS = [v for v in (json.loads(f.read_text()) for f in sorted(_DIR.glob("*.json"))) if "proof" in v]


def test_statusmap_vectors_exist_with_every_answer() -> None:
    assert len(PROOF_VECTORS) >= 15
    assert {v["want"] for v in PROOF_VECTORS} == {"current", "withdrawn", "absent", "invalid"}


@pytest.mark.parametrize("vec", PROOF_VECTORS, ids=[v["desc"] for v in PROOF_VECTORS])
def test_statusmap_vector(vec: dict[str, Any]) -> None:
    answer = verify_status_proof(bytes.fromhex(vec["root"]), bytes.fromhex(vec["key"]), bytes.fromhex(vec["proof"]))
    assert answer.kind == vec["want"], answer.detail
    assert answer.version == vec["want_version"]
    assert (answer.leaf_hash.hex() if answer.leaf_hash else None) == vec["want_leaf_hash"]


def test_statusmap_root_and_commitment_vectors() -> None:
    vec = json.loads((_DIR / "root_from_entries.json").read_text())
    entries = {bytes.fromhex(e["key"]): StatusValue.from_bytes(bytes.fromhex(e["value"])) for e in vec["entries"]}
    assert naive_root(entries).hex() == StatusMap(entries).root.hex() == vec["root"]
    assert vec["empty_root"] == EMPTY.hex()
    ki = vec["key_inputs"]
    assert status_key(ki["hospital_id"], ki["result_id"], bytes.fromhex(ki["secret"])).hex() == ki["key"]
    com = json.loads((_DIR / "commitment_v2.json").read_text())
    got = batch_commitment_v2(bytes.fromhex(com["batch_root"]), com["size"], bytes.fromhex(com["map_root"]))
    assert got.hex() == com["commitment"]


def test_hub_leaf_known_answer() -> None:
    # SHA-256(0x05 || hospitalKey || u64be(seq) || commitment), the contract's _hubLeaf
    hk, com = h("hospital"), h("commitment")
    assert hub_leaf_hash(hk, 3, com) == hashlib.sha256(b"\x05" + hk + (3).to_bytes(8, "big") + com).digest()
    with pytest.raises(EncodingError):
        hub_leaf_hash(hk, 0, com)


def test_hub_vector() -> None:
    vec = json.loads((_DIR / "hub_v2.json").read_text())
    leaves = [hub_leaf_hash(bytes.fromhex(i["hospital_key"]), i["seq"], bytes.fromhex(i["commitment"]))
              for i in vec["items"]]
    assert [x.hex() for x in leaves] == vec["leaves"]
    assert merkle_root(leaves).hex() == vec["root"]
    for index, path in enumerate(vec["paths"]):
        root = bytes.fromhex(vec["root"])
        verify_inclusion(index, len(leaves), leaves[index], [bytes.fromhex(p) for p in path], root)
