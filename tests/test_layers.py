"""The layers of ``mrledger``, checked from the sources (``ast``) rather than stated in a comment.

The arrows (a layer imports only those named, and ``mrledger.ledger``, the pure core, is importable from every
layer above it)::

    ledger      nothing of ours (tests/ledger/test_purity.py checks the third-party side)
    store     → ledger
    anchoring → store, ledger (and contracts, the registry's compiled artefact)
    service   → anchoring, store, ledger; no FastAPI, typer, uvicorn
    node      → service and below (api_processes.py builds the HTTP server every API process runs: the one arrow up)
    http      → service, node, ledger (store and anchoring only where listed below)
    cli       → service, node, ledger (store and anchoring only where listed below)

Every ``import`` counts, also the ones under ``if TYPE_CHECKING:`` and inside functions: a circle hidden from
the interpreter is still a circle for the reader. ``__main__`` modules are entry points, not part of a layer.
Only ``node/settings.py`` reads the environment.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "mrledger"
LAYERS = ("ledger", "contracts", "store", "anchoring", "service", "node", "http", "cli", "monitor")
ALLOWED: dict[str, set[str]] = {
    "ledger": set(),
    "contracts": set(),
    "store": {"ledger"},
    "anchoring": {"store", "ledger", "contracts"},
    "service": {"anchoring", "store", "ledger", "contracts"},
    "node": {"service", "anchoring", "store", "ledger", "contracts"},
    "http": {"service", "node", "ledger"},
    "cli": {"service", "node", "ledger", "monitor"},
    # The monitor checks the node from outside: the chain and the node's public HTTP answers only, never its
    # database or services (tests/monitor/test_layering.py checks the same in a fresh interpreter).
    "monitor": {"anchoring", "ledger", "contracts"},
}
#: Arrows not (yet) in the rule, each with its module. A ratchet: a new module may not add one; mending one means
#: deleting its line here. The http and cli ones are types and errors the services have not wrapped yet
#: (``Principal``, ``NotFoundError``, ``CacheMiss``, …) and CLI commands that still open the store themselves.
EXCEPTIONS: set[tuple[str, str]] = {
    # Every API process of serve runs the HTTP app (create_app, the bounded protocol, the rate limit): built in one
    # place, ``api_server``, for the first process and the extra ones.
    ("node/api_processes.py", "http"),
    ("http/__init__.py", "anchoring"),  # import-order guard of web3's recursion limit (see the module)
    ("http/problems.py", "anchoring"), ("http/problems.py", "store"),
    ("http/routes/audit.py", "store"),
    ("http/routes/health.py", "anchoring"), ("http/routes/verify.py", "anchoring"),
    ("http/deps.py", "store"), ("http/metrics.py", "store"), ("http/routes/catalogue.py", "store"),
    ("http/routes/decisions.py", "store"), ("http/routes/kpis.py", "store"), ("http/routes/receipt_qr.py", "store"),
    ("http/routes/tokens.py", "store"), ("http/routes/hospitals.py", "store"),
    ("http/routes/verify.py", "store"),
    ("cli/__init__.py", "anchoring"),  # the same import-order guard
    ("cli/anchoring.py", "anchoring"), ("cli/anchoring.py", "store"), ("cli/main.py", "anchoring"),
    ("cli/audit.py", "anchoring"), ("cli/audit.py", "store"),  # `audit chain` opens the store and the chain itself
    ("cli/main.py", "store"), ("cli/eligibility.py", "store"), ("cli/keys.py", "store"), ("cli/tokens.py", "store"),
}
#: Third-party frameworks a layer must not import.
FORBIDDEN = {"service": {"fastapi", "starlette", "typer", "uvicorn"}, "store": {"fastapi", "typer", "web3"},
             "anchoring": {"fastapi", "typer"}}
#: The one reader of the node's environment, and the clients' own: cli/client.py declares MRL_API_URL and
#: MRL_TOKEN, cli/monitor.py MRL_MONITOR_TOKEN, as typer ``envvar``s (a client's, not the node's, configuration);
#: anchoring/hardhat_node.py hands its environment down to the Hardhat child process, reading no setting of it.
ENVIRONMENT_READERS = {"node/settings.py", "cli/client.py", "cli/monitor.py", "anchoring/hardhat_node.py"}
#: Module circles still to break (none: ChainContext left service/ledger.py for anchoring/chain.py).
KNOWN_CIRCLES: set[frozenset[str]] = set()


def _sources() -> dict[str, Path]:
    files = {str(p.relative_to(PACKAGE)): p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py"}
    assert len(files) > 50 and {f.split("/")[0] for f in files if "/" in f} >= set(LAYERS) - {"contracts"}, \
        "the scan must reach every layer"
    return files


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return names


def test_every_arrow_points_down() -> None:
    wrong = []
    for rel, path in _sources().items():
        layer = rel.split("/")[0]
        if layer not in LAYERS:
            continue
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "mrledger" and len(parts) > 1 and parts[1] in LAYERS and parts[1] != layer \
                    and parts[1] not in ALLOWED[layer] and (rel, parts[1]) not in EXCEPTIONS:
                wrong.append(f"{rel} imports {name}")
            if parts[0] in FORBIDDEN.get(layer, ()):
                wrong.append(f"{rel} imports {name}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_the_exceptions_still_exist() -> None:
    """A mended exception is deleted from the list, so the list says what is left to do."""
    found = {(rel, name.split(".")[1]) for rel, path in _sources().items() for name in _imports(path)
             if name.startswith("mrledger.") and len(name.split(".")) > 1}
    assert found >= EXCEPTIONS, sorted(EXCEPTIONS - found)


def test_only_the_settings_read_the_environment() -> None:
    readers = set()
    for rel, path in _sources().items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb")) \
                    or (isinstance(node, ast.ImportFrom) and node.module == "os"
                        and any(a.name in ("environ", "getenv") for a in node.names)) \
                    or (isinstance(node, ast.keyword) and node.arg == "envvar"):
                readers.add(rel)
    assert readers <= ENVIRONMENT_READERS, sorted(readers - ENVIRONMENT_READERS)


def test_no_module_circles() -> None:
    """No two modules import each other, directly or round a circle (TYPE_CHECKING imports included)."""
    modules = {"mrledger." + rel.removesuffix(".py").removesuffix("/__init__").replace("/", "."): path
               for rel, path in _sources().items()}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    circles = set()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.add(frozenset(component))

    for v in sorted(modules):
        if v not in index:
            visit(v)
    assert circles <= KNOWN_CIRCLES, [sorted(c) for c in circles - KNOWN_CIRCLES]
