"""A local anvil (Foundry) chain as a managed child process.

Why anvil: it is a single static binary shipped on npm (``@foundry-rs/anvil``), starts in well under a
second, and can persist its whole chain to a file (``--state``), so a development or test chain survives
restarts of the process — which the anchoring worker's restart tests need. Why a class of our own rather
than a pytest plugin: the benchmark script and the worker's local mode use it outside pytest too.

The node listens on 127.0.0.1 only. Its output goes to a log file of its own so it never interleaves
with ours. Stopping sends SIGTERM first: anvil writes its state on SIGTERM and SIGINT (checked with anvil
1.7.1), but not on SIGKILL, which is only the fallback for a node that does not exit.

A chain with a state file has exactly one writer and is saved atomically:

* **One writer.** ``<state>.lock`` is ``flock``ed before anvil starts and the descriptor is inherited by
  anvil, so the lock lives exactly as long as the anvil process — and as long as its owner, which keeps its
  own copy until it has saved the chain. A second anvil on the same state (a restart while an orphan still
  runs) waits for it, then refuses to start, naming the holder's pid. The pid is written (``pid_file``, and
  into the lock file) as soon as the process exists, before it is trusted to be ready.
* **Tied to its owner** (``tie_to_parent``): anvil runs in a session of its own, so a Ctrl-C in the
  terminal does not reach it before its owner stopped it cleanly; ``PR_SET_PDEATHSIG`` (``anchoring/_tied.py``)
  sends it SIGTERM when the owner dies however it dies (kill -9 included), so it saves the chain and exits
  instead of running on as an orphan. Linux signals the death of the *thread* that started it: start tied
  nodes from a thread that lives as long as the node (``mrledger serve`` uses its main thread).
* **Saved atomically** (``anchoring/anvil_state.py``): anvil loads ``<state>`` and dumps to
  ``<state>.dump``; a complete dump replaces the state file, the previous one is kept as ``<state>.prev``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from eth_utils.address import to_checksum_address

from mrledger.anchoring.anvil_state import StateFileError, dump_path, loadable_state, promote_dump
from mrledger.ledger.errors import MrLedgerError

REPO_ROOT = Path(__file__).resolve().parents[3]  # anchoring -> the repository (node_modules)
_PLATFORM_PACKAGES = {
    ("linux", "x86_64"): "anvil-linux-amd64",
    ("linux", "aarch64"): "anvil-linux-arm64",
    ("darwin", "x86_64"): "anvil-darwin-amd64",
    ("darwin", "arm64"): "anvil-darwin-arm64",
}
LOOPBACK = "127.0.0.1"
TIED = Path(__file__).resolve().with_name("_tied.py")
log = logging.getLogger("mrledger.anvil")


class AnvilError(MrLedgerError, RuntimeError):
    """anvil is missing, would not start, or died."""


def find_anvil(repo_root: Path = REPO_ROOT) -> Path:
    """Path of the anvil binary that ``npm ci`` installed from the platform package.

    ``AnvilNode(binary=...)`` overrides (``mrledger serve`` passes ``ANVIL_BIN``, read by node/settings.py: e.g. a
    Foundry install). We do not go through ``node_modules/.bin/anvil``: that is a node shim that would add ~50 ms
    and a node process between us and the signal we send.
    """
    uname = os.uname()
    package = _PLATFORM_PACKAGES.get((uname.sysname.lower(), uname.machine))
    if package is None:
        raise AnvilError(f"no @foundry-rs/anvil binary package for {uname.sysname}/{uname.machine}")
    path = repo_root / "node_modules" / "@foundry-rs" / package / "bin" / "anvil"
    if not path.is_file():
        raise AnvilError(f"anvil binary not found at {path}; run `npm ci` in {repo_root}")
    return path


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago; start() retries if another process takes it meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def rpc_request(url: str, method: str, params: list[Any] | None = None, timeout: float = 5.0) -> Any:
    """One JSON-RPC call without web3, so readiness checks do not depend on web3's provider stack."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        reply = json.loads(resp.read())
    if "error" in reply:
        raise AnvilError(f"{method}: {reply['error']}")
    return reply["result"]


class DevChainProcess:
    """What a local EVM node run as a child process offers, whichever client it is (``AnvilNode``,
    ``HardhatNode``): a context manager over ``start``/``stop``, and the queries. Written once so the two
    clients cannot drift apart in what the tests and ``mrledger serve`` read from them."""

    _CLIENT = "the node"
    _proc: subprocess.Popen[bytes] | None
    _port: int | None
    _private_keys: list[str]
    _addresses: list[str]
    #: The node's own temporary directory (its default log; anvil's config while it starts), or None.
    _workdir: Path | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def _error(self, message: str) -> MrLedgerError:
        return AnvilError(message)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort: never leave an orphaned node behind
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
        self._remove_workdir()

    def _remove_workdir(self) -> None:
        """Remove the node's temporary directory, the default log with it (a caller who wants the log after
        ``stop`` names it: ``log_path``). Every serve, test and benchmark used to leave one behind in /tmp."""
        if self._workdir is not None:  # the class's None when __init__ did not get that far
            shutil.rmtree(self._workdir, ignore_errors=True)

    def exited(self) -> int | None:
        """The exit code if the process ended on its own (None while it runs or after ``stop``)."""
        return None if self._proc is None else self._proc.poll()

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def port(self) -> int:
        if self._port is None:
            raise self._error(f"{self._CLIENT} is not running")
        return self._port

    @property
    def rpc_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def private_keys(self) -> list[str]:
        """The dev accounts' keys (the well-known test mnemonic): for local chains only."""
        return list(self._private_keys)

    @property
    def addresses(self) -> list[str]:
        """Checksummed, as web3 requires."""
        return list(self._addresses)


class AnvilNode(DevChainProcess):
    """Start, query and stop one anvil process. Use as a context manager or call start()/stop().

    ``state_path``: the chain is loaded from and saved to this file (atomically, see the module docstring),
    so stopping and starting again with the same path resumes the same chain; ``state_interval``: also save
    every so many seconds (a node killed with SIGKILL loses less). ``block_time``: seconds between blocks
    (default: a block per transaction, which keeps tests fast and deterministic). ``tie_to_parent``: anvil
    gets SIGTERM when this process dies. ``pid_file``: where its pid is written the moment it exists.
    ``lock_wait``: seconds to wait for another anvil on the same state file to exit before refusing.
    """

    _CLIENT = "anvil"

    def __init__(
        self,
        *,
        state_path: Path | str | None = None,
        chain_id: int | None = None,
        block_time: float | None = None,
        accounts: int = 10,
        hardfork: str | None = None,
        port: int | None = None,
        log_path: Path | str | None = None,
        startup_timeout: float = 15.0,
        extra_args: tuple[str, ...] = (),
        binary: Path | None = None,
        state_interval: float | None = None,
        tie_to_parent: bool = False,
        pid_file: Path | str | None = None,
        lock_wait: float = 15.0,
    ) -> None:
        self.state_path = Path(state_path) if state_path is not None else None
        self.chain_id = chain_id
        self.block_time = block_time
        self.accounts = accounts
        self.hardfork = hardfork
        self._requested_port = port
        self.startup_timeout = startup_timeout
        self.extra_args = extra_args
        self._binary = binary
        self._workdir = Path(tempfile.mkdtemp(prefix="mrledger-anvil-"))
        self.log_path = Path(log_path) if log_path is not None else self._workdir / "anvil.log"
        self._config_path = self._workdir / "anvil-config.json"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._port: int | None = None
        self._private_keys: list[str] = []
        self._addresses: list[str] = []
        self.state_interval = state_interval
        self.tie_to_parent = tie_to_parent
        self.pid_file = Path(pid_file) if pid_file is not None else None
        self.lock_wait = lock_wait
        self._lock_fd: int | None = None
        self._load: Path | None = None
        self._last_port: int | None = None

    # -------------------------------------------------------------- lifecycle

    def _command(self, binary: Path, port: int) -> list[str]:
        cmd = [str(binary), "--host", LOOPBACK, "--port", str(port), "--accounts", str(self.accounts)]
        cmd += ["--config-out", str(self._config_path)]
        if self.state_path is not None:
            if self._load is not None:
                cmd += ["--load-state", str(self._load)]
            cmd += ["--dump-state", str(dump_path(self.state_path))]
            if self.state_interval is not None:
                cmd += ["--state-interval", str(max(1, round(self.state_interval)))]
        if self.chain_id is not None:
            cmd += ["--chain-id", str(self.chain_id)]
        if self.block_time is not None:
            cmd += ["--block-time", str(self.block_time)]
        if self.hardfork is not None:
            cmd += ["--hardfork", self.hardfork]
        return cmd + list(self.extra_args)

    def start(self) -> Self:
        if self.is_running:
            return self
        binary = self._binary or find_anvil()
        if self.state_path is not None:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            try:
                self._load = loadable_state(self.state_path)
            except StateFileError as exc:
                self._release_lock()
                raise AnvilError(str(exc)) from exc
        attempts = 1 if self._requested_port is not None else 3
        last_error: AnvilError | None = None
        for attempt in range(attempts):
            # A restart keeps its port, so clients holding the URL reach the node again.
            port = self._requested_port or (self._last_port if attempt == 0 else None) or free_port()
            try:
                self._spawn(binary, port)
                self._last_port = port
                return self
            except AnvilError as exc:  # most likely the port was taken between probe and bind
                last_error = exc
                self._terminate(release=False)
        self._release_lock()
        assert last_error is not None
        raise last_error

    def _take_lock(self) -> None:
        """The state file's writer lock (see the module docstring); waits ``lock_wait`` for a previous anvil
        (an orphan saving its chain after its owner died) to exit, then refuses, naming it."""
        if self._lock_fd is not None:
            return
        assert self.state_path is not None
        path = self.state_path.with_name(self.state_path.name + ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self.lock_wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise AnvilError(f"another anvil (pid {holder}) is running on the chain state {self.state_path}; "
                                     "two writers would overwrite each other's chain: stop it first") from None
                time.sleep(0.05)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def _spawn(self, binary: Path, port: int) -> None:
        assert self._workdir is not None
        self._workdir.mkdir(mode=0o700, exist_ok=True)  # again after a stop removed it (``restart``)
        self._config_path.unlink(missing_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        command = self._command(binary, port)
        if self.tie_to_parent:
            command = [sys.executable, "-I", "-S", str(TIED), str(os.getpid()), str(int(signal.SIGTERM)), "--",
                       *command]
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in our terminal must not reach anvil before we stop it
            pass_fds=() if self._lock_fd is None else (self._lock_fd,),  # anvil holds the writer lock too
        )
        pid = str(self._proc.pid)
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            os.pwrite(self._lock_fd, f"{pid}\n".encode(), 0)
        if self.pid_file is not None:  # before it is trusted: a kill during start-up must not hide it
            # Written whole or not at all (a rename): an empty file, from a kill between its creation and its
            # write, read as no pid — the next serve would not stop this anvil (tests/node/test_serve_faults.py).
            partial = self.pid_file.with_name(f".{self.pid_file.name}.{os.getpid()}")
            partial.write_text(pid + "\n")
            os.replace(partial, self.pid_file)
        self._port = port
        self._wait_ready()
        config = json.loads(self._config_path.read_text())
        self._config_path.unlink()  # read once: nothing in it is needed after start-up
        self._private_keys = list(config["private_keys"])
        self._addresses = [to_checksum_address(a) for a in config["available_accounts"]]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise AnvilError(f"anvil exited with code {self._proc.returncode} during start-up; see {self.log_path}")
            try:
                rpc_request(self.rpc_url, "eth_chainId", timeout=1.0)
                if self._config_path.is_file() and self._config_path.stat().st_size > 0:
                    return
            except (OSError, urllib.error.URLError, AnvilError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise AnvilError(f"anvil did not answer within {self.startup_timeout}s; see {self.log_path}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (anvil dumps its state then exits), SIGKILL only if it does not exit in time; then the dump
        replaces the state file if it is complete, and the writer lock is released. The node's temporary
        directory goes too (its default log with it)."""
        self._terminate(timeout)
        self._remove_workdir()

    def _terminate(self, timeout: float = 10.0, *, release: bool = True) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.error("anvil %d did not save and exit within %.0fs of SIGTERM; killing it (the blocks since "
                          "its last save are lost and re-anchored from the database)", proc.pid, timeout)
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        self._port = None
        if proc is not None and self.state_path is not None:
            promote_dump(self.state_path)
        if proc is not None and self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)
        if release:
            self._release_lock()

    def restart(self) -> Self:
        """Stop and start again; with ``state_path`` the chain resumes where it was."""
        self.stop()
        return self.start()

    def __del__(self) -> None:  # last resort: never leave an orphaned node behind
        super().__del__()
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            os.close(fd)

    def rpc(self, method: str, *params: Any) -> Any:
        """Raw JSON-RPC, for anvil-specific methods (evm_snapshot, anvil_reorg, evm_mine, ...)."""
        return rpc_request(self.rpc_url, method, list(params))
