// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

/// @notice What v2 reads of the v1 registry it succeeds (``MrLedgerRegistry``): enough to carry each hospital's
///         sequence over, so that batch numbering stays gap-free across the upgrade.
interface IRegistryV1 {
    function lastSeq(bytes32 hospitalKey) external view returns (uint64);
    function paused() external view returns (bool);
}

/// @title MrLedgerRegistryV2
/// @notice Public, append-only registry of hospitals' batch commitments: one 32-byte word per batch,
///         `commitment = sha256(0x04 || root || u64be(size) || mapRoot)`, binding the batch's RFC 9162 root,
///         its leaf count and the hospital's status map root (docs/receipt.md §15-§16, mrl-smap/1).
/// @dev Batches are numbered 1, 2, 3, ... per hospital without gaps, checked here, whichever way they come:
///      - `anchor`: one batch, one fresh slot (the commitment) plus the hospital's slot rewritten;
///      - `anchorHub`: many hospitals' batches in one transaction. A fresh slot per batch costs 22,100 gas
///        alone, so a hub stores no per-batch word: it builds the RFC 9162 root over the items' hub leaves
///        `sha256(0x05 || hospitalKey || u64be(seq) || commitment)` *on chain, from the calldata* (a caller
///        cannot slip in an unchecked item) and stores that root once per hub. A receipt of a hub-anchored
///        batch carries its hub id, index and path. Since every (hospital, seq) passes the sequence check
///        exactly once, at most one hub leaf exists per (hospital, seq) across the whole registry.
///      The hospital slot packs lastSeq, the time of the last anchor (uint32 seconds: good until 2106) and
///      the newest submitter (saves the cold submitter-mapping read in the usual one-key case; the mapping
///      stays the authority). Registration lives in another slot, read only to name an error.
///      In-place upgrade from a v1 registry (docs/anchoring.md, "Registry v2"): deployed with the v1 registry as
///      `predecessor`, v2 registers a hospital only while the predecessor is paused, and starts the hospital's
///      sequence where the predecessor's ends (read from it, not from the admin), so each (hospital, seq) is
///      anchored in exactly one of the two registries and the numbering has no gap.
contract MrLedgerRegistryV2 is AccessControl, Pausable {
    /// @dev One storage slot: 64 + 32 + 160 bits.
    struct Hospital {
        uint64 lastSeq;
        uint32 lastAnchoredAt;
        address primarySubmitter;
    }

    struct HospitalInfo {
        bytes32 nameHash;
        uint64 registeredBlock;
        bool registered;
    }

    /// @dev Two slots per hub transaction: its root, then leaf count and block.
    struct Hub {
        bytes32 root;
        uint32 count;
        uint64 anchoredBlock;
    }

    /// @notice One batch of `anchorHub`.
    struct HubItem {
        bytes32 hospitalKey;
        uint64 seq;
        bytes32 commitment;
    }

    /// @notice Where a batch's commitment is: `hubId` 0 for `anchor` (stored per batch), otherwise the hub and
    ///         the RFC 9162 inclusion proof of the batch's hub leaf in it.
    struct HubProof {
        uint64 hubId;
        uint256 index;
        bytes32[] path;
    }

    uint256 public constant MAX_HUB_ITEMS = 4096;

    mapping(bytes32 hospitalKey => Hospital) private _hospitals;
    mapping(bytes32 hospitalKey => HospitalInfo) private _infos;
    mapping(bytes32 hospitalKey => mapping(address submitter => bool)) private _submitters;
    mapping(bytes32 hospitalKey => mapping(uint64 seq => bytes32)) private _commitments;
    mapping(uint64 hubId => Hub) private _hubs;
    uint64 public hubCount;
    /// @notice The v1 registry this one succeeds (zero: none).
    address public immutable predecessor;

    event HospitalRegistered(bytes32 indexed hospitalKey, bytes32 nameHash);
    /// @notice A hospital whose batches 1..lastSeq are anchored in the predecessor; it continues at lastSeq + 1.
    event HospitalCarriedOver(bytes32 indexed hospitalKey, address predecessor, uint64 lastSeq);
    event SubmitterAdded(bytes32 indexed hospitalKey, address indexed submitter);
    event SubmitterRevoked(bytes32 indexed hospitalKey, address indexed submitter);
    /// @dev For a hub, the transaction's BatchAnchored events are its items in order (index 0 first) and its
    ///      HubAnchored event follows them; no hub id here, to keep 256 gas off every batch.
    event BatchAnchored(bytes32 indexed hospitalKey, uint64 seq, bytes32 commitment);
    event HubAnchored(uint64 indexed hubId, bytes32 root, uint32 count);

    error ZeroHospitalKey();
    error ZeroAddress();
    error HospitalAlreadyRegistered(bytes32 hospitalKey);
    error HospitalNotRegistered(bytes32 hospitalKey);
    error SubmitterAlreadyActive(bytes32 hospitalKey, address submitter);
    error SubmitterNotActive(bytes32 hospitalKey, address submitter);
    error NotSubmitter(bytes32 hospitalKey, address caller);
    error ZeroCommitment();
    error BatchAlreadyAnchored(bytes32 hospitalKey, uint64 seq);
    error SeqGap(bytes32 hospitalKey, uint64 expected, uint64 got);
    error HubSize(uint256 count);
    error PredecessorNotPaused(address predecessor);

    constructor(address admin, address predecessor_) {
        if (admin == address(0)) revert ZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        predecessor = predecessor_;
    }

    // ------------------------------------------------------------------ administration

    function registerHospital(bytes32 hospitalKey, bytes32 nameHash, address[] calldata submitters)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        if (hospitalKey == bytes32(0)) revert ZeroHospitalKey();
        HospitalInfo storage info = _infos[hospitalKey];
        if (info.registered) revert HospitalAlreadyRegistered(hospitalKey);
        info.nameHash = nameHash;
        info.registeredBlock = uint64(block.number);
        info.registered = true;
        emit HospitalRegistered(hospitalKey, nameHash);
        if (predecessor != address(0)) {
            // Paused, the predecessor takes no further anchor, so the sequence read here is final.
            if (!IRegistryV1(predecessor).paused()) revert PredecessorNotPaused(predecessor);
            uint64 carried = IRegistryV1(predecessor).lastSeq(hospitalKey);
            if (carried != 0) {
                _hospitals[hospitalKey].lastSeq = carried;
                emit HospitalCarriedOver(hospitalKey, predecessor, carried);
            }
        }
        for (uint256 i; i < submitters.length; ++i) {
            _addSubmitter(hospitalKey, submitters[i]);
        }
    }

    function addSubmitter(bytes32 hospitalKey, address submitter) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (!_infos[hospitalKey].registered) revert HospitalNotRegistered(hospitalKey);
        _addSubmitter(hospitalKey, submitter);
    }

    function revokeSubmitter(bytes32 hospitalKey, address submitter) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (!_submitters[hospitalKey][submitter]) revert SubmitterNotActive(hospitalKey, submitter);
        _submitters[hospitalKey][submitter] = false;
        Hospital storage h = _hospitals[hospitalKey];
        if (h.primarySubmitter == submitter) h.primarySubmitter = address(0);
        emit SubmitterRevoked(hospitalKey, submitter);
    }

    function pause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _pause();
    }

    function unpause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _unpause();
    }

    function _addSubmitter(bytes32 hospitalKey, address submitter) private {
        if (submitter == address(0)) revert ZeroAddress();
        if (_submitters[hospitalKey][submitter]) revert SubmitterAlreadyActive(hospitalKey, submitter);
        _submitters[hospitalKey][submitter] = true;
        _hospitals[hospitalKey].primarySubmitter = submitter;
        emit SubmitterAdded(hospitalKey, submitter);
    }

    // ------------------------------------------------------------------ anchoring

    /// @notice Anchor batch `seq` (exactly `lastSeq + 1`) of one hospital: one storage word.
    function anchor(bytes32 hospitalKey, uint64 seq, bytes32 commitment) external whenNotPaused {
        _advance(hospitalKey, seq, commitment);
        _commitments[hospitalKey][seq] = commitment;
        emit BatchAnchored(hospitalKey, seq, commitment);
    }

    /// @notice Anchor many batches (of many hospitals, or consecutive ones of one) in one transaction, all or
    ///         nothing; each sequence is checked as by `anchor`. Returns the new hub's id (1, 2, ...).
    function anchorHub(HubItem[] calldata items) external whenNotPaused returns (uint64 hubId) {
        uint256 n = items.length;
        if (n == 0 || n > MAX_HUB_ITEMS) revert HubSize(n);
        hubId = hubCount + 1;
        hubCount = hubId;
        bytes32[] memory level = new bytes32[](n);
        for (uint256 i; i < n; ++i) {
            HubItem calldata it = items[i];
            _advance(it.hospitalKey, it.seq, it.commitment);
            level[i] = _hubLeaf(it.hospitalKey, it.seq, it.commitment);
            emit BatchAnchored(it.hospitalKey, it.seq, it.commitment);
        }
        bytes32 root = _rootOf(level);
        _hubs[hubId] = Hub({root: root, count: uint32(n), anchoredBlock: uint64(block.number)});
        emit HubAnchored(hubId, root, uint32(n));
    }

    function _advance(bytes32 hospitalKey, uint64 seq, bytes32 commitment) private {
        if (commitment == bytes32(0)) revert ZeroCommitment();
        Hospital storage h = _hospitals[hospitalKey];
        uint64 last = h.lastSeq;
        if (h.primarySubmitter != msg.sender && !_submitters[hospitalKey][msg.sender]) {
            if (!_infos[hospitalKey].registered) revert HospitalNotRegistered(hospitalKey);
            revert NotSubmitter(hospitalKey, msg.sender);
        }
        if (seq <= last) revert BatchAlreadyAnchored(hospitalKey, seq);
        unchecked {
            if (seq != last + 1) revert SeqGap(hospitalKey, last + 1, seq);
        }
        h.lastSeq = seq;
        h.lastAnchoredAt = uint32(block.timestamp);
    }

    // ------------------------------------------------------------------ reads

    /// @notice The commitment `anchor` stored for (hospital, seq); zero if none (never anchored, or anchored
    ///         in a hub: see `hubOf` and `verifyReceipt`).
    function commitmentOf(bytes32 hospitalKey, uint64 seq) external view returns (bytes32) {
        return _commitments[hospitalKey][seq];
    }

    function hubOf(uint64 hubId) external view returns (bytes32 root, uint32 count, uint64 anchoredBlock) {
        Hub storage hub = _hubs[hubId];
        return (hub.root, hub.count, hub.anchoredBlock);
    }

    function lastSeq(bytes32 hospitalKey) external view returns (uint64) {
        return _hospitals[hospitalKey].lastSeq;
    }

    function isSubmitter(bytes32 hospitalKey, address account) external view returns (bool) {
        return _submitters[hospitalKey][account];
    }

    function hospitalOf(bytes32 hospitalKey)
        external
        view
        returns (bool registered, bytes32 nameHash, uint64 registeredBlock, uint64 lastAnchoredSeq, uint32 lastAnchoredAt)
    {
        Hospital storage h = _hospitals[hospitalKey];
        HospitalInfo storage info = _infos[hospitalKey];
        return (info.registered, info.nameHash, info.registeredBlock, h.lastSeq, h.lastAnchoredAt);
    }

    // ------------------------------------------------------------------ verification (eth_call)

    /// @notice Is `commitment` the one anchored for (hospital, seq)? Directly stored (`where.hubId == 0`) or
    ///         proven into hub `where.hubId`. False for anything malformed, never a revert.
    function isAnchored(bytes32 hospitalKey, uint64 seq, bytes32 commitment, HubProof calldata where)
        public
        view
        returns (bool)
    {
        if (commitment == bytes32(0)) return false;
        if (where.hubId == 0) return _commitments[hospitalKey][seq] == commitment;
        Hub storage hub = _hubs[where.hubId];
        bytes32 root = hub.root;
        if (root == bytes32(0)) return false;
        return verifyInclusion(_hubLeaf(hospitalKey, seq, commitment), where.index, hub.count, where.path, root);
    }

    /// @notice A receipt against the chain: `leafHash` at `index` of a batch of `size` leaves whose root, with
    ///         `size` and `mapRoot`, hashes to the commitment anchored for (hospital, seq).
    function verifyReceipt(
        bytes32 hospitalKey,
        uint64 seq,
        bytes32 leafHash,
        uint256 index,
        uint256 size,
        bytes32[] calldata path,
        bytes32 mapRoot,
        HubProof calldata where
    ) external view returns (bool) {
        if (size == 0 || size > type(uint64).max) return false;
        (bool ok, bytes32 root) = _rootFromInclusion(leafHash, index, size, path);
        if (!ok) return false;
        return isAnchored(hospitalKey, seq, batchCommitment(root, uint64(size), mapRoot), where);
    }

    /// @notice The status of a result as of batch (hospital, seq): checks that (batchRoot, size, mapRoot) is
    ///         that batch's anchored commitment, then the mrl-smap/1 proof. kind: 0 invalid, 1 absent,
    ///         2 current, 3 withdrawn. `latestSeq` is the hospital's last anchored batch: an answer for an older
    ///         seq is stale, and the caller says so.
    function verifyStatus(
        bytes32 hospitalKey,
        uint64 seq,
        bytes32 batchRoot,
        uint64 size,
        bytes32 mapRoot,
        HubProof calldata where,
        bytes32 statusKey,
        bytes calldata proof
    ) external view returns (uint8 kind, uint32 version, bytes32 leafHash, uint64 latestSeq) {
        latestSeq = _hospitals[hospitalKey].lastSeq;
        if (size == 0 || !isAnchored(hospitalKey, seq, batchCommitment(batchRoot, size, mapRoot), where)) {
            return (0, 0, bytes32(0), latestSeq);
        }
        (kind, version, leafHash) = verifyStatusProof(mapRoot, statusKey, proof);
    }

    /// @notice mrl-smap/1 proof verification (docs/receipt.md §15). kind: 0 invalid, 1 absent, 2 current,
    ///         3 withdrawn; never reverts on a malformed proof.
    function verifyStatusProof(bytes32 mapRoot, bytes32 key, bytes calldata proof)
        public
        view
        returns (uint8 kind, uint32 version, bytes32 leafHash)
    {
        (bool ok, uint256 n, uint256 count) = _proofShape(proof);
        if (!ok) return (0, 0, 0);
        bytes32 h;
        bool member;
        uint8 status;
        if (uint8(proof[0]) == 1) {
            uint256 at = proof.length - 69;
            bytes32 other = bytes32(proof[at:at + 32]);
            version = uint32(bytes4(proof[at + 32:at + 36]));
            status = uint8(proof[at + 36]);
            leafHash = bytes32(proof[at + 37:at + 69]);
            if (version == 0 || version > 0x7fffffff || status == 0 || status > 2) return (0, 0, 0);
            if (n > 0 && (uint256(other) ^ uint256(key)) >> (256 - n) != 0) return (0, 0, 0);
            h = _mapLeaf(other, bytes5(proof[at + 32:at + 37]), leafHash);
            member = other == key;
        }
        (ok, h) = _climb(key, proof, n, count, h);
        if (!ok || h != mapRoot) return (0, 0, 0);
        if (!member) return (1, 0, 0);
        return (status + 1, version, leafHash);
    }

    /// @dev Checks the proof's layout: kind, depth <= 256, zero bitmap padding, exact length, and a non-EMPTY
    ///      deepest sibling. Returns the depth and the number of non-EMPTY siblings.
    function _proofShape(bytes calldata proof) private pure returns (bool, uint256 n, uint256 count) {
        uint256 len = proof.length;
        if (len < 3 || uint8(proof[0]) > 1) return (false, 0, 0);
        n = (uint256(uint8(proof[1])) << 8) | uint8(proof[2]);
        if (n > 256) return (false, 0, 0);
        uint256 nb = (n + 7) >> 3;
        if (len < 3 + nb) return (false, 0, 0);
        for (uint256 i; i < nb; ++i) {
            uint8 b = uint8(proof[3 + i]);
            if (i == nb - 1 && n & 7 != 0 && b & (uint8(0xff) >> (n & 7)) != 0) return (false, 0, 0);
            for (; b != 0; b &= b - 1) ++count;
        }
        if (len != 3 + nb + 32 * count + (uint8(proof[0]) == 1 ? 69 : 0)) return (false, 0, 0);
        if (n > 0 && !_bitmapBit(proof, n - 1)) return (false, 0, 0);
        return (true, n, count);
    }

    /// @dev From the subtree hash `h` at depth n up to the root, siblings taken bottom-up.
    function _climb(bytes32 key, bytes calldata proof, uint256 n, uint256 count, bytes32 h)
        private
        view
        returns (bool, bytes32)
    {
        uint256 base = 3 + ((n + 7) >> 3);
        for (uint256 d = n; d > 0; --d) {
            bytes32 s;
            if (_bitmapBit(proof, d - 1)) {
                uint256 at = base + 32 * --count;
                s = bytes32(proof[at:at + 32]);
                if (s == bytes32(0)) return (false, 0);
            }
            h = (uint256(key) >> (256 - d)) & 1 == 1 ? _hash2(0x03, s, h) : _hash2(0x03, h, s);
        }
        return (true, h);
    }

    function _bitmapBit(bytes calldata proof, uint256 i) private pure returns (bool) {
        return uint8(proof[3 + (i >> 3)]) & (uint8(0x80) >> (i & 7)) != 0;
    }

    /// @notice sha256(0x04 || root || u64be(size) || mapRoot), the v2 batch commitment.
    function batchCommitment(bytes32 root, uint64 size, bytes32 mapRoot) public view returns (bytes32 r) {
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore8(p, 0x04)
            mstore(add(p, 1), root)
            mstore(add(p, 33), shl(192, size))
            mstore(add(p, 41), mapRoot)
            if iszero(staticcall(gas(), 0x02, p, 73, 0x00, 0x20)) { revert(0, 0) }
            r := mload(0x00)
        }
    }

    /// @notice RFC 9162 §2.1.3.2; false for malformed proofs, never a revert.
    function verifyInclusion(bytes32 leafHash, uint256 index, uint256 size, bytes32[] calldata path, bytes32 root)
        public
        view
        returns (bool)
    {
        (bool ok, bytes32 r) = _rootFromInclusion(leafHash, index, size, path);
        return ok && r == root;
    }

    function _rootFromInclusion(bytes32 leafHash, uint256 index, uint256 size, bytes32[] calldata path)
        private
        view
        returns (bool, bytes32)
    {
        if (index >= size) return (false, 0);
        uint256 fn = index;
        uint256 sn = size - 1;
        bytes32 r = leafHash;
        for (uint256 i; i < path.length; ++i) {
            if (sn == 0) return (false, 0);
            bytes32 p = path[i];
            if ((fn & 1) == 1 || fn == sn) {
                r = _hash2(0x01, p, r);
                while ((fn & 1) == 0 && fn != 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
            } else {
                r = _hash2(0x01, r, p);
            }
            fn >>= 1;
            sn >>= 1;
        }
        return (sn == 0, r);
    }

    /// @dev RFC 9162 root of a non-empty level, in place (an odd last node is carried up, as in
    ///      ledger/merkle.py).
    function _rootOf(bytes32[] memory level) private view returns (bytes32) {
        uint256 n = level.length;
        while (n > 1) {
            uint256 m;
            for (uint256 i; i + 1 < n; i += 2) {
                level[m++] = _hash2(0x01, level[i], level[i + 1]);
            }
            if (n & 1 == 1) level[m++] = level[n - 1];
            n = m;
        }
        return level[0];
    }

    /// @dev sha256(prefix || a || b) through the precompile, in scratch memory (no allocation).
    function _hash2(uint8 prefix, bytes32 a, bytes32 b) private view returns (bytes32 r) {
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore8(p, prefix)
            mstore(add(p, 1), a)
            mstore(add(p, 33), b)
            if iszero(staticcall(gas(), 0x02, p, 65, 0x00, 0x20)) { revert(0, 0) }
            r := mload(0x00)
        }
    }

    /// @dev sha256(0x05 || hospitalKey || u64be(seq) || commitment): a batch's leaf in its hub's tree.
    function _hubLeaf(bytes32 hospitalKey, uint64 seq, bytes32 commitment) private view returns (bytes32 r) {
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore8(p, 0x05)
            mstore(add(p, 1), hospitalKey)
            mstore(add(p, 33), shl(192, seq))
            mstore(add(p, 41), commitment)
            if iszero(staticcall(gas(), 0x02, p, 73, 0x00, 0x20)) { revert(0, 0) }
            r := mload(0x00)
        }
    }

    /// @dev sha256(0x02 || key || u32be(version) || status || leafHash): an mrl-smap/1 leaf.
    function _mapLeaf(bytes32 key, bytes5 versionStatus, bytes32 leafHash) private view returns (bytes32 r) {
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore8(p, 0x02)
            mstore(add(p, 1), key)
            mstore(add(p, 33), versionStatus)
            mstore(add(p, 38), leafHash)
            if iszero(staticcall(gas(), 0x02, p, 70, 0x00, 0x20)) { revert(0, 0) }
            r := mload(0x00)
        }
    }
}
