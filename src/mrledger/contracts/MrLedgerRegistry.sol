// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

/// @title MrLedgerRegistry
/// @notice Public, append-only registry of the Merkle roots of hospitals' lab-result batches.
/// @dev Each hospital is identified by `hospitalKey = sha256(utf8(hospital_id))`. Batches are numbered
///      1, 2, 3, ... per hospital without gaps, so an auditor can tell a withheld batch from a missing
///      one. A stored root is never overwritten. Trees follow RFC 9162 (leaf = sha256(0x00 || data),
///      node = sha256(0x01 || left || right)); `verifyInclusion` re-implements RFC 9162 §2.1.3.2 so a
///      receipt can be checked with one `eth_call` against this contract alone.
///
///      Gas layout (budget: 80,000 gas per `anchor` transaction, all in): the per-hospital slot packs
///      `lastSeq` with the `registered` flag, so the very first anchor of a hospital rewrites a non-zero
///      slot (2,900 gas) instead of creating one (20,000 gas) and every anchor costs the same. The same
///      slot caches the most recently added submitter (`primarySubmitter`), which saves the cold read of
///      the submitter mapping (2,100 gas) for the usual one-key-per-hospital case; the mapping stays the
///      authority (invariant: primarySubmitter != 0 implies it is in the mapping). A batch uses two fresh
///      slots: the root, and (size, block).
contract MrLedgerRegistry is AccessControl, Pausable {
    /// @dev One storage slot: 64 + 8 + 160 bits.
    struct Hospital {
        uint64 lastSeq;
        bool registered;
        address primarySubmitter;
    }

    /// @dev Written once at registration, never read by `anchor`.
    struct HospitalInfo {
        bytes32 nameHash;
        uint64 registeredBlock;
    }

    /// @dev Two storage slots: root, then size and anchoring block packed.
    struct Batch {
        bytes32 root;
        uint64 size;
        uint64 anchoredBlock;
    }

    /// @notice One item of `anchorMany`.
    struct AnchorItem {
        bytes32 hospitalKey;
        uint64 seq;
        bytes32 root;
        uint64 size;
    }

    mapping(bytes32 hospitalKey => Hospital) private _hospitals;
    mapping(bytes32 hospitalKey => HospitalInfo) private _infos;
    mapping(bytes32 hospitalKey => mapping(address submitter => bool)) private _submitters;
    mapping(bytes32 hospitalKey => mapping(uint64 seq => Batch)) private _batches;

    event HospitalRegistered(bytes32 indexed hospitalKey, bytes32 nameHash);
    event SubmitterAdded(bytes32 indexed hospitalKey, address indexed submitter);
    event SubmitterRevoked(bytes32 indexed hospitalKey, address indexed submitter);
    event BatchAnchored(
        bytes32 indexed hospitalKey, uint64 indexed seq, bytes32 root, uint64 size, address submitter
    );

    error ZeroHospitalKey();
    error ZeroAddress();
    error HospitalAlreadyRegistered(bytes32 hospitalKey);
    error HospitalNotRegistered(bytes32 hospitalKey);
    error SubmitterAlreadyActive(bytes32 hospitalKey, address submitter);
    error SubmitterNotActive(bytes32 hospitalKey, address submitter);
    error NotSubmitter(bytes32 hospitalKey, address caller);
    error ZeroRoot();
    error EmptyBatch();
    error BatchAlreadyAnchored(bytes32 hospitalKey, uint64 seq);
    error SeqGap(bytes32 hospitalKey, uint64 expected, uint64 got);
    error EmptyAnchorList();

    constructor(address admin) {
        if (admin == address(0)) revert ZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    // ------------------------------------------------------------------ administration

    /// @notice Register a hospital and its initial submitter keys. A key can be registered only once so
    ///         that its batch numbering can never be restarted.
    function registerHospital(bytes32 hospitalKey, bytes32 nameHash, address[] calldata submitters)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        if (hospitalKey == bytes32(0)) revert ZeroHospitalKey();
        Hospital storage h = _hospitals[hospitalKey];
        if (h.registered) revert HospitalAlreadyRegistered(hospitalKey);
        h.registered = true;
        _infos[hospitalKey] = HospitalInfo({nameHash: nameHash, registeredBlock: uint64(block.number)});
        emit HospitalRegistered(hospitalKey, nameHash);
        for (uint256 i; i < submitters.length; ++i) {
            _addSubmitter(hospitalKey, submitters[i]);
        }
    }

    /// @notice Authorise another key to anchor for a hospital. Key rotation = add the new, revoke the old.
    function addSubmitter(bytes32 hospitalKey, address submitter) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (!_hospitals[hospitalKey].registered) revert HospitalNotRegistered(hospitalKey);
        _addSubmitter(hospitalKey, submitter);
    }

    /// @notice Withdraw a key's right to anchor. Batches it already anchored stay valid.
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

    // ------------------------------------------------------------------ anchoring

    /// @notice Anchor batch `seq` of a hospital. `seq` must be exactly `lastSeq(hospitalKey) + 1`.
    function anchor(bytes32 hospitalKey, uint64 seq, bytes32 root, uint64 size) external whenNotPaused {
        _anchor(hospitalKey, seq, root, size);
    }

    /// @notice Anchor several batches (of one or many hospitals) in one transaction, all or nothing.
    ///         Items are applied in order, so consecutive batches of one hospital may share a call.
    function anchorMany(AnchorItem[] calldata items) external whenNotPaused {
        uint256 n = items.length;
        if (n == 0) revert EmptyAnchorList();
        for (uint256 i; i < n; ++i) {
            AnchorItem calldata it = items[i];
            _anchor(it.hospitalKey, it.seq, it.root, it.size);
        }
    }

    function _anchor(bytes32 hospitalKey, uint64 seq, bytes32 root, uint64 size) private {
        if (root == bytes32(0)) revert ZeroRoot();
        if (size == 0) revert EmptyBatch();
        Hospital storage h = _hospitals[hospitalKey];
        uint64 last = h.lastSeq;
        if (!h.registered) revert HospitalNotRegistered(hospitalKey);
        if (h.primarySubmitter != msg.sender && !_submitters[hospitalKey][msg.sender]) {
            revert NotSubmitter(hospitalKey, msg.sender);
        }
        if (seq <= last) revert BatchAlreadyAnchored(hospitalKey, seq);
        unchecked {
            // last < seq <= type(uint64).max, so last + 1 cannot overflow.
            if (seq != last + 1) revert SeqGap(hospitalKey, last + 1, seq);
        }
        h.lastSeq = seq;
        Batch storage b = _batches[hospitalKey][seq];
        b.root = root;
        b.size = size;
        b.anchoredBlock = uint64(block.number);
        emit BatchAnchored(hospitalKey, seq, root, size, msg.sender);
    }

    function _addSubmitter(bytes32 hospitalKey, address submitter) private {
        if (submitter == address(0)) revert ZeroAddress();
        if (_submitters[hospitalKey][submitter]) revert SubmitterAlreadyActive(hospitalKey, submitter);
        _submitters[hospitalKey][submitter] = true;
        _hospitals[hospitalKey].primarySubmitter = submitter; // the newest key is the one in use after a rotation
        emit SubmitterAdded(hospitalKey, submitter);
    }

    // ------------------------------------------------------------------ reads

    /// @notice Root, leaf count and anchoring block of a batch; all zero if it was never anchored.
    function batchOf(bytes32 hospitalKey, uint64 seq)
        external
        view
        returns (bytes32 root, uint64 size, uint64 anchoredBlock)
    {
        Batch storage b = _batches[hospitalKey][seq];
        return (b.root, b.size, b.anchoredBlock);
    }

    /// @notice Highest anchored sequence number (0 before the first batch).
    function lastSeq(bytes32 hospitalKey) external view returns (uint64) {
        return _hospitals[hospitalKey].lastSeq;
    }

    function isSubmitter(bytes32 hospitalKey, address account) external view returns (bool) {
        return _submitters[hospitalKey][account];
    }

    function hospitalOf(bytes32 hospitalKey)
        external
        view
        returns (bool registered, bytes32 nameHash, uint64 registeredBlock, uint64 lastAnchoredSeq)
    {
        Hospital storage h = _hospitals[hospitalKey];
        HospitalInfo storage info = _infos[hospitalKey];
        return (h.registered, info.nameHash, info.registeredBlock, h.lastSeq);
    }

    // ------------------------------------------------------------------ verification

    /// @notice RFC 9162 §2.1.3.2: does `path` prove `leafHash` at `index` of a tree of `size` leaves with
    ///         `root`? Malformed proofs (index out of range, path too short or too long) yield false, never
    ///         a revert, so callers can treat every answer alike.
    function verifyInclusion(bytes32 leafHash, uint256 index, uint256 size, bytes32[] calldata path, bytes32 root)
        public
        pure
        returns (bool)
    {
        if (index >= size) return false;
        uint256 fn = index;
        uint256 sn = size - 1;
        bytes32 r = leafHash;
        for (uint256 i; i < path.length; ++i) {
            if (sn == 0) return false;
            bytes32 p = path[i];
            if ((fn & 1) == 1 || fn == sn) {
                r = sha256(abi.encodePacked(bytes1(0x01), p, r));
                while ((fn & 1) == 0 && fn != 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
            } else {
                r = sha256(abi.encodePacked(bytes1(0x01), r, p));
            }
            fn >>= 1;
            sn >>= 1;
        }
        return sn == 0 && r == root;
    }

    /// @notice Check a receipt against the root and size this registry stored for (hospital, seq).
    ///         False for a batch that was never anchored or a size that differs from the anchored one.
    function verifyReceipt(
        bytes32 hospitalKey,
        uint64 seq,
        bytes32 leafHash,
        uint256 index,
        uint256 size,
        bytes32[] calldata path
    ) external view returns (bool) {
        Batch storage b = _batches[hospitalKey][seq];
        bytes32 root = b.root;
        if (root == bytes32(0) || size != b.size) return false;
        return verifyInclusion(leafHash, index, size, path, root);
    }
}
