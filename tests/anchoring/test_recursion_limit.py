"""An import must not change the interpreter's recursion limit under the node (issue 14 #1).

py_ecc (under web3 and eth-account) raises it to 100,000 on first import; at that limit a JSON document
~75,000 levels deep segfaulted the C decoder instead of raising RecursionError. ``anchoring/__init__.py``
imports it first and restores the limit. Each entry point is checked in a fresh interpreter, since an
import's side effect happens once per process (this test process imported web3 long ago).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("entry", ["mrledger.http.app", "mrledger.cli.main", "mrledger.node.serve",
                                   "mrledger.anchoring.contract", "mrledger.anchoring.worker",
                                   "mrledger.anchoring.__main__"])
def test_importing_an_entry_point_and_then_web3_keeps_the_recursion_limit(entry: str) -> None:
    code = ("import sys\nbefore = sys.getrecursionlimit()\n"
            f"import {entry}\nimport web3, eth_account, py_ecc\n"
            "print(before, sys.getrecursionlimit())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    before, after = map(int, done.stdout.split())
    assert after == before, f"importing {entry} then web3 left the recursion limit at {after}, not {before}"
