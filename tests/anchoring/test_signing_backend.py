"""The anchoring worker signs every anchor transaction with eth-account, which signs through eth-keys; eth-keys
picks libsecp256k1 (``coincurve``) when it is installed and silently falls back to pure Python otherwise (~10x
slower a signature, measured: pyproject.toml). These tests hold the dependency in place and hold the two backends
to the same bytes, so the compiled one changes nothing but the time."""

from __future__ import annotations

import hashlib

from eth_account import Account
from eth_keys import KeyAPI
from eth_keys.backends import CoinCurveECCBackend, NativeECCBackend, get_backend

KEY = hashlib.sha256(b"mrledger signing backend test").digest()


def test_eth_keys_signs_with_libsecp256k1() -> None:
    assert isinstance(get_backend(), CoinCurveECCBackend), (
        f"eth-keys uses {type(get_backend()).__name__}: is coincurve installed (pyproject.toml)?")


def test_both_backends_sign_the_same_bytes() -> None:
    """RFC 6979 nonces and low-s: the compiled backend's signatures are the pure-Python ones, bit for bit."""
    for i in range(20):
        digest = hashlib.sha256(i.to_bytes(4, "big")).digest()
        native = KeyAPI(NativeECCBackend).PrivateKey(KEY).sign_msg_hash(digest)
        compiled = KeyAPI(CoinCurveECCBackend).PrivateKey(KEY).sign_msg_hash(digest)
        assert native.to_bytes() == compiled.to_bytes()


def test_a_signed_anchor_transaction_recovers_its_sender() -> None:
    """What the chain checks of a raw transaction: its signature recovers the worker's address."""
    account = Account.from_key(KEY)
    tx = {"to": "0x" + "11" * 20, "value": 0, "gas": 200_000, "maxFeePerGas": 2 * 10**9,
          "maxPriorityFeePerGas": 10**9, "nonce": 7, "chainId": 31337, "data": "0x" + "ab" * 68, "type": 2}
    signed = account.sign_transaction(tx)
    assert Account.recover_transaction(signed.raw_transaction) == account.address
