"""RFC 9162 (Certificate Transparency v2) Merkle tree hashing, proofs and their verification.

Consensus-critical: these functions decide whether a receipt handed to a patient verifies. They follow
RFC 9162 §2.1 exactly (SHA-256, 0x00 leaf prefix, 0x01 node prefix, left subtree = largest power of two
smaller than n) so that any independent implementation — including the Solidity verifier in
``contracts/`` — computes the same roots.

Why not a library: ``merkletools`` does not install on Python 3.11 and ``pymerkle`` is ~9x slower than a
plain level-by-level hashlib loop (measured in ``scripts/bench_tree.py``); pymerkle serves as the test
oracle instead. The shape follows transparency-dev/merkle: small pure functions whose preconditions are
checked first, never an ORM row or a receipt object as argument.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from mrledger.ledger.errors import ProofError, RootMismatchError

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
#: A proof path longer than this cannot belong to any tree of < 2**64 leaves.
MAX_PATH_LENGTH = 64
MAX_TREE_SIZE = 2**64 - 1

_sha256 = hashlib.sha256


def leaf_hash(leaf_data: bytes) -> bytes:
    """MTH({d0}) = SHA-256(0x00 || d0) — RFC 9162 §2.1.1."""
    return _sha256(LEAF_PREFIX + leaf_data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right) — RFC 9162 §2.1.1."""
    return _sha256(NODE_PREFIX + left + right).digest()


def empty_root() -> bytes:
    """MTH({}) = SHA-256() — the root of the empty tree."""
    return _sha256(b"").digest()


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        raise ProofError(f"{what} must be {HASH_SIZE} bytes")


def _levels(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree, leaves first. An odd node at the end of a level is carried up unchanged,
    which yields exactly RFC 9162's split at the largest power of two (the tree is left-complete)."""
    level = list(leaf_hashes)
    levels = [level]
    sha = _sha256
    while len(level) > 1:
        n = len(level)
        nxt = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, n - 1, 2)]
        if n & 1:
            nxt.append(level[-1])
        levels.append(nxt)
        level = nxt
    return levels


def merkle_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """Root of a tree over already-hashed leaves (``leaf_hash`` of each leaf's data)."""
    if not leaf_hashes:
        return empty_root()
    return _levels(leaf_hashes)[-1][0]


class MerkleTree:
    """An immutable tree over leaf hashes; all levels are kept so proofs cost O(log n) lookups.

    A sealed batch never grows, so the tree is built once; consistency proofs between batch sizes are
    still offered for auditors comparing a prefix of a batch (and for parity with RFC 9162 logs).
    """

    __slots__ = ("_levels", "size")

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        # One pass over lengths and types instead of a call per leaf: the per-leaf check cost a fifth
        # of the build time at 100k leaves (scripts/bench_tree.py).
        if leaf_hashes and (set(map(len, leaf_hashes)) != {HASH_SIZE}
                            or not set(map(type, leaf_hashes)) <= {bytes, bytearray}):
            raise ProofError(f"every leaf hash must be {HASH_SIZE} bytes")
        self.size = len(leaf_hashes)
        self._levels = _levels(leaf_hashes) if leaf_hashes else [[]]

    @property
    def root(self) -> bytes:
        return self._levels[-1][0] if self.size else empty_root()

    def leaf(self, index: int) -> bytes:
        return self._levels[0][index]

    def _subtree_root(self, start: int, end: int) -> bytes:
        """Root of leaves [start, end). Fast path when the range is an aligned power-of-two block or
        a right edge of the tree (both are stored nodes); otherwise it recurses per RFC 9162."""
        n = end - start
        if n == 1:
            return self._levels[0][start]
        level = (n - 1).bit_length()
        if n == 1 << level and start % n == 0:
            return self._levels[level][start >> level]
        k = 1 << ((n - 1).bit_length() - 1)
        return node_hash(self._subtree_root(start, start + k), self._subtree_root(start + k, end))

    def inclusion_proof(self, index: int) -> list[bytes]:
        """PATH(m, D[n]) — RFC 9162 §2.1.3.1, iteratively: siblings from the leaf level upwards."""
        if not 0 <= index < self.size:
            raise ProofError(f"leaf index {index} out of range for tree size {self.size}")
        path: list[bytes] = []
        i = index
        for level in self._levels[:-1]:
            sibling = i ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            i >>= 1
        return path

    def consistency_proof(self, old_size: int) -> list[bytes]:
        """PROOF(m, D[n]) — RFC 9162 §2.1.4.1."""
        if not 0 < old_size <= self.size:
            raise ProofError(f"old size {old_size} must be in 1..{self.size}")
        return self._subproof(old_size, 0, self.size, True)

    def _subproof(self, m: int, start: int, end: int, complete: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if complete else [self._subtree_root(start, end)]
        k = 1 << ((n - 1).bit_length() - 1)
        if m <= k:
            return [*self._subproof(m, start, start + k, complete), self._subtree_root(start + k, end)]
        return [*self._subproof(m - k, start + k, end, False), self._subtree_root(start, start + k)]


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """Recompute the root from an inclusion proof — RFC 9162 §2.1.3.2.

    Raises ProofError if the proof cannot belong to a tree of this size (index out of range, path too
    short or too long); the caller compares the returned root.
    """
    if not 0 <= index < size or size > MAX_TREE_SIZE:
        raise ProofError(f"leaf index {index} out of range for tree size {size}")
    _check_hash(leaf, "leaf hash")
    if len(path) > MAX_PATH_LENGTH:
        raise ProofError("audit path too long")
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        _check_hash(p, "audit path entry")
        if sn == 0:
            raise ProofError("audit path longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("audit path shorter than the tree is deep")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> None:
    """Return None if ``leaf`` is at ``index`` of the tree of ``size`` with ``root``; raise otherwise."""
    _check_hash(root, "root")
    calculated = root_from_inclusion_proof(index, size, leaf, path)
    if calculated != root:
        raise RootMismatchError(expected=root, calculated=calculated)


def roots_from_consistency_proof(
    old_size: int, new_size: int, path: Sequence[bytes], old_root: bytes
) -> tuple[bytes, bytes]:
    """Recompute (old root, new root) from a consistency proof — RFC 9162 §2.1.4.2."""
    if not 0 < old_size <= new_size or new_size > MAX_TREE_SIZE:
        raise ProofError(f"sizes must satisfy 0 < old ({old_size}) <= new ({new_size})")
    _check_hash(old_root, "old root")
    if len(path) > 2 * MAX_PATH_LENGTH:
        raise ProofError("consistency path too long")
    for p in path:
        _check_hash(p, "consistency path entry")
    if old_size == new_size:
        if path:
            raise ProofError("consistency proof between equal sizes must be empty")
        return old_root, old_root
    nodes = list(path)
    if old_size & (old_size - 1) == 0:  # old size is a power of two: its root is the first node
        nodes.insert(0, old_root)
    if not nodes:
        raise ProofError("empty consistency path")
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = nodes[0]
    for c in nodes[1:]:
        if sn == 0:
            raise ProofError("consistency path too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency path too short")
    return fr, sr


def verify_consistency(
    old_size: int, new_size: int, path: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Return None if the tree of ``new_size`` extends the tree of ``old_size``; raise otherwise."""
    _check_hash(new_root, "new root")
    calc_old, calc_new = roots_from_consistency_proof(old_size, new_size, path, old_root)
    if calc_old != old_root:
        raise RootMismatchError(expected=old_root, calculated=calc_old)
    if calc_new != new_root:
        raise RootMismatchError(expected=new_root, calculated=calc_new)
