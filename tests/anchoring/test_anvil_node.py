"""AnvilNode: finds the npm-installed binary, binds loopback only, hands out the dev keys, logs to its own
file, stops cleanly — and, with a state file, brings the same chain back after a restart."""

from __future__ import annotations

import gc
import hashlib
import os
import tempfile
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from mrledger.anchoring import contract as api
from mrledger.anchoring.node import AnvilError, AnvilNode, find_anvil
from mrledger.ledger.errors import MrLedgerError

pytestmark = pytest.mark.anvil


def _key(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def test_start_query_stop(tmp_path: Path) -> None:
    log = tmp_path / "anvil.log"
    node = AnvilNode(log_path=log, chain_id=4242, accounts=3)
    with node:
        assert node.is_running and node.rpc_url.startswith("http://127.0.0.1:")
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        assert w3.eth.chain_id == 4242
        assert len(node.private_keys) == 3
        derived = [Account.from_key(k).address.lower() for k in node.private_keys]
        assert derived == [a.lower() for a in w3.eth.accounts] == [a.lower() for a in node.addresses]
        pid = node.pid
        assert pid is not None
    assert not node.is_running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert log.read_text().strip(), "anvil's output goes to its own log file"
    with pytest.raises(AnvilError, match="not running"):
        _ = node.rpc_url


def test_two_nodes_get_different_ports() -> None:
    with AnvilNode() as a, AnvilNode() as b:
        assert a.port != b.port
        assert a.rpc("eth_chainId") == b.rpc("eth_chainId")


def test_state_survives_restart(tmp_path: Path) -> None:
    state = tmp_path / "chain" / "state.json"
    node = AnvilNode(state_path=state)
    with node:
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        admin = Account.from_key(node.private_keys[0])
        address = api.deploy_registry(w3, admin)
        key = _key("persistent-hospital")
        api.register_hospital(w3, address, admin, key, _key("name"), [admin.address])
        tx = api.anchor(w3, address, admin, key, 1, _key("root-1"), 42)
    assert state.is_file() and state.stat().st_size > 0, "SIGTERM must make anvil dump its state"

    with AnvilNode(state_path=state) as again:
        w3 = Web3(Web3.HTTPProvider(again.rpc_url))
        assert api.last_seq(w3, address, key) == 1
        assert api.batch_of(w3, address, key, 1) == api.BatchRecord(_key("root-1"), 42, tx.block_number)
        assert w3.eth.block_number >= tx.block_number
        # the chain goes on from there: the next batch anchors, nonces continue
        admin = Account.from_key(again.private_keys[0])
        api.anchor(w3, address, admin, key, 2, _key("root-2"), 7)

    node.start()  # the same object restarts on the same state file
    try:
        assert api.last_seq(Web3(Web3.HTTPProvider(node.rpc_url)), address, key) == 2
    finally:
        node.stop()


def test_restart_method_keeps_chain(tmp_path: Path) -> None:
    with AnvilNode(state_path=tmp_path / "s.json") as node:
        node.rpc("evm_mine")
        node.rpc("evm_mine")
        node.restart()
        assert int(node.rpc("eth_blockNumber"), 16) == 2


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_no_temporary_file_outlives_the_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every serve, test and benchmark used to leave a directory in /tmp holding anvil's config. The config is
    read once and removed; the directory (and a default log in it) goes when the node stops, after a restart
    too, and when a node that never ran is collected."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    node = AnvilNode(accounts=2)  # its log in its own directory
    with node:
        assert len(node.private_keys) == 2
        assert [f.name for f in _files(tmp)] == ["anvil.log"]
        node.restart()
        assert len(node.private_keys) == 2 and node.rpc("eth_chainId")
        assert [f.name for f in _files(tmp)] == ["anvil.log"]
    assert list(tmp.iterdir()) == []
    idle = AnvilNode()
    assert len(list(tmp.iterdir())) == 1
    del idle
    gc.collect()
    assert list(tmp.iterdir()) == []


def test_missing_binary_tells_to_run_npm_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANVIL_BIN", raising=False)
    with pytest.raises(AnvilError, match="npm ci") as exc:
        find_anvil(tmp_path)
    assert isinstance(exc.value, MrLedgerError)


def test_failed_start_reports_log(tmp_path: Path) -> None:
    node = AnvilNode(log_path=tmp_path / "bad.log", extra_args=("--no-such-flag",))
    with pytest.raises(AnvilError, match=r"bad\.log"):
        node.start()
    assert not node.is_running


def test_block_time_mode(tmp_path: Path) -> None:
    """With --block-time the client must wait for inclusion rather than assume instant mining."""
    with AnvilNode(block_time=1) as node:
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        admin = Account.from_key(node.private_keys[0])
        address = api.deploy_registry(w3, admin)
        assert api.is_paused(w3, address) is False
