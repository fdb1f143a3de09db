"""Chains for the registry tests: a real anvil (session-scoped, marked ``anvil``), Hardhat Network (the session's
shared node, marked ``hardhat``) and eth-tester (py-evm in process, no node needed) behind one ``chain`` fixture,
so every contract rule is checked on all three; ``evm_chain`` is the two real nodes, for what eth-tester cannot
do (JSON-RPC batches, gas as a node reports it).

Why all three: anvil is what CI and the worker use (real JSON-RPC, real revert encoding), Hardhat Network is a
second client with its own encoding of reverts (docs/anchoring.md, "EVM clients"), and eth-tester keeps a quick
inner loop; together they prove the contract and its client do not depend on one node's behaviour.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from eth_account import Account
from registry_chain import Chain
from web3 import Web3

from mrledger.anchoring.hardhat_node import HardhatNode
from mrledger.anchoring.node import AnvilNode
from tests.conftest import EVM_CLIENTS


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
def hardhat_chain(hardhat_node: HardhatNode) -> Chain:
    """On the node the chain tests share: these tests only add fresh registries, so nothing to roll back."""
    w3 = Web3(Web3.HTTPProvider(hardhat_node.rpc_url))
    keys = hardhat_node.private_keys
    return Chain("hardhat", w3, *(Account.from_key(k) for k in keys[:4]), rpc_url=hardhat_node.rpc_url)


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


@pytest.fixture(params=[pytest.param("anvil", marks=pytest.mark.anvil), *EVM_CLIENTS[1:], "tester"])
def chain(request: pytest.FixtureRequest) -> Chain:
    result: Chain = request.getfixturevalue(f"{request.param}_chain")
    return result


@pytest.fixture(scope="module", params=[pytest.param("anvil", marks=pytest.mark.anvil), *EVM_CLIENTS[1:]])
def evm_chain(request: pytest.FixtureRequest) -> Chain:
    """A real node: anvil, then Hardhat Network."""
    result: Chain = request.getfixturevalue(f"{request.param}_chain")
    return result
