"""The committed artefact is exactly what the committed source compiles to.

Why: production deploys ``contracts/MrLedgerRegistry.json`` without compiling; if someone edits the
Solidity and forgets ``python -m mrledger.contracts.build``, the reviewed source and the deployed bytecode would
silently differ. Needs ``npm ci`` (solcjs and OpenZeppelin from node_modules); ~3 s.
"""

from __future__ import annotations

import pytest

from mrledger.contracts import V2_CONTRACT_NAME, build, load_artefact


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


# ------------------------------------------------------------------ the v2 registry (issue 18), same rules


@pytest.fixture(scope="module")
def fresh_v2() -> dict[str, object]:
    return build.compile_registry(V2_CONTRACT_NAME)


def test_v2_artefact_matches_a_fresh_compile(fresh_v2: dict[str, object]) -> None:
    committed = load_artefact(V2_CONTRACT_NAME)
    assert committed["sourceSha256"] == build.source_sha256(name=V2_CONTRACT_NAME), "run the build"
    for field in ("sourceSha256", "bytecode", "deployedBytecode", "abi", "settings", "compiler"):
        assert committed[field] == fresh_v2[field], f"{field} differs: run `python -m mrledger.contracts.build`"


def test_v2_artefact_shape() -> None:
    art = load_artefact(V2_CONTRACT_NAME)
    assert art["settings"] == load_artefact()["settings"] and art["compiler"] == load_artefact()["compiler"]
    names = {e["name"] for e in art["abi"] if e["type"] == "function"}
    assert {"anchor", "anchorHub", "verifyReceipt", "verifyStatus", "verifyStatusProof", "commitmentOf", "hubOf",
            "lastSeq", "isAnchored", "batchCommitment"} <= names
    assert len(bytes.fromhex(art["deployedBytecode"][2:])) < 24_576  # EIP-170
