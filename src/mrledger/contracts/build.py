"""Compile ``MrLedgerRegistry.sol`` (and ``MrLedgerRegistryV2.sol``) reproducibly and write the committed artefacts.

Why this shape: py-solc-x drives the compiler, but no native solc can be installed on our machines, so
``contracts/solcjs`` (the npm ``solc`` package behind a solc-compatible front) is passed as
``solc_binary``. Every setting that changes bytecode is fixed here, so recompiling the same source with the
same npm lockfile yields byte-identical output — which ``tests/contracts/test_artefact.py`` checks.

Run ``python -m mrledger.contracts.build`` after editing a contract (needs ``npm ci`` first); it rebuilds both.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from mrledger.contracts import ARTEFACT_NAME, CONTRACT_NAME, CONTRACT_NAMES

CONTRACTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = CONTRACTS_DIR.parents[2]  # contracts -> the repository (node_modules)
NODE_MODULES = REPO_ROOT / "node_modules"
SOLCJS_WRAPPER = CONTRACTS_DIR / "solcjs"
SOURCE_PATH = CONTRACTS_DIR / f"{CONTRACT_NAME}.sol"
SOURCE_UNIT = f"{CONTRACT_NAME}.sol"
ARTEFACT_PATH = CONTRACTS_DIR / ARTEFACT_NAME

#: Everything that influences the bytecode. evmVersion is pinned (not the compiler default) so a compiler
#: bump cannot silently change opcodes; cancun is what both anvil and py-evm execute.
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 10_000},
    "evmVersion": "cancun",
    "metadata": {"bytecodeHash": "ipfs"},
    "outputSelection": {SOURCE_UNIT: {CONTRACT_NAME: ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}


def settings_for(name: str) -> dict[str, Any]:
    """SETTINGS with the output selection of contract ``name`` (same compiler settings for every contract)."""
    selection = {f"{name}.sol": {name: ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}}
    return {**SETTINGS, "outputSelection": selection}


class BuildError(RuntimeError):
    """The toolchain is missing or the compiler reported errors."""


def source_sha256(path: Path = SOURCE_PATH, *, name: str | None = None) -> str:
    if name is not None:
        path = CONTRACTS_DIR / f"{name}.sol"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_toolchain() -> None:
    if not (NODE_MODULES / "solc" / "solc.js").is_file():
        raise BuildError(f"solcjs not found under {NODE_MODULES}; run `npm ci` in {REPO_ROOT}")
    if not (NODE_MODULES / "@openzeppelin" / "contracts").is_dir():
        raise BuildError(f"@openzeppelin/contracts not found under {NODE_MODULES}; run `npm ci`")


def compiler_version() -> str:
    import solcx.wrapper

    return solcx.wrapper.get_version_str_from_solc_binary(SOLCJS_WRAPPER)


def compile_registry(name: str = CONTRACT_NAME) -> dict[str, Any]:
    """Compile registry ``name`` (one of CONTRACT_NAMES) and return the artefact dict (not written anywhere)."""
    import solcx  # imported lazily: only the build and its test need it, never production code

    if name not in CONTRACT_NAMES:
        raise BuildError(f"unknown contract {name!r}")
    _check_toolchain()
    unit = f"{name}.sol"
    source = (CONTRACTS_DIR / unit).read_text(encoding="utf-8")
    standard_input = {
        "language": "Solidity",
        "sources": {unit: {"content": source}},
        "settings": settings_for(name),
    }
    try:
        output = solcx.compile_standard(standard_input, solc_binary=SOLCJS_WRAPPER, base_path=str(NODE_MODULES))
    except solcx.exceptions.SolcError as exc:
        raise BuildError(str(exc)) from exc
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise BuildError("\n".join(e.get("formattedMessage", str(e)) for e in errors))
    compiled = output["contracts"][unit][name]
    settings = {k: v for k, v in SETTINGS.items() if k != "outputSelection"}
    return {
        "contractName": name,
        "sourceUnit": f"contracts/{unit}",
        "sourceSha256": hashlib.sha256(source.encode("utf-8")).hexdigest(),
        "compiler": {"name": "solcjs", "version": compiler_version()},
        "settings": settings,
        "abi": compiled["abi"],
        "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
    }


def write_artefact(artefact: dict[str, Any], path: Path = ARTEFACT_PATH) -> None:
    path.write_text(json.dumps(artefact, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="where to write the artefact (with --contract only)")
    parser.add_argument("--contract", choices=CONTRACT_NAMES, default=None, help="build one contract (default: all)")
    args = parser.parse_args(argv)
    if args.out is not None and args.contract is None:
        parser.error("--out needs --contract")
    for name in [args.contract] if args.contract else CONTRACT_NAMES:
        artefact = compile_registry(name)
        out = args.out or CONTRACTS_DIR / f"{name}.json"
        write_artefact(artefact, out)
        print(f"wrote {out} ({len(artefact['deployedBytecode']) // 2 - 1} bytes runtime)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
