"""Fixtures for the anchoring-layer tests. Each test that needs a node starts its own AnvilNode (they
start in ~0.1 s), because these tests are about the node's lifecycle itself."""

from __future__ import annotations

import pytest

from tests.anchoring.chain import env  # noqa: F401 - the chain fixture of this directory


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "anvil: needs a real anvil node (started by the test suite)")
