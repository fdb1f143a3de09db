"""The core must stay pure: importing every ledger module pulls in no database, chain, web or I/O library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

LEDGER = Path(__file__).resolve().parents[2] / "src" / "mrledger" / "ledger"
FORBIDDEN = ("sqlalchemy", "alembic", "web3", "eth_account", "fastapi", "httpx", "requests", "psycopg",
             "socket", "time", "random", "os", "subprocess", "urllib")
#: The layers above the core (``mrledger.<layer>``): the core imports none of them.
UPPER = ("store", "anchoring", "contracts", "service", "node", "http", "cli")


def test_ledger_modules_import_nothing_forbidden() -> None:
    modules = sorted(".".join(p.relative_to(LEDGER).with_suffix("").parts) for p in LEDGER.rglob("*.py")
                     if p.stem != "__init__")
    assert modules, "no ledger modules found"
    heavy = ["sqlalchemy", "alembic", "web3", "eth_account", "fastapi", "httpx", "psycopg",
             *(f"mrledger.{layer}" for layer in UPPER)]
    code = (
        "import sys\n"
        + "".join(f"import mrledger.ledger.{m}\n" for m in modules)
        + f"print(','.join(m for m in {heavy!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_ledger_sources_do_not_import_io_or_clock() -> None:
    paths = list(LEDGER.rglob("*.py"))
    assert any(p.parent.name == "formats" for p in paths), "the scan must reach subpackages"
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
                parts = name.split(".")
                assert not (parts[0] == "mrledger" and len(parts) > 1 and parts[1] in UPPER), \
                    f"{path.name} imports {name}"
