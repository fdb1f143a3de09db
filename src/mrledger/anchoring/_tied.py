"""``python -I -S anchoring/_tied.py PARENT SIGNAL -- COMMAND...``: run COMMAND so that it gets SIGNAL when
process PARENT dies, however PARENT dies (Linux ``PR_SET_PDEATHSIG``, which survives ``execve``).

Why a script rather than ``subprocess.Popen(preexec_fn=...)``: ``preexec_fn`` runs Python between fork and
exec, which is not safe in a process that already runs threads (``mrledger serve`` does). This costs one
short interpreter start before the exec, and the command keeps this process's pid. Why check the parent after
arming the signal: a parent that died before ``prctl`` was called would never send it.

Standalone on purpose (no mrledger imports: ``-I -S`` keeps the start fast and independent of the venv).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    parent, signum, sep, *command = argv[1:]
    if sep != "--" or not command:
        raise SystemExit("usage: _tied.py PARENT SIGNAL -- COMMAND...")
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the caller's pid file and lock must do
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    if os.getppid() != int(parent):
        raise SystemExit(1)  # the parent is gone already: do not start an orphan
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv)
