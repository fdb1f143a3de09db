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


@cache
def load_artefact() -> dict[str, Any]:
    """The committed compile output (abi, bytecode, deployedBytecode, compiler, settings, sourceSha256).

    Read as package data so it works from an installed wheel as well as from the checkout.
    """
    text = resources.files(__name__).joinpath(ARTEFACT_NAME).read_text(encoding="utf-8")
    artefact: dict[str, Any] = json.loads(text)
    return artefact


__all__ = ["ARTEFACT_NAME", "CONTRACT_NAME", "load_artefact"]
