"""The monitor checks the node from outside: it must not import the node's database layer, service or node
wiring (so it cannot open the node's database, not even by accident). Checked in a fresh interpreter, since
this test process has imported everything."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("mrledger.store", "mrledger.service", "mrledger.node", "mrledger.http", "sqlalchemy")


def test_the_monitor_imports_no_store_service_or_node() -> None:
    code = ("import sys, mrledger.monitor, mrledger.monitor.run, mrledger.cli.monitor; "
            f"print([m for m in sys.modules if m.startswith({FORBIDDEN!r})])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
