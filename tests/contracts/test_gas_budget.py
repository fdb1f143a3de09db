"""The gas budget of anchoring, measured on anvil and Hardhat Network (receipt gasUsed, 21,000 base included).

Why a test: 80,000 gas per `anchor` is the figure the cost model of the project rests on; a contract
change that breaks it must fail CI, not be discovered on mainnet.
"""

from __future__ import annotations

from registry_chain import Chain, h32, hkey

from mrledger.anchoring import contract as api

ANCHOR_BUDGET = 80_000
MAX_U64 = 2**64 - 1


def test_anchor_within_budget_first_and_steady_state(evm_chain: Chain) -> None:
    c = evm_chain
    address, key = c.deploy_with_hospital("gas-hospital")
    first = api.anchor(c.w3, address, c.submitter, key, 1, h32("r1"), 10_000)
    steady = [api.anchor(c.w3, address, c.submitter, key, s, h32(f"r{s}"), MAX_U64).gas_used for s in (2, 3, 4)]
    assert first.gas_used <= ANCHOR_BUDGET, first.gas_used
    assert max(steady) <= ANCHOR_BUDGET, steady


def test_anchor_by_second_key_within_budget(evm_chain: Chain) -> None:
    """A key that is not the newest one pays the cold submitter-mapping read: still within budget."""
    c = evm_chain
    address, key = c.deploy_with_hospital("gas-hospital-2")
    api.add_submitter(c.w3, address, c.admin, key, c.other_submitter.address)  # now the newest key
    used = api.anchor(c.w3, address, c.submitter, key, 1, h32("r1"), MAX_U64).gas_used
    assert used <= ANCHOR_BUDGET, used


def test_anchor_many_costs_less_per_item_than_anchor(evm_chain: Chain) -> None:
    c = evm_chain
    address = c.deploy()
    keys = [hkey(f"many-{i}") for i in range(10)]
    for k in keys:
        api.register_hospital(c.w3, address, c.admin, k, h32("n"), [c.submitter.address])
    items = [api.AnchorItem(k, 1, h32(f"{i}"), 1000) for i, k in enumerate(keys)]
    used = api.anchor_many(c.w3, address, c.submitter, items).gas_used
    assert used / len(items) < 60_000, used
