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
import json.encoder
from collections.abc import Callable
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
    """RFC 8785 bytes of a JSON-compatible value (dict/list/str/int/float/bool/None).

    Values inside the common case go through the standard library's C JSON encoder (see ``_fast``);
    everything else through ``rfc8785``. A property test proves both give the same bytes.
    """
    try:
        fast = _fast(value)
    except _Fallback:
        fast = None
    if fast is not None:
        return fast
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise EncodingError(f"not canonicalisable: {exc}") from exc


# -- fast path ---------------------------------------------------------------------------------------
# Why: rfc8785 is pure Python and took ~60 µs per result record, three quarters of the store's ingest
# time (scripts/bench_store.py, profiled), so ingest missed its 10,000 records/s target. For the values
# records actually hold, ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` emits
# exactly RFC 8785: same escapes (\b \f \n \r \t, \u00xx lower-case, nothing else), same integer
# spelling, and the same float spelling where ECMAScript and Python's repr agree — shortest round-trip
# digits without exponent, i.e. 1e-4 <= |x| < 1e16 once integral floats are written as integers. Key
# order agrees while keys hold no code point above U+D7FF (beyond it UTF-16 order differs from code point
# order). Anything outside these bounds falls back to rfc8785 rather than being approximated.

_FLOAT_LOW, _FLOAT_HIGH = 1e-4, 1e16
#: Integers strictly inside ±FAST_INT_LIMIT take the fast path (Python and ECMAScript spell them alike).
FAST_INT_LIMIT = _SAFE = 2**53


class _Fallback(Exception):
    pass


def _prepare(value: Any) -> Any:
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is int:
        if -_SAFE < value < _SAFE:
            return value
        raise _Fallback
    if t is float:
        if value.is_integer():
            if -_SAFE < value < _SAFE:
                return int(value)
            raise _Fallback
        if _FLOAT_LOW <= abs(value) < _FLOAT_HIGH:
            return value
        raise _Fallback
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str or (not k.isascii() and max(k) > "\ud7ff"):
                raise _Fallback
            out[k] = _prepare(v)
        return out
    if t is list or t is tuple:
        return [_prepare(v) for v in value]
    raise _Fallback


def _fast(value: Any) -> bytes | None:
    return encode_prepared(_prepare(value))


def encode_prepared(value: Any, *, keys_sorted: bool = False) -> bytes | None:
    """RFC 8785 bytes of a value in ``_prepare``'s output form (built by it, or proven to be what it would
    build); None if a string holds a lone surrogate (then rfc8785 must decide). ``keys_sorted``: every dict
    in ``value`` already iterates in code point order of its keys, so the encoder need not sort them."""
    text = (_dumps_presorted if keys_sorted else _dumps)(value)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return None  # lone surrogates: let rfc8785 report them


_ENCODER_OPTIONS: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":"), "allow_nan": False}
# JSONEncoder.encode builds a new C encoder, with a dict of the ids of the containers it is inside (cycle
# detection), on every call: ~1.3 of its ~6.5 µs per record. The same C encoder with the same options,
# built once and without cycle detection, emits the same text. Cycles cannot reach it: ``_prepare`` (and
# records.py's ``_plain``) build every container afresh, recursively, so a cyclic value fails there first.
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)


def _encoder(sort_keys: bool) -> Callable[[Any], str]:
    options = json.JSONEncoder(sort_keys=sort_keys, **_ENCODER_OPTIONS)
    if _c_make_encoder is None:
        return options.encode
    encode = _c_make_encoder(
        None, options.default, json.encoder.encode_basestring, None,
        options.key_separator, options.item_separator, sort_keys, options.skipkeys, options.allow_nan,
    )
    return lambda value: "".join(encode(value, 0))


_dumps, _dumps_presorted = _encoder(True), _encoder(False)


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
