"""Hardhat Network (npm ``hardhat``) as a managed child process: mrledger's second EVM client.

Why a second client: the anchoring worker, the registry and the verifiers must work against any Ethereum JSON-RPC
node, not against anvil's quirks. The tests run against both (docs/anchoring.md, "EVM clients"); production
points ``MRL_RPC_URL`` at its own node and never uses this class.

Why Hardhat 2.23.0 run as ``hardhat --config <hardhat/hardhat.config.js> node``: it is on npm like anvil, runs
on the Node 20 this repository supports (Hardhat 3 needs Node >= 22.10), and needs no project, sources or
network. The config fixes everything a test relies on (chain id 31337, anvil's mnemonic and ten accounts,
automine); ``--port 0`` lets the node pick a free port, which it prints, so there is no probe-then-bind race.

What Hardhat Network lacks, and how this class stands in:

* **No persistence.** Its chain lives in memory: a restart is a new chain. Tests that restart a node on the
  same chain (``AnvilNode(state_path=...)``) stay anvil-only.
* **No reorg method** (anvil has ``anvil_reorg(depth, txs)``). ``reorg`` emulates it with what Hardhat has:
  ``evm_revert`` to a snapshot taken earlier at the fork point (``checkpoint``), then new blocks mined on top —
  the same height, other hashes, the given transactions in them. A snapshot cannot be taken after the fact, so
  a test calls ``checkpoint()`` before the blocks it will replace.

Its stdout goes to a log file of its own (the banner with the dev keys, errors). Stopping is SIGTERM, then
SIGKILL for a node that does not exit: there is nothing to save.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Self

from eth_utils.address import to_checksum_address

from mrledger.anchoring.node import LOOPBACK, REPO_ROOT, AnvilError, DevChainProcess, rpc_request
from mrledger.ledger.errors import MrLedgerError

CONFIG = Path(__file__).resolve().with_name("hardhat") / "hardhat.config.js"
#: The chain id and number of funded accounts CONFIG sets (tests check that the node agrees).
CHAIN_ID = 31337
ACCOUNTS = 10
_READY = re.compile(rb"Started HTTP and WebSocket JSON-RPC server at http://[0-9.]+:(\d+)/")
_ACCOUNT = re.compile(rb"Account #\d+: (0x[0-9a-fA-F]{40}).*\nPrivate Key: (0x[0-9a-fA-F]{64})")
_BANNER_END = b"Any funds sent to them on Mainnet"  # printed before and after the list of accounts


class HardhatError(MrLedgerError, RuntimeError):
    """Hardhat Network is missing, would not start, died, or cannot do what was asked (a reorg without a
    checkpoint at its fork point)."""


def find_hardhat(repo_root: Path = REPO_ROOT) -> tuple[str, Path]:
    """``node`` and Hardhat's CLI script as ``npm ci`` installed it. The script, not ``npx hardhat``: npx adds
    a process between us and the signal we send. Hardhat refuses to run unless it resolves from the working
    directory, so the node runs in ``repo_root``."""
    node = shutil.which("node")
    if node is None:
        raise HardhatError("node (Node.js) is not on PATH; Hardhat Network needs it")
    script = repo_root / "node_modules" / "hardhat" / "internal" / "cli" / "bootstrap.js"
    if not script.is_file():
        raise HardhatError(f"Hardhat not found at {script}; run `npm ci` in {repo_root}")
    return node, script


class HardhatNode(DevChainProcess):
    """Start, query and stop one Hardhat Network process; the same surface as ``AnvilNode`` (``rpc_url``,
    ``private_keys``, ``addresses``, ``rpc``, start/stop/context manager) plus ``mine``, ``snapshot``/
    ``revert``, and ``checkpoint``/``reorg`` standing in for anvil's ``anvil_reorg``."""

    _CLIENT = "hardhat"

    def _error(self, message: str) -> MrLedgerError:
        return HardhatError(message)

    def __init__(
        self,
        *,
        port: int | None = None,
        log_path: Path | str | None = None,
        startup_timeout: float = 60.0,
        config: Path = CONFIG,
        repo_root: Path = REPO_ROOT,
    ) -> None:
        self._requested_port = port
        self.startup_timeout = startup_timeout  # a cold Node.js start on a busy 2-core machine takes seconds
        self.config = config
        self.repo_root = repo_root
        if log_path is None:  # a directory of its own only for a default log (removed with it by ``stop``)
            self._workdir = Path(tempfile.mkdtemp(prefix="mrledger-hardhat-"))
            self.log_path = self._workdir / "hardhat.log"
        else:
            self.log_path = Path(log_path)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._port: int | None = None
        self._private_keys: list[str] = []
        self._addresses: list[str] = []
        self._checkpoints: dict[int, str] = {}  # block number -> snapshot id taken at that head

    # -------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        if self.is_running:
            return self
        node, script = find_hardhat(self.repo_root)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        start_at = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        port = str(self._requested_port or 0)
        # No prompt, and (with no consent recorded) no telemetry nor banner fetch: the node runs offline.
        env = {**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true"}
        self._proc = subprocess.Popen(
            [node, str(script), "--config", str(self.config), "node", "--hostname", LOOPBACK, "--port", port],
            cwd=self.repo_root, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in our terminal must not reach it before we stop it
        )
        self._checkpoints.clear()
        try:
            self._wait_ready(start_at)
        except HardhatError:
            self.stop()
            raise
        return self

    def _wait_ready(self, start_at: int) -> None:
        """Ready when it printed its port and the whole list of dev accounts, and answers eth_chainId."""
        deadline = time.monotonic() + self.startup_timeout
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise HardhatError(f"hardhat exited with code {self._proc.returncode} during start-up; "
                                   f"see {self.log_path}")
            with open(self.log_path, "rb") as f:
                f.seek(start_at)
                out = f.read()
            ready = _READY.search(out)
            if ready is not None and out.count(_BANNER_END) >= 2:
                self._port = int(ready.group(1))
                try:
                    rpc_request(self.rpc_url, "eth_chainId", timeout=1.0)
                except (OSError, urllib.error.URLError, AnvilError, ValueError):
                    pass
                else:
                    accounts = _ACCOUNT.findall(out)
                    self._addresses = [to_checksum_address(a.decode()) for a, _ in accounts]
                    self._private_keys = [k.decode() for _, k in accounts]
                    return
            if time.monotonic() > deadline:
                raise HardhatError(f"hardhat did not answer within {self.startup_timeout}s; see {self.log_path}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, SIGKILL if it does not exit in time. The chain is gone afterwards (it lived in memory), and
        the node's temporary directory with its default log."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        self._port = None
        self._checkpoints.clear()
        self._remove_workdir()

    def rpc(self, method: str, *params: Any) -> Any:
        """Raw JSON-RPC, for the node's own methods (evm_snapshot, hardhat_mine, evm_setAutomine, ...)."""
        try:
            return rpc_request(self.rpc_url, method, list(params))
        except AnvilError as exc:  # rpc_request is anvil's; the error is this node's
            raise HardhatError(str(exc)) from exc

    def head(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    # -------------------------------------------------------------- chain control

    def mine(self, blocks: int = 1) -> None:
        """``blocks`` empty blocks in one call (``hardhat_mine``; anvil's is ``anvil_mine``)."""
        self.rpc("hardhat_mine", hex(blocks))

    def snapshot(self) -> str:
        return str(self.rpc("evm_snapshot"))

    def revert(self, snapshot: str) -> None:
        """Back to ``snapshot``. Hardhat drops it and every later snapshot, so do the checkpoints taken since."""
        if self.rpc("evm_revert", snapshot) is not True:
            raise HardhatError(f"evm_revert({snapshot}) failed: no such snapshot")
        self._checkpoints = {n: s for n, s in self._checkpoints.items() if int(s, 16) < int(snapshot, 16)}

    def checkpoint(self) -> None:
        """Remember the chain as it is now, so that ``reorg`` can later fork from this block."""
        head = self.head()
        if head not in self._checkpoints:
            self._checkpoints[head] = self.snapshot()

    def reorg(self, depth: int, txs: Sequence[tuple[str, int]] = ()) -> None:
        """Replace the last ``depth`` blocks by as many new ones, as ``anvil_reorg(depth, txs)`` does: ``txs``
        are (raw signed transaction, block offset from the fork point) pairs to include in the new blocks.

        Emulated: revert to the checkpoint at ``head - depth`` (it must exist: see the module docstring), take
        it again (a test may reorg twice from the same point), then mine ``depth`` blocks whose timestamps
        follow the old head's, so no new block can hash like the one it replaces.
        """
        if depth < 1:
            raise HardhatError(f"reorg depth must be at least 1, got {depth}")
        if any(not 0 <= offset < depth for _, offset in txs):
            raise HardhatError(f"a transaction's block offset must be within the {depth} new blocks")
        head = self.rpc("eth_getBlockByNumber", "latest", False)
        fork = int(head["number"], 16) - depth
        if fork < 0:
            raise HardhatError(f"cannot reorg {depth} blocks of a chain {fork + depth} blocks high")
        snapshot = self._checkpoints.get(fork)
        if snapshot is None:
            raise HardhatError(f"no checkpoint at block {fork}: Hardhat Network cannot go back to a block it "
                               "was not snapshotted at; call checkpoint() before the blocks a reorg replaces")
        self.revert(snapshot)
        self.checkpoint()
        self.rpc("evm_setNextBlockTimestamp", hex(int(head["timestamp"], 16) + 1))
        self.rpc("evm_setAutomine", False)
        try:
            for offset in range(depth):
                for raw, _ in (t for t in txs if t[1] == offset):
                    self.rpc("eth_sendRawTransaction", raw)
                self.rpc("evm_mine")
        finally:
            self.rpc("evm_setAutomine", True)
