"""The Solidity RFC 9162 verifier must agree with ``mrledger.ledger.merkle`` (the reference the receipts come from):
every valid proof verifies, every tampered or malformed one returns false — and never reverts, so a
third-party verifier can treat every answer alike."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from registry_chain import BatchCaller, Chain, h32

from mrledger.anchoring import contract as api
from mrledger.ledger.merkle import MerkleTree, leaf_hash

Case = tuple[bytes, int, int, Sequence[bytes], bytes]


def _flip(b: bytes, pos: int = 0) -> bytes:
    return b[:pos] + bytes([b[pos] ^ 0x01]) + b[pos + 1 :]


def _tree(size: int, salt: str = "") -> MerkleTree:
    return MerkleTree([leaf_hash(f"{salt}leaf-{i}".encode()) for i in range(size)])


def _valid_and_tampered(tree: MerkleTree) -> tuple[list[Case], list[tuple[str, Case]]]:
    """Every index of the tree, and for each the tampered variants (tagged with the kind of tampering)."""
    n, root = tree.size, tree.root
    valid: list[Case] = []
    bad: list[tuple[str, Case]] = []
    for i in range(n):
        leaf, path = tree.leaf(i), tree.inclusion_proof(i)
        valid.append((leaf, i, n, path, root))
        bad.append(("leaf", (_flip(leaf), i, n, path, root)))
        bad.append(("root", (leaf, i, n, path, _flip(root, 31))))
        for j in range(len(path)):
            bad.append(("path", (leaf, i, n, [*path[:j], _flip(path[j], j % 32), *path[j + 1 :]], root)))
        if path:
            bad.append(("truncated", (leaf, i, n, path[:-1], root)))
        bad.append(("extended", (leaf, i, n, [*path, h32("extra")], root)))
        if i + 1 < n:
            bad.append(("index+1", (leaf, i + 1, n, path, root)))
        if i > 0:
            bad.append(("index-1", (leaf, i - 1, n, path, root)))
        bad.append(("size+1", (leaf, i, n + 1, path, root)))
        bad.append(("size-1", (leaf, i, n - 1, path, root)))  # n - 1 == i: index >= size, malformed
        bad.append(("index=size", (leaf, n, n, path, root)))
    return valid, bad


def _is_accepted_by_reference(case: Case) -> bool:
    """A few 'tampered' variants are still valid: RFC 9162 does not authenticate the tree size, so the
    proof of leaf 0 in a tree of 5 also verifies as a tree of 6 (same left/right pattern, same root).
    That is why verifyReceipt compares the size stored on chain. The Python reference is the oracle."""
    from mrledger.ledger.errors import VerificationError
    from mrledger.ledger.merkle import verify_inclusion

    leaf, index, size, path, root = case
    try:
        verify_inclusion(index, size, leaf, list(path), root)
    except (VerificationError, ValueError):
        return False
    return True


@pytest.fixture(scope="module")
def verifier(evm_chain: Chain) -> BatchCaller:
    """The verifier on each real node (anvil, Hardhat Network), asked in JSON-RPC batches."""
    return BatchCaller(evm_chain, evm_chain.deploy())


def test_rfc9162_all_sizes_1_to_40_every_index(verifier: BatchCaller) -> None:
    valid: list[Case] = []
    bad: list[tuple[str, Case]] = []
    for size in range(1, 41):
        v, b = _valid_and_tampered(_tree(size))
        valid += v
        bad += b
    assert len(valid) == 820
    assert all(verifier.verify_inclusion_many(valid)), "a valid proof was rejected"
    expected = [_is_accepted_by_reference(case) for _, case in bad]
    assert verifier.verify_inclusion_many([case for _, case in bad]) == expected
    # Only a changed size can leave a proof valid; every other kind of tampering must break it.
    still_valid_kinds = {kind for (kind, _), ok in zip(bad, expected, strict=True) if ok}
    assert still_valid_kinds <= {"size+1", "size-1"}, still_valid_kinds


def test_malformed_inputs_return_false(verifier: BatchCaller) -> None:
    tree = _tree(5)
    leaf, path, root = tree.leaf(0), tree.inclusion_proof(0), tree.root
    cases: list[Case] = [
        (leaf, 0, 0, [], root),  # empty tree
        (leaf, 2**256 - 1, 2**256 - 1, path, root),  # index == size, at the top of uint256
        (leaf, 0, 2**256 - 1, path, root),  # absurd size: path far too short
        (leaf, 0, 1, [], leaf),  # a single-leaf tree is valid: root == leaf hash
        (leaf, 0, 1, [root], leaf),  # ...but not with a path
        (leaf, 0, 5, [h32(str(k)) for k in range(300)], root),  # very long path
    ]
    assert verifier.verify_inclusion_many(cases) == [False, False, False, True, False, False]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(min_value=1, max_value=5000), data=st.data())
def test_random_trees_agree_with_ledger(verifier: BatchCaller, size: int, data: st.DataObject) -> None:
    tree = _tree(size, salt=str(size))
    indices = data.draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=8, unique=True))
    cases: list[Case] = [(tree.leaf(i), i, size, tree.inclusion_proof(i), tree.root) for i in indices]
    tampered: list[Case] = [(c[0], c[1], c[2], c[3], _flip(c[4])) for c in cases]
    assert verifier.verify_inclusion_many(cases + tampered) == [True] * len(cases) + [False] * len(cases)


def test_verifier_through_client_on_every_chain(chain: Chain) -> None:
    """The typed client path (mrledger.anchoring.contract.verify_inclusion), a few sizes, on every chain."""
    address = chain.deploy()
    for size in (1, 2, 3, 7, 8, 13):
        tree = _tree(size)
        for i in {0, size // 2, size - 1}:
            path = tree.inclusion_proof(i)
            assert api.verify_inclusion(chain.w3, address, tree.leaf(i), i, size, path, tree.root)
            assert not api.verify_inclusion(chain.w3, address, tree.leaf(i), i, size, path, _flip(tree.root))
            assert not api.verify_inclusion(chain.w3, address, tree.leaf(i), i + size, size, path, tree.root)


def test_registry_verifies_proof_against_its_stored_root_and_size(chain: Chain) -> None:
    address, key = chain.deploy_with_hospital()
    tree = _tree(11, salt="receipt")
    api.anchor(chain.w3, address, chain.submitter, key, 1, tree.root, tree.size)
    for i in (0, 5, 10):
        path = tree.inclusion_proof(i)
        assert api.registry_verifies_proof(chain.w3, address, key, 1, tree.leaf(i), i, 11, path)
        assert not api.registry_verifies_proof(chain.w3, address, key, 1, _flip(tree.leaf(i)), i, 11, path)
        assert not api.registry_verifies_proof(chain.w3, address, key, 1, tree.leaf(i), i, 12, path)  # size must match
        assert not api.registry_verifies_proof(chain.w3, address, key, 2, tree.leaf(i), i, 11, path)  # not anchored
    other = _tree(11, salt="other")  # same shape, another root: the stored root decides
    assert not api.registry_verifies_proof(chain.w3, address, key, 1, other.leaf(3), 3, 11, other.inclusion_proof(3))


def test_every_inclusion_vector_file_agrees(verifier: BatchCaller) -> None:
    """The generated vectors in tests/vectors/inclusion (the ones ledger/ is tested on) give the same
    verdict from the contract: valid ones verify, every mutated one is refused."""
    import json
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[1] / "vectors" / "inclusion").glob("*.json"))
    assert len(files) > 300
    cases: list[Case] = []
    expected: list[bool] = []
    for f in files:
        v = json.loads(f.read_text())
        path = v["path"]
        if any(len(p) != 64 for p in path):
            continue  # not encodable as bytes32[]: refused before any call, by the ABI itself
        cases.append((bytes.fromhex(v["leaf_hash"]), v["index"], v["size"], [bytes.fromhex(p) for p in path],
                      bytes.fromhex(v["root"])))
        expected.append(v["want_error"] is None)
    assert verifier.verify_inclusion_many(cases) == expected
