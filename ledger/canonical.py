"""Canonical JSON: strict parsing in, RFC 8785 (JCS) bytes out.

Consensus-critical. Every leaf is a hash over JCS bytes, so a verifier in any language that implements
RFC 8785 recomputes the same leaf: key order, insignificant whitespace, ``\\u`` escapes and number
spelling (``4.10`` vs ``4.1`` vs ``41e-1``) never change the bytes. We use the ``rfc8785`` package
rather than our own serialiser because number formatting (ECMAScript's shortest round-trip) is exactly
the part that hand-written canonicalisers get wrong.

Parsing is strict for the opposite reason: duplicate keys, NaN/Infinity and trailing data are
ambiguities an attacker could use to make two parties read different content from the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import rfc8785

from ledger.errors import EncodingError

#: Largest JSON document we parse at all; records and receipts are far smaller.
MAX_JSON_BYTES = 8 * 1024 * 1024


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise EncodingError(f"duplicate JSON key {key!r}")
        obj[key] = value
    return obj


def _no_constants(name: str) -> Any:
    raise EncodingError(f"{name} is not valid JSON")


def parse_json(data: bytes | str) -> Any:
    """Parse one JSON document strictly: UTF-8 only, no duplicate keys, no NaN/Infinity, no trailing data."""
    if len(data) > MAX_JSON_BYTES:
        raise EncodingError(f"JSON document larger than {MAX_JSON_BYTES} bytes")
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EncodingError(f"JSON is not valid UTF-8: {exc}") from exc
    else:
        text = data
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except EncodingError:
        raise
    except (ValueError, RecursionError) as exc:
        raise EncodingError(f"invalid JSON: {exc}") from exc


def canonicalize(value: Any) -> bytes:
    """RFC 8785 bytes of a JSON-compatible value (dict/list/str/int/float/bool/None)."""
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise EncodingError(f"not canonicalisable: {exc}") from exc


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def parse_hex(value: str, *, size: int, what: str) -> bytes:
    """Lower-case hex of exactly ``size`` bytes. Upper case is refused so each value has one spelling."""
    if not isinstance(value, str) or len(value) != 2 * size or value != value.lower():
        raise EncodingError(f"{what} must be {2 * size} lower-case hex characters")
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise EncodingError(f"{what} is not hex") from exc
