"""Where salts come from by default: the OS CSPRNG, drawn in blocks.

Why a pool: a salt is 16 bytes per record, and one ``os.urandom`` call per record (``secrets.token_bytes``)
was 5 % of the server's time during bulk ingest — a system call, and a release and re-acquisition of the
interpreter lock, per record. Drawing 64 KiB at a time and handing out slices is the same randomness
(every byte comes from ``os.urandom`` and is handed out once). The pool is refilled after a fork, so a
child process never hands out its parent's bytes.
"""

from __future__ import annotations

import os
import threading

BLOCK = 64 * 1024


class SaltPool:
    """A thread-safe ``SaltSource``: ``pool(n)`` returns ``n`` fresh random bytes."""

    def __init__(self, block: int = BLOCK) -> None:
        self._block = block
        self._lock = threading.Lock()
        self._buf = b""
        self._pos = 0
        self._pid = os.getpid()

    def __call__(self, n: int) -> bytes:
        if n > self._block:
            return os.urandom(n)
        with self._lock:
            if self._pid != os.getpid():  # forked: never reuse the parent's bytes
                self._buf, self._pos, self._pid = b"", 0, os.getpid()
            if self._pos + n > len(self._buf):
                self._buf, self._pos = os.urandom(self._block), 0
            out = self._buf[self._pos:self._pos + n]
            self._pos += n
            return out
