"""Chains for the registry tests: a real anvil (session-scoped, marked ``anvil``) and eth-tester (py-evm in
process, no node needed) behind one ``chain`` fixture, so every contract rule is checked on both.

Why both: anvil is what CI and the worker use (real JSON-RPC, real revert encoding), eth-tester keeps a
quick inner loop and proves the contract does not depend on anvil-specific behaviour.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from eth_account import Account
from registry_chain import Chain
from web3 import Web3

from mrledger.anchoring.node import AnvilNode


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "anvil: needs a real anvil node (started by the test suite)")


@pytest.fixture(scope="session")
def anvil_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilNode]:
    logdir = tmp_path_factory.mktemp("anvil")
    with AnvilNode(log_path=logdir / "anvil.log", chain_id=31337) as node:
        yield node


@pytest.fixture(scope="session")
def anvil_chain(anvil_node: AnvilNode) -> Chain:
    w3 = Web3(Web3.HTTPProvider(anvil_node.rpc_url))
    keys = anvil_node.private_keys
    return Chain("anvil", w3, *(Account.from_key(k) for k in keys[:4]), rpc_url=anvil_node.rpc_url)


@pytest.fixture(scope="session")
def tester_chain() -> Chain:
    from eth_tester import EthereumTester, PyEVMBackend
    from web3 import EthereumTesterProvider

    tester = EthereumTester(PyEVMBackend())
    w3 = Web3(EthereumTesterProvider(tester))
    accounts = [Account.from_key(hashlib.sha256(f"mrledger-test-{i}".encode()).digest()) for i in range(4)]
    funder = tester.get_accounts()[0]
    for acct in accounts:
        tester.send_transaction({"from": funder, "to": acct.address, "value": 10**21, "gas": 21_000})
    return Chain("tester", w3, *accounts)


@pytest.fixture(params=[pytest.param("anvil", marks=pytest.mark.anvil), "tester"])
def chain(request: pytest.FixtureRequest) -> Chain:
    fixture_name = "anvil_chain" if request.param == "anvil" else "tester_chain"
    result: Chain = request.getfixturevalue(fixture_name)
    return result
