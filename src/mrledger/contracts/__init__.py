"""The MrLedgerRegistry contract: Solidity source, the committed compiled artefact, and its loader.

Why a committed artefact: production code and CI deploy the exact bytecode that was reviewed, without a
compiler at run time (native solc cannot be downloaded here; solcjs needs node). ``mrledger.contracts.build``
regenerates it and a test proves it still matches the source.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

ARTEFACT_NAME = "MrLedgerRegistry.json"
CONTRACT_NAME = "MrLedgerRegistry"
#: The v2 registry (one word per batch, hub anchoring, status proofs; issue 18), built and committed alike.
V2_CONTRACT_NAME = "MrLedgerRegistryV2"
CONTRACT_NAMES = (CONTRACT_NAME, V2_CONTRACT_NAME)


@cache
def load_artefact(name: str = CONTRACT_NAME) -> dict[str, Any]:
    """The committed compile output (abi, bytecode, deployedBytecode, compiler, settings, sourceSha256) of
    ``name`` (one of CONTRACT_NAMES).

    Read as package data so it works from an installed wheel as well as from the checkout.
    """
    if name not in CONTRACT_NAMES:
        raise ValueError(f"unknown contract {name!r}")
    text = resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8")
    artefact: dict[str, Any] = json.loads(text)
    return artefact


__all__ = ["ARTEFACT_NAME", "CONTRACT_NAME", "CONTRACT_NAMES", "V2_CONTRACT_NAME", "load_artefact"]
