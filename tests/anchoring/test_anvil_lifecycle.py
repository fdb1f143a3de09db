"""The managed chain has one writer, dies with its owner, and is saved atomically (anchoring/node.py,
src/mrledger/anchoring/anvil_state.py), against real anvil processes.

Each case was a way to lose anchors the database records: a second anvil started on the state file while an
orphan still ran (the orphan's later stop overwrote the chain with an older one: lastSeq went from 6 back to
3); an owner killed with kill -9 left its anvil running as an orphan; a stop with the disk full left a
0-byte state file the node could not start from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mrledger.anchoring.anvil_state import dump_path, previous_path
from mrledger.anchoring.node import AnvilError, AnvilNode

pytestmark = pytest.mark.anvil
REPO = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _head(node: AnvilNode) -> int:
    return int(node.rpc("eth_blockNumber"), 16)


def test_a_second_anvil_on_the_same_state_file_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "anvil-state.json"
    first = AnvilNode(state_path=state, lock_wait=0.5).start()
    try:
        for _ in range(3):
            first.rpc("evm_mine")
        second = AnvilNode(state_path=state, lock_wait=0.5)
        with pytest.raises(AnvilError, match=rf"another anvil \(pid {first.pid}\) is running on the chain state"):
            second.start()
        assert not second.is_running
    finally:
        first.stop()
    with AnvilNode(state_path=state, lock_wait=0.5) as again:  # once the writer is gone, its chain comes back
        assert _head(again) == 3


OWNER = """
import sys, time
from pathlib import Path
from mrledger.anchoring.node import AnvilNode
node = AnvilNode(state_path=Path(sys.argv[1]), pid_file=Path(sys.argv[2]), tie_to_parent=True).start()
for _ in range(5):
    node.rpc("evm_mine")
print(node.pid, flush=True)
time.sleep(600)
"""


def test_an_owner_killed_with_sigkill_takes_its_anvil_along_and_the_chain_is_kept(tmp_path: Path) -> None:
    state, pid_file = tmp_path / "anvil-state.json", tmp_path / "anvil.pid"
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(state), str(pid_file)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert owner.stdout is not None
        anvil = int(owner.stdout.readline())
        assert int(pid_file.read_text()) == anvil and _alive(anvil)
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 15
        while _alive(anvil):
            assert time.monotonic() < deadline, "anvil outlived its owner's kill -9"
            time.sleep(0.05)
    finally:
        if owner.poll() is None:
            owner.kill()
    # It was told with SIGTERM, so it saved its chain (to the dump, which the next start promotes).
    assert dump_path(state).is_file()
    with AnvilNode(state_path=state) as node:
        assert _head(node) == 5
    assert not dump_path(state).exists() and json.loads(state.read_text())["best_block_number"] == 5


def test_a_damaged_save_never_replaces_the_chain_state(tmp_path: Path) -> None:
    state = tmp_path / "anvil-state.json"
    with AnvilNode(state_path=state) as node:
        for _ in range(4):
            node.rpc("evm_mine")
    assert json.loads(state.read_text())["best_block_number"] == 4
    # What anvil leaves when the disk fills up while it saves (a real full disk: tests/node/test_serve_faults.py).
    dump_path(state).write_bytes(b"")
    with AnvilNode(state_path=state) as node:
        assert _head(node) == 4  # the last good state, not an empty chain
        node.rpc("evm_mine")
    assert json.loads(state.read_text())["best_block_number"] == 5
    assert json.loads(previous_path(state).read_text())["best_block_number"] == 4
    assert dump_path(state).with_name(dump_path(state).name + ".bad").read_bytes() == b""


def test_a_damaged_state_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    state = tmp_path / "anvil-state.json"
    with AnvilNode(state_path=state) as node:
        node.rpc("evm_mine")
    with AnvilNode(state_path=state) as node:
        node.rpc("evm_mine")
    state.write_bytes(b'{"block": {"number": ')  # truncated
    with pytest.raises(AnvilError) as info:
        AnvilNode(state_path=state).start()
    message = str(info.value)
    assert "cannot be loaded" in message and str(previous_path(state).name) in message
    assert "re-anchors every batch" in message
    os.replace(previous_path(state), state)  # what the message says to do
    with AnvilNode(state_path=state) as node:
        assert _head(node) == 1


def test_sigterm_of_a_tied_anvil_is_still_a_clean_save(tmp_path: Path) -> None:
    """Tied or not, a stop is SIGTERM: the chain is saved and promoted."""
    state = tmp_path / "anvil-state.json"
    node = AnvilNode(state_path=state, tie_to_parent=True).start()
    node.rpc("evm_mine")
    pid = node.pid
    assert pid is not None
    node.stop()
    assert not _alive(pid) and json.loads(state.read_text())["best_block_number"] == 1
