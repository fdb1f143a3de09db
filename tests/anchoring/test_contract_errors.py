"""Revert decoding without a chain: the worker branches on these names, so the mapping from raw revert
data to ContractRevert must be exact for every error in the ABI, and safe for garbage."""

from __future__ import annotations

import pytest
from eth_abi.abi import encode
from eth_utils.crypto import keccak

from mrledger.anchoring.contract import decode_revert
from mrledger.anchoring.errors import AnchoringError, ContractRevert, TransactionFailed
from mrledger.contracts import load_artefact
from mrledger.ledger.errors import MrLedgerError


def _selector(sig: str) -> bytes:
    return keccak(text=sig)[:4]


def test_custom_error_with_arguments() -> None:
    key = bytes(range(32))
    data = _selector("SeqGap(bytes32,uint64,uint64)") + encode(["bytes32", "uint64", "uint64"], [key, 4, 9])
    err = decode_revert("0x" + data.hex())
    assert err.name == "SeqGap"
    assert err.error_args == {"hospitalKey": key, "expected": 4, "got": 9}
    assert "SeqGap(hospitalKey=0x0001" in str(err)


def test_address_arguments_are_checksummed() -> None:
    addr = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    data = _selector("AccessControlUnauthorizedAccount(address,bytes32)") + encode(
        ["address", "bytes32"], [addr, bytes(32)]
    )
    assert decode_revert(data).error_args["account"] == addr


@pytest.mark.parametrize("entry", [e for e in load_artefact()["abi"] if e["type"] == "error"], ids=lambda e: e["name"])
def test_every_abi_error_decodes_to_its_name(entry: dict[str, object]) -> None:
    inputs = entry["inputs"]
    assert isinstance(inputs, list)
    types = [i["type"] for i in inputs]
    samples = {"bytes32": b"\x11" * 32, "uint64": 7, "address": "0x" + "22" * 20}
    data = _selector(f"{entry['name']}({','.join(types)})") + encode(types, [samples[t] for t in types])
    assert decode_revert(data).name == entry["name"]


def test_error_string_and_panic() -> None:
    assert decode_revert(bytes.fromhex("08c379a0") + encode(["string"], ["boom"])).error_args == {"message": "boom"}
    panic = decode_revert(bytes.fromhex("4e487b71") + encode(["uint256"], [0x11]))
    assert panic.name == "Panic" and panic.error_args == {"code": 0x11}


@pytest.mark.parametrize("data", [None, "", "0x", "0xdeadbeef", "0x08c379a0ff"])
def test_garbage_is_unknown_not_a_crash(data: str | None) -> None:
    err = decode_revert(data)
    assert err.name == "unknown"


def test_error_tree() -> None:
    assert issubclass(ContractRevert, AnchoringError) and issubclass(AnchoringError, MrLedgerError)
    assert issubclass(TransactionFailed, AnchoringError)
    err = ContractRevert("EnforcedPause", tx_hash="0xabc")
    assert err.error_args == {} and "0xabc" in str(err)
