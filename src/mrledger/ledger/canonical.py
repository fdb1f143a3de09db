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
import math
import re
from collections.abc import Callable
from itertools import accumulate, count
from operator import sub
from typing import Any

import rfc8785

from mrledger.ledger.errors import EncodingError

#: Largest JSON document we parse at all; records and receipts are far smaller.
MAX_JSON_BYTES = 8 * 1024 * 1024
#: Deepest nesting of arrays and objects in a JSON document we parse, the outermost array or object being
#: level 1 (``[]`` has depth 1, ``{"a": [1]}`` depth 2; strings and numbers add none). Checked on the raw
#: bytes before anything is decoded (``check_depth``): the C decoder recurses once per level and only
#: stops at the interpreter's recursion limit, which py_ecc (imported by web3) raises to 100,000, far
#: beyond what the C stack holds (~75,000 levels segfaulted). Records and receipts are shallow: a receipt
#: nests at most 68 levels (docs/receipt.md §1), a submission or verification request one or two more.
MAX_JSON_DEPTH = 128


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise EncodingError(f"duplicate JSON key {key!r}")
        obj[key] = value
    return obj


def _no_constants(name: str) -> Any:
    raise EncodingError(f"{name} is not valid JSON")


def _float(text: str) -> float:
    """A JSON number with a fraction or exponent, refused where no IEEE-754 double says what was sent:
    beyond the double range (``1e400`` would become ``inf``) or so small it rounds to zero (``1e-400``
    would be committed as ``0``)."""
    value = float(text)
    if math.isinf(value):
        raise EncodingError(f"number {text[:32]} is beyond the range of an IEEE-754 double (about 1.8e308)")
    if value == 0.0 and text.lower().partition("e")[0].strip("+-0."):
        raise EncodingError(f"number {text[:32]} is too small for an IEEE-754 double (it would be stored as 0)")
    return value


# -- nesting depth before decoding -----------------------------------------------------------------------
# Why not a Python loop over the bytes: ~50 ns a byte is 25 ms for a 1,000-record submission (~500 KB).
# What runs instead is a handful of C-speed bytes methods: drop escaped backslashes and quotes, keep only
# quotes and brackets (translate), drop the strings, then peel innermost ``[]`` pairs (replace): each pass
# lowers the deepest nesting by exactly one (by at most one if the brackets do not balance, which the
# decoder refuses anyway). What a few passes leave is measured exactly with C-level iterators. Figures:
# scripts/bench_depth.py.

_STRUCTURE = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_STEPS = bytes.maketrans(b"[]", b"\x02\x00")  # +1/-1, as +2/0 minus the position (see _deeper_than)
_PEEL_PASSES = 8
_COUNT_BELOW = 16 * 1024


def _deeper_than(brackets: bytes, limit: int) -> bool:
    """Whether the running count of ``[`` minus ``]`` exceeds ``limit`` anywhere in ``brackets``."""
    if brackets.count(b"[") <= limit:
        return False
    depths = map(sub, accumulate(brackets.translate(_STEPS)), count(1))
    return any(map(limit.__lt__, depths))


def check_depth(data: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise EncodingError if arrays and objects in the JSON text ``data`` nest deeper than ``limit``
    (``MAX_JSON_DEPTH``), without decoding it: linear in ``len(data)``, safe on any input."""
    # Few brackets cannot nest deep: counting them is what a small body (a receipt, a decision) costs. On a
    # large one the count took longer than it saved (~0.3 ms per 500 KB), so it is skipped there.
    if len(data) <= _COUNT_BELOW and data.count(b"[") + data.count(b"{") <= limit:
        return
    if b"\\" in data:  # escapes first, so that an escaped quote does not end a string
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = data.translate(_STRUCTURE, _NOT_STRUCTURE)
    if b'"' in brackets:
        brackets = brackets.replace(b'""', b"")  # strings without brackets (nearly all)
        if b'"' in brackets:
            brackets = b"".join(brackets.split(b'"')[::2])
    peeled = 0
    while brackets and peeled < _PEEL_PASSES:
        inner = brackets.replace(b"[]", b"")
        if len(inner) == len(brackets):
            break
        brackets, peeled = inner, peeled + 1
    if peeled > limit or (brackets and _deeper_than(brackets, limit - peeled)):
        raise EncodingError(f"JSON nests deeper than {limit} levels of arrays and objects")


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _well_formed(value: Any) -> None:
    """Refuse a lone surrogate (a ``\\uD800`` escape without its pair) anywhere, key or value: it has no
    UTF-8 form, so RFC 8785 cannot hash it and I-JSON (RFC 7493 §2.1) forbids it. Paired escapes were
    already joined into one code point by the decoder, so any surrogate left is a lone one."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodingError("JSON holds a lone surrogate escape (\\uD800-\\uDFFF without its pair)") from exc


def parse_json(data: bytes | str, *, max_bytes: int | None = MAX_JSON_BYTES) -> Any:
    """Parse one JSON document strictly: UTF-8 only (no byte order mark), no duplicate keys, no
    NaN/Infinity, no number a double cannot hold, no lone surrogate, at most ``MAX_JSON_DEPTH`` levels
    (checked before decoding), no trailing data. ``max_bytes``: None for files a user hands the CLI."""
    if max_bytes is not None and len(data) > max_bytes:
        raise EncodingError(f"JSON document larger than {max_bytes} bytes")
    if isinstance(data, bytes | bytearray):
        raw = bytes(data)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EncodingError(f"JSON is not valid UTF-8: {exc}") from exc
    else:
        text = data
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EncodingError("JSON text holds a lone surrogate") from exc
    check_depth(raw)
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants, parse_float=_float)
    except EncodingError:
        raise
    except (ValueError, RecursionError) as exc:
        raise EncodingError(f"invalid JSON: {exc}") from exc
    if _SURROGATE_ESCAPE.search(raw):
        _well_formed(obj)
    return obj


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
    except UnicodeEncodeError as exc:  # rfc8785 sorts keys by their UTF-16 form: a lone surrogate has none
        raise EncodingError("not canonicalisable: an object key holds a lone surrogate") from exc


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
