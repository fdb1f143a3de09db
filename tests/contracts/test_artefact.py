"""The committed artefact is exactly what the committed source compiles to.

Why: production deploys ``contracts/MrLedgerRegistry.json`` without compiling; if someone edits the
Solidity and forgets ``python -m mrledger.contracts.build``, the reviewed source and the deployed bytecode would
silently differ. Needs ``npm ci`` (solcjs and OpenZeppelin from node_modules); ~3 s.
"""

from __future__ import annotations

import pytest

from mrledger.contracts import build, load_artefact


@pytest.fixture(scope="module")
def fresh() -> dict[str, object]:
    return build.compile_registry()


def test_artefact_records_the_committed_source() -> None:
    assert load_artefact()["sourceSha256"] == build.source_sha256(), "run `python -m mrledger.contracts.build`"


def test_artefact_matches_a_fresh_compile(fresh: dict[str, object]) -> None:
    committed = load_artefact()
    for field in ("sourceSha256", "bytecode", "deployedBytecode", "abi", "settings", "compiler"):
        assert committed[field] == fresh[field], f"{field} differs: run `python -m mrledger.contracts.build`"


def test_artefact_shape() -> None:
    art = load_artefact()
    assert art["compiler"]["version"].startswith("0.8.28+commit.")
    assert art["settings"]["optimizer"] == {"enabled": True, "runs": 10_000}
    names = {e["name"] for e in art["abi"] if e["type"] == "function"}
    assert {"anchor", "anchorMany", "verifyInclusion", "verifyReceipt", "batchOf", "lastSeq", "isSubmitter"} <= names
    assert len(bytes.fromhex(art["deployedBytecode"][2:])) < 24_576  # EIP-170
