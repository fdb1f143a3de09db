"""HardhatNode: starts the npm-installed Hardhat Network offline on a port of its own, with the chain id and
the ten dev accounts anvil has, stops cleanly — and stands in for ``anvil_reorg`` with snapshots (what the
chain tests need to run on both clients; docs/anchoring.md, "EVM clients")."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from mrledger.anchoring.hardhat_node import ACCOUNTS, CHAIN_ID, HardhatError, HardhatNode
from mrledger.anchoring.node import AnvilNode

pytestmark = pytest.mark.hardhat


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HardhatNode]:
    with HardhatNode(log_path=tmp_path_factory.mktemp("hardhat") / "hardhat.log") as node:
        yield node


def _send(node: HardhatNode, w3: Web3) -> str:
    """A plain transfer, signed here: its raw bytes, after it was mined (automine)."""
    sender = Account.from_key(node.private_keys[0])
    signed = sender.sign_transaction({
        "to": node.addresses[1], "value": 1, "gas": 21_000, "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 1,
        "nonce": w3.eth.get_transaction_count(sender.address), "chainId": CHAIN_ID})
    w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction), timeout=10)
    return "0x" + bytes(signed.raw_transaction).hex()


def test_the_chain_and_accounts_anvil_has(node: HardhatNode) -> None:
    w3 = Web3(Web3.HTTPProvider(node.rpc_url))
    assert node.rpc_url.startswith("http://127.0.0.1:") and node.port > 0
    assert w3.eth.chain_id == CHAIN_ID
    assert w3.client_version.startswith("HardhatNetwork/")
    assert len(node.private_keys) == ACCOUNTS
    derived = [Account.from_key(k).address for k in node.private_keys]
    assert derived == node.addresses == list(w3.eth.accounts)
    with AnvilNode() as anvil:  # the same mnemonic: a key file written for one client works on the other
        assert anvil.private_keys == node.private_keys
        assert int(anvil.rpc("eth_chainId"), 16) == CHAIN_ID
    assert "Started HTTP and WebSocket JSON-RPC server" in node.log_path.read_text()


def test_mine_snapshot_revert(node: HardhatNode) -> None:
    start = node.head()
    snapshot = node.snapshot()
    node.mine(5)
    assert node.head() == start + 5
    node.revert(snapshot)
    assert node.head() == start
    with pytest.raises(HardhatError, match="no such snapshot"):
        node.revert(snapshot)  # a snapshot is used up by reverting to it


def test_reorg_replaces_blocks_at_the_same_height(node: HardhatNode) -> None:
    w3 = Web3(Web3.HTTPProvider(node.rpc_url))
    node.checkpoint()
    nonce = w3.eth.get_transaction_count(node.addresses[0])
    raw = _send(node, w3)
    node.mine(2)
    old = w3.eth.get_block("latest")
    tx_block = w3.eth.get_block(old["number"] - 2)
    [tx_hash] = tx_block["transactions"]
    node.reorg(3)  # the transaction's block and the two above it, replaced by three empty blocks
    new = w3.eth.get_block("latest")
    assert new["number"] == old["number"] and new["hash"] != old["hash"]
    assert w3.eth.get_block(tx_block["number"])["transactions"] == []
    assert w3.eth.get_transaction_count(node.addresses[0]) == nonce  # gone with its block, as on anvil
    with pytest.raises(Exception):  # noqa: B017 - web3's TransactionNotFound
        w3.eth.get_transaction_receipt(tx_hash)
    node.reorg(3, [(raw, 1)])  # again from the same fork point, the transaction in the second new block
    again = w3.eth.get_block(tx_block["number"] + 1)
    assert again["transactions"] == [tx_hash] and w3.eth.block_number == old["number"]
    assert w3.eth.get_block("latest")["hash"] not in (old["hash"], new["hash"])


def test_reorg_needs_a_checkpoint_at_its_fork_point(node: HardhatNode) -> None:
    node.mine(2)
    with pytest.raises(HardhatError, match=r"no checkpoint at block \d+: .*call checkpoint\(\) before"):
        node.reorg(1)
    with pytest.raises(HardhatError, match="at least 1"):
        node.reorg(0)


def test_stop_and_a_missing_install(tmp_path: Path) -> None:
    with pytest.raises(HardhatError, match="run `npm ci`"):
        HardhatNode(repo_root=tmp_path).start()
    node = HardhatNode(log_path=tmp_path / "bad.log", config=tmp_path / "no-such-config.js")
    with pytest.raises(HardhatError, match=r"exited with code \d+ during start-up; see .*bad\.log"):
        node.start()
    assert not node.is_running
    with pytest.raises(HardhatError, match="not running"):
        _ = node.rpc_url


def test_a_temporary_directory_only_for_a_default_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node given its log makes no directory in /tmp (each used to leave an empty one); one with a default
    log makes one, and its stop removes it."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    HardhatNode(log_path=tmp_path / "hardhat.log").stop()
    assert list(tmp.iterdir()) == []
    node = HardhatNode()
    assert node.log_path.parent.parent == tmp
    node.stop()
    assert list(tmp.iterdir()) == []
