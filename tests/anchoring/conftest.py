"""Fixtures for the anchoring-layer tests. Each test that needs a node runs on anvil and on Hardhat Network
(the ``evm`` fixture): on anvil it starts its own AnvilNode (they start in ~0.1 s), because some of these tests
are about the node's lifecycle itself; on Hardhat it shares one node and rolls its chain back afterwards."""

from __future__ import annotations

import pytest

from tests.anchoring.chain import env, env2, env_any, evm  # noqa: F401 - the chain fixtures of this directory


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "anvil: needs a real anvil node (started by the test suite)")
