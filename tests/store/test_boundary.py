"""The store's boundary, enforced by parsing the code rather than by a comment (like tests/ledger/test_purity.py).

Why: ``Store._unit`` and ``Store._read`` were once called from 41 places outside the class, which made a
private helper the store's real API. Transactions are now public (store/unit.py); this keeps the rest private.
And the store once read ``MRL_MASTER_KEY`` itself, one of five places configuration was read: the master key
is now passed in by the node's settings (node/settings.py, the one reader of the environment).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from mrledger.store import Store

ROOT = Path(__file__).resolve().parents[2]
STORE = ROOT / "src" / "mrledger" / "store"
#: Everything that may use a Store: the package outside store/, the tests and the scripts.
OUTSIDE = [p for d in ("src", "tests", "scripts") for p in sorted((ROOT / d).rglob("*.py"))
           if STORE not in p.parents]


def _private_names() -> set[str]:
    """Every underscore name a Store has: its classes' methods and attributes, and those set in __init__."""
    names = {n for cls in Store.__mro__ if cls.__module__.startswith("mrledger.store") for n in vars(cls)}
    engine = create_engine("sqlite://")  # never connected: construction opens nothing
    try:
        names |= set(vars(Store(engine)))
    finally:
        engine.dispose()
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def _touches(path: Path, private: set[str]) -> list[str]:
    """``x._name`` for a Store private ``_name``, where ``x`` is not ``self``/``cls`` (a class's own
    underscore attributes that happen to share a name with a Store's are its business)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in private:
            if isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}:
                continue
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    return found


def test_the_private_names_are_found() -> None:
    private = _private_names()
    assert {"_keys", "_writers", "_decrypt"} <= private  # the check below is not vacuous
    assert not {"unit_of_work", "read", "single_read"} & private


def test_no_module_outside_the_store_touches_a_store_private_attribute() -> None:
    assert len(OUTSIDE) > 100  # the tree was found
    private = _private_names()
    offences = [hit for path in OUTSIDE for hit in _touches(path, private)]
    assert offences == [], "use the public API (store/unit.py for transactions):\n" + "\n".join(offences)


_ENVIRONMENT = {"environ", "environb", "getenv", "getenvb"}


def _environment_reads(source: str, name: str) -> list[str]:
    """``os.environ`` / ``os.getenv`` (or the names imported from ``os``) in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            used = [a.name for a in node.names if a.name in _ENVIRONMENT]
        elif isinstance(node, ast.Attribute):
            used = [node.attr] if node.attr in _ENVIRONMENT else []
        elif isinstance(node, ast.Name):
            used = [node.id] if node.id in _ENVIRONMENT else []
        else:
            continue
        found += [f"{name}:{getattr(node, 'lineno', 0)}: {u}" for u in used]
    return found


@pytest.mark.parametrize("source", ["import os\nos.environ.get('X')\n", "import os\nos.getenv('X')\n",
                                    "from os import environ\n", "from os import getenv as g\n"])
def test_the_environment_check_finds_reads(source: str) -> None:
    assert _environment_reads(source, "probe.py")


def test_no_module_of_the_store_reads_the_environment() -> None:
    modules = sorted(STORE.rglob("*.py"))
    assert STORE / "crypto.py" in modules and STORE / "migrations" / "env.py" in modules  # the tree was found
    offences = [hit for path in modules
                for hit in _environment_reads(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert offences == [], "pass configuration in (node/settings.py reads the environment):\n" + "\n".join(offences)
