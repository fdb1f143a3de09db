"""The KPI audit as a job: ``POST /v1/audit/decisions/jobs`` starts it, ``GET …/jobs/{id}`` says how far it got.

Why a job: at city size (2.5 million decisions and encounters) the audit takes minutes, longer than any request
should live and longer than a proxy waits. So it runs in a background thread of the API process that accepted
it (service/kpi_audit.py ``DecisionAudit``: a range of batches at a time, each range read in its own short
transactions, memory bounded whatever the ledger's size), and writes its state — progress, then the summary and
the problems — to a small JSON file after every range.

Why files, not a table: every API process of a node (``MRL_API_PROCESSES``) must answer a poll about a job
another one runs, and the job need not outlive the node. They share the node's data directory (``mrledger
serve``: ``<data dir>/audit-jobs/``), so the state is one file per job, replaced atomically, and "one job at a
time per node" is an exclusive lock on ``job.lock`` that the running job holds: a second start while it is held
is refused (409, naming the running job). The kernel releases the lock when the process dies, so a job whose
file still says ``running`` while nobody holds the lock was lost to a restart: it is reported ``lost`` and the
caller starts another. Nothing else survives a restart, by design.

The lock is an open-file-description lock (Linux ``F_OFD_SETLK``), not ``flock``: its holder is the open file, as
with ``flock``, but ``F_OFD_GETLK`` asks whether someone holds it without taking it. With ``flock`` the only way to
ask was to take the lock and let it go, and a start that came at that moment — one poll of any job's state, from
any process of the node — was refused with a 409 naming a job that had ended.

**Spread over processes** (``Splitter``, given by the node: node/audit_pool.py). The check is CPU-bound Python
(decryption, hashing, rebuilding records, the rollup sums), so one job ran on one core however many the node had:
at the end of the 1.16 M replay (issue 20) it checked 2.35 million records for ~6 minutes in one API process
while the other cores idled. A job of at least ``split_records`` records hands its event streams to a splitter —
each stream is checked whole by one process, streams are independent — and merges the parts as they come back
(progress then moves a stream at a time). Smaller jobs stay in the thread: starting processes costs seconds.

Bounded: at most ``MAX_JOB_PROBLEMS`` problems are kept (all are counted, by kind); the last ``KEEP_JOBS`` job
files are kept.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from mrledger.service.decisions import new_id
from mrledger.service.kpi_audit import CHUNK_RECORDS, DecisionAudit, records_of, streams_of
from mrledger.service.ledger import Services

log = logging.getLogger("mrledger.audit")

#: Problems a job keeps (the first ones found); every problem is counted in ``problem_count`` and by kind.
MAX_JOB_PROBLEMS = 1_000
#: Job files kept (older ones are deleted when a job starts).
KEEP_JOBS = 20
#: The state file is rewritten at most this often while a job runs (and always when a stream or the job ends).
WRITE_EVERY_S = 0.5
#: Records from which a job with a splitter spreads its streams over processes (``MRL_AUDIT_SPLIT_RECORDS``).
SPLIT_RECORDS = 100_000
_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
#: ``struct flock`` of 64-bit Linux (l_type, l_whence, l_start, l_len, l_pid), padded to its 32 bytes.
_FLOCK = "hhqqi4x"


def _ofd(handle: IO[bytes], command: int, kind: int) -> int:
    """One ``fcntl`` lock command on the whole file; the lock type the kernel hands back (F_OFD_GETLK)."""
    out = fcntl.fcntl(handle.fileno(), command, struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 0, 0))
    kind_back: int = struct.unpack(_FLOCK, out)[0]
    return kind_back


def _try_lock(handle: IO[bytes]) -> bool:
    """Take the job lock if nobody holds it (never waits)."""
    try:
        _ofd(handle, fcntl.F_OFD_SETLK, fcntl.F_WRLCK)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


class Splitter(Protocol):
    """Checks event streams elsewhere (``DecisionAudit.part`` for each, in other processes): ``processes`` at
    most at once; the parts are yielded as they are done, in any order."""

    processes: int

    def parts(self, streams: Sequence[str], chunk: int, keep: int) -> Iterator[dict[str, Any]]: ...


class AuditJobRunning(Exception):
    """A job is running on this node already (``job_id``: which, None if its file cannot be read)."""

    def __init__(self, job_id: str | None) -> None:
        super().__init__(f"audit job {job_id} is running")
        self.job_id = job_id


def _copy(state: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(state))
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditJobs:
    """The audit jobs of one node, in ``directory`` (None: a private temporary one, for library use and tests:
    then only this process sees them). Thread-safe; every process of a node may hold one over the same directory.
    ``chunk``: records per range (``kpi_audit.CHUNK_RECORDS``). ``after_write``: called with the state after each
    write (tests watch a job's progress with it). ``split``: where a job of at least ``split_records`` records
    checks its streams (None: always in the job's thread)."""

    def __init__(self, directory: Path | None = None, *, chunk: int = CHUNK_RECORDS,
                 after_write: Callable[[dict[str, Any]], None] | None = None, split: Splitter | None = None,
                 split_records: int = SPLIT_RECORDS) -> None:
        self._given = directory
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._private: Path | None = None
        self._made = threading.Lock()
        self.chunk, self.after_write = chunk, after_write
        self.split, self.split_records = split, split_records
        self._threads: dict[str, threading.Thread] = {}

    @property
    def directory(self) -> Path:
        """The jobs' directory. A private one is made on first use and removed with this object (or at exit):
        every app built without a node's directory (the tests build hundreds) left an empty one in /tmp."""
        if self._given is not None:
            return self._given
        with self._made:
            if self._private is None:
                self._private = Path(tempfile.mkdtemp(prefix="mrl-audit-jobs-"))
                weakref.finalize(self, shutil.rmtree, self._private, True)
            return self._private

    @property
    def _lock_path(self) -> Path:
        return self.directory / "job.lock"

    # -- starting ---------------------------------------------------------------------------------------------

    def start(self, ledger: Services, hospital_id: str | None, on_end: Callable[[dict[str, Any]], None] =
              lambda _: None) -> dict[str, Any]:
        """Start a job (its first state); AuditJobRunning while one runs on this node. ``on_end`` gets the
        final state (the route access-logs the verdict with it)."""
        handle = open(self._lock_path, "a+b")  # noqa: SIM115 - held by the job's thread until it ends
        if not _try_lock(handle):
            handle.close()
            raise AuditJobRunning(self._current())
        try:
            job_id = new_id(datetime.now(UTC))
            state: dict[str, Any] = {
                "id": job_id, "state": "running", "hospital": hospital_id, "started_at": _now(), "updated_at": _now(),
                "finished_at": None, "progress": {"records_total": None, "records_checked": 0, "streams_total": None,
                                                  "streams_done": 0, "batches_checked": 0},
                "processes": 1, "ok": None, "checked_records": 0, "streams": [], "problem_count": 0,
                "problems_by_kind": {}, "problems": [], "problems_truncated": False, "error": None}
            self._write(state)
            (self.directory / "current").write_text(job_id)
            self._prune()
            thread = threading.Thread(target=self._run, args=(ledger, handle, state, on_end),
                                      name=f"audit-job-{job_id}", daemon=True)
            self._threads[job_id] = thread
            thread.start()
        except BaseException:
            handle.close()
            raise
        return _copy(state)

    def _run(self, ledger: Services, handle: IO[bytes], state: dict[str, Any],
             on_end: Callable[[dict[str, Any]], None]) -> None:
        progress, last = state["progress"], [0.0]

        def report(run: DecisionAudit, force: bool = False) -> None:
            progress["records_checked"], progress["batches_checked"] = run.records_checked, run.batches_checked
            done = len(run.streams)
            state["streams"], state["problems"] = run.streams, run.found.kept
            state["problem_count"], state["problems_by_kind"] = run.found.count, dict(run.found.by_kind)
            state["problems_truncated"] = run.found.count > len(run.found.kept)
            if force or done != progress["streams_done"] or time.monotonic() - last[0] >= WRITE_EVERY_S:
                progress["streams_done"] = done
                last[0] = time.monotonic()
                self._write(state)

        try:
            streams = streams_of(ledger, state["hospital"])
            progress["streams_total"], progress["records_total"] = len(streams), records_of(ledger, streams)
            self._write(state)
            run = DecisionAudit(ledger, chunk=self.chunk, keep=MAX_JOB_PROBLEMS, progress=report)
            split = self.split
            if split is not None and len(streams) > 1 and progress["records_total"] >= self.split_records:
                state["processes"] = min(split.processes, len(streams))
                self._write(state)
                for part in split.parts(streams, self.chunk, MAX_JOB_PROBLEMS):
                    run.absorb(part)
                order = {stream: i for i, stream in enumerate(streams)}  # as listed, however they came back
                run.streams.sort(key=lambda s: order[s["stream"]])
            else:
                run.run(streams)
            report(run)
            state.update(state="done", ok=run.found.count == 0, checked_records=run.records_checked)
        except Exception as exc:  # the job's end is its verdict: the caller reads it and starts another
            log.exception("audit job %s failed", state["id"])
            state.update(state="failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            state["finished_at"] = _now()
            try:
                self._write(state)
            finally:
                _ofd(handle, fcntl.F_OFD_SETLK, fcntl.F_UNLCK)  # after the final state: free means nothing runs
                handle.close()
                self._threads.pop(state["id"], None)
        try:
            on_end(state)
        except Exception:
            log.exception("audit job %s: after its end", state["id"])

    # -- reading ----------------------------------------------------------------------------------------------

    def get(self, job_id: str) -> dict[str, Any] | None:
        """A job's state (None: unknown here). A job whose file says ``running`` while no process holds the lock
        was lost (its process stopped): reported ``lost``."""
        if not _ID.match(job_id):
            return None
        try:
            state: dict[str, Any] = json.loads((self.directory / f"{job_id}.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        if state["state"] == "running" and not self._held():
            state = json.loads((self.directory / f"{job_id}.json").read_text())  # it may have ended meanwhile
            if state["state"] == "running":
                state["state"] = "lost"
                state["error"] = "the process running this job stopped (a restart): start another"
        return state

    def wait(self, job_id: str, timeout: float | None = None) -> None:
        """Until a job this process runs has ended (tests, scripts in process)."""
        thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)

    def _held(self) -> bool:
        """Whether a job holds the lock, asked without taking it (so a start at the same moment is not refused)."""
        with open(self._lock_path, "a+b") as handle:
            return _ofd(handle, fcntl.F_OFD_GETLK, fcntl.F_WRLCK) != fcntl.F_UNLCK

    def _current(self) -> str | None:
        try:
            text = (self.directory / "current").read_text().strip()
        except FileNotFoundError:
            return None
        return text if _ID.match(text) else None

    def _write(self, state: dict[str, Any]) -> None:
        state["updated_at"] = _now()
        path = self.directory / f"{state['id']}.json"
        tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(state, separators=(",", ":")))
        os.replace(tmp, path)  # a reader sees the old state or the new one, never half of one
        if self.after_write is not None:
            self.after_write(_copy(state))

    def _prune(self) -> None:
        files = sorted(self.directory.glob("*.json"))  # ULIDs sort by time
        for old in files[:-KEEP_JOBS]:
            old.unlink(missing_ok=True)


__all__ = ["KEEP_JOBS", "MAX_JOB_PROBLEMS", "SPLIT_RECORDS", "AuditJobRunning", "AuditJobs", "Splitter"]
