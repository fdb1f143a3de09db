"""Secret files on disk — keys, and the SQLite database: readable by their owner only, or refused.

Why refuse rather than warn: a warning in a log nobody reads left a master key, a chain key or a hospital's
signing key readable by every account on the host (issue 14, finding 15). A key file whose mode grants anything
to group or others (``mode & 0o077``) is not read at all; the error names the file and the fix. The mode is
checked on the open file descriptor (``fstat``), so a file swapped between the check and the read cannot slip
through. Files the node creates itself are 0600 from the first byte (``O_EXCL``, no chmod window).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("mrledger.keyfiles")

#: Permission bits a secret file must not have: anything for group or others.
LOOSE = 0o077


class KeyFileError(ValueError):
    """A secret file that must not be used as it is; the message names the file and what to do."""


def loose_mode(mode: int) -> bool:
    return bool(stat.S_IMODE(mode) & LOOSE)


def read_private(path: Path, what: str) -> bytes:
    """The bytes of a secret file, refusing one that group or others may read (KeyFileError; OSError when it
    cannot be opened, as before). Never echoes the content."""
    fd = os.open(path, os.O_RDONLY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{what} {path} is not a regular file")
        if loose_mode(info.st_mode):
            raise KeyFileError(f"{what} {path} is readable by group or others (mode {stat.S_IMODE(info.st_mode):o}): "
                               f"run `chmod 600 {path}` (and keep it owned by the account that runs mrledger)")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(fd)


def private_sqlite(path: Path) -> None:
    """Create the SQLite database file 0600 before SQLite does (SQLite would create it 0644 under the usual
    umask; its ``-wal`` and ``-shm`` files take the database file's mode); an existing database, WAL or SHM file
    open to group or others is tightened to 0600, with a warning (the records in it are encrypted, but the
    file still holds keyed hashes, times and the encrypted data keys' wrappers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    except FileExistsError:
        pass
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = file.stat().st_mode
        except FileNotFoundError:
            continue
        if loose_mode(mode) and stat.S_ISREG(mode):
            try:
                os.chmod(file, stat.S_IMODE(mode) & ~LOOSE)
            except OSError as exc:
                log.error("database file %s is readable by group or others (mode %o) and cannot be tightened: "
                          "%s; chmod 600 it", file, stat.S_IMODE(mode), exc.strerror or exc)
                continue
            log.warning("database file %s was readable by group or others (mode %o); now 0600", file,
                        stat.S_IMODE(mode))


__all__ = ["KeyFileError", "loose_mode", "private_sqlite", "read_private"]
