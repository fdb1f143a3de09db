"""The registry's rules, each checked on anvil, Hardhat Network and eth-tester: who may anchor, in which order, and that
nothing anchored can change. Reverts must come back as ContractRevert carrying the Solidity error name,
since the worker branches on it."""

from __future__ import annotations

import pytest
from registry_chain import Chain, h32, hkey

from mrledger.anchoring import contract as api
from mrledger.anchoring.errors import AnchoringError, ContractRevert
from mrledger.ledger.errors import MrLedgerError


def _revert_name(excinfo: pytest.ExceptionInfo[ContractRevert]) -> str:
    return excinfo.value.name


def test_anchor_happy_path_and_getters(chain: Chain) -> None:
    address, key = chain.deploy_with_hospital()
    assert api.last_seq(chain.w3, address, key) == 0
    assert api.batch_of(chain.w3, address, key, 1) is None
    r1 = api.anchor(chain.w3, address, chain.submitter, key, 1, h32("root1"), 10)
    r2 = api.anchor(chain.w3, address, chain.submitter, key, 2, h32("root2"), 20)
    assert api.last_seq(chain.w3, address, key) == 2
    assert api.batch_of(chain.w3, address, key, 1) == api.BatchRecord(h32("root1"), 10, r1.block_number)
    assert api.batch_of(chain.w3, address, key, 2) == api.BatchRecord(h32("root2"), 20, r2.block_number)
    info = api.hospital_of(chain.w3, address, key)
    assert info.registered and info.name_hash == h32("name") and info.last_seq == 2
    events = api.anchored_events(chain.w3, address, hospital_key=key)
    assert [(e.seq, e.root, e.size, e.submitter) for e in events] == [
        (1, h32("root1"), 10, chain.submitter.address),
        (2, h32("root2"), 20, chain.submitter.address),
    ]
    assert events[0].tx_hash == r1.tx_hash


def test_unregistered_hospital_rejected(chain: Chain) -> None:
    address = chain.deploy()
    with pytest.raises(ContractRevert) as exc:
        api.anchor(chain.w3, address, chain.submitter, hkey("nobody"), 1, h32("r"), 1)
    assert exc.value.name == "HospitalNotRegistered"
    assert exc.value.error_args["hospitalKey"] == hkey("nobody")
    assert isinstance(exc.value, AnchoringError) and isinstance(exc.value, MrLedgerError)


def test_non_submitter_rejected(chain: Chain) -> None:
    address, key = chain.deploy_with_hospital()
    with pytest.raises(ContractRevert) as exc:
        api.anchor(chain.w3, address, chain.outsider, key, 1, h32("r"), 1)
    assert exc.value.name == "NotSubmitter"
    assert exc.value.error_args["caller"] == chain.outsider.address


def test_submitter_of_other_hospital_rejected(chain: Chain) -> None:
    address, key = chain.deploy_with_hospital("A")
    key_b = hkey("B")
    api.register_hospital(chain.w3, address, chain.admin, key_b, h32("B"), [chain.other_submitter.address])
    with pytest.raises(ContractRevert, match="NotSubmitter"):
        api.anchor(chain.w3, address, chain.other_submitter, key, 1, h32("r"), 1)


def test_key_rotation_add_then_revoke(chain: Chain) -> None:
    address, key = chain.deploy_with_hospital()
    api.anchor(chain.w3, address, chain.submitter, key, 1, h32("r1"), 1)
    api.add_submitter(chain.w3, address, chain.admin, key, chain.other_submitter.address)
    api.revoke_submitter(chain.w3, address, chain.admin, key, chain.submitter.address)
    assert not api.is_submitter(chain.w3, address, key, chain.submitter.address)
    assert api.is_submitter(chain.w3, address, key, chain.other_submitter.address)
    with pytest.raises(ContractRevert, match="NotSubmitter"):
        api.anchor(chain.w3, address, chain.submitter, key, 2, h32("r2"), 1)
    api.anchor(chain.w3, address, chain.other_submitter, key, 2, h32("r2"), 1)
    # the batch anchored by the revoked key stays valid
    assert api.batch_of(chain.w3, address, key, 1) is not None


def test_revoking_the_newest_key_leaves_older_keys_working(chain: Chain) -> None:
    """The contract caches the newest submitter; revoking it must fall back to the mapping, not lock out."""
    address, key = chain.deploy_with_hospital()
    api.add_submitter(chain.w3, address, chain.admin, key, chain.other_submitter.address)
    api.revoke_submitter(chain.w3, address, chain.admin, key, chain.other_submitter.address)
    with pytest.raises(ContractRevert, match="NotSubmitter"):
        api.anchor(chain.w3, address, chain.other_submitter, key, 1, h32("r"), 1)
    api.anchor(chain.w3, address, chain.submitter, key, 1, h32("r"), 1)


def test_submitter_admin_errors(chain: Chain) -> None:
    address, key = chain.deploy_with_hospital()
    with pytest.raises(ContractRevert, match="SubmitterAlreadyActive"):
        api.add_submitter(chain.w3, address, chain.admin, key, chain.submitter.address)
    with pytest.raises(ContractRevert, match="SubmitterNotActive"):
        api.revoke_submitter(chain.w3, address, chain.admin, key, chain.outsider.address)
    with pytest.raises(ContractRevert, match="HospitalNotRegistered"):
        api.add_submitter(chain.w3, address, chain.admin, hkey("nobody"), chain.outsider.address)
    with pytest.raises(ContractRevert, match="HospitalAlreadyRegistered"):
        api.register_hospital(chain.w3, address, chain.admin, key, h32("again"), [])
    with pytest.raises(ContractRevert, match="ZeroHospitalKey"):
        api.register_hospital(chain.w3, address, chain.admin, bytes(32), h32("x"), [])


def test_first_seq_must_be_one(chain: Chain) -> None:
    address, key = chain.deploy_with_hospital()
    with pytest.raises(ContractRevert) as exc:
        api.anchor(chain.w3, address, chain.submitter, key, 2, h32("r"), 1)
    assert exc.value.name == "SeqGap"
    assert (exc.value.error_args["expected"], exc.value.error_args["got"]) == (1, 2)
    with pytest.raises(ContractRevert, match="BatchAlreadyAnchored"):
        api.anchor(chain.w3, address, chain.submitter, key, 0, h32("r"), 1)


def test_seq_gap_rejected(chain: Chain) -> None:
    address, key = chain.deploy_with_hospital()
    api.anchor(chain.w3, address, chain.submitter, key, 1, h32("r1"), 1)
    with pytest.raises(ContractRevert) as exc:
        api.anchor(chain.w3, address, chain.submitter, key, 3, h32("r3"), 1)
    assert exc.value.name == "SeqGap" and exc.value.error_args["expected"] == 2


def test_replayed_seq_and_overwrite_rejected(chain: Chain) -> None:
    address, key = chain.deploy_with_hospital()
    api.anchor(chain.w3, address, chain.submitter, key, 1, h32("r1"), 5)
    api.anchor(chain.w3, address, chain.submitter, key, 2, h32("r2"), 5)
    with pytest.raises(ContractRevert) as exc:  # exact replay
        api.anchor(chain.w3, address, chain.submitter, key, 1, h32("r1"), 5)
    assert exc.value.name == "BatchAlreadyAnchored"
    with pytest.raises(ContractRevert, match="BatchAlreadyAnchored"):  # overwrite with another root
        api.anchor(chain.w3, address, chain.submitter, key, 2, h32("evil"), 5)
    assert api.batch_of(chain.w3, address, key, 2) is not None
    assert api.batch_of(chain.w3, address, key, 2).root == h32("r2")  # type: ignore[union-attr]


def test_zero_root_and_empty_batch_rejected(chain: Chain) -> None:
    address, key = chain.deploy_with_hospital()
    with pytest.raises(ContractRevert, match="ZeroRoot"):
        api.anchor(chain.w3, address, chain.submitter, key, 1, bytes(32), 1)
    with pytest.raises(ContractRevert, match="EmptyBatch"):
        api.anchor(chain.w3, address, chain.submitter, key, 1, h32("r"), 0)


def test_pause_blocks_anchoring_until_unpaused(chain: Chain) -> None:
    address, key = chain.deploy_with_hospital()
    api.pause(chain.w3, address, chain.admin)
    assert api.is_paused(chain.w3, address)
    with pytest.raises(ContractRevert, match="EnforcedPause"):
        api.anchor(chain.w3, address, chain.submitter, key, 1, h32("r"), 1)
    with pytest.raises(ContractRevert, match="EnforcedPause"):
        api.anchor_many(chain.w3, address, chain.submitter, [api.AnchorItem(key, 1, h32("r"), 1)])
    with pytest.raises(ContractRevert, match="EnforcedPause"):
        api.pause(chain.w3, address, chain.admin)
    api.unpause(chain.w3, address, chain.admin)
    api.anchor(chain.w3, address, chain.submitter, key, 1, h32("r"), 1)


def test_non_admin_cannot_administer(chain: Chain) -> None:
    address, key = chain.deploy_with_hospital()
    calls = [
        lambda: api.register_hospital(chain.w3, address, chain.outsider, hkey("X"), h32("X"), []),
        lambda: api.add_submitter(chain.w3, address, chain.submitter, key, chain.outsider.address),
        lambda: api.revoke_submitter(chain.w3, address, chain.submitter, key, chain.submitter.address),
        lambda: api.pause(chain.w3, address, chain.submitter),
        lambda: api.unpause(chain.w3, address, chain.outsider),
    ]
    for call in calls:
        with pytest.raises(ContractRevert) as exc:
            call()
        assert exc.value.name == "AccessControlUnauthorizedAccount"
        assert exc.value.error_args["neededRole"] == bytes(32)


def test_anchor_many_applies_in_order(chain: Chain) -> None:
    address, key_a = chain.deploy_with_hospital("A")
    key_b = hkey("B")
    api.register_hospital(chain.w3, address, chain.admin, key_b, h32("B"), [chain.submitter.address])
    items = [
        api.AnchorItem(key_a, 1, h32("a1"), 3),
        api.AnchorItem(key_b, 1, h32("b1"), 4),
        api.AnchorItem(key_a, 2, h32("a2"), 5),  # consecutive batches of one hospital in one call
    ]
    api.anchor_many(chain.w3, address, chain.submitter, items)
    assert api.last_seq(chain.w3, address, key_a) == 2
    assert api.last_seq(chain.w3, address, key_b) == 1
    assert api.batch_of(chain.w3, address, key_a, 2).size == 5  # type: ignore[union-attr]


def test_anchor_many_is_all_or_nothing(chain: Chain) -> None:
    address, key_a = chain.deploy_with_hospital("A")
    key_b = hkey("B")
    api.register_hospital(chain.w3, address, chain.admin, key_b, h32("B"), [chain.submitter.address])
    items = [
        api.AnchorItem(key_a, 1, h32("a1"), 3),
        api.AnchorItem(key_b, 2, h32("b2"), 4),  # gap: b has no batch 1
    ]
    with pytest.raises(ContractRevert) as exc:
        api.anchor_many(chain.w3, address, chain.submitter, items)
    assert exc.value.name == "SeqGap" and exc.value.error_args["hospitalKey"] == key_b
    assert api.last_seq(chain.w3, address, key_a) == 0
    assert api.batch_of(chain.w3, address, key_a, 1) is None
    with pytest.raises(ContractRevert, match="EmptyAnchorList"):
        api.anchor_many(chain.w3, address, chain.submitter, [])


def test_anchor_many_rejects_unauthorised_item(chain: Chain) -> None:
    address, key_a = chain.deploy_with_hospital("A")
    key_b = hkey("B")
    api.register_hospital(chain.w3, address, chain.admin, key_b, h32("B"), [chain.other_submitter.address])
    items = [api.AnchorItem(key_a, 1, h32("a1"), 3), api.AnchorItem(key_b, 1, h32("b1"), 4)]
    with pytest.raises(ContractRevert, match="NotSubmitter"):
        api.anchor_many(chain.w3, address, chain.submitter, items)
    assert api.last_seq(chain.w3, address, key_a) == 0


def test_bad_argument_lengths_fail_before_any_rpc(chain: Chain) -> None:
    address = chain.deploy()
    with pytest.raises(ValueError, match="32 bytes"):
        api.anchor(chain.w3, address, chain.submitter, b"short", 1, h32("r"), 1)
